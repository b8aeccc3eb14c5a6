"""Baseline files and relative thresholds, unit by unit, against hand-computed cases."""

from __future__ import annotations

import json

import pytest

from robsig_checks.baseline import (RULES, Baseline, apply_relative, apply_relative_override, build_baseline, compare,
                                    data_mismatch, load_baseline, normalize_relative, save_baseline)
from robsig_checks.checks.base import Outcome
from robsig_checks.errors import RobsigError
from robsig_checks.suite import CheckEntry

RUN = {"dataset": "images", "fingerprint": "a" * 64, "description": "folder /data", "n_total": 6, "n_read": 6,
       "n_labelled": 6}


def make_entry(relative: list[dict]) -> CheckEntry:
    return CheckEntry(id="kurtosis", check="activation_kurtosis", params={"min": 3.0}, data=["images"],
                      severity="fail", line=1, relative=relative)


def make_outcome(value: float | None = 5.0, passed: bool | None = True) -> Outcome:
    return Outcome(dataset="images", n_images=6, metric="kurtosis", value=value, threshold=">= 3", passed=passed,
                   explanation="kurtosis 5.00 >= min 3 on images, 6 images",
                   metrics={"value": value, "n_rows": 6})


def make_report(kurtosis: float = 10.0, fingerprint: str = "a" * 64) -> dict:
    return {
        "versions": {"python": "3.11"},
        "options": {},
        "models": {"m": {"spec": "m", "weights_sha256": "f" * 64}},
        "data": {"m": {"images": {**RUN, "fingerprint": fingerprint}}},
        "results": [{
            "id": "kurtosis", "check": "activation_kurtosis", "suite": "s", "model": "m",
            "outcomes": [{"dataset": "images", "metric": "kurtosis", "value": kurtosis, "n_images": 6,
                          "metrics": {"value": kurtosis, "n_rows": 6, "flag": True, "nan": float("nan")}}],
        }],
    }


def make_baseline(tmp_path, **kwargs) -> Baseline:
    path = tmp_path / "base.json"
    save_baseline(path, make_report(**kwargs))
    return load_baseline(path)


@pytest.mark.parametrize(
    ("rule", "limit", "value", "baseline", "bound", "passed"),
    [
        ("min_ratio", 0.8, 8.0, 10.0, 8.0, True),
        ("min_ratio", 0.8, 7.9, 10.0, 8.0, False),
        ("max_ratio", 1.5, 15.0, 10.0, 15.0, True),
        ("max_ratio", 1.5, 15.1, 10.0, 15.0, False),
        ("max_drop", 0.02, 0.30, 0.31, 0.29, True),
        ("max_drop", 0.02, 0.28, 0.31, 0.29, False),
        ("max_rise", 0.1, -0.15, -0.2, -0.1, True),
        ("max_rise", 0.1, 0.0, -0.2, -0.1, False),
    ],
)
def test_compare_rules(rule, limit, value, baseline, bound, passed):
    comparison = compare("m", rule, limit, value, baseline)
    assert comparison.bound == pytest.approx(bound)
    assert comparison.passed is passed


def test_compare_text_reads_as_verdict():
    assert compare("kurtosis", "min_ratio", 0.8, 3.4, 6.1).explanation == "kurtosis 3.4 < 0.8 × baseline 6.1"
    assert compare("er", "max_drop", 0.02, 0.05, 0.08).explanation == "er 0.05 < baseline 0.08 - 0.02"
    assert compare("er", "max_drop", 0.02, 0.07, 0.08).explanation == "er 0.07 >= baseline 0.08 - 0.02"


def test_compare_ratio_rejects_nonpositive_baseline():
    comparison = compare("er", "min_ratio", 0.8, 0.1, -0.05)
    assert comparison.passed is False
    assert "min_ratio needs a positive baseline, got -0.05; use max_drop or max_rise" in comparison.explanation


def test_compare_undefined_value_fails():
    comparison = compare("kurtosis", "min_ratio", 0.8, None, 6.0)
    assert comparison.passed is False
    assert comparison.explanation == "kurtosis undefined in this run, so not >= 0.8 × baseline 6"


def test_compare_without_baseline_not_evaluated():
    comparison = compare("kurtosis", "min_ratio", 0.8, 5.0, None)
    assert comparison.passed is None
    assert comparison.threshold == ">= 0.8 × baseline"


def test_compare_unknown_rule_raises():
    with pytest.raises(ValueError, match="rule 'min' is not one of min_ratio"):
        compare("kurtosis", "min", 0.8, 5.0, 6.0)


def test_normalize_accepts_mapping_and_list():
    assert normalize_relative({"metric": "kurtosis", "min_ratio": 0.8}) == [{"metric": "kurtosis", "min_ratio": 0.8}]
    rules = [{"metric": "a", "max_drop": 0.1}, {"metric": "b", "max_rise": 2}]
    assert normalize_relative(rules) == rules
    assert normalize_relative(None) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"metric": "kurtosis"}, "a rule needs `metric` and at least one of: min_ratio"),
        ({"metric": "kurtosis", "min_ratio": 0}, "min_ratio: 0 is less than or equal to the minimum of 0"),
        ({"metric": "kurtosis", "max_drop": -1}, "max_drop: -1 is less than the minimum of 0"),
        ({"min_ratio": 0.8}, "'metric' is a required property"),
        ([], "[] should be non-empty"),
    ],
)
def test_normalize_rejects_bad_rules(value, message):
    with pytest.raises(RobsigError) as error:
        normalize_relative(value)
    assert message in str(error.value)


