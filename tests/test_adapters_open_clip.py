"""The open_clip adapter on a tiny CLIP built here, with weights in a fake Hugging Face cache (no network)."""

from __future__ import annotations

import copy
import hashlib
import logging
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

open_clip = pytest.importorskip("open_clip")
safetensors_torch = pytest.importorskip("safetensors.torch")

import huggingface_hub  # noqa: E402
from huggingface_hub.errors import EntryNotFoundError  # noqa: E402
from open_clip.transformer import QuickGELU  # noqa: E402
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES  # noqa: E402

from robsig_checks.adapters import open_clip as oc_adapter  # noqa: E402
from robsig_checks.adapters.base import ModelAdapter  # noqa: E402
from robsig_checks.errors import RobsigError  # noqa: E402

TINY_ARCH = "robsig-tiny-vit"
# Two residual blocks of width 32 on 32x32 images, and a one-layer text tower with a 16-token context,
# so that the full 1000 x 80 prompt head builds in seconds.
TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TAG = "testtag"
QUICK_GELU_TAG = "qgtag"
URL_TAG = "urltag"
REPO = "robsig-test/tiny"
QUICK_GELU_REPO = "robsig-test/tiny-quickgelu"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TAG_MEAN = (0.5, 0.4, 0.3)
TAG_STD = (0.2, 0.25, 0.3)


def tag_config(**fields):
    return {
        "url": "",
        "hf_hub": "",
        "mean": TAG_MEAN,
        "std": TAG_STD,
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        **fields,
    }


def make_reference(seed: int, quick_gelu: bool = False) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.create_model(TINY_ARCH, force_quick_gelu=quick_gelu).eval()


def put_in_hub_cache(cache: Path, repo_id: str, filename: str, state_dict: dict) -> Path:
    """Write ``state_dict`` where huggingface_hub keeps ``repo_id/filename`` at revision main."""
    repo_folder = cache / f"models--{repo_id.replace('/', '--')}"
    (repo_folder / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder / "refs" / "main").write_text(COMMIT)
    snapshot = repo_folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    path = snapshot / filename
    if filename.endswith(".safetensors"):
        safetensors_torch.save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    else:
        torch.save(state_dict, path)
    return path


def assert_same_weights(model: torch.nn.Module, reference: dict) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(reference)
    for key, value in reference.items():
        assert torch.equal(loaded[key], value), key


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """Register the tiny architecture and its tags, and isolate every cache in tmp_path."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY_ARCH, copy.deepcopy(TINY_CONFIG))
    monkeypatch.setitem(
        open_clip.pretrained._PRETRAINED,
        TINY_ARCH,
        {
            TAG: tag_config(hf_hub=f"{REPO}/"),
            QUICK_GELU_TAG: tag_config(hf_hub=f"{QUICK_GELU_REPO}/", quick_gelu=True),
        },
    )
    hub_cache = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ROBSIG_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setenv("ROBSIG_CACHE_DIR", str(tmp_path / "robsig"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return hub_cache


@pytest.fixture()
def tiny(env):
    """The reference model for TAG and its weights, saved in the fake Hub cache."""
    reference = make_reference(seed=0)
    state_dict = reference.state_dict()
    path = put_in_hub_cache(env, REPO, "open_clip_model.safetensors", state_dict)
    return reference, state_dict, path


@pytest.fixture()
def no_network(monkeypatch):
    """Fail the test on any Hub download call or socket connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected network access: {args!r}")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


# --- spec parsing and tag resolution -------------------------------------------------------


def test_spec_prefix_optional():
    assert oc_adapter.parse_open_clip_spec("ViT-B-16:laion2b") == ("ViT-B-16", "laion2b")
    assert oc_adapter.parse_open_clip_spec("open_clip:ViT-B-16:laion2b") == ("ViT-B-16", "laion2b")
    assert oc_adapter.parse_open_clip_spec("RN50:C:/w/file.pt") == ("RN50", "C:/w/file.pt")


@pytest.mark.parametrize("spec", ["ViT-B-16", "ViT-B-16:", ":openai", "open_clip:"])
def test_spec_without_tag_rejected(spec):
    with pytest.raises(RobsigError, match="expected ARCH:TAG"):
        oc_adapter.parse_open_clip_spec(spec)


