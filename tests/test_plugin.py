"""The pytest plugin end to end through pytester: collection, ids, verdicts, reports and bad input."""

from __future__ import annotations

import io
import json
import textwrap

import numpy as np
import pytest
from PIL import Image
from scipy import stats

# Inline pytester runs drop modules first imported inside them; torch cannot be imported twice in one
# process, so everything that imports torch is imported here, before any inline run.
import torch  # noqa: F401
import robsig_checks.datasets.folder  # noqa: F401
import robsig_checks.extraction  # noqa: F401
import robsig_checks.metrics  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

D = 16
# h of every image: an outlier at component 0, then evenly spaced values.
BASE = np.concatenate([[10.0], np.linspace(-1.0, 1.0, D - 1)]).astype(np.float32).astype(np.float64)
# Head singular values, largest on the outlier component ("strong"), or smallest there ("weak").
SIGMA_STRONG = 2.0 - np.arange(D) / D
SIGMA_WEAK = 1.0 + np.arange(D) / D

ENGINEERED_CONFTEST = f'''
import numpy as np
import torch

from robsig_checks.adapters.base import ModelAdapter, Provenance
from robsig_checks.errors import RobsigError
from robsig_checks.hookspecs import hookimpl

D = {D}
BASE = torch.tensor({BASE.tolist()!r}, dtype=torch.float64)
SIGMA = {{"strong": {SIGMA_STRONG.tolist()!r}, "weak": {SIGMA_WEAK.tolist()!r}}}
CALLS = []


class EngineeredModel(ModelAdapter):
    """Every image maps to BASE; the head is diagonal, so its singular vectors are the axes."""

    def __init__(self, spec, sigma, nan=False):
        self.spec = spec
        self.sigma = torch.tensor(sigma, dtype=torch.float64)
        self.nan = nan
        self.class_names = [str(index) for index in range(D)]

    @property
    def preprocess(self):
        def transform(image):
            array = np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float32) / 255.0
            return torch.from_numpy(array).permute(2, 0, 1)
        return transform

    def representation(self, images):
        CALLS.append(images.shape[0])
        with open("forward-calls.txt", "a") as log:
            log.write(f"{{self.spec}} {{images.shape[0]}}\\n")
        h = BASE.repeat(images.shape[0], 1).float()
        if self.nan:
            h[0, 3] = float("nan")
        return h

    def head(self):
        return torch.diag(self.sigma).float(), None

    def provenance(self):
        return Provenance(self.spec, "engineered", "diagonal", "none", None)


class NoDeviceModel(EngineeredModel):
    def to(self, device):
        raise RuntimeError("Found no NVIDIA driver on your system.\\nMore lines of detail")


class CrashingModel(EngineeredModel):
    def representation(self, images):
        raise KeyError("bug inside the adapter")


def broken(rest, spec):
    raise RobsigError(f"weights for {{spec}} not found: expected /nowhere/weights.pt; put the file there")


@hookimpl
def robsig_model_adapters():
    return {{
        "engineered": lambda rest, spec: EngineeredModel(spec, SIGMA["strong"]),
        "weakhead": lambda rest, spec: EngineeredModel(spec, SIGMA["weak"]),
        "nanmodel": lambda rest, spec: EngineeredModel(spec, SIGMA["strong"], nan=True),
        "broken": broken,
        "nodevice": lambda rest, spec: NoDeviceModel(spec, SIGMA["strong"]),
        "crashing": lambda rest, spec: CrashingModel(spec, SIGMA["strong"]),
    }}
'''

SUITE = """\
name: sig
models: [engineered]
data:
  images: {kind: folder, path: images}
checks:
  - id: kurtosis
    check: activation_kurtosis
    params: {min: 3.0}
  - id: tail
    check: privileged_direction_tail
    params: {min_tail: 1.5}
  - id: pruning
    check: pruning_tolerance
"""

WNID_CLASS_0 = "n01440764"
WNID_CLASS_1 = "n01443537"


