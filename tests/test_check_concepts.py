"""The unique_concepts check end to end: an engineered model on a generated Broden folder, through pytest."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

# Inline pytester runs cannot import torch a second time, so every torch-dependent module is imported here.
import torch  # noqa: F401
import robsig_checks.checks.concepts  # noqa: F401
import robsig_checks.datasets.broden  # noqa: F401
import robsig_checks.extraction  # noqa: F401
import robsig_checks.metrics  # noqa: F401
import robsig_checks.metrics.concepts  # noqa: F401
from broden_layout import LOW, HIGH, N_PROBE_IMAGES, probe_images, write_broden
from robsig_checks.checks.concepts import UniqueConcepts
from robsig_checks.errors import RobsigError
from robsig_checks.metrics import head_svd

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SIGMA = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
CONSTANT = 0.1

CONFTEST = f'''
import numpy as np
import torch

from robsig_checks.adapters.base import ModelAdapter, Provenance
from robsig_checks.hookspecs import hookimpl


class ColourModel(ModelAdapter):
    """h = (mean R, mean G, mean B, {CONSTANT}, {CONSTANT}, {CONSTANT}); the head is diagonal."""

    def __init__(self, spec):
        self.spec = spec
        self.class_names = [str(index) for index in range(6)]

    @property
    def preprocess(self):
        def transform(image):
            array = np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float32) / 255.0
            return torch.from_numpy(array).permute(2, 0, 1)
        return transform

    def representation(self, images):
        with open("forward-calls.txt", "a") as log:
            log.write(f"{{images.shape[0]}}\\n")
        colour = images.mean(dim=(2, 3))
        return torch.cat([colour, torch.full((images.shape[0], 3), {CONSTANT})], dim=1)

    def head(self):
        return torch.diag(torch.tensor({SIGMA!r})), None

    def provenance(self):
        return Provenance(self.spec, "engineered", "diagonal", "none", None)


@hookimpl
def robsig_model_adapters():
    return {{"colours": lambda rest, spec: ColourModel(spec)}}
'''

SUITE = """\
name: concepts
models: [colours]
data:
  broden: {kind: broden, path: broden}
checks:
  - id: concepts
    check: unique_concepts
    data: [broden]
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makefile(".yaml", concepts=SUITE)
    write_broden(pytester.path / "broden")
    return pytester