@pytest.mark.parametrize(
    ("alias", "tag"),
    [
        ("laion2b", "laion2b_s34b_b88k"),
        ("openai", "openai"),
        ("dfn2b", "dfn2b"),
        ("LAION2B", "laion2b_s34b_b88k"),
        ("datacomp_xl", "datacomp_xl_s13b_b90k"),
        ("laion400m_e31", "laion400m_e31"),
    ],
)
def test_alias_resolves_unique_tag(alias, tag):
    assert oc_adapter.resolve_pretrained_tag("ViT-B-16", alias) == tag


def test_alias_ambiguous_lists_choices():
    with pytest.raises(RobsigError) as raised:
        oc_adapter.resolve_pretrained_tag("ViT-B-16", "datacomp")
    message = str(raised.value)
    assert "Ambiguous" in message
    assert "datacomp_xl_s13b_b90k" in message
    assert "datacomp_l_s1b_b8k" in message


def test_unknown_tag_lists_architecture_tags():
    with pytest.raises(RobsigError) as raised:
        oc_adapter.resolve_pretrained_tag("ViT-B-16", "nonesuch")
    message = str(raised.value)
    assert "Unknown open_clip tag 'nonesuch'" in message
    for tag in open_clip.list_pretrained_tags_by_model("ViT-B-16"):
        assert tag in message


def test_unknown_architecture_suggests_close_matches():
    with pytest.raises(RobsigError) as raised:
        oc_adapter.create_open_clip_adapter("", "ViT-B-61:openai")
    message = str(raised.value)
    assert "ViT-B-16" in message
    assert "timm:NAME" in message


def test_ambiguous_alias_rejected_before_weights(env, no_network):
    with pytest.raises(RobsigError, match="datacomp_l_s1b_b8k"):
        oc_adapter.create_open_clip_adapter("", "ViT-B-16:datacomp")


# --- weights from the Hugging Face cache -----------------------------------------------------


def test_missing_weights_offline_fast(env, no_network):
    started = time.perf_counter()
    with pytest.raises(RobsigError) as raised:
        oc_adapter.create_open_clip_adapter("ViT-B-16:laion2b", "open_clip:ViT-B-16:laion2b")
    elapsed = time.perf_counter() - started
    message = str(raised.value)
    assert elapsed < 1.0
    assert "laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in message
    assert "open_clip_model.safetensors" in message
    assert "open_clip_pytorch_model.bin" in message
    assert str(env) in message
    assert "HF_HUB_OFFLINE=1" in message
    assert "hf download laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in message
    assert "ViT-B-16:/path/to/" in message


def test_robsig_offline_alone_blocks_download(env, no_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("ROBSIG_OFFLINE", "1")
    with pytest.raises(RobsigError, match="ROBSIG_OFFLINE=1"):
        oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")


def test_tag_loads_saved_weights(tiny, no_network):
    reference, state_dict, path = tiny
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    assert isinstance(adapter, ModelAdapter)
    assert_same_weights(adapter.model, state_dict)
    assert not adapter.model.training
    assert adapter.weights_path == path


def test_representation_equals_encode_image(tiny):
    reference, _, _ = tiny
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference.encode_image(images)
    h = adapter.representation(images)
    assert h.shape == (3, 16)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, expected, rtol=0, atol=1e-6)
    # Not normalised: the norms differ from 1.
    assert not torch.allclose(h.norm(dim=1), torch.ones(3), atol=1e-3)


def test_representation_rejects_3d_input(tiny):
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    with pytest.raises(ValueError, match="images must be a tensor of shape"):
        adapter.representation(torch.zeros(3, 32, 32))


def test_quick_gelu_tag_uses_quick_gelu(env):
    reference = make_reference(seed=5, quick_gelu=True)
    put_in_hub_cache(env, QUICK_GELU_REPO, "open_clip_model.safetensors", reference.state_dict())
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{QUICK_GELU_TAG}")
    assert any(isinstance(module, QuickGELU) for module in adapter.model.modules())
    assert adapter.provenance().config["quick_gelu"] is True

    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    plain = make_reference(seed=5, quick_gelu=False)
    with torch.no_grad():
        expected = reference.encode_image(images)
        with_gelu = plain.encode_image(images)
    h = adapter.representation(images)
    torch.testing.assert_close(h, expected, rtol=0, atol=1e-6)
    assert (h - with_gelu).abs().max() > 1e-4


def test_plain_tag_has_no_quick_gelu(tiny):
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    assert not any(isinstance(module, QuickGELU) for module in adapter.model.modules())
    assert adapter.provenance().config["quick_gelu"] is False


