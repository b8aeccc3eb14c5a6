"""cka_last_layer_drop end to end: a model against a copy of itself and against a copy with a new last block."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm  # noqa: F401  (imported before inline pytester runs, see test_plugin.py)
import torch
from PIL import Image

import robsig_checks.adapters.timm  # noqa: F401  (imported before inline pytester runs, see test_plugin.py)
import robsig_checks.extraction  # noqa: F401
import robsig_checks.metrics  # noqa: F401
from robsig_checks.metrics.cka import linear_cka

TINY_VIT = dict(img_size=32, patch_size=8, depth=4, embed_dim=32, num_heads=2, num_classes=10)

BUILD = f'''
import timm
import torch

TINY_VIT = {TINY_VIT!r}


def build(variant):
    """A tiny ViT; "perturbed" gets a new last block whose residual branches are scaled up tenfold."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY_VIT)
    if variant == "perturbed":
        torch.manual_seed(1)
        fresh = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY_VIT).blocks[-1]
        with torch.no_grad():
            fresh.attn.proj.weight.mul_(10)
            fresh.mlp.fc2.weight.mul_(10)
        model.blocks[-1].load_state_dict(fresh.state_dict())
    model.pretrained_cfg = {{**model.pretrained_cfg, "input_size": (3, 32, 32), "crop_pct": 1.0}}
    return model.eval()
'''

CONFTEST = BUILD + '''
from robsig_checks.adapters.timm import TimmAdapter
from robsig_checks.hookspecs import hookimpl


@hookimpl
def robsig_model_adapters():
    return {"tinyvit": lambda rest, spec: TimmAdapter(build(rest), spec, __file__, check_head=False)}
'''

SUITE = """\
name: cka
data:
  noise: {kind: folder, path: noise}
checks:
  - id: cka
    check: cka_last_layer_drop
    reference: tinyvit:base
"""


@pytest.fixture
def project(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", cka=SUITE)
    folder = pytester.path / "noise"
    folder.mkdir()
    generator = np.random.default_rng(0)
    for index in range(48):
        pixels = generator.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{index:02d}.png")
    return pytester


def representations(variant: str, folder) -> np.ndarray:
    """h of every image of the folder, computed without robsig: the reference value for the last layer."""
    namespace: dict = {}
    exec(BUILD, namespace)
    model = namespace["build"](variant)
    mean = std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)  # timm's default for ViTs without weights
    images = torch.stack([torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)
                          .permute(2, 0, 1) for path in sorted(folder.iterdir())])
    with torch.no_grad():
        return model.forward_head(model.forward_features((images - mean) / std), pre_logits=True).double().numpy()


def run(project, *args):
    result = project.runpytest("-p", "no:cacheprovider", "cka.yaml", "--robsig-report", "report.json",
                               "--robsig-batch-size", "16", *args)
    report = json.loads((project.path / "report.json").read_text())
    return result, {r["model"]: r for r in report["results"]}


def test_new_last_block_drops_only_last_layers(project):
    result, results = run(project, "--robsig-model", "tinyvit:perturbed", "--robsig-model", "tinyvit:base")
    result.assert_outcomes(passed=1, failed=1)

    same = results["tinyvit:base"]["outcomes"][0]
    assert same["details"]["layers"] == ["blocks.0", "blocks.1", "blocks.2", "blocks.3", "representation"]
    assert same["details"]["cka"] == pytest.approx([1.0] * 5, abs=1e-9)
    assert same["metrics"]["drop"] == pytest.approx(0.0, abs=1e-9)

    changed = results["tinyvit:perturbed"]["outcomes"][0]
    cka = changed["details"]["cka"]
    assert cka[:3] == pytest.approx([1.0] * 3, abs=1e-9)
    expected_last = linear_cka(representations("perturbed", project.path / "noise"),
                               representations("base", project.path / "noise"))
    assert cka[-1] == pytest.approx(expected_last, rel=1e-6)
    assert cka[-1] < 0.6
    assert changed["metrics"]["drop"] == pytest.approx(np.mean(cka[:-1]) - cka[-1], rel=1e-9)
    assert results["tinyvit:perturbed"]["verdict"] == "fail"
    result.stdout.fnmatch_lines(["*last-layer CKA 0.* < min 0.6*against tinyvit:base on noise, 48 images*"])


def test_minibatch_estimator_agrees_on_identity(project):
    result, results = run(project, "--robsig-model", "tinyvit:base", "--robsig-set", "cka.estimator=minibatch")
    result.assert_outcomes(passed=1)
    assert results["tinyvit:base"]["outcomes"][0]["details"]["cka"] == pytest.approx([1.0] * 5, abs=1e-9)


def test_reference_from_command_line(project):
    (project.path / "cka.yaml").write_text(SUITE.replace("    reference: tinyvit:base\n", ""))
    result, results = run(project, "--robsig-model", "tinyvit:base", "--robsig-reference", "tinyvit:perturbed")
    result.assert_outcomes(failed=1)
    assert results["tinyvit:base"]["outcomes"][0]["details"]["reference"] == "tinyvit:perturbed"


def test_missing_reference_explains_fix(project):
    (project.path / "cka.yaml").write_text(SUITE.replace("    reference: tinyvit:base\n", ""))
    result = project.runpytest("-p", "no:cacheprovider", "cka.yaml", "--robsig-model", "tinyvit:base")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*needs a reference model: add `reference: SPEC` to the check in the suite or pass "
                                 "--robsig-reference SPEC*"])


def test_unknown_layer_lists_available(project):
    (project.path / "cka.yaml").write_text(SUITE + "    params: {layers: [blocks.9]}\n")
    result = project.runpytest("-p", "no:cacheprovider", "cka.yaml", "--robsig-model", "tinyvit:base")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Layer(s) 'blocks.9' not found in TimmAdapter; available layers: blocks.0, "
                                 "blocks.1, blocks.2, blocks.3*"])


def test_broken_reference_leaves_other_checks_running(project):
    (project.path / "cka.yaml").write_text(SUITE.replace("tinyvit:base", "nosuch:model") + "  - id: kurtosis\n"
                                           "    check: activation_kurtosis\n    params: {min: 0}\n")
    result = project.runpytest("-p", "no:cacheprovider", "cka.yaml", "--robsig-model", "tinyvit:base")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*cka_last_layer_drop on tinyvit:base: Unknown open_clip architecture 'nosuch'*"])
