"""Every verdict path of release gating, end to end through pytester with an engineered model.

The engineered models of ``test_plugin.py`` map every image to the same vector, so each metric has a
closed form. The kurtosis is the one of that vector. The importance tail is 10.0 for the ``engineered``
head and 7.27 for the ``weakhead`` head (computed here with numpy).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

# Inline pytester runs cannot import torch for the first time, so test_plugin imports it at its top.
from test_plugin import (ENGINEERED_CONFTEST, SIGMA_STRONG, SIGMA_WEAK, SUITE, expected_kurtosis, expected_tail,
                         write_images)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Options of every inline run. The hypothesis plugin, when installed, imports hypothesis again in each
# inline run (about 2 s), so it is disabled.
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")

RELATIVE_SUITE = SUITE.replace(
    "    params: {min_tail: 1.5}\n",
    "    params: {min_tail: 1.5}\n    relative: {metric: tail, min_ratio: 0.8}\n",
).replace(
    "    params: {min: 3.0}\n",
    "    params: {min: 3.0}\n    relative:\n      - {metric: kurtosis, min_ratio: 0.9}\n",
)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(ENGINEERED_CONFTEST)
    pytester.makefile(".yaml", sig=SUITE, rel=RELATIVE_SUITE)
    write_images(pytester.path / "images", truncated=False)
    return pytester


def run(project: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    result = project.runpytest(*QUIET, "--robsig-report", "report.json", *args)
    report = json.loads((project.path / "report.json").read_text())
    return result, report


def by_id(report: dict) -> dict[str, dict]:
    return {f"{r['id']}[{r['model']}]": r for r in report["results"]}


def save_baseline(project: pytest.Pytester, *args: str) -> dict:
    result = project.runpytest(*QUIET, "sig.yaml", "--robsig-save-baseline", "base.json", *args)
    assert result.ret == 0, result.stdout.str()
    return json.loads((project.path / "base.json").read_text())


def test_tails_differ_between_heads():
    assert expected_tail(SIGMA_STRONG) == pytest.approx(10.0, rel=1e-6)
    assert expected_tail(SIGMA_WEAK) / expected_tail(SIGMA_STRONG) < 0.8


def test_pass_verdict(project):
    result, report = run(project, "sig.yaml")
    result.assert_outcomes(passed=3)
    assert {r["verdict"] for r in report["results"]} == {"pass"}


def test_fail_verdict_names_threshold(project):
    result, report = run(project, "sig.yaml", "--robsig-set", "kurtosis.min=1000")
    result.assert_outcomes(passed=2, failed=1)
    assert by_id(report)["kurtosis[engineered]"]["verdict"] == "fail"
    result.stdout.fnmatch_lines([f"*kurtosis {expected_kurtosis():.2f} < min 1000 on images*"])


def test_warn_verdict_passes_with_warning(project):
    (project.path / "sig.yaml").write_text(SUITE.replace("params: {min: 3.0}", "severity: warn\n    params: {min: 1000}"))
    result, report = run(project, "sig.yaml")
    result.assert_outcomes(passed=3, warnings=1)
    assert result.ret == 0
    assert by_id(report)["kurtosis[engineered]"]["verdict"] == "warn"


def test_info_verdict_never_fails(project):
    (project.path / "sig.yaml").write_text(SUITE.replace("params: {min: 3.0}", "severity: info\n    params: {min: 1000}"))
    result, report = run(project, "sig.yaml")
    result.assert_outcomes(passed=3)
    assert by_id(report)["kurtosis[engineered]"]["verdict"] == "info"


def test_missing_data_skips(project):
    (project.path / "sig.yaml").write_text(SUITE.replace("{kind: folder, path: images}", "{kind: folder, required: false}"))
    result, report = run(project, "sig.yaml")
    result.assert_outcomes(skipped=3)
    assert by_id(report)["kurtosis[engineered]"]["verdict"] == "skip"
    assert by_id(report)["kurtosis[engineered]"]["missing_data"] == ["images"]


def test_saved_baseline_holds_metrics_and_identity(project):
    baseline = save_baseline(project, "--robsig-report", "report.json")
    report = json.loads((project.path / "report.json").read_text())
    model = baseline["models"]["engineered"]

    assert baseline["robsig_baseline"] == 1
    assert baseline["versions"]["numpy"] == np.__version__
    assert model["provenance"]["weights"] == "none"
    assert model["data"]["images"]["fingerprint"] == report["data"]["engineered"]["images"]["fingerprint"]
    assert model["data"]["images"]["n_total"] == 6
    kurtosis = model["checks"]["kurtosis"]["outcomes"]["images"]["metrics"]["kurtosis"]
    assert kurtosis == pytest.approx(expected_kurtosis(), rel=1e-9)
    tail = model["checks"]["tail"]["outcomes"]["images"]["metrics"]["tail"]
    assert tail == pytest.approx(expected_tail(SIGMA_STRONG), rel=1e-9)
    assert model["checks"]["pruning"]["outcomes"]["images"]["metrics"]["accuracy"] == pytest.approx(4 / 6)


def test_relative_threshold_passes_and_shows_baseline(project):
    save_baseline(project)
    result, report = run(project, "rel.yaml", "--robsig-baseline", "base.json")
    result.assert_outcomes(passed=3)
    outcome = by_id(report)["kurtosis[engineered]"]["outcomes"][0]
    comparison = outcome["relative"][0]
    assert comparison["passed"] is True
    assert comparison["baseline"] == pytest.approx(expected_kurtosis(), rel=1e-9)
    assert comparison["bound"] == pytest.approx(0.9 * expected_kurtosis(), rel=1e-9)
    value = f"{expected_kurtosis():.4g}"
    assert outcome["threshold"] == f">= 3; >= 0.9 × baseline {value}"
    assert f"kurtosis {value} >= 0.9 × baseline {value}" in outcome["explanation"]


def test_relative_threshold_fails_weaker_release(project):
    save_baseline(project)
    result, report = run(project, "rel.yaml", "--robsig-baseline", "base.json", "--robsig-model", "weakhead")
    tail = by_id(report)["tail[weakhead]"]
    assert tail["verdict"] == "fail"
    assert tail["outcomes"][0]["passed"] is False
    # The absolute gate (>= 1.5) holds, and only the comparison with the baseline fails.
    assert tail["outcomes"][0]["value"] >= 1.5
    weak, strong = expected_tail(SIGMA_WEAK), expected_tail(SIGMA_STRONG)
    result.stdout.fnmatch_lines([f"*tail {weak:.4g} < 0.8 × baseline {strong:.4g}*"])
    assert by_id(report)["kurtosis[weakhead]"]["verdict"] == "pass"


def test_relative_override_from_command_line(project):
    save_baseline(project)
    result, report = run(project, "rel.yaml", "--robsig-baseline", "base.json",
                         "--robsig-set", "kurtosis.relative.kurtosis.min_ratio=1.5")
    result.assert_outcomes(passed=2, failed=1)
    comparison = by_id(report)["kurtosis[engineered]"]["outcomes"][0]["relative"][0]
    assert comparison["limit"] == 1.5
    assert comparison["passed"] is False


def test_relative_rule_added_from_ini(project):
    save_baseline(project)
    project.makeini("[pytest]\nrobsig_baseline = base.json\nrobsig_set =\n    pruning.relative={metric: agreement, max_drop: 0.01}\n")
    result, report = run(project, "sig.yaml")
    result.assert_outcomes(passed=3)
    comparison = by_id(report)["pruning[engineered]"]["outcomes"][0]["relative"][0]
    assert comparison["rule"] == "max_drop"
    assert comparison["bound"] == pytest.approx(0.99)
    assert comparison["threshold"] == ">= baseline 1 - 0.01"
    assert by_id(report)["pruning[engineered]"]["outcomes"][0]["threshold"] == "<= 0.02; agreement >= baseline 1 - 0.01"


def test_missing_baseline_metric_fails(project):
    save_baseline(project, "-k", "kurtosis")
    result, report = run(project, "rel.yaml", "--robsig-baseline", "base.json")
    result.assert_outcomes(passed=2, failed=1)
    tail = by_id(report)["tail[engineered]"]
    assert tail["verdict"] == "fail"
    assert tail["outcomes"][0]["relative"][0]["baseline"] is None
    result.stdout.fnmatch_lines(["*tail: missing baseline value, no 'tail' for check 'tail' on images of model "
                                 "'engineered' in base.json; record it with --robsig-save-baseline*"])


def test_missing_baseline_model_fails(project):
    save_baseline(project, "--robsig-model", "engineered", "--robsig-model", "nanmodel")
    result, report = run(project, "rel.yaml", "--robsig-baseline", "base.json", "--robsig-model", "weakhead")
    assert by_id(report)["kurtosis[weakhead]"]["verdict"] == "fail"
    result.stdout.fnmatch_lines(["*no entry for model 'weakhead' (it has engineered, nanmodel)*"])


def test_data_fingerprint_mismatch_is_error(project):
    save_baseline(project)
    result, report = run(project, "rel.yaml", "--robsig-baseline", "base.json", "--robsig-limit", "4")
    kurtosis = by_id(report)["kurtosis[engineered]"]
    assert kurtosis["verdict"] == "error"
    assert "data set 'images' differs from the baseline" in kurtosis["message"]
    assert "images 4 (baseline 6)" in kurtosis["message"]
    assert "--robsig-allow-data-mismatch" in kurtosis["message"]
    # The check without relative thresholds does not compare data.
    assert by_id(report)["pruning[engineered]"]["verdict"] == "pass"
    result.assert_outcomes(passed=1, failed=2)


def test_allowed_data_mismatch_compares(project):
    save_baseline(project)
    result, report = run(project, "rel.yaml", "--robsig-baseline", "base.json", "--robsig-limit", "4",
                         "--robsig-allow-data-mismatch")
    result.assert_outcomes(passed=3)
    outcome = by_id(report)["kurtosis[engineered]"]["outcomes"][0]
    assert outcome["relative"][0]["passed"] is True
    assert "data differs from the baseline, compared as allowed" in outcome["explanation"]
    assert report["baseline"]["allow_data_mismatch"] is True


def test_relative_without_baseline_not_evaluated(project):
    result, report = run(project, "rel.yaml")
    result.assert_outcomes(passed=3)
    comparison = by_id(report)["kurtosis[engineered]"]["outcomes"][0]["relative"][0]
    assert comparison["passed"] is None
    assert comparison["explanation"] == "kurtosis >= 0.9 × baseline not evaluated: no --robsig-baseline given"


def test_unknown_relative_metric_is_error(project):
    save_baseline(project)
    result, report = run(project, "rel.yaml", "--robsig-baseline", "base.json",
                         "--robsig-set", "kurtosis.relative={metric: kurt, min_ratio: 0.5}")
    kurtosis = by_id(report)["kurtosis[engineered]"]
    assert kurtosis["verdict"] == "error"
    assert "reports no metric 'kurt' on images; it reports: kurtosis, n_nonfinite" in kurtosis["message"]


def test_invalid_relative_rule_names_line_and_rules(project):
    project.makefile(".yaml", bad=SUITE.replace("params: {min: 3.0}", "relative: {metric: kurtosis, min_fraction: 0.8}"))
    result = project.runpytest(*QUIET, "bad.yaml")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*bad.yaml:8: checks[[]0[]].relative: unknown key(s) 'min_fraction'*Rules: "
                                 "min_ratio (value >= min_ratio × baseline)*"])


def test_relative_rule_without_limit_rejected(project):
    result = project.runpytest(*QUIET, "sig.yaml", "--robsig-set", "kurtosis.relative={metric: kurtosis}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*a rule needs `metric` and at least one of: min_ratio*"])


def test_invalid_baseline_file_is_usage_error(project):
    (project.path / "base.json").write_text('{"models": 3}')
    result = project.runpytest(*QUIET, "sig.yaml", "--robsig-baseline", "base.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--robsig-baseline base.json: not a robsig baseline*Record one with "
                                 "--robsig-save-baseline*"])


def test_missing_baseline_file_is_usage_error(project):
    result = project.runpytest(*QUIET, "sig.yaml", "--robsig-baseline", "nowhere.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--robsig-baseline nowhere.json: file not found*"])


def test_report_serves_as_baseline(project):
    run(project, "sig.yaml")
    result, report = run(project, "rel.yaml", "--robsig-baseline", "report.json", "--robsig-model", "weakhead")
    assert by_id(report)["tail[weakhead]"]["verdict"] == "fail"
    assert by_id(report)["kurtosis[weakhead]"]["verdict"] == "pass"


def test_junit_properties_carry_metrics(project):
    save_baseline(project)
    project.runpytest(*QUIET, "rel.yaml", "--robsig-baseline", "base.json", "--junitxml", "junit.xml")
    tree = ElementTree.parse(project.path / "junit.xml")
    properties = {}
    for case in tree.iter("testcase"):
        if case.get("name") == "kurtosis[engineered]":
            properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert float(properties["robsig.images.kurtosis"]) == pytest.approx(expected_kurtosis(), rel=1e-6)
    assert float(properties["robsig.images.kurtosis.baseline"]) == pytest.approx(expected_kurtosis(), rel=1e-6)
    assert properties["robsig.verdict"] == "pass"
    assert properties["robsig.images.threshold"].startswith(">= 3; >= 0.9 × baseline")


def test_xdist_baseline_written_once_by_controller(project):
    result = project.runpytest(*QUIET, "-p", "xdist", "-n", "2", "sig.yaml",
                               "--robsig-save-baseline", "base.json", "--robsig-report", "report.json")
    result.assert_outcomes(passed=3)
    # The controller collects nothing under xdist, so it loads the suite itself for the report's protocol.
    report = json.loads((project.path / "report.json").read_text())
    assert [check["id"] for check in report["suites"][0]["checks"]] == ["kurtosis", "tail", "pruning"]
    baseline = json.loads((project.path / "base.json").read_text())
    assert sorted(baseline["models"]["engineered"]["checks"]) == ["kurtosis", "pruning", "tail"]
    assert baseline["models"]["engineered"]["data"]["images"]["n_total"] == 6
    result.stdout.fnmatch_lines(["*robsig: baseline written to base.json (*metrics of 1 model(s))*"])


def test_collection_summary_lists_suite_and_data(project):
    result = project.runpytest(*QUIET, "sig.yaml", "--robsig-limit", "5", "--collect-only")
    result.stdout.fnmatch_lines([
        "robsig: suite sig (*sig.yaml): 3 checks: kurtosis (severity fail), tail (severity fail), pruning (severity fail)",
        "robsig:   data images: folder, */images",
        "robsig: reading at most 5 images per data set",
    ])


def test_baseline_names_items_without_values(project):
    (project.path / "sig.yaml").write_text(SUITE.replace("params: {min: 3.0}", "data: [extra]")
                                           .replace("{kind: folder, path: images}",
                                                    "{kind: folder, path: images}\n  extra: {kind: folder, required: false}"))
    result = project.runpytest(*QUIET, "sig.yaml", "--robsig-save-baseline", "base.json")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["robsig: the baseline has no values for kurtosis[[]engineered[]] (error or skip)*"])
    baseline = json.loads((project.path / "base.json").read_text())
    assert sorted(baseline["models"]["engineered"]["checks"]) == ["pruning", "tail"]