def test_pickle_fallback_when_no_safetensors(env):
    reference = make_reference(seed=3)
    path = put_in_hub_cache(env, REPO, "open_clip_pytorch_model.bin", reference.state_dict())
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    assert adapter.weights_path == path
    assert_same_weights(adapter.model, reference.state_dict())


def test_online_download_failure_is_robsig_error(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def fail(*args, **kwargs):
        raise ConnectionError("simulated: network is unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fail)
    with pytest.raises(RobsigError) as raised:
        oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    message = str(raised.value)
    assert "Could not download" in message
    assert "ConnectionError: simulated: network is unreachable" in message
    assert REPO in message


def test_online_download_skips_absent_file(env, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    reference = make_reference(seed=4)
    downloaded = tmp_path / "downloaded" / "open_clip_pytorch_model.bin"
    downloaded.parent.mkdir()
    torch.save(reference.state_dict(), downloaded)
    requested = []

    def download(repo_id, filename, **kwargs):
        requested.append((repo_id, filename, kwargs.get("etag_timeout")))
        if filename.endswith(".safetensors"):
            raise EntryNotFoundError("simulated: no such file in the repo")
        return str(downloaded)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    assert [name for _, name, _ in requested] == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    assert all(repo == REPO for repo, _, _ in requested)
    assert all(timeout is not None and timeout <= 10 for _, _, timeout in requested)
    assert_same_weights(adapter.model, reference.state_dict())


def test_hub_file_candidates_follow_open_clip():
    assert oc_adapter.hub_weights_candidates("org/name/") == (
        "org/name",
        ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"],
    )
    assert oc_adapter.hub_weights_candidates("org/name/pytorch_model.bin") == (
        "org/name",
        ["pytorch_model.safetensors", "pytorch_model.bin"],
    )
    assert oc_adapter.hub_weights_candidates("org/name/weights.safetensors") == ("org/name", ["weights.safetensors"])


# --- weights from a URL (open_clip's download folder) -------------------------------------------


@pytest.fixture()
def url_weights(env, tmp_path, monkeypatch):
    """A URL-only tag whose file name carries the first 8 hex digits of its SHA-256."""
    reference = make_reference(seed=6)
    staging = tmp_path / "staging.pt"
    torch.save(reference.state_dict(), staging)
    digest = hashlib.sha256(staging.read_bytes()).hexdigest()
    source = tmp_path / "server" / f"tiny-{digest[:8]}.pt"
    source.parent.mkdir()
    staging.rename(source)
    open_clip.pretrained._PRETRAINED[TINY_ARCH][URL_TAG] = tag_config(url=source.as_uri())
    return reference, source, tmp_path / "home" / ".cache" / "clip" / source.name


def test_url_tag_offline_missing(url_weights, no_network):
    _, _, target = url_weights
    with pytest.raises(RobsigError) as raised:
        oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{URL_TAG}")
    assert str(target) in str(raised.value)
    assert "downloads are disabled" in str(raised.value)


def test_url_tag_downloads_and_verifies(url_weights, monkeypatch):
    reference, _, target = url_weights
    monkeypatch.delenv("HF_HUB_OFFLINE")
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{URL_TAG}")
    assert target.is_file()
    assert adapter.weights_path == target
    assert_same_weights(adapter.model, reference.state_dict())


def test_url_tag_corrupt_cache_rejected(url_weights, no_network):
    _, _, target = url_weights
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the weights")
    with pytest.raises(RobsigError, match="Corrupt"):
        oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{URL_TAG}")


# --- local checkpoints -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_path_loads(env, tmp_path, suffix, no_network):
    reference = make_reference(seed=7)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors_torch.save_file(reference.state_dict(), str(path))
    else:
        torch.save(reference.state_dict(), path)
    adapter = oc_adapter.create_open_clip_adapter("", f"open_clip:{TINY_ARCH}:{path}")
    assert_same_weights(adapter.model, reference.state_dict())
    provenance = adapter.provenance()
    assert provenance.weights == str(path)
    assert provenance.config["pretrained_tag"] is None
    assert provenance.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_local_path_missing_named(env, tmp_path):
    missing = tmp_path / "nowhere" / "weights.safetensors"
    with pytest.raises(RobsigError, match="not found") as raised:
        oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{missing}")
    assert str(missing) in str(raised.value)


def test_local_path_wrong_architecture(env, tmp_path):
    state_dict = make_reference(seed=0).state_dict()
    state_dict.pop("visual.ln_post.weight")
    path = tmp_path / "broken.safetensors"
    safetensors_torch.save_file(state_dict, str(path))
    with pytest.raises(RobsigError, match="visual.ln_post.weight"):
        oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{path}")


# --- preprocessing, provenance, layers ---------------------------------------------------------


def test_preprocess_uses_tag_mean_std(tiny):
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    color = (200, 100, 50)
    tensor = adapter.preprocess(Image.new("RGB", (48, 40), color))
    assert tensor.shape == (3, 32, 32)
    for channel in range(3):
        expected = (color[channel] / 255 - TAG_MEAN[channel]) / TAG_STD[channel]
        torch.testing.assert_close(tensor[channel], torch.full((32, 32), expected), rtol=0, atol=1e-5)


def test_provenance_records_source(tiny):
    _, _, path = tiny
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:test")
    provenance = adapter.provenance()
    assert provenance.spec == f"{TINY_ARCH}:test"
    assert provenance.adapter == "open_clip"
    assert provenance.architecture == TINY_ARCH
    assert provenance.weights == str(path)
    assert provenance.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert provenance.config["pretrained_tag"] == TAG
    assert provenance.config["requested_tag"] == "test"
    assert provenance.config["hf_hub_repo"] == REPO
    assert provenance.config["hf_hub_file"] == "open_clip_model.safetensors"
    assert provenance.config["mean"] == pytest.approx(list(TAG_MEAN))
    assert provenance.config["std"] == pytest.approx(list(TAG_STD))
    assert provenance.config["head"]["classes"] == 1000
    assert provenance.config["head"]["templates"] == 80


def test_layers_are_vit_resblocks(tiny):
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    assert adapter.layers() == ["visual.transformer.resblocks.0", "visual.transformer.resblocks.1"]
    names = dict(adapter.model.named_modules())
    assert all(name in names for name in adapter.layers())


def test_layers_of_modified_resnet():
    model = open_clip.create_model("RN50", pretrained=None)
    assert oc_adapter.open_clip_layer_names(model) == [f"visual.layer{index}" for index in range(1, 5)]


def test_to_rejects_invalid_device(tiny):
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    assert adapter.to("cpu") is adapter
    with pytest.raises(RobsigError, match="Invalid device"):
        adapter.to("not-a-device")


# --- zero-shot head ------------------------------------------------------------------------------


def reference_head_row(model: torch.nn.Module, class_name: str) -> torch.Tensor:
    """Row of the zero-shot head computed from the definition, with open_clip's template functions."""
    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    texts = [template(class_name) for template in OPENAI_IMAGENET_TEMPLATES]
    with torch.no_grad():
        embeddings = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
    return F.normalize(embeddings.mean(dim=0), dim=0)


def test_imagenet_head_equals_definition(tiny, caplog):
    reference, _, _ = tiny
    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}")
    with caplog.at_level(logging.INFO, logger="robsig"):
        weight, bias = adapter.head()
    assert bias is None
    assert weight.shape == (1000, 16)
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(1000), rtol=0, atol=1e-5)
    for index in (0, 1, 417, 657, 744, 999):
        expected = reference_head_row(reference, IMAGENET_CLASSNAMES[index])
        torch.testing.assert_close(weight[index], expected, rtol=0, atol=1e-5)
    assert adapter.class_names == list(IMAGENET_CLASSNAMES)
    assert sum("building the zero-shot head" in record.getMessage() for record in caplog.records) == 1


def test_head_equals_open_clip_classifier(tiny):
    reference, _, _ = tiny
    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    classes = list(IMAGENET_CLASSNAMES[:20])
    templates = [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
    weight = oc_adapter.build_zero_shot_head(reference, tokenizer, classes, templates)
    expected = open_clip.build_zero_shot_classifier(reference, tokenizer, classes, OPENAI_IMAGENET_TEMPLATES).T
    torch.testing.assert_close(weight, expected, rtol=0, atol=1e-5)


def test_prefix_encoder_matches_encode_text(tiny):
    reference, _, _ = tiny
    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    # The last prompt is longer than the 16-token context, so the tokenizer cuts it.
    prompts = ["a cat.", "a photo of a dog.", "x", "a black and white photo of the great white shark in the sea."]
    tokens = tokenizer(prompts)
    assert int(tokens.argmax(dim=-1).max()) == 15
    encode = oc_adapter.prefix_text_encoder(reference)
    assert encode is not None
    with torch.no_grad():
        torch.testing.assert_close(encode(tokens[:3]), reference.encode_text(tokens[:3]), rtol=0, atol=1e-5)
        torch.testing.assert_close(encode(tokens), reference.encode_text(tokens), rtol=0, atol=1e-5)


def test_prefix_encoder_needs_argmax_pooling(tiny, monkeypatch):
    reference, _, _ = tiny
    monkeypatch.setattr(reference, "text_pool_type", "last")
    assert oc_adapter.prefix_text_encoder(reference) is None


def test_wrong_prefix_encoder_falls_back(tiny, monkeypatch, caplog):
    reference, _, _ = tiny
    tokenizer = open_clip.get_tokenizer(TINY_ARCH)
    monkeypatch.setattr(oc_adapter, "prefix_text_encoder", lambda model: (lambda tokens: model.encode_text(tokens) + 1.0))
    with caplog.at_level(logging.WARNING, logger="robsig"):
        weight = oc_adapter.build_zero_shot_head(reference, tokenizer, ["cat", "dog"], ["a {}."])
    assert any("prefix text encoder differs" in record.getMessage() for record in caplog.records)
    expected = reference_rows(reference, tokenizer, ["cat", "dog"], ["a {}."])
    torch.testing.assert_close(weight, expected, rtol=0, atol=1e-5)


def reference_rows(model, tokenizer, classes, templates):
    rows = []
    for name in classes:
        with torch.no_grad():
            embeddings = F.normalize(model.encode_text(tokenizer([t.format(name) for t in templates])), dim=-1)
        rows.append(F.normalize(embeddings.mean(0), dim=0))
    return torch.stack(rows)


def test_head_cache_hit_skips_rebuild(tiny, monkeypatch, caplog):
    reference, _, _ = tiny
    classes = ["cat", "dog", "traffic light"]
    templates = ["a photo of a {}.", "a drawing of the {}."]
    builds = []
    original = oc_adapter.build_zero_shot_head

    def counting_build(*args, **kwargs):
        builds.append(args[2])
        return original(*args, **kwargs)

    monkeypatch.setattr(oc_adapter, "build_zero_shot_head", counting_build)
    first = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}", class_names=classes, templates=templates)
    first_weight, _ = first.head()
    assert len(builds) == 1

    cache_folder = Path(first.provenance().config["head"]["cache_file"]).parent
    assert [path.suffix for path in cache_folder.iterdir()] == [".safetensors"]

    second = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}", class_names=classes, templates=templates)
    with caplog.at_level(logging.INFO, logger="robsig"):
        second_weight, _ = second.head()
    assert len(builds) == 1
    assert torch.equal(first_weight, second_weight)
    assert any("loaded the zero-shot head" in record.getMessage() for record in caplog.records)

    # Independent reference: normalised mean of normalised text embeddings.
    expected = reference_rows(reference, open_clip.get_tokenizer(TINY_ARCH), classes, templates)
    torch.testing.assert_close(second_weight, expected, rtol=0, atol=1e-5)

    # Other prompts are another cache entry.
    third = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}", class_names=classes, templates=templates[:1])
    third.head()
    assert len(builds) == 2
    assert len(list(cache_folder.iterdir())) == 2


