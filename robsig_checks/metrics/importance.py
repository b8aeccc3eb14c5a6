"""Privileged directions of a linear head.

Crabbé et al. (2023), "Robust multimodal models have outlier features and encode more
concepts", Eq. 3-4, decompose the head ``W`` in R^{d_Y x d_H} with an economy SVD,
``W = sum_i sigma_i u_i v_i^T`` over ``i <= r = rank(W)``, and score each right singular
direction ``v_i`` by how strongly the head weighs it and how well the representations align
with it:

    Importance(i) = sigma_i / sum_j sigma_j * mean_n |cos(v_i, h_n)|.

A few directions with importance far above the mean are the "privileged directions" that
robust models have. The head's bias plays no part.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robsig_checks.metrics._validation import (
    ArrayLike,
    float_or_none,
    to_labels,
    to_matrix,
    warn_excluded,
)
from robsig_checks.metrics.base import Accumulator

_EPS = np.finfo(np.float64).eps


@dataclass(frozen=True, eq=False)
class HeadSVD:
    """Economy SVD of a linear head ``W = U @ diag(S) @ Vh``, truncated to its rank.

    Fields are read-only float64 arrays: ``U`` of shape ``(d_Y, r)``, ``S`` of shape ``(r,)``
    in decreasing order, and ``Vh`` of shape ``(r, d_H)``, with ``rank == r >= 1``. Build it
    with :func:`head_svd`. A decomposition whose pairs ``(u_i, v_i)`` have flipped signs is
    equally valid, and every metric gives the same result for it.
    """

    U: np.ndarray
    S: np.ndarray
    Vh: np.ndarray
    rank: int

    def __post_init__(self) -> None:
        U = _read_only_float64(self.U, "U")
        S = _read_only_float64(self.S, "S")
        Vh = _read_only_float64(self.Vh, "Vh")
        if S.ndim != 1 or S.size == 0:
            raise ValueError(f"S must be a non-empty 1-D array of singular values, got shape {S.shape}.")
        rank = S.size
        if U.ndim != 2 or U.shape[1] != rank:
            raise ValueError(f"U must have shape (d_Y, {rank}) to match S, got shape {U.shape}.")
        if Vh.ndim != 2 or Vh.shape[0] != rank:
            raise ValueError(f"Vh must have shape ({rank}, d_H) to match S, got shape {Vh.shape}.")
        if isinstance(self.rank, bool) or not isinstance(self.rank, (int, np.integer)) or self.rank != rank:
            raise ValueError(f"rank must be the number of singular values, {rank}, got {self.rank!r}.")
        if not (np.isfinite(U).all() and np.isfinite(S).all() and np.isfinite(Vh).all()):
            raise ValueError("U, S and Vh must be finite.")
        if S.min() <= 0 or np.any(np.diff(S) > 0):
            raise ValueError(f"S must be positive and non-increasing, got {S.tolist()[:8]}...")
        object.__setattr__(self, "U", U)
        object.__setattr__(self, "S", S)
        object.__setattr__(self, "Vh", Vh)
        object.__setattr__(self, "rank", int(rank))

    @property
    def d_y(self) -> int:
        """Number of outputs (rows of ``W``)."""
        return self.U.shape[0]

    @property
    def d_h(self) -> int:
        """Number of input features (columns of ``W``)."""
        return self.Vh.shape[1]

    @property
    def right_singular_vectors(self) -> np.ndarray:
        """``V = Vh.T`` of shape ``(d_H, r)``: column i is the direction ``v_i``."""
        return self.Vh.T

    def to_dict(self) -> dict[str, Any]:
        """Return the shape, rank and singular values. ``U`` and ``Vh`` are left out for size."""
        return {"d_y": self.d_y, "d_h": self.d_h, "rank": self.rank, "singular_values": self.S.tolist()}


def _read_only_float64(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor) and value.dtype.is_floating_point:
        value = value.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        raise ValueError(f"{name} must be a floating-point numpy array or torch tensor, got {type(value).__name__}.")
    array = np.array(value, dtype=np.float64, copy=True)
    array.setflags(write=False)
    return array


def head_svd(W: ArrayLike) -> HeadSVD:
    """Decompose the head ``W`` with an economy SVD in float64 and drop directions beyond its rank.

    The rank counts the singular values above ``sigma_max * max(d_Y, d_H) * eps(float64)``,
    the tolerance of ``numpy.linalg.matrix_rank``.

    Parameters:
        W: head weights of shape ``(d_Y, d_H)``, finite, torch tensor or numpy array.

    Returns:
        The decomposition, with ``S`` in decreasing order (Crabbé et al. 2023, Eq. 3).

    Raises:
        ValueError: ``W`` is not a finite non-empty 2-D float array, or it is all zeros.
    """
    weights = to_matrix(W, "W", finite=True)
    U, S, Vh = torch.linalg.svd(torch.from_numpy(weights), full_matrices=False)
    U, S, Vh = U.numpy(), S.numpy(), Vh.numpy()
    tolerance = S[0] * max(weights.shape) * _EPS
    rank = int(np.count_nonzero(S > tolerance))
    if rank == 0:
        raise ValueError(f"W (shape {weights.shape}) is all zeros, so it has no singular directions.")
    return HeadSVD(U=U[:, :rank], S=S[:rank], Vh=Vh[:rank], rank=rank)


def resolve_svd(W: ArrayLike, svd: HeadSVD | None) -> tuple[np.ndarray, HeadSVD]:
    """Return ``W`` as a float64 array and its SVD, computing the SVD when ``svd`` is None.

    A given ``svd`` must decompose ``W``. It is checked on one fixed probe vector ``x`` by
    ``|W x - U S Vh x| <= 1e-6 * sigma_max * |x|``, which costs one product with ``W``.
    """
    weights = to_matrix(W, "W", finite=True)
    if svd is None:
        return weights, head_svd(weights)
    if not isinstance(svd, HeadSVD):
        raise ValueError(f"svd must be a HeadSVD from head_svd(W) or None, got {type(svd).__name__}.")
    if (svd.d_y, svd.d_h) != weights.shape:
        raise ValueError(
            f"svd decomposes a head of shape ({svd.d_y}, {svd.d_h}) but W has shape {weights.shape}."
        )
    probe = np.random.default_rng(0).standard_normal(weights.shape[1])
    error = np.linalg.norm(weights @ probe - svd.U @ (svd.S * (svd.Vh @ probe)))
    if error > 1e-6 * svd.S[0] * np.linalg.norm(probe):
        raise ValueError(
            f"svd does not decompose W: |W x - U S Vh x| = {error:.3g} on a probe vector x. "
            "Pass the result of head_svd(W) for this W."
        )
    return weights, svd


def project_rows(rows: np.ndarray, svd: HeadSVD) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project finite rows on the right singular directions.

    Parameters:
        rows: finite float64 activations of shape ``(N, d_H)``.
        svd: decomposition of the head.

    Returns:
        ``P = rows @ V`` of shape ``(N, r)``, ``|cos(v_i, h_n)|`` of shape ``(N, r)`` with
        zero rows where ``h_n`` is the zero vector, and the mask of those zero-norm rows.
    """
    # Scaling each row by a power of two is exact, and it keeps the norm of rows with tiny
    # or huge components from underflowing or overflowing.
    _, exponent = np.frexp(np.abs(rows).max(axis=1))
    scaled = np.ldexp(rows, -exponent[:, None])
    scaled_projection = scaled @ svd.right_singular_vectors
    norms = np.linalg.norm(scaled, axis=1)
    zero_norm = norms == 0
    safe_norms = np.where(zero_norm, 1.0, norms)
    abs_cos = np.abs(scaled_projection) / safe_norms[:, None]
    projection = np.ldexp(scaled_projection, exponent[:, None])
    return projection, abs_cos, zero_norm


