"""``robsig er``: effective robustness per model from a CSV table of accuracies.

The table has one row per model and a column per data set. Accuracies may be fractions (0.762)
or percents (76.2): the scale is detected once for the whole table, and a table that mixes the
two is rejected.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robsig_checks.errors import RobsigError

DEFAULT_MODEL_COLUMN = "model"
DEFAULT_IMAGENET_COLUMN = "imagenet"
DEFAULT_SHIFT_COLUMNS = ("imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")
SCALES = ("auto", "fraction", "percent")


@dataclass
class ERTable:
    """Per-model ER computed from a table, with the scale used and the baseline line."""

    path: str
    scale: str
    beta1: float
    beta0: float
    shift_columns: list[str]
    rows: list[dict[str, Any]]
    #: The refit of (beta1, beta0) on this table's models, when asked for.
    fit: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "scale": self.scale, "beta1": self.beta1, "beta0": self.beta0,
                "shift_columns": self.shift_columns, "models": self.rows,
                "fit": None if self.fit is None else self.fit.to_dict()}


def refit_table(table: ERTable, n_bootstrap: int = 1000, seed: int = 0) -> ERTable:
    """Fit (beta1, beta0) on the table's models by least squares in logit space, with a bootstrap interval.

    Models whose ImageNet accuracy or mean shift accuracy is 0 or 1 have no finite logit and are left out.

    Raises:
        RobsigError: when fewer than 3 models remain or their ImageNet accuracies are all equal.
    """
    from robsig_checks.metrics.effective_robustness import fit_baseline_line

    usable = [row for row in table.rows if 0 < row["acc_imagenet"] < 1 and 0 < row["acc_shift_mean"] < 1]
    try:
        table.fit = fit_baseline_line([row["acc_imagenet"] for row in usable],
                                      [row["acc_shift_mean"] for row in usable], n_bootstrap=n_bootstrap, seed=seed)
    except ValueError as error:
        raise RobsigError(f"{table.path}: cannot refit the baseline from {len(usable)} usable models: {error}") from None
    return table


def _number(text: str, path: Path, line: int, column: str) -> float:
    cleaned = text.strip().rstrip("%").strip()
    try:
        value = float(cleaned)
    except ValueError:
        raise RobsigError(f"{path}:{line}: column {column!r} has {text!r}, which is not a number. Write the "
                          "accuracy as a fraction (0.762) or a percent (76.2).") from None
    if not math.isfinite(value) or value < 0 or value > 100:
        raise RobsigError(f"{path}:{line}: column {column!r} has {text!r}; an accuracy must be in [0, 1] as a "
                          "fraction or in [0, 100] as a percent.")
    return value


def detect_scale(values: list[float]) -> str:
    """Return ``percent`` when some value is above 1, else ``fraction``."""
    return "percent" if any(value > 1.0 for value in values) else "fraction"


def compute_er_table(
    path: Path,
    model_column: str = DEFAULT_MODEL_COLUMN,
    imagenet_column: str = DEFAULT_IMAGENET_COLUMN,
    shift_columns: list[str] | tuple[str, ...] = DEFAULT_SHIFT_COLUMNS,
    scale: str = "auto",
    beta1: float = 0.76,
    beta0: float = -1.49,
) -> ERTable:
    """Read a results table and compute ER per row (Crabbé et al. 2023, Eq. 1).

    Raises:
        RobsigError: when the file cannot be read, a column is missing, a cell is not an accuracy,
            or ``scale`` is ``fraction`` while a value is above 1; every message names the file,
            the line and the column.
    """
    from robsig_checks.metrics.effective_robustness import effective_robustness, predicted_shift_accuracy

    if scale not in SCALES:
        raise RobsigError(f"--scale {scale!r}: allowed values are {', '.join(SCALES)}.")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(4096)
            handle.seek(0)
            dialect = csv.Sniffer().sniff(sample, delimiters=",;\t") if sample.strip() else csv.excel
            reader = csv.DictReader(handle, dialect=dialect)
            records = list(reader)
            header = reader.fieldnames or []
    except FileNotFoundError:
        raise RobsigError(f"{path}: file not found. Give a CSV file with one row per model.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RobsigError(f"{path}: cannot read the table ({error}).") from None

    header = [name.strip() for name in header]
    needed = [model_column, imagenet_column, *shift_columns]
    absent = [name for name in needed if name not in header]
    if absent:
        raise RobsigError(f"{path}: missing column(s) {', '.join(map(repr, absent))}; the header has "
                          f"{', '.join(map(repr, header)) or 'no columns'}. Rename the columns or pass "
                          "--model-column, --imagenet-column and --shift-columns.")
    if not records:
        raise RobsigError(f"{path}: the table has a header but no rows.")

    parsed = []
    for line, record in enumerate(records, start=2):
        record = {(key or "").strip(): (value or "") for key, value in record.items()}
        values = {column: _number(record[column], path, line, column) for column in needed[1:]}
        parsed.append((line, record[model_column].strip(), values))

    all_values = [value for _, _, values in parsed for value in values.values()]
    if scale == "auto":
        row_scales = {line: detect_scale(list(values.values())) for line, _, values in parsed}
        if len(set(row_scales.values())) > 1:
            fraction_lines = [str(line) for line, used_scale in row_scales.items() if used_scale == "fraction"]
            percent_lines = [str(line) for line, used_scale in row_scales.items() if used_scale == "percent"]
            raise RobsigError(
                f"{path}: the table mixes scales: line(s) {', '.join(fraction_lines)} read as fractions (all values "
                f"at most 1) and line(s) {', '.join(percent_lines)} as percents (a value above 1). Write every row "
                "on one scale, fix a mistyped value, or pass --scale fraction or --scale percent."
            )
    used = detect_scale(all_values) if scale == "auto" else scale
    if used == "fraction" and any(value > 1.0 for value in all_values):
        raise RobsigError(f"{path}: --scale fraction, but some accuracies are above 1; use --scale percent.")
    divisor = 100.0 if used == "percent" else 1.0

    rows = []
    for line, model, values in parsed:
        fractions = {column: value / divisor for column, value in values.items()}
        shifts = {column: fractions[column] for column in shift_columns}
        row: dict[str, Any] = {"model": model, "line": line, "acc_imagenet": fractions[imagenet_column],
                               "acc_shifts": shifts, "acc_shift_mean": sum(shifts.values()) / len(shifts)}
        try:
            row["predicted_shift_accuracy"] = predicted_shift_accuracy(fractions[imagenet_column], beta1, beta0)
            row["effective_robustness"] = effective_robustness(fractions[imagenet_column], shifts, beta1, beta0)
            row["error"] = None
        except ValueError as error:
            row["predicted_shift_accuracy"] = None
            row["effective_robustness"] = None
            row["error"] = f"line {line}: {error}"
        rows.append(row)
    return ERTable(str(path), used, beta1, beta0, list(shift_columns), rows)


def format_er_table(table: ERTable) -> str:
    """Return the ER table as aligned text, in percentage points."""
    lines = [f"{table.path}: accuracies read as {table.scale}s; ER = ACC(S) - logit^-1({table.beta1:g} * "
             f"logit(ACC(I)) + {table.beta0:g}), ACC(S) = mean over {', '.join(table.shift_columns)}"]
    width = max(len("model"), *(len(row["model"]) for row in table.rows))
    lines.append(f"  {'model'.ljust(width)}  {'ImageNet':>8}  {'ACC(S)':>7}  {'predicted':>9}  {'ER':>7}")
    for row in table.rows:
        if row["effective_robustness"] is None:
            lines.append(f"  {row['model'].ljust(width)}  ER not computed: {row['error']}")
            continue
        lines.append(f"  {row['model'].ljust(width)}  {100 * row['acc_imagenet']:8.2f}  "
                     f"{100 * row['acc_shift_mean']:7.2f}  {100 * row['predicted_shift_accuracy']:9.2f}  "
                     f"{100 * row['effective_robustness']:+7.2f}")
    lines.append("  (accuracies and ER in percentage points)")
    if table.fit is not None:
        fit = table.fit
        level = f"{100 * fit.confidence:g} %"
        lines.append(f"refit on {fit.n_models} models: beta1 = {fit.beta1:.4f} [{fit.beta1_interval[0]:.4f}, "
                     f"{fit.beta1_interval[1]:.4f}], beta0 = {fit.beta0:.4f} [{fit.beta0_interval[0]:.4f}, "
                     f"{fit.beta0_interval[1]:.4f}] ({level} bootstrap intervals, {fit.n_bootstrap} resamples, "
                     f"seed {fit.seed})")
    return "\n".join(lines)
