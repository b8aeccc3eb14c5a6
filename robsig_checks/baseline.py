"""Baselines: the recorded signatures of a trusted release, and thresholds relative to them.

A baseline file stores, per (model, check id, data set), every scalar metric of a run, with the
model's weights hash, the data set's fingerprint and the package versions. A suite check entry may
carry relative thresholds::

    relative:
      - {metric: kurtosis, min_ratio: 0.8}     # kurtosis >= 0.8 × baseline kurtosis
      - {metric: er, max_drop: 0.02}           # er >= baseline er - 0.02

They are evaluated after the check's own thresholds, per data set, against the baseline's value of
the same metric. ``metric`` names a key of the outcome's ``metrics`` or its headline ``metric``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import jsonschema
import yaml

from robsig_checks.checks.base import describe_schema_error
from robsig_checks.errors import RobsigError

if TYPE_CHECKING:
    from robsig_checks.checks.base import Outcome
    from robsig_checks.suite import CheckEntry

#: Version of the baseline file format; a reader rejects files of a newer version.
BASELINE_FORMAT = 1

#: Rules of a relative threshold, by name, with the condition each one sets.
RULES: dict[str, str] = {
    "min_ratio": "value >= min_ratio × baseline",
    "max_ratio": "value <= max_ratio × baseline",
    "max_drop": "value >= baseline - max_drop",
    "max_rise": "value <= baseline + max_rise",
}

RELATIVE_RULE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["metric"],
    "additionalProperties": False,
    "minProperties": 2,
    "properties": {
        "metric": {"type": "string", "minLength": 1},
        "min_ratio": {"type": "number", "exclusiveMinimum": 0},
        "max_ratio": {"type": "number", "exclusiveMinimum": 0},
        "max_drop": {"type": "number", "minimum": 0},
        "max_rise": {"type": "number", "minimum": 0},
    },
}

#: Schema of the ``relative`` key of a suite check entry: one rule mapping or a list of them.
RELATIVE_SCHEMA: dict[str, Any] = {
    "if": {"type": "object"},
    "then": RELATIVE_RULE_SCHEMA,
    "else": {"type": "array", "minItems": 1, "items": RELATIVE_RULE_SCHEMA},
}

_BASELINE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["robsig_baseline", "models"],
    "properties": {
        "robsig_baseline": {"type": "integer", "minimum": 1},
        "models": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["data", "checks"],
                "properties": {
                    "provenance": {"type": ["object", "null"]},
                    "data": {"type": "object", "additionalProperties": {
                        "type": "object", "required": ["fingerprint"],
                        "properties": {"fingerprint": {"type": "string"}}}},
                    "checks": {"type": "object", "additionalProperties": {
                        "type": "object", "required": ["check", "outcomes"],
                        "properties": {"check": {"type": "string"}, "outcomes": {"type": "object"}}}},
                },
            },
        },
    },
}


def normalize_relative(value: Any) -> list[dict[str, Any]]:
    """Return the relative thresholds of a check entry as a list of rule mappings.

    Parameters:
        value: None, one rule mapping such as ``{"metric": "kurtosis", "min_ratio": 0.8}``, or a list
            of them, as written under ``relative:`` in a suite.

    Raises:
        RobsigError: when ``value`` does not follow :data:`RELATIVE_SCHEMA`; the message names the
            key and the allowed rules.
    """
    if value is None:
        return []
    errors = sorted(jsonschema.Draft202012Validator(RELATIVE_SCHEMA).iter_errors(value), key=str)
    if errors:
        raise RobsigError(f"relative threshold {value!r}: {describe_relative_error(errors[0])}")
    rules = [value] if isinstance(value, dict) else list(value)
    return [dict(rule) for rule in rules]


def describe_relative_error(error: jsonschema.ValidationError) -> str:
    """Rewrite a schema error of a relative threshold for people, listing the allowed rules."""
    allowed = ", ".join(f"{name} ({text})" for name, text in RULES.items())
    if error.validator == "minProperties":
        return f"a rule needs `metric` and at least one of: {allowed}"
    return f"{describe_schema_error(error)}. Rules: {allowed}"


def apply_relative_override(entry: "CheckEntry", path: str, value_text: str) -> None:
    """Apply one ``--robsig-set`` override of a check's relative thresholds.

    Parameters:
        entry: the suite check entry to change.
        path: the part after ``CHECK.relative``: empty to replace every rule with ``value_text`` (a YAML
            mapping or list), or ``.METRIC.RULE`` to set one rule of the metric's entry (added when absent).
        value_text: the YAML text of the value.

    Raises:
        RobsigError: naming the override and what is allowed.
    """
    value = yaml.safe_load(value_text)
    if not path:
        entry.relative = normalize_relative(value)
        return
    metric, dot, rule = path.lstrip(".").rpartition(".")
    if not dot or not metric or rule not in RULES:
        raise RobsigError(f"relative override {path!r}: expected CHECK.relative.METRIC.RULE=VALUE with RULE one of "
                          f"{', '.join(RULES)}, e.g. --robsig-set kurtosis.relative.kurtosis.min_ratio=0.8")
    rules = [dict(rule_map) for rule_map in entry.relative]
    target = next((rule_map for rule_map in rules if rule_map["metric"] == metric), None)
    if target is None:
        target = {"metric": metric}
        rules.append(target)
    target[rule] = value
    entry.relative = normalize_relative(rules)


# -- baseline files ----------------------------------------------------------------------------------


@dataclass
class Baseline:
    """A loaded baseline: the source file and, per model spec, provenance, data passes and checks."""

    path: Path
    created: str
    versions: dict[str, Any]
    models: dict[str, dict[str, Any]]

    def model_entry(self, spec: str) -> tuple[str | None, dict[str, Any] | None]:
        """Return (baseline model spec, its entry) to compare ``spec`` with, or (None, None).

        The entry recorded under the same spec wins. Otherwise a baseline of exactly one model is the
        reference for every candidate, which is the usual case of a new release against the last one.
        """
        if spec in self.models:
            return spec, self.models[spec]
        if len(self.models) == 1:
            name = next(iter(self.models))
            return name, self.models[name]
        return None, None

    def describe(self) -> str:
        """Return one line naming the file, its date and its models."""
        return f"{self.path} (recorded {self.created or 'at an unknown time'}; models {', '.join(self.models) or 'none'})"


def _scalar_metrics(outcome: Mapping[str, Any]) -> dict[str, float]:
    metrics = {}
    for name, value in (outcome.get("metrics") or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            metrics[name] = float(value)
    value = outcome.get("value")
    if outcome.get("metric") and isinstance(value, (int, float)) and math.isfinite(value):
        metrics.setdefault(outcome["metric"], float(value))
    return metrics


def build_baseline(report: Mapping[str, Any]) -> dict[str, Any]:
    """Build the baseline document of a run from its JSON report (see ``report/schema.json``).

    Only outcomes with a value are recorded: a check that errored or was skipped has no entry, so a
    later comparison against it takes the missing-baseline path.
    """
    models: dict[str, dict[str, Any]] = {}
    for spec, provenance in (report.get("models") or {}).items():
        models.setdefault(spec, {"provenance": provenance, "data": {}, "checks": {}})
    for spec, runs in (report.get("data") or {}).items():
        entry = models.setdefault(spec, {"provenance": None, "data": {}, "checks": {}})
        for name, run in runs.items():
            entry["data"][name] = {key: run.get(key) for key in
                                   ("fingerprint", "description", "n_total", "n_read", "n_labelled")}
    for result in report.get("results") or []:
        entry = models.setdefault(result["model"], {"provenance": None, "data": {}, "checks": {}})
        outcomes = {}
        for outcome in result.get("outcomes") or []:
            metrics = _scalar_metrics(outcome)
            if metrics:
                outcomes[outcome["dataset"]] = {"metric": outcome.get("metric"), "metrics": metrics,
                                                "n_images": outcome.get("n_images")}
        if outcomes:
            # NOTE: checks are keyed by id, so of two suites in one run that share a check id, the later one is kept.
            entry["checks"][result["id"]] = {"check": result["check"], "suite": result["suite"], "outcomes": outcomes}
    return {
        "robsig_baseline": BASELINE_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": dict(report.get("versions") or {}),
        "options": dict(report.get("options") or {}),
        "models": models,
    }


def save_baseline(path: Path, report: Mapping[str, Any]) -> dict[str, Any]:
    """Write the baseline of ``report`` to ``path`` atomically and return the written document."""
    from robsig_checks.report.json_report import write_report

    document = build_baseline(report)
    write_report(Path(path), document)
    return document


def load_baseline(path: Path) -> Baseline:
    """Read a baseline file, or a robsig JSON report, which contains the same facts.

    Raises:
        RobsigError: when the file is missing, not JSON, or neither a baseline nor a report, naming
            the path, the cause and the fix.
    """
    path = Path(path)
    hint = "Record one with --robsig-save-baseline PATH (or pass a JSON report written by --robsig-report)."
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RobsigError(f"--robsig-baseline {path}: file not found. {hint}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RobsigError(f"--robsig-baseline {path}: cannot read the file ({error}). {hint}") from None
    except json.JSONDecodeError as error:
        raise RobsigError(f"--robsig-baseline {path}: invalid JSON at line {error.lineno}: {error.msg}. {hint}") from None

    if isinstance(document, dict) and "results" in document and "schema_version" in document:
        document = build_baseline(document) | {"created": document.get("created", "")}
    errors = sorted(jsonschema.Draft202012Validator(_BASELINE_SCHEMA).iter_errors(document), key=str)
    if errors:
        raise RobsigError(f"--robsig-baseline {path}: not a robsig baseline: {describe_schema_error(errors[0])}. {hint}")
    if document["robsig_baseline"] > BASELINE_FORMAT:
        raise RobsigError(f"--robsig-baseline {path}: baseline format {document['robsig_baseline']} is newer than this "
                          f"robsig reads ({BASELINE_FORMAT}). Upgrade robsig or record the baseline again.")
    return Baseline(path=path, created=document.get("created", ""), versions=document.get("versions") or {},
                    models=document["models"])


# -- relative thresholds -----------------------------------------------------------------------------


@dataclass
class Comparison:
    """One relative threshold evaluated on one data set.

    ``passed`` is None when the rule was not evaluated because no baseline was given.
    """

    metric: str
    rule: str
    limit: float
    value: float | None
    baseline: float | None
    bound: float | None
    passed: bool | None
    threshold: str
    explanation: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "rule": self.rule, "limit": self.limit, "value": self.value,
            "baseline": self.baseline, "bound": self.bound, "passed": self.passed,
            "threshold": self.threshold, "explanation": self.explanation,
        }


def _format(value: float) -> str:
    return f"{value:.4g}"


def compare(metric: str, rule: str, limit: float, value: float | None, baseline: float | None) -> Comparison:
    """Evaluate one relative rule: ``value`` of ``metric`` against ``baseline`` (None: no baseline given).

    ``min_ratio`` needs value >= limit × baseline, ``max_ratio`` value <= limit × baseline, ``max_drop``
    value >= baseline - limit and ``max_rise`` value <= baseline + limit. A ratio rule against a baseline
    of zero or below fails, because the ratio then reverses or loses its meaning.
    """
    if rule not in RULES:
        raise ValueError(f"rule {rule!r} is not one of {', '.join(RULES)}")
    ratio = rule in ("min_ratio", "max_ratio")
    relation = ">=" if rule in ("min_ratio", "max_drop") else "<="
    if baseline is None:
        threshold = f"{relation} {limit:g} × baseline" if ratio else \
            f"{relation} baseline {'-' if rule == 'max_drop' else '+'} {limit:g}"
        return Comparison(metric, rule, limit, value, None, None, None, threshold,
                          f"{metric} {threshold} not evaluated: no --robsig-baseline given")
    if ratio:
        bound = limit * baseline
        threshold = f"{relation} {limit:g} × baseline {_format(baseline)}"
    else:
        bound = baseline - limit if rule == "max_drop" else baseline + limit
        threshold = f"{relation} baseline {_format(baseline)} {'-' if rule == 'max_drop' else '+'} {limit:g}"
    if value is None or not math.isfinite(value):
        return Comparison(metric, rule, limit, None, baseline, bound, False, threshold,
                          f"{metric} undefined in this run, so not {threshold}")
    if ratio and baseline <= 0:
        return Comparison(metric, rule, limit, value, baseline, bound, False, threshold,
                          f"{metric} {_format(value)}: {rule} needs a positive baseline, got {_format(baseline)}; "
                          "use max_drop or max_rise for this metric")
    passed = value >= bound - 1e-12 if relation == ">=" else value <= bound + 1e-12
    shown = relation if passed else {">=": "<", "<=": ">"}[relation]
    return Comparison(metric, rule, limit, value, baseline, bound, bool(passed), threshold,
                      f"{metric} {_format(value)} {shown} {threshold.split(' ', 1)[1]}")


def _run_value(outcome: "Outcome", metric: str) -> tuple[bool, float | None]:
    """Return (reported, value) of ``metric`` in an outcome: its ``metrics`` entry or its headline value."""
    if metric in outcome.metrics:
        value = outcome.metrics[metric]
        return True, float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if metric == outcome.metric:
        return True, None if outcome.value is None else float(outcome.value)
    return False, None


def data_mismatch(name: str, run: Mapping[str, Any], recorded: Mapping[str, Any]) -> str | None:
    """Describe how the data set ``name`` of this run differs from the baseline's, or return None."""
    if run.get("fingerprint") == recorded.get("fingerprint"):
        return None
    differences = []
    for key, label in (("n_total", "images"), ("n_labelled", "labelled images"), ("description", "source")):
        if key in recorded and recorded.get(key) != run.get(key):
            differences.append(f"{label} {run.get(key)} (baseline {recorded.get(key)})")
    if not differences:
        differences.append("same count, other image ids or labels")
    return (f"data set {name!r} differs from the baseline: fingerprint {str(run.get('fingerprint'))[:12]} "
            f"(baseline {str(recorded.get('fingerprint'))[:12]}); {'; '.join(differences)}")