def split_finite(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the rows without NaN or inf, and the mask of the rows that have some."""
    nonfinite = ~np.isfinite(rows).all(axis=1)
    return rows[~nonfinite], nonfinite


def importance_from_sums(S: np.ndarray, abs_cos_sums: np.ndarray, n_rows: int) -> np.ndarray:
    """Return ``sigma_i / sum_j sigma_j * mean_n |cos(v_i, h_n)|`` from the summed ``|cos|``.

    All values are NaN when ``n_rows`` is 0.
    """
    if n_rows == 0:
        return np.full(S.shape, np.nan)
    return S / S.sum() * (abs_cos_sums / n_rows)


def importance(W: ArrayLike, H: ArrayLike, svd: HeadSVD | None = None) -> np.ndarray:
    """Compute the importance of each singular direction of the head (Crabbé et al. 2023, Eq. 4).

    ``Importance(i) = sigma_i / sum_j sigma_j * mean_n |cos(v_i, h_n)|``, which is in [0, 1]
    and does not depend on the sign of each pair ``(u_i, v_i)``.

    Parameters:
        W: head weights of shape ``(d_Y, d_H)``.
        H: activations of shape ``(N, d_H)``. Rows that are all zeros (cos undefined) or
            contain NaN or inf are excluded.
        svd: the decomposition of ``W`` from :func:`head_svd`, possibly with flipped signs,
            to reuse it. When None, it is computed.

    Returns:
        float64 array of shape ``(r,)``, in the order of decreasing sigma. All NaN when no row
        of ``H`` is scored.

    Warns:
        RuntimeWarning: when rows are excluded, with their number per reason.
    """
    weights, svd = resolve_svd(W, svd)
    rows = to_matrix(H, "H", columns=weights.shape[1])
    finite, nonfinite = split_finite(rows)
    _, abs_cos, zero_norm = project_rows(finite, svd)
    warn_excluded(
        "importance",
        "H",
        rows.shape[0],
        {
            "with zero norm, where cos is undefined": int(zero_norm.sum()),
            "with NaN or inf values": int(nonfinite.sum()),
        },
    )
    n_scored = int((~zero_norm).sum())
    return importance_from_sums(svd.S, abs_cos[~zero_norm].sum(axis=0), n_scored)


def _check_factor(factor: Any) -> float:
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"factor must be a positive finite number, got {factor!r}.")
    return float(factor)


def importance_tail(importance: ArrayLike, factor: float = 5.0) -> tuple[float, int]:
    """Summarise how concentrated the importance is on a few directions.

    Parameters:
        importance: importance of each direction, shape ``(r,)``, finite and non-negative.
        factor: a direction is privileged when its importance exceeds ``factor`` times the mean.

    Returns:
        ``(tail, n_privileged)`` with ``tail = max_i Imp(i) / mean_i Imp(i)``, which lies in
        ``[1, r]``, and ``n_privileged = #{i : Imp(i) > factor * mean_i Imp(i)}``. When every
        importance is 0, the tail is NaN and ``n_privileged`` is 0.
    """
    if isinstance(importance, torch.Tensor) and importance.dtype.is_floating_point:
        importance = importance.detach().to(device="cpu", dtype=torch.float64).numpy()
    if not isinstance(importance, np.ndarray) or importance.dtype.kind != "f":
        raise ValueError(f"importance must be a float numpy array or torch tensor, got {type(importance).__name__}.")
    values = importance.astype(np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"importance must be a non-empty 1-D array, got shape {values.shape}.")
    if not np.isfinite(values).all() or values.min() < 0:
        raise ValueError(
            "importance must be finite and non-negative, got values in "
            f"[{np.nanmin(values)}, {np.nanmax(values)}] with {int((~np.isfinite(values)).sum())} NaN or inf."
        )
    factor = _check_factor(factor)
    mean = values.mean()
    if mean == 0:
        return math.nan, 0
    return float(values.max() / mean), int((values > factor * mean).sum())


@dataclass(frozen=True, eq=False)
class ImportanceResult:
    """Importance of the head's singular directions over every row folded into an accumulator.

    ``importance``, ``singular_values`` and ``mean_abs_cos`` are read-only arrays of shape
    ``(r,)`` in the order of decreasing sigma. ``tail`` and ``n_privileged`` come from
    :func:`importance_tail` with ``factor``. They are NaN and 0 when no row was scored.
    """

    importance: np.ndarray
    singular_values: np.ndarray
    mean_abs_cos: np.ndarray
    tail: float
    n_privileged: int
    factor: float
    n_rows: int
    n_zero_norm: int
    n_nonfinite: int

    @property
    def rank(self) -> int:
        """Number of directions ``r``."""
        return int(self.importance.size)

    def sorted_importance(self) -> np.ndarray:
        """Return the importance sorted in decreasing order, for a spectrum plot."""
        return np.sort(self.importance)[::-1]

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-serialisable values: lists for arrays, None for NaN."""
        return {
            "importance": [float_or_none(value) for value in self.importance],
            "singular_values": self.singular_values.tolist(),
            "mean_abs_cos": [float_or_none(value) for value in self.mean_abs_cos],
            "tail": float_or_none(self.tail),
            "n_privileged": self.n_privileged,
            "factor": self.factor,
            "rank": self.rank,
            "n_rows": self.n_rows,
            "n_zero_norm": self.n_zero_norm,
            "n_nonfinite": self.n_nonfinite,
        }


def same_svd(first: HeadSVD, second: HeadSVD) -> bool:
    """Return whether two decompositions are the same object or hold equal arrays."""
    if first is second:
        return True
    return (
        first.U.shape == second.U.shape
        and first.Vh.shape == second.Vh.shape
        and np.array_equal(first.S, second.S)
        and np.array_equal(first.U, second.U)
        and np.array_equal(first.Vh, second.Vh)
    )


class ImportanceAccumulator(Accumulator):
    """Stream the importance of the head's singular directions over batches.

    The state is O(r): the sum of ``|cos(v_i, h_n)|`` per direction and the row counts.

    Parameters:
        svd: the decomposition of the head from :func:`head_svd`.
        factor: threshold of :func:`importance_tail` for privileged directions.
    """

    def __init__(self, svd: HeadSVD, factor: float = 5.0) -> None:
        if not isinstance(svd, HeadSVD):
            raise ValueError(f"svd must be a HeadSVD from head_svd(W), got {type(svd).__name__}.")
        self.svd = svd
        self.factor = _check_factor(factor)
        self.reset()

    def reset(self) -> None:
        """Clear the state."""
        self._abs_cos_sums = np.zeros(self.svd.rank)
        self._n_rows = 0
        self._n_zero_norm = 0
        self._n_nonfinite = 0

    def update(self, h: ArrayLike, labels: ArrayLike | None = None) -> None:
        """Fold one batch of activations into the state.

        Parameters:
            h: activations of shape ``(batch, d_H)``.
            labels: ignored apart from a shape check, because importance does not use labels.
        """
        rows = to_matrix(h, "h", columns=self.svd.d_h)
        to_labels(labels, rows.shape[0])
        finite, nonfinite = split_finite(rows)
        _, abs_cos, zero_norm = project_rows(finite, self.svd)
        self._abs_cos_sums += abs_cos[~zero_norm].sum(axis=0)
        self._n_rows += int((~zero_norm).sum())
        self._n_zero_norm += int(zero_norm.sum())
        self._n_nonfinite += int(nonfinite.sum())

    def merge(self, other: Accumulator) -> "ImportanceAccumulator":
        """Fold another ``ImportanceAccumulator`` of the same head into this one and return self."""
        if not isinstance(other, ImportanceAccumulator):
            raise ValueError(f"other must be an ImportanceAccumulator, got {type(other).__name__}.")
        if not same_svd(self.svd, other.svd):
            raise ValueError("other was built for a different head: both accumulators need the same HeadSVD.")
        self._abs_cos_sums += other._abs_cos_sums
        self._n_rows += other._n_rows
        self._n_zero_norm += other._n_zero_norm
        self._n_nonfinite += other._n_nonfinite
        return self

    def compute(self) -> ImportanceResult:
        """Return the importance over every row folded so far. The state is left unchanged."""
        values = importance_from_sums(self.svd.S, self._abs_cos_sums, self._n_rows)
        if self._n_rows == 0:
            tail, n_privileged = math.nan, 0
            mean_abs_cos = np.full(self.svd.rank, np.nan)
        else:
            tail, n_privileged = importance_tail(values, self.factor)
            mean_abs_cos = self._abs_cos_sums / self._n_rows
        for array in (values, mean_abs_cos):
            array.setflags(write=False)
        return ImportanceResult(
            importance=values,
            singular_values=self.svd.S,
            mean_abs_cos=mean_abs_cos,
            tail=tail,
            n_privileged=n_privileged,
            factor=self.factor,
            n_rows=self._n_rows,
            n_zero_norm=self._n_zero_norm,
            n_nonfinite=self._n_nonfinite,
        )