def expected_kurtosis() -> float:
    return float(stats.kurtosis(BASE, fisher=False, bias=True))


def expected_tail(sigma: np.ndarray) -> float:
    importance = sigma / sigma.sum() * np.abs(BASE) / np.linalg.norm(BASE)
    return float(importance.max() / importance.mean())



def write_images(folder, truncated: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{WNID_CLASS_0}_{index}.png" for index in range(4)] + [f"{WNID_CLASS_1}_{index}.png" for index in range(2)]
    for index, name in enumerate(names):
        Image.new("RGB", (8, 8), (index * 30, 10, 200)).save(folder / name)
    if truncated:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="JPEG")
        (folder / f"{WNID_CLASS_0}_cut.jpg").write_bytes(buffer.getvalue()[:200])


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(ENGINEERED_CONFTEST)
    pytester.makefile(".yaml", sig=SUITE)
    write_images(pytester.path / "images")
    return pytester


def run_json(project: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-report", "report.json", *args)
    report = json.loads((project.path / "report.json").read_text())
    return result, report


def by_id(report: dict) -> dict[str, dict]:
    return {f"{r['id']}[{r['model']}]": r for r in report["results"]}


def test_suite_items_have_stable_ids(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--collect-only", "-q")
    lines = result.stdout.lines
    assert "sig.yaml::kurtosis[engineered]" in lines
    assert "sig.yaml::tail[engineered]" in lines
    assert "sig.yaml::pruning[engineered]" in lines


def test_passing_suite_reports_measured_values(project):
    result, report = run_json(project, "sig.yaml")
    result.assert_outcomes(passed=3)

    results = by_id(report)
    kurtosis = results["kurtosis[engineered]"]["outcomes"][0]
    assert kurtosis["value"] == pytest.approx(expected_kurtosis(), rel=1e-9)
    assert kurtosis["n_images"] == 6
    tail = results["tail[engineered]"]["outcomes"][0]
    assert tail["value"] == pytest.approx(expected_tail(SIGMA_STRONG), rel=1e-9)
    pruning = results["pruning[engineered]"]["outcomes"][0]
    assert pruning["metrics"]["accuracy"] == pytest.approx(4 / 6)
    assert pruning["metrics"]["accuracy_drop"] == pytest.approx(0.0)
    assert pruning["metrics"]["agreement"] == pytest.approx(1.0)
    assert report["schema_version"] == 1
    assert report["summary"]["pass"] == 3


def test_one_forward_pass_feeds_every_check(project):
    project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--robsig-batch-size", "4")
    calls = (project.path / "forward-calls.txt").read_text().split("\n")
    batches = [int(line.split()[1]) for line in calls if line]
    assert batches == [4, 2]


def test_truncated_image_counted_and_skipped(project):
    result, report = run_json(project, "sig.yaml")
    run = report["data"]["engineered"]["images"]
    assert run["n_read"] == 6
    assert run["n_skipped"] == 1
    assert run["skipped"][0]["id"].endswith("_cut.jpg")
    result.stdout.fnmatch_lines(["*images: 6 images read, 1 skipped*"])


def test_failing_check_shows_explanation_not_traceback(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--robsig-set", "kurtosis.min=1000")
    result.assert_outcomes(passed=2, failed=1)
    expected = f"kurtosis {expected_kurtosis():.2f} < min 1000 on images, 6 images"
    result.stdout.fnmatch_lines([f"*{expected}*"])
    assert "Traceback" not in result.stdout.str()
    assert "def runtest" not in result.stdout.str()


def test_pruning_fails_when_outlier_direction_is_weakest(project):
    result, report = run_json(project, "sig.yaml", "--robsig-model", "weakhead")
    result.assert_outcomes(passed=2, failed=1)
    pruning = by_id(report)["pruning[weakhead]"]
    outcome = pruning["outcomes"][0]
    assert pruning["verdict"] == "fail"
    # Pruning 12 of 16 directions removes component 0; the largest remaining logit is the last component.
    assert outcome["metrics"]["accuracy_pruned"] == pytest.approx(0.0)
    assert outcome["metrics"]["agreement"] == pytest.approx(0.0)
    assert outcome["value"] == pytest.approx(4 / 6)


def test_severity_warn_passes_with_warning(project):
    (project.path / "sig.yaml").write_text(SUITE.replace("params: {min: 3.0}", "severity: warn\n    params: {min: 1000}"))
    result, report = run_json(project, "sig.yaml")
    result.assert_outcomes(passed=3, warnings=1)
    assert by_id(report)["kurtosis[engineered]"]["verdict"] == "warn"


def test_severity_info_never_fails(project):
    (project.path / "sig.yaml").write_text(SUITE.replace("params: {min: 3.0}", "severity: info\n    params: {min: 1000}"))
    result, report = run_json(project, "sig.yaml")
    result.assert_outcomes(passed=3)
    assert by_id(report)["kurtosis[engineered]"]["verdict"] == "info"


def test_unknown_model_fails_its_items_only(project):
    result, report = run_json(project, "sig.yaml", "--robsig-model", "nosuchmodel", "--robsig-model", "engineered")
    result.assert_outcomes(passed=3, failed=3)
    result.stdout.fnmatch_lines(["*Unknown model 'nosuchmodel'*Registered adapters:*engineered*"])
    assert "Traceback" not in result.stdout.str()


def test_missing_weights_message_names_file(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--robsig-model", "broken")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*expected /nowhere/weights.pt; put the file there*"])


def test_nan_activations_excluded_and_counted(project):
    result, report = run_json(project, "sig.yaml", "--robsig-model", "nanmodel")
    result.assert_outcomes(passed=3)
    run = report["data"]["nanmodel"]["images"]
    assert run["n_nonfinite"] == 1
    kurtosis = by_id(report)["kurtosis[nanmodel]"]["outcomes"][0]
    assert kurtosis["n_images"] == 5
    assert kurtosis["value"] == pytest.approx(expected_kurtosis(), rel=1e-9)


def test_invalid_yaml_names_line_and_other_tests_run(project):
    project.makefile(".yaml", bad="name: bad\nchecks:\n  - check: activation_kurtosis\n    params: {min: [1\n")
    project.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = project.runpytest("-p", "no:cacheprovider", "bad.yaml", "test_plain.py", "--robsig-model", "engineered")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*bad.yaml:4: invalid YAML: expected *,* or *]*"])


@pytest.mark.parametrize(
    ("suite_text", "expected"),
    [
        ("checks:\n  - check: activation_kurtosis\n    tresholds: {min: 1}\n",
         "*bad.yaml:3: checks[[]0[]]: unknown key(s) 'tresholds'; allowed keys: check, data, description, id, params, reference, relative, severity*"),
        ("checks:\n  - check: no_such_check\n",
         "*bad.yaml:2: checks[[]0[]].check: unknown check 'no_such_check'; registered checks: activation_kurtosis*"),
        ("checks:\n  - check: activation_kurtosis\n    params:\n      min: high\n",
         "*bad.yaml:4: checks[[]0[]] (activation_kurtosis).params: min: 'high' is not of type number*"),
        ("checks:\n  - check: activation_kurtosis\n    severity: loud\n",
         "*bad.yaml:3: checks[[]0[]].severity: 'loud' is not allowed; allowed values: 'fail', 'warn', 'info'*"),
        ("data:\n  x: {kind: folder, path: images}\nchecks:\n  - check: activation_kurtosis\n    data: [y]\n",
         "*bad.yaml:5: checks[[]0[]] (activation_kurtosis).data: unknown data set 'y'; this suite declares: x*"),
    ],
)
def test_schema_errors_name_line_key_and_choices(project, suite_text, expected):
    project.makefile(".yaml", bad=suite_text)
    result = project.runpytest("-p", "no:cacheprovider", "bad.yaml", "--robsig-model", "engineered")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([expected])


def test_unknown_override_lists_choices(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--robsig-set", "kurtosis.maximum=3")
    result.stdout.fnmatch_lines(["*check 'activation_kurtosis' has no parameter 'maximum'; its parameters are: min*"])


def test_optional_data_missing_skips_with_hint(project):
    (project.path / "sig.yaml").write_text(SUITE.replace("{kind: folder, path: images}", "{kind: folder, required: false}"))
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "-rs")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*no data: images not given; pass --robsig-data images=PATH*"])


def test_data_option_points_suite_at_folder(project):
    (project.path / "sig.yaml").write_text(SUITE.replace("{kind: folder, path: images}", "{kind: folder, required: false}"))
    write_images(project.path / "other", truncated=False)
    result, report = run_json(project, "sig.yaml", "--robsig-data", "images=other")
    result.assert_outcomes(passed=3)
    assert report["data"]["engineered"]["images"]["n_skipped"] == 0


def test_empty_folder_errors_and_other_data_still_runs(project):
    (project.path / "empty").mkdir()
    result, report = run_json(project, "sig.yaml", "--robsig-data", "extra=empty")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*empty*"])
    assert by_id(report)["kurtosis[engineered]"]["outcomes"][0]["dataset"] == "images"


def test_keyword_selection_runs_one_check(project):
    result, report = run_json(project, "sig.yaml", "-k", "tail")
    result.assert_outcomes(passed=1)
    assert list(by_id(report)) == ["tail[engineered]"]


def test_ini_options_configure_the_run(project):
    project.makeini("[pytest]\nrobsig_model =\n    weakhead\nrobsig_set =\n    kurtosis.min=1000\n")
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*kurtosis*weakhead*"])


def test_terminal_table_lists_each_check(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml")
    result.stdout.fnmatch_lines([
        "*robsig: robustness signatures*",
        "engineered",
        "*check*data*metric*value*threshold*verdict*",
        f"*kurtosis*images*kurtosis*{expected_kurtosis():.4g}*>= 3*pass*",
    ])


def test_plugin_inert_without_options(pytester):
    pytester.makefile(".yaml", sig=SUITE)
    pytester.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "robsig: suites" not in result.stdout.str()
    assert "sig.yaml" not in result.stdout.str()


def test_xdist_workers_report_same_values(project):
    result, report = run_json(project, "sig.yaml", "-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=3)
    kurtosis = by_id(report)["kurtosis[engineered]"]["outcomes"][0]
    assert kurtosis["value"] == pytest.approx(expected_kurtosis(), rel=1e-9)
    assert report["data"]["engineered"]["images"]["n_read"] == 6


def test_bundled_default_suite_runs_without_paths(project):
    result, report = run_json(project, "--robsig-model", "engineered", "--robsig-limit", "4")
    result.assert_outcomes(passed=3, skipped=1)
    assert sorted(by_id(report)) == ["concepts[engineered]", "kurtosis[engineered]",
                                     "privileged_directions[engineered]", "pruning[engineered]"]
    photos = report["data"]["engineered"]["photos"]
    assert photos["n_read"] == 4
    assert photos["n_labelled"] == 0
    pruning = by_id(report)["pruning[engineered]"]
    assert pruning["missing_data"] == ["imagenet", "broden"]
    assert pruning["outcomes"][0]["metric"] == "agreement"


def test_bundled_suite_ids_use_file_name(project):
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-model", "engineered", "--collect-only", "-q")
    assert "default.yaml::kurtosis[engineered]" in result.stdout.lines


def test_suite_runs_next_to_given_test_paths(project):
    project.makepyfile(test_plain="def test_plain():\n    assert True\n")
    result = project.runpytest("-p", "no:cacheprovider", "test_plain.py", "--robsig-suite", "sig.yaml",
                               "--robsig-model", "engineered")
    result.assert_outcomes(passed=4)


def test_unknown_bundled_suite_is_usage_error(project):
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-suite", "nightly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--robsig-suite nightly: no such file and no bundled suite of that name; "
                                 "bundled suites: default*"])


def test_bad_limit_is_usage_error(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--robsig-limit", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--robsig-limit 0: must be a positive number of images per data set*"])