def apply_relative(
    outcomes: list["Outcome"],
    entry: "CheckEntry",
    model_spec: str,
    runs: Mapping[str, Mapping[str, Any]],
    baseline: Baseline | None,
    allow_data_mismatch: bool = False,
) -> dict[str, str]:
    """Evaluate ``entry.relative`` on each outcome of one (check, model) item, in place.

    Each outcome gains its comparisons (``Outcome.relative``), the relative thresholds in
    ``threshold`` and the comparison text in ``explanation``. A failed comparison sets ``passed`` to
    False. A metric missing from the baseline fails its comparison with a message saying how to record it.

    Parameters:
        outcomes: the outcomes of the check, one per data set (or combination of data sets).
        entry: the suite check entry with its ``relative`` rules.
        model_spec: the candidate model.
        runs: the data passes of this item by data set name, as ``DatasetRun.to_dict()`` mappings.
        baseline: the loaded baseline, or None when no ``--robsig-baseline`` was given.
        allow_data_mismatch: compare even when a data fingerprint differs from the baseline's.

    Returns:
        Errors by data set name: a data fingerprint that differs from the baseline's (unless allowed),
        or a rule naming a metric the check does not report.
    """
    errors: dict[str, str] = {}
    if not entry.relative:
        return errors
    base_spec, base_entry = baseline.model_entry(model_spec) if baseline is not None else (None, None)

    for outcome in outcomes:
        notes = []
        used = [outcome.dataset] if outcome.dataset in runs else list(runs)
        if base_entry is not None:
            mismatches = [text for name in used if name in base_entry["data"]
                          if (text := data_mismatch(name, runs[name], base_entry["data"][name]))]
            if mismatches and not allow_data_mismatch:
                errors[outcome.dataset] = ("; ".join(mismatches) + ". Record a new baseline on this data, or pass "
                                           "--robsig-allow-data-mismatch to compare anyway.")
                continue
            if mismatches:
                notes.append("data differs from the baseline, compared as allowed")

        recorded = None
        if base_entry is not None:
            check_entry = base_entry["checks"].get(entry.id)
            if check_entry is not None and check_entry.get("check") == entry.check:
                recorded = (check_entry["outcomes"].get(outcome.dataset) or {}).get("metrics", {})

        comparisons = []
        for rule_map in entry.relative:
            metric = rule_map["metric"]
            reported, value = _run_value(outcome, metric)
            if not reported:
                known = sorted({*outcome.metrics, outcome.metric})
                errors[outcome.dataset] = (f"relative threshold of {entry.id!r}: check {entry.check} reports no metric "
                                           f"{metric!r} on {outcome.dataset}; it reports: {', '.join(known)}")
                break
            for rule in (name for name in RULES if name in rule_map):
                if baseline is not None and (recorded is None or metric not in recorded):
                    comparisons.append(_missing(metric, rule, float(rule_map[rule]), value, baseline, base_spec,
                                                model_spec, entry, outcome.dataset))
                    continue
                reference = None if baseline is None else recorded[metric]
                comparisons.append(compare(metric, rule, float(rule_map[rule]), value, reference))
        if outcome.dataset in errors:
            continue
        _merge(outcome, comparisons, notes)
    return errors


