"""The JSON report: every metric, threshold and verdict of a run, with provenance; written atomically."""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from robsig_checks.results import sorted_results

SCHEMA_VERSION = 1


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("robsig", "torch", "torchvision", "open_clip_torch", "timm", "numpy", "pytest"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _clean(value: Any) -> Any:
    """Replace NaN and infinities, which JSON cannot hold, with None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def _suite_protocols(plugin: Any) -> list[dict[str, Any]]:
    """Describe each suite as run: data sets (kind, path, options), checks, severities and thresholds.

    Under pytest-xdist the controller collects nothing, so the suites are loaded again here.
    """
    from robsig_checks.errors import RobsigError
    from robsig_checks.plugin import prepare_suite

    suites = list(plugin.suites)
    if not suites:
        for path in plugin.suite_paths:
            try:
                suites.append(prepare_suite(path, plugin))
            except RobsigError:
                continue
    return [{
        "name": suite.name,
        "path": str(suite.path),
        "data": {name: {"kind": spec.kind, "path": spec.path, "required": spec.required, "options": dict(spec.options),
                        "available": spec.available} for name, spec in suite.data.items()},
        "checks": [{"id": entry.id, "check": entry.check, "severity": entry.severity, "data": list(entry.data),
                    "params": dict(entry.params), "relative": list(entry.relative)} for entry in suite.checks],
    } for suite in suites]


def _baseline_summary(plugin: Any) -> dict[str, Any] | None:
    baseline = getattr(plugin, "baseline", None)
    if baseline is None:
        return None
    return {"path": str(baseline.path), "created": baseline.created, "models": sorted(baseline.models),
            "allow_data_mismatch": plugin.options.allow_data_mismatch}


def build_report(plugin: Any) -> dict[str, Any]:
    """Collect the results, data passes and provenance of a finished run."""
    options = plugin.options
    runs = {model: {name: (run if isinstance(run, dict) else run.to_dict()) for name, run in by_name.items()}
            for model, by_name in plugin.session.runs.items()}
    return _clean({
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "duration_seconds": round(datetime.now().timestamp() - plugin.started, 3),
        "versions": _versions(),
        "options": {
            "models": options.models,
            "suites": [str(path) for path in plugin.suite_paths],
            "data": options.data,
            "device": options.device,
            "batch_size": options.batch_size,
            "limit": options.limit,
            "overrides": options.overrides,
        },
        # Checks that sample (e.g. negatives for concept scores) take a `seed` parameter; listed here per item.
        "seeds": {f"{r['id']}[{r['model']}]": r["params"]["seed"] for r in plugin.results if "seed" in r["params"]},
        "suites": _suite_protocols(plugin),
        "baseline": _baseline_summary(plugin),
        "models": plugin.session.provenance,
        "data": runs,
        "results": sorted_results(plugin.results),
        "summary": {verdict: sum(1 for r in plugin.results if r["verdict"] == verdict)
                    for verdict in ("pass", "fail", "warn", "info", "skip", "error")},
    })


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` as indented JSON, atomically (see :func:`write_text_atomic`)."""
    from robsig_checks.report.outputs import write_text_atomic

    write_text_atomic(Path(path), json.dumps(report, indent=2, sort_keys=False) + "\n")
