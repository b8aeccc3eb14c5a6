"""The timm adapter on a small timm model (resnet10t) with weights written here, without network access."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

import huggingface_hub  # noqa: E402

from robsig_checks.adapters.base import ModelAdapter  # noqa: E402
from robsig_checks.adapters.timm import TimmAdapter, create_timm_adapter  # noqa: E402
from robsig_checks.errors import RobsigError  # noqa: E402

NAME = "resnet10t"
HUB_REPO = "timm/resnet10t.c3_in1k"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
INPUT_SIZE = 176  # resnet10t.c3_in1k's pretrained input size


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ROBSIG_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("ROBSIG_CACHE_DIR", str(tmp_path / "robsig"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected network access: {args!r}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture()
def reference():
    torch.manual_seed(0)
    model = timm.create_model(NAME, num_classes=1000).eval()
    # Random batch-norm statistics, so that a buffer that failed to load would change the outputs.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture()
def weight_files(env, reference):
    state_dict = reference.state_dict()
    safetensors_path = env / "weights.safetensors"
    safetensors_torch.save_file(state_dict, str(safetensors_path))
    pickle_path = env / "weights.pth"
    torch.save(state_dict, pickle_path)
    return {"safetensors": safetensors_path, "pth": pickle_path}


def images(count: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, INPUT_SIZE, INPUT_SIZE, generator=torch.Generator().manual_seed(seed))


def assert_same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    loaded, expected = model.state_dict(), reference.state_dict()
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def save_hub_file(cache: Path, repo_id: str, filename: str, state_dict: dict) -> Path:
    snapshot = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(COMMIT)
    path = snapshot / filename
    safetensors_torch.save_file(state_dict, str(path))
    return path


# --- local weights --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_local_file_loads_weights(weight_files, reference, kind, no_network):
    path = weight_files[kind]
    adapter = create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    assert isinstance(adapter, ModelAdapter)
    assert_same_weights(adapter.model, reference)
    assert not adapter.model.training


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_representation_and_logits_match(weight_files, reference, kind):
    path = weight_files[kind]
    adapter = create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    batch = images()
    with torch.no_grad():
        pooled = reference.forward_head(reference.forward_features(batch), pre_logits=True)
        logits = reference(batch)
    h = adapter.representation(batch)
    assert h.shape == (2, 512)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, pooled, rtol=0, atol=1e-6)

    weight, bias = adapter.head()
    assert weight.shape == (1000, 512)
    assert bias.shape == (1000,)
    torch.testing.assert_close(weight, reference.fc.weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(h @ weight.T + bias, logits, rtol=1e-5, atol=1e-5)


def test_head_returns_copies(weight_files):
    path = weight_files["safetensors"]
    adapter = create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    weight, _ = adapter.head()
    weight.zero_()
    assert adapter.head()[0].abs().sum() > 0


def test_provenance_of_local_file(weight_files):
    path = weight_files["safetensors"]
    adapter = create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    provenance = adapter.provenance()
    assert provenance.spec == f"timm:{NAME}:{path}"
    assert provenance.adapter == "timm"
    assert provenance.architecture == NAME
    assert provenance.weights == str(path)
    assert provenance.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance.config["input_size"] == [3, INPUT_SIZE, INPUT_SIZE]
    assert provenance.config["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert provenance.config["local_file"] == str(path)


def test_preprocess_normalises_with_imagenet_stats(weight_files):
    path = weight_files["safetensors"]
    adapter = create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    color = (10, 128, 250)
    tensor = adapter.preprocess(Image.new("RGB", (300, 260), color))
    assert tensor.shape == (3, INPUT_SIZE, INPUT_SIZE)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for channel in range(3):
        expected = (color[channel] / 255 - mean[channel]) / std[channel]
        torch.testing.assert_close(
            tensor[channel], torch.full((INPUT_SIZE, INPUT_SIZE), expected), rtol=0, atol=1e-5
        )


def test_layers_are_feature_stages(weight_files):
    path = weight_files["safetensors"]
    adapter = create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    assert adapter.layers() == ["act1", "layer1", "layer2", "layer3", "layer4"]


def test_class_names_imagenet(weight_files):
    path = weight_files["safetensors"]
    adapter = create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    assert len(adapter.class_names) == 1000
    assert adapter.class_names[0] == "tench"
    assert adapter.class_names[999] == "toilet paper"


def test_finetuned_head_resized(env):
    torch.manual_seed(3)
    model = timm.create_model(NAME, num_classes=10).eval()
    path = env / "finetuned.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(path))
    adapter = create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    weight, bias = adapter.head()
    assert weight.shape == (10, 512)
    assert adapter.class_names == [f"class_{index}" for index in range(10)]
    batch = images(seed=4)
    with torch.no_grad():
        expected = model(batch)
    torch.testing.assert_close(adapter.representation(batch) @ weight.T + bias, expected, rtol=1e-5, atol=1e-5)


# --- strict loading ------------------------------------------------------------------------------


def test_key_mismatch_lists_keys(env, reference):
    state_dict = dict(reference.state_dict())
    state_dict.pop("layer4.0.conv1.weight")
    state_dict.pop("layer1.0.bn2.running_var")
    state_dict["extra.weight"] = torch.zeros(1)
    path = env / "mismatch.safetensors"
    safetensors_torch.save_file(state_dict, str(path))
    with pytest.raises(RobsigError) as raised:
        create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    message = str(raised.value)
    assert "missing keys: 2 (layer1.0.bn2.running_var, layer4.0.conv1.weight)" in message
    assert "unexpected keys: 1 (extra.weight)" in message
    assert str(path) in message


def test_many_missing_keys_counted(env, reference):
    state_dict = {key: value for key, value in reference.state_dict().items() if not key.startswith("layer4.")}
    missing = len(reference.state_dict()) - len(state_dict)
    path = env / "no-layer4.pth"
    torch.save(state_dict, path)
    with pytest.raises(RobsigError) as raised:
        create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    message = str(raised.value)
    assert f"missing keys: {missing} (" in message
    assert f"and {missing - 5} more" in message


def test_shape_mismatch_lists_tensor(env, reference):
    state_dict = dict(reference.state_dict())
    state_dict["layer2.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    path = env / "shape.safetensors"
    safetensors_torch.save_file(state_dict, str(path))
    with pytest.raises(RobsigError, match=r"layer2\.0\.conv1\.weight: file \(3, 3, 3, 3\)"):
        create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")


def test_prefixed_checkpoint_unwrapped(env, reference):
    wrapped = {"state_dict": {f"module.{key}": value for key, value in reference.state_dict().items()}}
    path = env / "wrapped.pth"
    torch.save(wrapped, path)
    adapter = create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")
    assert_same_weights(adapter.model, reference)


def test_pickled_module_rejected(env, reference):
    path = env / "whole-model.pth"
    torch.save(reference, path)
    with pytest.raises(RobsigError, match="weights_only=True"):
        create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")


def test_non_state_dict_rejected(env):
    path = env / "numbers.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(RobsigError, match="does not contain a state dict"):
        create_timm_adapter(f"{NAME}:{path}", f"timm:{NAME}:{path}")


def test_missing_file_named(env):
    missing = env / "absent.safetensors"
    with pytest.raises(RobsigError, match="not found") as raised:
        create_timm_adapter(f"{NAME}:{missing}", f"timm:{NAME}:{missing}")
    assert str(missing) in str(raised.value)


# --- names ---------------------------------------------------------------------------------------


def test_unknown_name_suggests_matches(env):
    with pytest.raises(RobsigError) as raised:
        create_timm_adapter("resnet10x", "timm:resnet10x")
    message = str(raised.value)
    assert "Unknown timm model 'resnet10x'" in message
    assert "resnet10t" in message


def test_unknown_tag_lists_tags(env):
    with pytest.raises(RobsigError) as raised:
        create_timm_adapter("resnet10t.nope", "timm:resnet10t.nope")
    assert "resnet10t.c3_in1k" in str(raised.value)


def test_empty_name_rejected(env):
    with pytest.raises(RobsigError, match="timm:NAME"):
        create_timm_adapter("", "timm")


# --- pretrained weights from the Hugging Face cache ---------------------------------------------------


def test_pretrained_from_hub_cache(env, reference, no_network):
    path = save_hub_file(env / "hf-hub", HUB_REPO, "model.safetensors", reference.state_dict())
    adapter = create_timm_adapter(NAME, f"timm:{NAME}")
    assert_same_weights(adapter.model, reference)
    provenance = adapter.provenance()
    assert provenance.weights == str(path)
    assert provenance.config["hf_hub_repo"] == HUB_REPO
    assert provenance.config["pretrained_tag"] == "c3_in1k"


def test_pretrained_missing_offline_fast(env, no_network):
    started = time.perf_counter()
    with pytest.raises(RobsigError) as raised:
        create_timm_adapter(NAME, f"timm:{NAME}")
    elapsed = time.perf_counter() - started
    message = str(raised.value)
    assert elapsed < 1.0
    assert HUB_REPO in message
    assert "model.safetensors" in message
    assert str(env / "hf-hub") in message
    assert f"timm:{NAME}:/path/to/" in message


# --- TimmAdapter used directly (as plugins do) ---------------------------------------------------------


def test_adapter_rejects_non_linear_classifier(env, reference, weight_files):
    headless = timm.create_model(NAME, num_classes=0)
    with pytest.raises(RobsigError, match="not a torch.nn.Linear"):
        TimmAdapter(headless, "custom", weight_files["safetensors"])


def test_adapter_detects_work_after_classifier(reference, weight_files):
    original_forward = reference.forward
    reference.forward = lambda x: original_forward(x) * 2.0
    with pytest.raises(RobsigError, match="differs from the model's logits"):
        TimmAdapter(reference, "custom", weight_files["safetensors"])


def test_adapter_wraps_custom_model(reference, weight_files):
    adapter = TimmAdapter(reference, "my-model", weight_files["pth"], adapter="my-plugin", config={"source": "test"})
    provenance = adapter.provenance()
    assert provenance.adapter == "my-plugin"
    assert provenance.config["source"] == "test"
    assert provenance.weights_sha256 == hashlib.sha256(weight_files["pth"].read_bytes()).hexdigest()
    assert adapter.to("cpu") is adapter
    with pytest.raises(RobsigError, match="Invalid device"):
        adapter.to("not-a-device")
