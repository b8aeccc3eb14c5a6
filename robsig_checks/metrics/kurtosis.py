"""Activation kurtosis of last-layer representations.

Crabbé et al. (2023), "Robust multimodal models have outlier features and encode more
concepts", Eq. 2, score a representation ``h`` in R^{d_H} by the kurtosis of its components,

    kurtosis(h) = mean_i ((h_i - mu(h)) / sigma(h))^4,

with mu and sigma the mean and population standard deviation over the d_H components of the
one vector, and average it over the images. A vector with Gaussian components scores about 3.
A few outlier features, which the paper's title attributes to robust multimodal models, raise
the score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from robsig_checks.metrics._validation import (
    ArrayLike,
    float_or_none,
    to_labels,
    to_matrix,
    warn_excluded,
)
from robsig_checks.metrics.base import Accumulator

_EPS = np.finfo(np.float64).eps


def _row_kurtosis_with_masks(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the kurtosis of each row and the masks of zero-variance and non-finite rows.

    ``rows`` is a float64 array of shape ``(N, d_H)``. Undefined values are NaN.
    """
    n_rows = rows.shape[0]
    values = np.full(n_rows, np.nan)
    nonfinite = ~np.isfinite(rows).all(axis=1)
    zero_variance = np.zeros(n_rows, dtype=bool)
    finite_index = np.flatnonzero(~nonfinite)
    if finite_index.size == 0:
        return values, zero_variance, nonfinite

    finite = rows[finite_index]
    # Kurtosis is scale-invariant. Dividing each row by the power of two just above its
    # max |h_i| is exact and keeps the fourth powers away from overflow and underflow.
    _, exponent = np.frexp(np.abs(finite).max(axis=1))
    scaled = np.ldexp(finite, -exponent[:, None])

    mean = scaled.mean(axis=1)
    squared = (scaled - mean[:, None]) ** 2
    m2 = squared.mean(axis=1)
    m4 = (squared**2).mean(axis=1)

    # sigma counts as 0 when all components are equal, or when the spread is below the
    # rounding level of the mean (m2 <= (eps * mu)^2, the criterion of scipy.stats.kurtosis in
    # scipy 1.17).
    constant = scaled.max(axis=1) == scaled.min(axis=1)
    zero = constant | (m2 <= (_EPS * mean) ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        finite_values = np.where(zero, np.nan, m4 / m2**2)

    values[finite_index] = finite_values
    zero_variance[finite_index] = zero
    return values, zero_variance, nonfinite


def row_kurtosis(H: ArrayLike) -> np.ndarray:
    """Compute the kurtosis of each row of ``H`` (Crabbé et al. 2023, Eq. 2, before the mean).

    Parameters:
        H: activations of shape ``(N, d_H)``, torch tensor or numpy array of any float dtype.

    Returns:
        float64 array of shape ``(N,)``. It is NaN for rows whose standard deviation is 0
        and for rows that contain NaN or inf.
    """
    values, _, _ = _row_kurtosis_with_masks(to_matrix(H, "H"))
    return values


def kurtosis(H: ArrayLike) -> float:
    """Compute the activation kurtosis of ``H``: the mean over rows of each row's kurtosis.

    This is Crabbé et al. (2023), Eq. 2. It equals
    ``scipy.stats.kurtosis(H, axis=1, fisher=False, bias=True)`` averaged over the rows where
    that is defined.

    Parameters:
        H: activations of shape ``(N, d_H)``, torch tensor or numpy array of any float dtype.

    Returns:
        The mean kurtosis as a Python float, or NaN when no row has a defined kurtosis.

    Warns:
        RuntimeWarning: when rows are excluded, with their number per reason. A row is
        excluded when its standard deviation is 0 or when it contains NaN or inf.
    """
    rows = to_matrix(H, "H")
    values, zero_variance, nonfinite = _row_kurtosis_with_masks(rows)
    warn_excluded(
        "kurtosis",
        "H",
        rows.shape[0],
        {
            "with zero variance, where kurtosis is undefined": int(zero_variance.sum()),
            "with NaN or inf values": int(nonfinite.sum()),
        },
    )
    valid = values[~np.isnan(values)]
    if valid.size == 0:
        return math.nan
    return float(valid.mean())


@dataclass(frozen=True)
class KurtosisResult:
    """Activation kurtosis over every row folded into a :class:`KurtosisAccumulator`.

    ``value`` is the mean of the row kurtosis over the ``n_rows`` scored rows (NaN when there
    are none). ``row_min``, ``row_max`` and ``row_std`` (population standard deviation)
    summarise the distribution of the row kurtosis over the same rows.
    """

    value: float
    n_rows: int
    n_zero_variance: int
    n_nonfinite: int
    row_min: float
    row_max: float
    row_std: float

    @property
    def n_seen(self) -> int:
        """Number of rows folded in, scored or excluded."""
        return self.n_rows + self.n_zero_variance + self.n_nonfinite

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-serialisable values, with None for NaN."""
        return {
            "value": float_or_none(self.value),
            "n_rows": self.n_rows,
            "n_zero_variance": self.n_zero_variance,
            "n_nonfinite": self.n_nonfinite,
            "row_min": float_or_none(self.row_min),
            "row_max": float_or_none(self.row_max),
            "row_std": float_or_none(self.row_std),
        }


class KurtosisAccumulator(Accumulator):
    """Stream the activation kurtosis over batches without storing the activations.

    The state is O(1) in the number of rows: the count, mean and sum of squared deviations of
    the row kurtosis, plus the min, max and exclusion counts. Batches and shards are combined
    with the pairwise update formula for mean and variance.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Clear the state."""
        self._d_h: int | None = None
        self._count = 0
        self._mean = 0.0
        self._sum_squared_deviations = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._n_zero_variance = 0
        self._n_nonfinite = 0

    def _check_width(self, d_h: int | None, parameter: str) -> None:
        if d_h is None:
            return
        if self._d_h is None:
            self._d_h = d_h
        elif d_h != self._d_h:
            raise ValueError(
                f"{parameter} has d_H = {d_h} features per row, but this accumulator has seen rows "
                f"with d_H = {self._d_h}."
            )

    def _fold(self, count: int, mean: float, sum_squared_deviations: float) -> None:
        if count == 0:
            return
        total = self._count + count
        delta = mean - self._mean
        self._mean += delta * count / total
        self._sum_squared_deviations += sum_squared_deviations + delta**2 * self._count * count / total
        self._count = total

    def update(self, h: ArrayLike, labels: ArrayLike | None = None) -> None:
        """Fold one batch of activations into the state.

        Parameters:
            h: activations of shape ``(batch, d_H)``. d_H must be the same in every batch.
            labels: ignored apart from a shape check, because kurtosis does not use labels.
        """
        rows = to_matrix(h, "h")
        to_labels(labels, rows.shape[0])
        self._check_width(rows.shape[1], "h")

        values, zero_variance, nonfinite = _row_kurtosis_with_masks(rows)
        self._n_zero_variance += int(zero_variance.sum())
        self._n_nonfinite += int(nonfinite.sum())
        valid = values[~np.isnan(values)]
        if valid.size == 0:
            return
        batch_mean = float(valid.mean())
        self._fold(valid.size, batch_mean, float(((valid - batch_mean) ** 2).sum()))
        self._min = min(self._min, float(valid.min()))
        self._max = max(self._max, float(valid.max()))

    def merge(self, other: Accumulator) -> "KurtosisAccumulator":
        """Fold the state of another ``KurtosisAccumulator`` into this one and return self."""
        if not isinstance(other, KurtosisAccumulator):
            raise ValueError(f"other must be a KurtosisAccumulator, got {type(other).__name__}.")
        self._check_width(other._d_h, "other")
        self._fold(other._count, other._mean, other._sum_squared_deviations)
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)
        self._n_zero_variance += other._n_zero_variance
        self._n_nonfinite += other._n_nonfinite
        return self

    def compute(self) -> KurtosisResult:
        """Return the kurtosis of every row folded so far. The state is left unchanged."""
        if self._count == 0:
            return KurtosisResult(
                value=math.nan,
                n_rows=0,
                n_zero_variance=self._n_zero_variance,
                n_nonfinite=self._n_nonfinite,
                row_min=math.nan,
                row_max=math.nan,
                row_std=math.nan,
            )
        return KurtosisResult(
            value=self._mean,
            n_rows=self._count,
            n_zero_variance=self._n_zero_variance,
            n_nonfinite=self._n_nonfinite,
            row_min=self._min,
            row_max=self._max,
            row_std=math.sqrt(self._sum_squared_deviations / self._count),
        )
