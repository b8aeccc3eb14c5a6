"""Writing the files of a finished run: JSON report, HTML page, PNG plots and baseline."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so no half-written file remains."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_outputs(report: Mapping[str, Any], options: Any) -> list[str]:
    """Write every file the options ask for and return one terminal line per file written or failed.

    Parameters:
        report: the JSON report of the run.
        options: a ``RobsigOptions`` with ``report``, ``html``, ``plots`` and ``save_baseline`` paths (or None).
    """
    from robsig_checks.baseline import save_baseline
    from robsig_checks.report.html import write_html
    from robsig_checks.report.json_report import write_report
    from robsig_checks.report.plots import write_plots

    lines = []
    targets = [
        ("JSON report", options.report, lambda path: write_report(path, dict(report))),
        ("HTML report", options.html, lambda path: write_html(path, report)),
        ("plots", options.plots, lambda path: f"{len(write_plots(report, path))} PNG files"),
        ("baseline", options.save_baseline, lambda path: _count_metrics(save_baseline(path, report))),
    ]
    for label, path, write in targets:
        if path is None:
            continue
        try:
            detail = write(Path(path))
        except OSError as error:
            lines.append(f"robsig: failed to write the {label} to {path}: {error}")
            continue
        lines.append(f"robsig: {label} written to {path}" + (f" ({detail})" if detail else ""))
    if options.save_baseline is not None:
        without = [f"{r['id']}[{r['model']}]" for r in report.get("results") or [] if r["verdict"] in ("error", "skip")]
        if without:
            lines.append(f"robsig: the baseline has no values for {', '.join(without)} (error or skip); comparisons "
                         "with them take the missing-baseline path")
    return lines


def _count_metrics(document: Mapping[str, Any]) -> str:
    models = document["models"]
    n_metrics = sum(len(outcome["metrics"]) for model in models.values() for check in model["checks"].values()
                    for outcome in check["outcomes"].values())
    return f"{n_metrics} metrics of {len(models)} model(s)"