def run_report(project: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-report", "report.json", *args)
    return result, json.loads((project.path / "report.json").read_text())


def result_of(report: dict, check_id: str = "concepts") -> dict:
    return next(result for result in report["results"] if result["id"] == check_id)


def expected_most_privileged_direction() -> int:
    """Importance sigma_i / sum sigma * mean |cos(e_i, h)| on the 40 probe images and the 2 grey ones."""
    rows = [[HIGH if bit else LOW for bit in image["bits"]] for image in probe_images()] + [[120] * 3] * 2
    H = np.array([[value / 255.0 for value in row] + [CONSTANT] * 3 for row in rows])
    cosines = np.abs(H) / np.linalg.norm(H, axis=1, keepdims=True)
    sigma = np.array(SIGMA)
    return int(np.argmax(sigma / sigma.sum() * cosines.mean(axis=0)))


def test_planted_concepts_counted_exactly(project):
    result, report = run_report(project, "concepts.yaml")
    result.assert_outcomes(passed=1)
    check = result_of(report)
    assert check["verdict"] == "info"
    outcome = check["outcomes"][0]
    assert outcome["metric"] == "n_unique"
    assert outcome["value"] == 3
    assert outcome["passed"] is None
    assert outcome["threshold"] == ""
    metrics = outcome["metrics"]
    assert metrics["n_unique"] == 3
    # Three (concept, direction) pairs are encoded among 6 directions.
    assert metrics["polysemanticity"] == pytest.approx(0.5)
    assert metrics["n_concepts_scored"] == 4
    assert metrics["n_concepts_excluded"] == {"no positives": 2, "fewer positives than min_positives": 1,
                                              "fewer negatives than min_positives": 0}
    assert metrics["n_images_probed"] == N_PROBE_IMAGES
    assert metrics["seed"] == 0
    assert metrics["min_positives"] == 10
    assert metrics["balanced_set_sizes"] == {"min": 20, "max": 20, "total": 80}


def test_concept_ap_values_and_signs(project):
    _, report = run_report(project, "concepts.yaml")
    details = result_of(report)["outcomes"][0]["details"]
    concepts = {item["number"]: item for item in details["concepts"]}
    assert concepts[1]["best_ap"] == 1.0
    assert concepts[1]["direction"] == 0
    assert concepts[258]["best_ap"] == 1.0
    assert concepts[258]["direction"] == 1
    assert concepts[3]["best_ap"] == 1.0
    assert concepts[3]["direction"] == 2
    # A concept present at high values of h_i reads with the sign of v_i's component i; beach (low B) with the opposite.
    Vh = head_svd(np.diag(SIGMA)).Vh
    assert concepts[1]["sign"] == np.sign(Vh[0, 0])
    assert concepts[258]["sign"] == np.sign(Vh[1, 1])
    assert concepts[3]["sign"] == -np.sign(Vh[2, 2])
    assert concepts[4]["best_ap"] == pytest.approx(0.5, abs=1e-12)
    assert concepts[4]["encoded"] is False
    assert details["concepts_per_direction"] == [1, 1, 1, 0, 0, 0]
    excluded = {item["number"]: item["reason"] for item in details["excluded"]}
    assert excluded == {5: "fewer positives than min_positives", 6: "no positives", 7: "no positives"}


def test_top_concepts_and_categories(project):
    _, report = run_report(project, "concepts.yaml")
    outcome = result_of(report)["outcomes"][0]
    privileged = outcome["details"]["most_privileged_direction"]
    direction = expected_most_privileged_direction()
    assert privileged["direction"] == direction
    expected_name = {0: "red-c", 1: "grass", 2: "beach"}[direction]
    top = privileged["top_concepts"][0]
    assert (top["name"], top["ap"]) == (expected_name, 1.0)
    assert len(privileged["top_concepts"]) == 4
    assert outcome["metrics"]["per_category"] == {
        "color": {"scored": 1, "encoded": 1},
        "material": {"scored": 1, "encoded": 0},
        "object": {"scored": 1, "encoded": 1},
        "scene": {"scored": 1, "encoded": 1},
    }


def test_bad_entries_counted_run_continues(project):
    result, report = run_report(project, "concepts.yaml")
    result.assert_outcomes(passed=1)
    outcome = result_of(report)["outcomes"][0]
    assert outcome["metrics"]["data_problems"] == {
        "corrupt_masks": 1, "duplicate_label_names": 2, "missing_images": 1, "missing_masks": 1, "unknown_labels": 1,
    }
    assert outcome["metrics"]["n_images_without_concepts"] == 2
    assert "data problems: 6" in outcome["explanation"]
    assert report["data"]["colours"]["broden"]["n_read"] == N_PROBE_IMAGES + 2


def test_min_unique_makes_it_a_gate(project):
    result, report = run_report(project, "concepts.yaml", "--robsig-set", "concepts.min_unique=4")
    result.assert_outcomes(failed=1)
    outcome = result_of(report)["outcomes"][0]
    assert outcome["passed"] is False
    assert outcome["threshold"] == ">= 4"
    result, report = run_report(project, "concepts.yaml", "--robsig-set", "concepts.min_unique=3")
    result.assert_outcomes(passed=1)
    assert result_of(report)["verdict"] == "pass"


def test_higher_threshold_and_seed_reported(project):
    _, report = run_report(project, "concepts.yaml", "--robsig-set", "concepts.ap_threshold=0.4",
                           "--robsig-set", "concepts.seed=7")
    metrics = result_of(report)["outcomes"][0]["metrics"]
    # At 0.4 every (concept, direction) pair counts, AP >= 0.5 everywhere with max(AP(s), AP(-s)).
    assert metrics["n_unique"] == 4
    assert metrics["polysemanticity"] == pytest.approx(4.0)
    assert metrics["seed"] == 7


def test_shares_forward_pass_with_other_checks(project):
    suite = SUITE + "  - id: kurtosis\n    check: activation_kurtosis\n    params: {min: 1.0}\n"
    project.makefile(".yaml", shared=suite)
    result = project.runpytest("-p", "no:cacheprovider", "shared.yaml", "--robsig-batch-size", "64")
    result.assert_outcomes(passed=2)
    calls = (project.path / "forward-calls.txt").read_text().split()
    assert calls == [str(N_PROBE_IMAGES + 2)]


def test_default_suite_skips_without_broden(project):
    result, report = run_report(project, "--robsig-model", "colours", "--robsig-limit", "4")
    concepts = result_of(report)
    assert concepts["verdict"] == "skip"
    assert concepts["missing_data"] == ["broden"]
    assert "--robsig-data broden=PATH" in concepts["message"]


def test_default_suite_runs_with_broden_path(project):
    result, report = run_report(project, "--robsig-model", "colours", "--robsig-data", "broden=broden", "-k", "concepts")
    result.assert_outcomes(passed=1)
    assert result_of(report)["outcomes"][0]["value"] == 3


def test_missing_broden_file_is_error_row(project):
    (project.path / "broden" / "label.csv").unlink()
    result, report = run_report(project, "concepts.yaml")
    result.assert_outcomes(failed=1)
    assert result_of(report)["verdict"] == "error"
    result.stdout.fnmatch_lines(["*label.csv' not found. Expected the NetDissect Broden layout*"])


def test_check_on_data_without_concepts_explains(project):
    shutil.copytree(project.path / "broden" / "images" / "test", project.path / "plain")
    project.makefile(".yaml", plain=SUITE.replace("broden: {kind: broden, path: broden}",
                                                  "broden: {kind: folder, path: plain}"))
    result, report = run_report(project, "plain.yaml")
    result.assert_outcomes(passed=1)
    outcome = result_of(report)["outcomes"][0]
    assert outcome["passed"] is None
    assert outcome["value"] is None
    assert "needs a data set with concept labels" in outcome["explanation"]


def test_bad_parameter_rejected():
    with pytest.raises(RobsigError, match="min_positives"):
        UniqueConcepts({"min_positives": 0})