def test_device_failure_is_one_readable_error(project):
    result, report = run_json(project, "sig.yaml", "--robsig-model", "nodevice", "--robsig-device", "cuda")
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(["*Failed to load model 'nodevice' on device 'cuda': RuntimeError: Found no NVIDIA "
                                 "driver on your system.. Check the weights and the device (e.g. --robsig-device cpu)*"])
    assert "More lines of detail" not in result.stdout.str()
    assert report["summary"]["error"] == 3
    assert by_id(report)["kurtosis[nodevice]"]["errors"] == {"images": by_id(report)["kurtosis[nodevice]"]["message"]}


def test_unexpected_exception_still_reported(project):
    result, report = run_json(project, "sig.yaml", "--robsig-model", "crashing")
    result.assert_outcomes(failed=3)
    assert "KeyError" in result.stdout.str()
    kurtosis = by_id(report)["kurtosis[crashing]"]
    assert kurtosis["verdict"] == "error"
    assert kurtosis["message"] == "KeyError: 'bug inside the adapter'"


def test_error_rows_name_the_data_set(project):
    (project.path / "empty").mkdir()
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--robsig-data", "extra=empty")
    result.stdout.fnmatch_lines(["*kurtosis*extra*-*error*"])


def test_data_option_rejects_embedded_name(project):
    result = project.runpytest("-p", "no:cacheprovider", "--robsig-model", "engineered", "--robsig-data", "photos=x")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*data set 'photos' of suite 'default' is of kind embedded-photos, which reads no "
                                 "folder. Choose another name, e.g. --robsig-data mine=x*"])