def test_head_cache_for_other_weights_ignored(tiny, env, monkeypatch):
    classes, templates = ["cat", "dog"], ["a {}."]
    first = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}", class_names=classes, templates=templates)
    first.head()
    cache_file = Path(first.provenance().config["head"]["cache_file"])
    # Stale metadata: the file claims other weights, so it must be rebuilt, not trusted.
    safetensors_torch.save_file(
        {"weight": torch.zeros(2, 16)}, str(cache_file), metadata={"weights_sha256": "0" * 64, "prompt_sha256": "x"}
    )
    second = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}", class_names=classes, templates=templates)
    weight, _ = second.head()
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(2), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("class_names", "templates", "match"),
    [
        ([], ["a {}."], "class_names"),
        ("cat", ["a {}."], "class_names"),
        (["cat"], ["no placeholder"], "exactly one"),
        (["cat"], [], "templates"),
    ],
)
def test_invalid_prompts_rejected(tiny, class_names, templates, match):
    with pytest.raises(ValueError, match=match):
        oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{TAG}", class_names=class_names, templates=templates)


# --- shared weight helpers -------------------------------------------------------------------------


def test_hub_cache_dir_follows_environment(monkeypatch, tmp_path):
    from robsig_checks.adapters.weights import hf_hub_cache_dir

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hf_hub_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hf_hub_cache_dir() == tmp_path / "hf-home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    assert hf_hub_cache_dir() == tmp_path / "hub-cache"


