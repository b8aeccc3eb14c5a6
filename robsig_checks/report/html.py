"""A self-contained HTML page of a robsig JSON report: inline CSS, plots as base64 PNG data URIs.

The page is built from the report dictionary alone, so ``robsig report RESULT.json --html PATH``
renders the same page as the run that wrote the report.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Mapping

from robsig_checks.report.terminal import _format_value, outcome_verdict, result_rows

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1b1b1b; max-width: 1100px; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { font-weight: 600; border-radius: 3px; padding: 0.05rem 0.4rem; }
.pass { background: #d8f0d8; color: #14591a; }
.fail, .error { background: #f8d4d4; color: #8a1212; }
.warn, .skip { background: #fbedc4; color: #6b4e00; }
.info { background: #d6ebf5; color: #0d4b6b; }
.summary span { margin-right: 0.8rem; }
.muted { color: #666; font-size: 0.85rem; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
code { font-size: 0.85rem; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _verdict(verdict: str) -> str:
    return f'<span class="verdict {_e(verdict)}">{_e(verdict)}</span>'


def _summary(report: Mapping[str, Any]) -> str:
    counts = report.get("summary") or {}
    parts = [f"<span>{_verdict(name)} {counts[name]}</span>" for name in counts if counts[name]]
    return f'<p class="summary">{"".join(parts) or "no results"}</p>'


def _results_table(model: str, rows: list[list[str]]) -> str:
    header = "".join(f"<th>{name}</th>" for name in
                     ("check", "data", "metric", "value", "threshold", "verdict", "images", "explanation"))
    body = []
    for row in rows:
        cells = [f"<td>{_e(row[0])}</td>", f"<td>{_e(row[1])}</td>", f"<td>{_e(row[2])}</td>",
                 f'<td class="number">{_e(row[3])}</td>', f"<td>{_e(row[4])}</td>", f"<td>{_verdict(row[5])}</td>",
                 f'<td class="number">{_e(row[6])}</td>', f"<td>{_e(row[7])}</td>"]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<h2>{_e(model)}</h2>\n<table><tr>{header}</tr>\n" + "\n".join(body) + "</table>"


def _provenance(report: Mapping[str, Any], model: str) -> str:
    provenance = (report.get("models") or {}).get(model) or {}
    lines = []
    if provenance:
        lines.append(f"weights <code>{_e(provenance.get('weights'))}</code>, SHA-256 "
                     f"<code>{_e(provenance.get('weights_sha256') or 'unknown')}</code>, adapter "
                     f"{_e(provenance.get('adapter'))}, architecture {_e(provenance.get('architecture'))}")
    for name, run in ((report.get("data") or {}).get(model) or {}).items():
        lines.append(f"data {_e(name)}: {run.get('n_read')} images read, {run.get('n_skipped')} skipped, "
                     f"{run.get('n_labelled')} labelled, {_format_value(run.get('seconds'))} s; fingerprint "
                     f"<code>{_e(str(run.get('fingerprint'))[:16])}</code> ({_e(run.get('description'))})")
    return "".join(f'<p class="muted">{line}</p>' for line in lines)


def _relative_table(results: list[Mapping[str, Any]]) -> str:
    rows = []
    for result in results:
        for outcome in result.get("outcomes") or []:
            for comparison in outcome.get("relative") or []:
                passed = comparison.get("passed")
                verdict = "info" if passed is None else outcome_verdict(passed, result["severity"])
                rows.append(f"<tr><td>{_e(result['id'])}</td><td>{_e(outcome['dataset'])}</td>"
                            f"<td>{_e(comparison['metric'])}</td><td class=\"number\">{_e(_format_value(comparison['value']))}</td>"
                            f"<td class=\"number\">{_e(_format_value(comparison['baseline']))}</td>"
                            f"<td>{_e(comparison['threshold'])}</td><td>{_verdict(verdict)}</td></tr>")
    if not rows:
        return ""
    header = "".join(f"<th>{name}</th>" for name in ("check", "data", "metric", "value", "baseline", "threshold", "verdict"))
    return f"<h3>Against the baseline</h3><table><tr>{header}</tr>{''.join(rows)}</table>"


def render_html(report: Mapping[str, Any], plots: list[Any] | None = None) -> str:
    """Return the HTML page of ``report``; ``plots`` defaults to every plot the report has data for."""
    from robsig_checks.report.plots import plots_from_report

    if plots is None:
        plots = plots_from_report(report)
    results = list(report.get("results") or [])
    options = report.get("options") or {}
    versions = report.get("versions") or {}
    baseline = report.get("baseline")

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>robsig report</title>", f"<style>{CSS}</style></head><body>",
             "<h1>robsig: robustness signatures</h1>",
             f'<p class="muted">created {_e(report.get("created", ""))}; {_format_value(report.get("duration_seconds"))} s; '
             f'report schema {_e(report.get("schema_version"))}; suites {_e(", ".join(options.get("suites") or []))}; '
             f'limit {_e(options.get("limit") if options.get("limit") is not None else "none")} images per data set</p>',
             _summary(report)]
    if baseline:
        parts.append(f'<p class="muted">baseline {_e(baseline.get("path"))}, recorded {_e(baseline.get("created"))} '
                     f'(models {_e(", ".join(baseline.get("models") or []))})</p>')

    for model, rows in result_rows(results).items():
        parts.append(_results_table(model, rows))
        parts.append(_provenance(report, model))
        parts.append(_relative_table([result for result in results if result["model"] == model]))

    if plots:
        parts.append("<h2>Plots</h2>")
        for plot in plots:
            encoded = base64.b64encode(plot.png).decode("ascii")
            parts.append(f'<figure><img alt="{_e(plot.title)}" src="data:image/png;base64,{encoded}">'
                         f"<figcaption class=\"muted\">{_e(plot.title)}</figcaption></figure>")

    parts.append("<h2>Versions</h2><p class=\"muted\">"
                 + ", ".join(f"{_e(name)} {_e(version)}" for name, version in versions.items() if version) + "</p>")
    parts.append("</body></html>")
    return "\n".join(part for part in parts if part)


def write_html(path: Path, report: Mapping[str, Any]) -> None:
    """Write the HTML page of ``report`` to ``path`` atomically."""
    from robsig_checks.report.outputs import write_text_atomic

    write_text_atomic(Path(path), render_html(report))