def _missing(metric: str, rule: str, limit: float, value: float | None, baseline: Baseline, base_spec: str | None,
             model_spec: str, entry: "CheckEntry", dataset: str) -> Comparison:
    if base_spec is None:
        where = f"no entry for model {model_spec!r} (it has {', '.join(baseline.models) or 'no models'})"
    else:
        where = f"no {metric!r} for check {entry.id!r} on {dataset} of model {base_spec!r}"
    comparison = compare(metric, rule, limit, value, None)
    comparison.passed = False
    comparison.explanation = (f"{metric}: missing baseline value, {where} in {baseline.path}; record it with "
                              "--robsig-save-baseline")
    return comparison


def _merge(outcome: "Outcome", comparisons: list[Comparison], notes: list[str]) -> None:
    """Fold comparisons into an outcome: thresholds, explanation and the combined ``passed``."""
    outcome.relative = [comparison.to_dict() for comparison in comparisons]
    thresholds = [comparison.threshold if comparison.metric == outcome.metric
                  else f"{comparison.metric} {comparison.threshold}" for comparison in comparisons]
    outcome.threshold = "; ".join(part for part in [outcome.threshold, *thresholds] if part)
    outcome.explanation = "; ".join([outcome.explanation, *(c.explanation for c in comparisons), *notes])

    results = [comparison.passed for comparison in comparisons if comparison.passed is not None]
    if False in results:
        outcome.passed = False
    elif results and outcome.passed is None:
        outcome.passed = True
