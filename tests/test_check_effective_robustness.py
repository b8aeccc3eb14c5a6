"""The effective_robustness check and ER in the pruning check, end to end on generated release layouts.

The engineered model reads the class it predicts from the colour of the image: red + 256 * green is
the class index c, and ``h = (cos 2 pi c / 1000, sin 2 pi c / 1000)``. Row k of the head is the same
vector for class k. So the arg-max over all logits is c, and the arg-max over a subset is the subset
class nearest to c on the circle.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy import special

# Inline pytester runs cannot import torch for the first time, so everything that imports it is loaded here.
import torch  # noqa: F401
import robsig_checks.checks.effective_robustness  # noqa: F401
import robsig_checks.datasets.folder  # noqa: F401
import robsig_checks.datasets.imagenet_variants  # noqa: F401
import robsig_checks.extraction  # noqa: F401
import robsig_checks.metrics  # noqa: F401
import robsig_checks.metrics.effective_robustness  # noqa: F401
from robsig_checks.datasets.imagenet import imagenet_wnids

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

WNIDS = imagenet_wnids()

CONFTEST = '''
import math
import numpy as np
import torch

from robsig_checks.adapters.base import ModelAdapter, Provenance
from robsig_checks.hookspecs import hookimpl


class ColourModel(ModelAdapter):
    def __init__(self, spec):
        self.spec = spec
        self.class_names = [str(index) for index in range(1000)]

    @property
    def preprocess(self):
        def transform(image):
            red, green, _ = image.convert("RGB").getpixel((0, 0))
            return torch.tensor([[[float(red)]], [[float(green)]], [[0.0]]], dtype=torch.float64)
        return transform

    def representation(self, images):
        classes = images[:, 0, 0, 0] + 256 * images[:, 1, 0, 0]
        angles = 2 * math.pi * classes / 1000
        return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)

    def head(self):
        angles = 2 * math.pi * torch.arange(1000, dtype=torch.float64) / 1000
        return torch.stack([torch.cos(angles), torch.sin(angles)], dim=1), None

    def provenance(self):
        return Provenance(self.spec, "colour", "circle head", "none", None)


@hookimpl
def robsig_model_adapters():
    return {"colour": lambda rest, spec: ColourModel(spec)}
'''


def save(path, predicted_class: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (predicted_class % 256, predicted_class // 256, 0)).save(path, format="PNG")


def build_root(root, with_sketch: bool = True) -> None:
    """Write each layout; the comments give the hand-computed accuracy of the colour model."""
    # ImageNet, wnid folders: class 0 predicted 0, 0, 5 -> 2/3.
    for index, predicted in enumerate([0, 0, 5]):
        save(root / "imagenet" / "val" / WNIDS[0] / f"ILSVRC2012_val_{index}.png", predicted)
    # V2: folder "2" predicted 2, 2; folder "10" predicted 10, 2 -> 3/4 (a string sort would label "10" as 0).
    for folder, predictions in (("2", [2, 2]), ("10", [10, 2])):
        for index, predicted in enumerate(predictions):
            save(root / "imagenet-v2" / folder / f"{index}.png", predicted)
    # R: class 13 is in ImageNet-R, 14 to 21 are not, 22 is. Predicting 14 gives 13 once masked -> 2/2.
    for index, predicted in enumerate([13, 14]):
        save(root / "imagenet-r" / WNIDS[13] / f"{index}.png", predicted)
    save(root / "imagenet-r" / WNIDS[0] / "foreign.png", 0)  # class 0 is not in ImageNet-R: skipped
    # Sketch: class 5 predicted 5, 5, 7 -> 2/3; class 6 is an empty folder.
    if with_sketch:
        for index, predicted in enumerate([5, 5, 7]):
            save(root / "imagenet-sketch" / WNIDS[5] / f"sketch_{index}.png", predicted)
        (root / "imagenet-sketch" / WNIDS[6]).mkdir()
    # ObjectNet: alarm_clock maps to 409 (analog) and 530 (digital); banana is 954.
    # Predicted 409, 530, 954 -> 2/3; air_freshener has no ImageNet class: not scored.
    for index, predicted in enumerate([409, 530, 954]):
        save(root / "objectnet" / "alarm_clock" / f"{index}.png", predicted)
    save(root / "objectnet" / "air_freshener" / "0.png", 409)
    # A: class 6 predicted 6 and 11 (another ImageNet-A class) -> 1/2, plus two images that cannot be decoded.
    for index, predicted in enumerate([6, 11]):
        save(root / "imagenet-a" / WNIDS[6] / f"{index}.png", predicted)
    (root / "imagenet-a" / WNIDS[6] / "unreadable.jpg").write_bytes(b"not an image")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (6, 0, 0)).save(buffer, format="JPEG")
    (root / "imagenet-a" / WNIDS[6] / "truncated.jpg").write_bytes(buffer.getvalue()[:300])


EXPECTED = {"imagenet": 2 / 3, "imagenet-v2": 3 / 4, "imagenet-r": 1.0, "imagenet-sketch": 2 / 3,
            "objectnet": 2 / 3, "imagenet-a": 1 / 2}


@pytest.fixture
def project(pytester):
    pytester.makeconftest(CONFTEST)
    return pytester


def run_shifts(project, *args):
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-suite", "shifts", "--robsig-model", "colour",
                               "--robsig-data-root", str(project.path / "data"),
                               "--robsig-report", "report.json", *args)
    report = json.loads((project.path / "report.json").read_text())
    return result, {item["id"]: item for item in report["results"]}, report


def outcomes_by_data(result):
    return {outcome["dataset"]: outcome for outcome in result["outcomes"]}


def test_accuracies_and_er_by_hand(project):
    build_root(project.path / "data")
    result, results, report = run_shifts(project, "--robsig-set", "er.min_er=-1")
    er = outcomes_by_data(results["er"])
    for variant, accuracy in EXPECTED.items():
        assert er[variant]["value"] == pytest.approx(accuracy), variant
    assert er["imagenet-a"]["n_images"] == 2
    assert er["objectnet"]["metrics"]["n_unscored"] == 1
    assert er["imagenet-r"]["details"]["protocol"]["foreign_folders"] == [WNIDS[0]]
    assert er["imagenet-sketch"]["details"]["protocol"]["empty_classes"] == [WNIDS[6]]
    assert report["data"]["colour"]["imagenet-a"]["n_skipped"] == 2
    assert "2 unreadable images skipped" in er["imagenet-a"]["explanation"]
    assert "preprocessing" in er["imagenet"]["details"]["protocol"]

    shifts = [EXPECTED[name] for name in ("imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")]
    expected = np.mean(shifts) - special.expit(0.76 * special.logit(2 / 3) - 1.49)
    combined = er["imagenet+shifts"]
    assert combined["value"] == pytest.approx(expected, rel=1e-12)
    assert combined["passed"] is True
    assert results["er"]["verdict"] == "pass"


def test_er_gate_fails_below_minimum(project):
    build_root(project.path / "data")
    result, results, _ = run_shifts(project, "--robsig-set", "er.min_er=0.5")
    assert results["er"]["verdict"] == "fail"
    assert outcomes_by_data(results["er"])["imagenet+shifts"]["passed"] is False


def test_missing_shift_not_computed(project):
    build_root(project.path / "data", with_sketch=False)
    _, results, _ = run_shifts(project)
    combined = outcomes_by_data(results["er"])["imagenet+shifts"]
    assert combined["value"] is None
    assert combined["metrics"]["missing"] == ["imagenet-sketch"]
    assert "ER not computed" in combined["explanation"]
    assert "imagenet-sketch" in results["er"]["missing_data"]


def test_named_subset_computes_er(project):
    build_root(project.path / "data", with_sketch=False)
    _, results, _ = run_shifts(project, "--robsig-set", "er.shifts=[imagenet-v2, imagenet-r]",
                               "--robsig-set", "er.min_er=null")
    combined = outcomes_by_data(results["er"])["imagenet+shifts"]
    expected = np.mean([3 / 4, 1.0]) - special.expit(0.76 * special.logit(2 / 3) - 1.49)
    assert combined["value"] == pytest.approx(expected, rel=1e-12)
    assert combined["passed"] is None


def test_pruning_reports_er_curve(project):
    build_root(project.path / "data")
    _, results, _ = run_shifts(project)
    pruning = outcomes_by_data(results["pruning"])
    curve = pruning["imagenet+shifts"]["details"]["er_curve"]
    names = ("imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")
    for index, fraction in enumerate(curve["fractions"]):
        accuracy = {name: pruning[name]["details"]["protocol_curve"]["accuracy"][index] for name in EXPECTED}
        if 0 < accuracy["imagenet"] < 1:
            expected = np.mean([accuracy[name] for name in names]) - special.expit(
                0.76 * special.logit(accuracy["imagenet"]) - 1.49)
            assert curve["effective_robustness"][index] == pytest.approx(expected, rel=1e-12), fraction
        else:
            assert curve["effective_robustness"][index] is None, fraction
    # At fraction 0 the head is whole, so the accuracies are the hand-computed ones.
    shifts = [EXPECTED[name] for name in names]
    assert curve["effective_robustness"][0] == pytest.approx(
        np.mean(shifts) - special.expit(0.76 * special.logit(2 / 3) - 1.49), rel=1e-9)
    assert pruning["imagenet-v2"]["metrics"]["accuracy"] == pytest.approx(3 / 4)
    assert pruning["objectnet"]["details"]["protocol"]["variant"] == "objectnet"


def test_pruning_without_shifts_unchanged(project):
    build_root(project.path / "data")
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-model", "colour", "--robsig-report", "r.json",
                               "--robsig-data", f"imagenet={project.path / 'data' / 'imagenet' / 'val'}")
    report = json.loads((project.path / "r.json").read_text())
    pruning = next(item for item in report["results"] if item["id"] == "pruning")
    # The default suite's imagenet is a plain folder: no protocol curve and no ER row are added.
    assert [outcome["dataset"] for outcome in pruning["outcomes"]] == ["photos", "imagenet"]
    assert "protocol_curve" not in pruning["outcomes"][1]["details"]
    assert pruning["outcomes"][1]["metrics"]["accuracy"] == pytest.approx(2 / 3)


def test_data_root_from_ini_and_data_option(project):
    build_root(project.path / "data")
    project.makeini(f"[pytest]\nrobsig_data_root = {project.path / 'data'}\n")
    moved = project.path / "v2-copy"
    (project.path / "data" / "imagenet-v2").rename(moved)
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-suite", "shifts", "--robsig-model", "colour",
                               "--robsig-report", "r.json", "--robsig-set", "er.min_er=-1",
                               "--robsig-data", f"imagenet-v2={moved}")
    report = json.loads((project.path / "r.json").read_text())
    er = outcomes_by_data(next(item for item in report["results"] if item["id"] == "er"))
    assert er["imagenet-v2"]["value"] == pytest.approx(3 / 4)
    assert er["imagenet+shifts"]["value"] is not None
    result.assert_outcomes(passed=1, failed=1)


def test_data_root_must_be_a_folder(project):
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-suite", "shifts", "--robsig-model", "colour",
                               "--robsig-data-root", str(project.path / "nowhere"))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--robsig-data-root*nowhere: not a folder*"])


def test_head_without_imagenet_classes_is_an_error(project):
    project.makeconftest(CONFTEST.replace("torch.arange(1000", "torch.arange(10").replace(
        "range(1000)", "range(10)"))
    build_root(project.path / "data")
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-suite", "shifts", "--robsig-model", "colour",
                               "--robsig-data-root", str(project.path / "data"))
    result.stdout.fnmatch_lines(["*has a head of 10 classes. Use a model with an ImageNet-1k head*"])