@pytest.mark.parametrize(
    ("url", "prefix"),
    [
        (
            "https://example.org/clip/models/5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
            "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
        ),
        ("https://example.org/v0.2-weights/vit_b_16-laion400m_e31-00efa78f.pt", "00efa78f"),
        ("https://example.org/weights/tf_efficientnet_lite0-0aa007d2.pth", "0aa007d2"),
        ("https://example.org/weights/plain.pth", None),
        ("https://example.org/weights/resnet-18.pth", None),
    ],
)
def test_expected_sha256_from_url(url, prefix):
    from robsig_checks.adapters.weights import expected_sha256_prefix

    assert expected_sha256_prefix(url) == prefix


def test_sha256_memo_tracks_changes(env, tmp_path):
    from robsig_checks.adapters.weights import sha256_file

    path = tmp_path / "blob.bin"
    path.write_bytes(b"first")
    assert sha256_file(path) == hashlib.sha256(b"first").hexdigest()
    assert sha256_file(path) == hashlib.sha256(b"first").hexdigest()
    path.write_bytes(b"second version")
    assert sha256_file(path) == hashlib.sha256(b"second version").hexdigest()
    assert (tmp_path / "robsig" / "sha256-memo.json").is_file()


def test_head_build_reports_progress(tiny, no_network, monkeypatch):
    messages = []
    spec = f"{TINY_ARCH}:{TAG}"
    adapter = oc_adapter.create_open_clip_adapter(spec, spec)
    adapter.progress = messages.append
    monkeypatch.setattr(oc_adapter, "HEAD_PROMPTS_PER_BATCH", 1000)
    adapter.head()
    assert messages[0].startswith(f"robsig: building the zero-shot head of {spec} (80000 prompts")
    assert messages[1:] == [f"robsig: zero-shot head of {spec}: {done}/80000 prompts" for done in range(8000, 80000, 8000)]


