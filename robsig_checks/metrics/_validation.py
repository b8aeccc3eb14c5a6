"""Input checks and conversions shared by the metrics.

Every public metric converts its inputs here, so that torch tensors and numpy arrays of any
floating-point dtype become float64 numpy arrays. A bad input raises a ``ValueError`` that
names the parameter, the value received and what is expected.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

ArrayLike = torch.Tensor | np.ndarray

#: Label of a row with no known class. It equals ``robsig_checks.datasets.base.UNLABELLED``,
#: repeated here so that the metrics do not import the data set package.
UNLABELLED = -1


def _describe(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__module__}.{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__}"


def to_float64(value: Any, name: str) -> np.ndarray:
    """Convert a torch tensor or numpy array of a real floating-point dtype to a float64 array.

    Tensors are detached and moved to the CPU. The result may share memory with ``value``,
    so callers must not write to it.

    Raises:
        ValueError: ``value`` is another type, or its dtype is integer, bool or complex.
    """
    if isinstance(value, torch.Tensor):
        if not value.dtype.is_floating_point or value.dtype.is_complex:
            raise ValueError(
                f"{name} must have a real floating-point dtype, got {_describe(value)}. "
                f"Convert it with {name}.double()."
            )
        return value.detach().to(device="cpu", dtype=torch.float64).numpy()
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "f":
            raise ValueError(
                f"{name} must have a real floating-point dtype, got {_describe(value)}. "
                f"Convert it with {name}.astype(np.float64)."
            )
        return np.asarray(value, dtype=np.float64)
    raise ValueError(f"{name} must be a torch.Tensor or a numpy.ndarray, got {_describe(value)}.")


def to_matrix(value: Any, name: str, *, columns: int | None = None, finite: bool = False) -> np.ndarray:
    """Convert ``value`` to a non-empty 2-D float64 array.

    Parameters:
        value: tensor or array of shape ``(rows, columns)``.
        name: parameter name used in error messages.
        columns: required number of columns, or None for any positive number.
        finite: if True, NaN and inf values raise instead of passing through.
    """
    array = to_float64(value, name)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, features), got shape {tuple(array.shape)}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(array.shape)}.")
    if columns is not None and array.shape[1] != columns:
        raise ValueError(
            f"{name} has {array.shape[1]} columns (shape {tuple(array.shape)}) but the head expects "
            f"d_H = {columns} features per row."
        )
    if finite and not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf values (shape {tuple(array.shape)}). It must be finite.")
    return array


def to_vector(value: Any, name: str, *, length: int) -> np.ndarray:
    """Convert ``value`` to a finite 1-D float64 array of ``length`` elements."""
    array = to_float64(value, name)
    if array.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got shape {tuple(array.shape)}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or inf values. It must be finite.")
    return array


def to_labels(labels: Any, n_rows: int, n_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """Convert class labels to a 1-D int64 array of ``n_rows`` values.

    Parameters:
        labels: integer tensor or array of shape ``(n_rows,)``, or None for all unlabelled.
            Each value is a class index in ``[0, n_classes)`` or ``UNLABELLED`` (-1).
        n_rows: number of rows of the batch the labels belong to.
        n_classes: number of classes of the head, or None to skip the upper bound.
    """
    if labels is None:
        return np.full(n_rows, UNLABELLED, dtype=np.int64)
    if isinstance(labels, torch.Tensor):
        if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
            raise ValueError(f"{name} must have an integer dtype, got {_describe(labels)}.")
        array = labels.detach().cpu().numpy().astype(np.int64)
    elif isinstance(labels, np.ndarray):
        if labels.dtype.kind not in "iu":
            raise ValueError(f"{name} must have an integer dtype, got {_describe(labels)}.")
        array = labels.astype(np.int64)
    else:
        raise ValueError(f"{name} must be a torch.Tensor, a numpy.ndarray or None, got {_describe(labels)}.")
    if array.shape != (n_rows,):
        raise ValueError(f"{name} must have shape ({n_rows},), one label per row, got shape {tuple(array.shape)}.")
    if array.size and array.min() < UNLABELLED:
        raise ValueError(
            f"{name} contains {int(array.min())}, but labels must be class indices >= 0 or {UNLABELLED} for unlabelled."
        )
    if n_classes is not None and array.size and array.max() >= n_classes:
        raise ValueError(
            f"{name} contains class index {int(array.max())} but the head has {n_classes} classes "
            f"(valid indices 0..{n_classes - 1}). Check that the labels and the head use the same class order."
        )
    return array


def to_fractions(fractions: Any) -> tuple[float, ...]:
    """Normalise pruning fractions: sort them, drop duplicates and add 0.

    Parameters:
        fractions: non-empty iterable of real numbers, each in ``[0, 1)``.

    Returns:
        The sorted unique fractions as Python floats, starting with 0.0.
    """
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, (Iterable, np.ndarray, torch.Tensor)):
        raise ValueError(f"fractions must be a sequence of numbers in [0, 1), got {fractions!r}.")
    values: list[float] = []
    for item in list(fractions):
        if isinstance(item, (torch.Tensor, np.ndarray)) and np.ndim(item) == 0:
            item = item.item()
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, float, np.integer, np.floating)):
            raise ValueError(f"fractions must contain only real numbers in [0, 1), got {item!r} in {fractions!r}.")
        value = float(item)
        if not (0.0 <= value < 1.0):
            raise ValueError(
                f"fractions must each be in [0, 1), got {item!r} in {fractions!r}. "
                "A fraction p prunes floor(p * rank) directions, so 1 would prune them all."
            )
        values.append(value)
    if not values:
        raise ValueError("fractions must contain at least one value in [0, 1), got an empty sequence.")
    return tuple(sorted(set(values) | {0.0}))


def n_pruned_for(fraction: float, rank: int) -> int:
    """Return ``floor(fraction * rank)``, robust to the rounding of decimal fractions.

    ``0.29 * 100`` is ``28.999999999999996`` in float64, so a margin of 1e-9 is added before
    the floor. The result is at most ``rank - 1`` because every fraction is below 1.
    """
    return min(int(math.floor(fraction * rank + 1e-9)), rank - 1)


def float_or_none(value: float) -> float | None:
    """Return ``value`` as a Python float, or None when it is NaN or inf (JSON has neither)."""
    value = float(value)
    return value if math.isfinite(value) else None


def warn_excluded(function: str, name: str, n_total: int, reasons: dict[str, int], stacklevel: int = 3) -> None:
    """Emit one RuntimeWarning that counts the rows of ``name`` a metric excluded, by reason."""
    n_excluded = sum(reasons.values())
    if n_excluded == 0:
        return
    details = ", ".join(f"{count} {reason}" for reason, count in reasons.items() if count)
    warnings.warn(
        f"{function}: excluded {n_excluded} of {n_total} rows of {name} ({details}).",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
