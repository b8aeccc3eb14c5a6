"""PNG plots of a robsig JSON report, drawn with matplotlib's Agg canvas (no display needed).

Each plot reads the outcome details that checks put in the report:

- importance spectrum: ``details.importance_sorted`` (privileged_direction_tail), log scale, with the
  directions above ``factor`` × mean importance marked;
- pruning curve: ``details.curve`` with ``fractions`` and any of ``accuracy``, ``agreement``, ``er``, or
  ``details.er_curve`` with ``fractions`` and ``effective_robustness`` (pruning_tolerance), the gate marked;
- kurtosis per model: every outcome whose headline metric is ``kurtosis``, against its ``min``;
- CKA per layer: ``details.cka_per_layer`` (a mapping layer -> CKA) or ``details.layers`` with ``details.cka``;
- concept counts per category: ``details.concepts_per_category`` (a mapping category -> count), or the
  ``encoded`` counts of ``metrics.per_category`` (unique_concepts).

A plot whose details are absent is not drawn.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

#: Size of every plot in inches and its resolution: 7.5 × 4 inches at 100 dpi give 750 × 400 pixels.
FIGSIZE = (7.5, 4.0)
DPI = 100


@dataclass
class Plot:
    """One rendered plot: a file-safe name, a title for people, and the PNG bytes."""

    name: str
    title: str
    png: bytes


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _finite(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def importance_spectrum(spectrum: list[float], factor: float, title: str) -> bytes:
    """Plot the importance of each singular direction, sorted, on a log scale.

    Parameters:
        spectrum: importances sorted in decreasing order, one per right singular vector of ``W``.
        factor: a direction is privileged when its importance exceeds ``factor`` × the mean importance
            (Crabbé et al. 2023, Eq. 4, with the tail statistic of this project).
        title: the plot title.
    """
    values = _finite(spectrum)
    if not values or max(values) <= 0:
        raise ValueError(f"spectrum: needs at least one positive finite importance, got {spectrum[:5]!r}")
    mean = sum(values) / len(values)
    # A log axis cannot show zeros: directions with zero importance are left out of the line, not of the mean.
    values = [value for value in values if value > 0]
    figure, axes = _figure()
    ranks = list(range(1, len(values) + 1))
    privileged = [(rank, value) for rank, value in zip(ranks, values) if value > factor * mean]
    axes.plot(ranks, values, color="#1f77b4", linewidth=1.5, label="importance")
    if privileged:
        axes.scatter(*zip(*privileged), color="#d62728", zorder=3, s=24,
                     label=f"privileged (> {factor:g} × mean): {len(privileged)}")
    axes.axhline(mean, color="#7f7f7f", linestyle="--", linewidth=1, label="mean")
    axes.axhline(factor * mean, color="#d62728", linestyle=":", linewidth=1, label=f"{factor:g} × mean")
    axes.set_yscale("log")
    axes.set_xlabel("direction rank (by importance)")
    axes.set_ylabel("importance")
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize="small")
    return _png(figure)


def pruning_curve(curve: Mapping[str, Any], fraction: float, title: str) -> bytes:
    """Plot accuracy, agreement and effective robustness against the fraction of directions pruned.

    Parameters:
        curve: ``fractions`` and lists of the same length named ``accuracy`` (None without labels),
            ``agreement`` and, when present, ``er``.
        fraction: the gate fraction (0.8 by default, Crabbé et al. 2023, Fig. 3), drawn as a vertical line.
        title: the plot title.
    """
    fractions = list(curve.get("fractions") or [])
    series = {name: curve.get(name) for name in ("accuracy", "agreement", "er")}
    series = {name: values for name, values in series.items()
              if isinstance(values, list) and len(values) == len(fractions) and _finite(values)}
    if not fractions or not series:
        raise ValueError("curve: needs `fractions` and at least one of accuracy, agreement, er of the same length")
    figure, axes = _figure()
    colors = {"accuracy": "#1f77b4", "agreement": "#2ca02c", "er": "#9467bd"}
    labels = {"accuracy": "top-1 accuracy", "agreement": "agreement with unpruned head", "er": "effective robustness"}
    for name, values in series.items():
        points = [(f * 100, v) for f, v in zip(fractions, values) if v is not None and math.isfinite(v)]
        axes.plot(*zip(*points), marker="o", color=colors[name], label=labels[name])
    axes.axvline(fraction * 100, color="#d62728", linestyle="--", linewidth=1, label=f"gate: {fraction:.0%} pruned")
    axes.set_xlabel("directions pruned (%)")
    axes.set_ylabel("accuracy, agreement or ER")
    axes.set_xlim(0, 100)
    lowest = min(min(_finite(values)) for values in series.values())
    axes.set_ylim(min(0.0, lowest - 0.05), 1.05)
    axes.set_title(title)
    axes.legend(loc="lower left", fontsize="small")
    return _png(figure)


def kurtosis_per_model(values: list[tuple[str, float]], threshold: float | None, title: str) -> bytes:
    """Plot one bar per (model, data set) label with its kurtosis, and the minimum as a line.

    Parameters:
        values: (label, kurtosis) pairs; 3 is the kurtosis of a Gaussian vector.
        threshold: the check's ``min``, or None when the checks disagree or have none.
        title: the plot title.
    """
    values = [(label, float(value)) for label, value in values if value is not None and math.isfinite(value)]
    if not values:
        raise ValueError("values: needs at least one finite kurtosis")
    figure, axes = _figure()
    labels = [label for label, _ in values]
    heights = [value for _, value in values]
    colors = ["#2ca02c" if threshold is None or value >= threshold else "#d62728" for value in heights]
    axes.bar(range(len(values)), heights, color=colors)
    axes.set_xticks(range(len(values)), labels, rotation=20 if len(values) > 3 else 0, ha="right" if len(values) > 3 else "center",
                    fontsize="small")
    axes.axhline(3.0, color="#7f7f7f", linestyle=":", linewidth=1, label="Gaussian (3)")
    if threshold is not None:
        axes.axhline(threshold, color="#d62728", linestyle="--", linewidth=1, label=f"min {threshold:g}")
    axes.set_ylabel("activation kurtosis")
    axes.set_title(title)
    axes.legend(loc="upper right", fontsize="small")
    return _png(figure)


def cka_per_layer(layers: list[str], values: list[float], title: str) -> bytes:
    """Plot linear CKA against the reference model, layer by layer (Kornblith et al. 2019)."""
    points = [(layer, float(v)) for layer, v in zip(layers, values) if isinstance(v, (int, float)) and math.isfinite(v)]
    if not points:
        raise ValueError("values: needs at least one finite CKA value")
    figure, axes = _figure()
    axes.plot(range(len(points)), [v for _, v in points], marker="o", color="#1f77b4")
    axes.set_xticks(range(len(points)), [layer for layer, _ in points], rotation=30, ha="right", fontsize="small")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("linear CKA with the reference")
    axes.set_title(title)
    return _png(figure)


def concepts_per_category(counts: Mapping[str, float], title: str) -> bytes:
    """Plot the number of concepts encoded per Broden category (Crabbé et al. 2023, Table 3)."""
    items = [(name, float(count)) for name, count in counts.items() if isinstance(count, (int, float))]
    if not items:
        raise ValueError("counts: needs at least one category with a number")
    figure, axes = _figure()
    axes.bar(range(len(items)), [count for _, count in items], color="#1f77b4")
    axes.set_xticks(range(len(items)), [name for name, _ in items], fontsize="small")
    axes.set_ylabel("concepts encoded")
    axes.set_title(title)
    return _png(figure)


def _slug(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts)).strip("_")


def _threshold_number(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def plots_from_report(report: Mapping[str, Any]) -> list[Plot]:
    """Draw every plot whose data the report contains, in the order of its results."""
    plots: list[Plot] = []
    kurtosis: list[tuple[str, float]] = []
    kurtosis_minimums: set[float | None] = set()
    for result in report.get("results") or []:
        model, params = result["model"], result.get("params") or {}
        for outcome in result.get("outcomes") or []:
            details = outcome.get("details") or {}
            where = f"{result['id']} on {model}, {outcome['dataset']}"
            if outcome.get("metric") == "kurtosis" and outcome.get("value") is not None:
                kurtosis.append((f"{model} / {outcome['dataset']}", outcome["value"]))
                kurtosis_minimums.add(_threshold_number(params, "min"))
            if details.get("importance_sorted"):
                factor = _threshold_number(params, "factor") or 5.0
                plots.append(Plot(_slug("importance", result["id"], model, outcome["dataset"]),
                                  f"importance spectrum: {where}",
                                  importance_spectrum(details["importance_sorted"], factor, f"Importance spectrum: {where}")))
            curve = _pruning_series(details)
            if curve:
                fraction = _threshold_number(params, "fraction") or 0.8
                plots.append(Plot(_slug("pruning", result["id"], model, outcome["dataset"]), f"pruning curve: {where}",
                                  pruning_curve(curve, fraction, f"Pruning curve: {where}")))
            layers, values = _cka_series(details)
            if layers:
                plots.append(Plot(_slug("cka", result["id"], model, outcome["dataset"]), f"CKA per layer: {where}",
                                  cka_per_layer(layers, values, f"CKA per layer: {where}")))
            counts = _concept_counts(outcome)
            if counts:
                plots.append(Plot(_slug("concepts", result["id"], model, outcome["dataset"]),
                                  f"concepts per category: {where}",
                                  concepts_per_category(counts, f"Concepts per category: {where}")))
    if kurtosis:
        threshold = next(iter(kurtosis_minimums)) if len(kurtosis_minimums) == 1 else None
        plots.insert(0, Plot("kurtosis", "activation kurtosis per model",
                             kurtosis_per_model(kurtosis, threshold, "Activation kurtosis per model")))
    return plots


def _pruning_series(details: Mapping[str, Any]) -> dict[str, Any]:
    """Return the pruning curve of an outcome: ``details.curve``, or the ER curve ``details.er_curve``."""
    curve = details.get("curve")
    if isinstance(curve, dict) and curve.get("fractions"):
        return dict(curve)
    er_curve = details.get("er_curve")
    if isinstance(er_curve, dict) and er_curve.get("fractions") and _finite(er_curve.get("effective_robustness") or []):
        return {"fractions": er_curve["fractions"], "er": er_curve["effective_robustness"]}
    return {}


def _concept_counts(outcome: Mapping[str, Any]) -> dict[str, float]:
    """Return concepts encoded per category: ``details.concepts_per_category``, or the ``encoded`` counts of
    ``metrics.per_category`` (unique_concepts)."""
    counts = (outcome.get("details") or {}).get("concepts_per_category")
    if isinstance(counts, dict) and counts:
        return dict(counts)
    per_category = (outcome.get("metrics") or {}).get("per_category")
    if isinstance(per_category, dict):
        return {name: entry["encoded"] for name, entry in per_category.items()
                if isinstance(entry, dict) and isinstance(entry.get("encoded"), (int, float))}
    return {}


def _cka_series(details: Mapping[str, Any]) -> tuple[list[str], list[float]]:
    per_layer = details.get("cka_per_layer")
    if isinstance(per_layer, dict) and per_layer:
        return [str(layer) for layer in per_layer], list(per_layer.values())
    layers, values = details.get("layers"), details.get("cka")
    if isinstance(layers, list) and isinstance(values, list) and layers and len(layers) == len(values):
        return [str(layer) for layer in layers], values
    return [], []


def write_plots(report: Mapping[str, Any], folder: Path) -> list[Path]:
    """Write every plot of ``report`` as ``NAME.png`` into ``folder`` (created when absent); return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for plot in plots_from_report(report):
        path = folder / f"{plot.name}.png"
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(plot.png)
        temporary.replace(path)
        paths.append(path)
    return paths