def test_resblock_hooks_match_open_clip_intermediates(tiny, no_network):
    spec = f"{TINY_ARCH}:{TAG}"
    adapter = oc_adapter.create_open_clip_adapter(spec, spec)
    layers = adapter.layers()
    assert layers[0] == "visual.transformer.resblocks.0"
    images = torch.randn(3, 3, *adapter.model.visual.image_size, generator=torch.Generator().manual_seed(2))

    h, activations = adapter.forward_with_layers(images, layers, token="cls")
    with torch.no_grad():
        reference = adapter.model.visual.forward_intermediates(images, intermediates_only=True, output_fmt="NLC",
                                                               output_extra_tokens=True)
    for name, prefix in zip(layers, reference["image_intermediates_prefix"]):
        assert torch.allclose(activations[name], prefix[:, 0], atol=1e-5), name
    assert torch.allclose(h, adapter.representation(images), atol=1e-6)


def test_finetuned_checkpoint_uses_its_linear_head(tiny, no_network, tmp_path):
    from safetensors.torch import save_file

    reference, state_dict, _ = tiny
    image_tower = {key: value for key, value in state_dict.items() if key.startswith("visual.")}
    embed_dim = reference.visual.output_dim
    head_weight = torch.randn(10, embed_dim, generator=torch.Generator().manual_seed(3))
    head_bias = torch.randn(10, generator=torch.Generator().manual_seed(4))
    path = tmp_path / "finetuned.safetensors"
    save_file({**image_tower, "classification_head.weight": head_weight, "classification_head.bias": head_bias},
              str(path))

    adapter = oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{path}")
    weight, bias = adapter.head()
    assert torch.equal(weight, head_weight)
    assert torch.equal(bias, head_bias)
    assert len(adapter.class_names) == 10
    assert adapter.provenance().config["head"] == {"kind": "checkpoint", "classes": 10}
    images = torch.randn(2, 3, *reference.visual.image_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(adapter.representation(images), reference.encode_image(images), atol=1e-6)


def test_finetuned_checkpoint_lists_key_mismatch(tiny, no_network, tmp_path):
    from safetensors.torch import save_file

    reference, state_dict, _ = tiny
    tower = {key: value for key, value in state_dict.items() if key.startswith("visual.")}
    tower.pop("visual.ln_post.weight")
    tower["visual.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.safetensors"
    save_file({**tower, "classification_head.weight": torch.zeros(10, reference.visual.output_dim)}, str(path))
    with pytest.raises(RobsigError, match=r"1 missing image-tower keys \(visual.ln_post.weight\), 1 unexpected keys "
                                          r"\(visual.extra.weight\)"):
        oc_adapter.create_open_clip_adapter("", f"{TINY_ARCH}:{path}")