def test_override_sets_one_rule():
    entry = make_entry([{"metric": "kurtosis", "min_ratio": 0.8}])
    apply_relative_override(entry, ".kurtosis.max_ratio", "2")
    apply_relative_override(entry, ".tail.max_drop", "0.5")
    assert entry.relative == [{"metric": "kurtosis", "min_ratio": 0.8, "max_ratio": 2},
                              {"metric": "tail", "max_drop": 0.5}]


def test_override_replaces_all_rules():
    entry = make_entry([{"metric": "kurtosis", "min_ratio": 0.8}])
    apply_relative_override(entry, "", "{metric: er, max_drop: 0.02}")
    assert entry.relative == [{"metric": "er", "max_drop": 0.02}]


def test_override_rejects_unknown_rule():
    entry = make_entry([])
    with pytest.raises(RobsigError, match="RULE one of min_ratio, max_ratio, max_drop, max_rise"):
        apply_relative_override(entry, ".kurtosis.minimum", "2")


def test_build_keeps_finite_scalars_only():
    document = build_baseline(make_report())
    metrics = document["models"]["m"]["checks"]["kurtosis"]["outcomes"]["images"]["metrics"]
    assert metrics == {"value": 10.0, "n_rows": 6.0, "kurtosis": 10.0}
    assert document["models"]["m"]["data"]["images"]["fingerprint"] == "a" * 64
    assert document["models"]["m"]["provenance"]["weights_sha256"] == "f" * 64


def test_save_and_load_round_trip(tmp_path):
    baseline = make_baseline(tmp_path)
    assert baseline.models["m"]["checks"]["kurtosis"]["outcomes"]["images"]["metrics"]["kurtosis"] == 10.0
    assert baseline.versions == {"python": "3.11"}
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_report_as_baseline(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**make_report(), "schema_version": 1, "created": "2026-01-01T00:00:00+00:00"}))
    baseline = load_baseline(path)
    assert baseline.created == "2026-01-01T00:00:00+00:00"
    assert baseline.models["m"]["checks"]["kurtosis"]["check"] == "activation_kurtosis"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "invalid JSON at line 1"),
        ('{"robsig_baseline": 1}', "not a robsig baseline: 'models' is a required property"),
        ('{"robsig_baseline": 9, "models": {}}', "baseline format 9 is newer than this robsig reads (1)"),
    ],
)
def test_load_rejects_bad_files(tmp_path, text, message):
    path = tmp_path / "base.json"
    path.write_text(text)
    with pytest.raises(RobsigError) as error:
        load_baseline(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_model_entry_falls_back_to_single_model(tmp_path):
    baseline = make_baseline(tmp_path)
    assert baseline.model_entry("m")[0] == "m"
    assert baseline.model_entry("candidate")[0] == "m"
    baseline.models["other"] = baseline.models["m"]
    assert baseline.model_entry("candidate") == (None, None)


def test_data_mismatch_names_differences():
    assert data_mismatch("images", RUN, dict(RUN)) is None
    text = data_mismatch("images", {**RUN, "fingerprint": "b" * 64, "n_total": 4}, RUN)
    assert text.startswith("data set 'images' differs from the baseline: fingerprint bbbbbbbbbbbb (baseline aaaaaaaaaaaa)")
    assert "images 4 (baseline 6)" in text
    same_count = data_mismatch("images", {**RUN, "fingerprint": "b" * 64}, RUN)
    assert same_count.endswith("same count, other image ids or labels")


def test_apply_fails_outcome_below_ratio(tmp_path):
    baseline = make_baseline(tmp_path, kurtosis=10.0)
    outcome = make_outcome(value=7.0)
    errors = apply_relative([outcome], make_entry([{"metric": "kurtosis", "min_ratio": 0.8}]), "m",
                            {"images": RUN}, baseline)
    assert errors == {}
    assert outcome.passed is False
    assert outcome.threshold == ">= 3; >= 0.8 × baseline 10"
    assert outcome.explanation.endswith("; kurtosis 7 < 0.8 × baseline 10")


def test_apply_makes_informational_outcome_decide(tmp_path):
    baseline = make_baseline(tmp_path, kurtosis=10.0)
    outcome = make_outcome(value=9.0, passed=None)
    apply_relative([outcome], make_entry([{"metric": "kurtosis", "min_ratio": 0.8}]), "m", {"images": RUN}, baseline)
    assert outcome.passed is True


def test_apply_reports_fingerprint_mismatch(tmp_path):
    baseline = make_baseline(tmp_path, fingerprint="c" * 64)
    outcome = make_outcome()
    entry = make_entry([{"metric": "kurtosis", "min_ratio": 0.8}])
    errors = apply_relative([outcome], entry, "m", {"images": RUN}, baseline)
    assert list(errors) == ["images"]
    assert "fingerprint aaaaaaaaaaaa (baseline cccccccccccc)" in errors["images"]
    assert outcome.relative == []

    allowed = make_outcome(value=9.0)
    assert apply_relative([allowed], entry, "m", {"images": RUN}, baseline, allow_data_mismatch=True) == {}
    assert allowed.relative[0]["passed"] is True


def test_rules_table_lists_every_rule():
    assert list(RULES) == ["min_ratio", "max_ratio", "max_drop", "max_rise"]
