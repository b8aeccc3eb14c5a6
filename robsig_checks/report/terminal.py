"""The terminal side of a run: the header at collection time and one table per model at the end."""

from __future__ import annotations

import shutil
from typing import Any

from robsig_checks.results import sorted_results

VERDICT_MARKUP = {"pass": {"green": True}, "fail": {"red": True}, "error": {"red": True},
                  "warn": {"yellow": True}, "info": {"cyan": True}, "skip": {"yellow": True}}


def header_lines(plugin: Any) -> list[str]:
    """Describe the suites, models, data options and limits used by this run."""
    options = plugin.options
    lines = [f"robsig: suites {', '.join(str(path) for path in plugin.suite_paths)}"]
    lines.append(f"robsig: models {', '.join(options.models) if options.models else '(from the suite)'}; "
                 f"device {options.device}; batch size {options.batch_size}; "
                 f"limit {options.limit if options.limit is not None else 'none'} images per data set")
    if options.data:
        lines.append(f"robsig: data {', '.join(options.data)}")
    if options.overrides:
        lines.append(f"robsig: overrides {', '.join(options.overrides)}")
    return lines


def collection_lines(suites: list[Any], options: Any) -> list[str]:
    """Describe, after collection, each suite's checks and data sets (kind, path or why it is absent)."""
    lines = []
    for suite in suites:
        lines.append(f"robsig: suite {suite.name} ({suite.path}): {len(suite.checks)} checks: "
                     + ", ".join(f"{entry.id} (severity {entry.severity})" for entry in suite.checks))
        for name, spec in suite.data.items():
            if not spec.available:
                lines.append(f"robsig:   data {name}: {spec.kind}, not given (--robsig-data {name}=PATH)")
            elif spec.path is not None:
                lines.append(f"robsig:   data {name}: {spec.kind}, {spec.path}")
            else:
                lines.append(f"robsig:   data {name}: {spec.kind}")
    limit = f"at most {options.limit} images per data set" if options.limit is not None else "all images"
    lines.append(f"robsig: reading {limit}")
    if options.baseline is not None:
        mismatch = "; data mismatches allowed" if options.allow_data_mismatch else ""
        lines.append(f"robsig: relative thresholds compare against {options.baseline}{mismatch}")
    return lines


def _format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def outcome_verdict(passed: bool | None, severity: str) -> str:
    """Return the verdict of one data set's outcome under the check's severity."""
    if passed is None:
        return "info"
    if passed:
        return "pass"
    return severity


def result_rows(results: list[dict[str, Any]]) -> dict[str, list[list[str]]]:
    """Turn result dicts into table rows per model: check, data, metric, value, threshold, verdict, images."""
    tables: dict[str, list[list[str]]] = {}
    for result in sorted_results(results):
        rows = tables.setdefault(result["model"], [])
        if result["verdict"] == "skip":
            rows.append([result["id"], ", ".join(result["missing_data"]), "-", "-", "-", "skip", "-", result["message"]])
            continue
        for outcome in result["outcomes"]:
            rows.append([result["id"], outcome["dataset"], outcome["metric"], _format_value(outcome["value"]),
                         outcome["threshold"], outcome_verdict(outcome["passed"], result["severity"]),
                         str(outcome["n_images"]), outcome["explanation"]])
        errors = result.get("errors") or {}
        for dataset, message in errors.items():
            rows.append([result["id"], dataset, "-", "-", "-", "error", "-", message])
        if result["verdict"] == "error" and not errors:
            rows.append([result["id"], "-", "-", "-", "-", "error", "-", result["message"]])
    return tables


#: Columns that are cut when a table is wider than the terminal, by index, with their minimum widths.
SHRINKABLE = {4: 12, 0: 10, 1: 8, 2: 8}


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 3, 1)] + "..."


def fit_widths(widths: list[int], width: int) -> list[int]:
    """Narrow the widest shrinkable columns until a row of ``widths`` fits ``width`` characters, if it can."""
    widths = list(widths)

    def total() -> int:
        return 2 + sum(widths) + 2 * (len(widths) - 1)

    while total() > width:
        candidates = [index for index, minimum in SHRINKABLE.items() if widths[index] > minimum]
        if not candidates:
            break
        # One character at a time from the column with the most room above its minimum, so cuts are shared.
        widest = max(candidates, key=lambda index: widths[index] - SHRINKABLE[index])
        widths[widest] -= 1
    return widths


def format_table(rows: list[list[str]], width: int) -> list[tuple[str, str]]:
    """Lay out rows in aligned columns sized to ``width``: long cells are cut, and the explanation
    follows when there is room for it. Return (line, verdict) pairs."""
    headers = ["check", "data", "metric", "value", "threshold", "verdict", "images"]
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(headers))]
    widths = fit_widths(widths, width)
    lines = [("  " + "  ".join(h.ljust(w) for h, w in zip(headers, widths)), "")]
    for row in rows:
        line = "  " + "  ".join(_cut(cell, w).ljust(w) for cell, w in zip(row, widths))
        room = width - len(line) - 2
        if room > 20:
            explanation = row[7] if len(row[7]) <= room else row[7][: room - 3] + "..."
            line += "  " + explanation
        lines.append((line.rstrip(), row[5]))
    return lines


#: Below this many images, a data set's verdicts are flagged as resting on a small sample.
SMALL_SAMPLE = 30


def write_summary(terminalreporter: Any, results: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> None:
    """Write one table per model, then one line per data set pass."""
    width = getattr(terminalreporter, "_tw", None)
    width = width.fullwidth if width is not None else shutil.get_terminal_size().columns
    terminalreporter.write_sep("=", "robsig: robustness signatures")
    small: dict[str, int] = {}
    for model, rows in result_rows(results).items():
        terminalreporter.write_line(model, bold=True)
        for line, verdict in format_table(rows, width):
            terminalreporter.write_line(line, **VERDICT_MARKUP.get(verdict, {}))
        for name, run in runs.get(model, {}).items():
            run = run if isinstance(run, dict) else run.to_dict()
            text = (f"  data {name}: {run['n_read']} images read, {run['n_skipped']} skipped, "
                    f"{run['n_labelled']} labelled, {run['seconds']:.1f} s")
            if run["n_nonfinite"]:
                text += f", {run['n_nonfinite']} with non-finite activations excluded"
            terminalreporter.write_line(text)
            for skipped in run["skipped"][:3]:
                terminalreporter.write_line(f"    skipped {skipped['id']}: {skipped['reason']}")
            if run["n_skipped"] > 3:
                terminalreporter.write_line(f"    ... and {run['n_skipped'] - 3} more (all are counted; the JSON "
                                            "report lists up to 20)")
            if run["n_read"] - run["n_nonfinite"] < SMALL_SAMPLE:
                small[name] = run["n_read"] - run["n_nonfinite"]
        missing = dict.fromkeys(name for result in results if result["model"] == model
                                for name in result["missing_data"])
        for name in missing:
            terminalreporter.write_line(f"  data {name}: not given; add --robsig-data {name}=PATH to include it")
    if small:
        counts = ", ".join(f"{name} ({count})" for name, count in small.items())
        terminalreporter.write_line(f"note: verdicts on fewer than {SMALL_SAMPLE} images are a smoke test, not a "
                                    f"measurement: {counts}", yellow=True)