def test_parameter_error_explains_parameter(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--robsig-set", "pruning.fraction=80")
    result.stdout.fnmatch_lines(["*fraction: 80 is greater than or equal to the maximum of 1 (fraction: fraction of "
                                 "singular directions pruned at the gate, in [[]0, 1): 0.8 prunes 80 %)*"])


def test_zero_batch_size_is_usage_error(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--robsig-batch-size", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--robsig-batch-size 0: must be a positive integer*"])


def test_report_path_folder_is_usage_error(project):
    (project.path / "out").mkdir()
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "--robsig-report", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--robsig-report out: is a folder. Give a file path*"])


def test_warning_points_at_suite_line(project):
    (project.path / "sig.yaml").write_text(SUITE.replace("params: {min: 3.0}", "severity: warn\n    params: {min: 1000}"))
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml")
    result.stdout.fnmatch_lines(["*sig.yaml:7: RobsigWarning: kurtosis[[]engineered[]]: kurtosis*"])


def test_small_sample_flagged_in_summary(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml")
    result.stdout.fnmatch_lines(["note: verdicts on fewer than 30 images are a smoke test, not a measurement: images (6)"])


def test_report_file_readable_by_others(project):
    run_json(project, "sig.yaml")
    assert (project.path / "report.json").stat().st_mode & 0o044 == 0o044


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--robsig-data", "imagenet", "*--robsig-data 'imagenet': expected NAME=VALUE*"),
    ("--robsig-set", "min=3", "*--robsig-set 'min=3': expected CHECK.PARAM=VALUE*"),
])
def test_malformed_options_are_usage_errors(project, option, value, message):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_xdist_run_prints_suite_summary(project):
    result = project.runpytest("-p", "no:cacheprovider", "sig.yaml", "-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["robsig: suite sig (*sig.yaml): 3 checks: kurtosis (severity fail), tail *",
                                 "robsig:   data images: folder, *images"])
