"""Tolerance of a linear head to pruning its least important singular directions.

Crabbé et al. (2023), "Robust multimodal models have outlier features and encode more
concepts", Fig. 3, prune a fraction p of the head's singular directions: with
``W = sum_i sigma_i u_i v_i^T`` over ``i <= r``, the ``floor(p * r)`` least important
``sigma_i`` are set to 0, giving ``W_p`` and ``logits_p = H W_p^T + b``. A head that keeps its
top-1 predictions when most directions are pruned relies on a few privileged directions.

The whole curve comes from one projection ``P = H V`` of shape ``(N, r)``. With the
directions in pruning order, the logits after pruning the first k directions are
``P[:, k:] diag(sigma[k:]) U[:, k:]^T + b``. They are computed for the largest fraction
first, and each smaller fraction adds back the directions between the two. A batch costs
about two products of its size with the head (``P`` and the logits) whatever the number of
fractions.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from robsig_checks.metrics._validation import (
    UNLABELLED,
    ArrayLike,
    float_or_none,
    n_pruned_for,
    to_fractions,
    to_labels,
    to_matrix,
    to_vector,
    warn_excluded,
)
from robsig_checks.metrics.base import Accumulator
from robsig_checks.metrics.importance import (
    HeadSVD,
    importance_from_sums,
    project_rows,
    resolve_svd,
    same_svd,
    split_finite,
)

#: Orders in which directions are pruned: by increasing sigma, or by increasing importance.
ORDERS = ("sigma", "importance")

#: Fractions 0, 0.1, ..., 0.9.
DEFAULT_FRACTIONS = tuple(i / 10 for i in range(10))

#: Rows per block when computing logits, which bounds the temporary logits to
#: ``_BLOCK_ROWS * d_Y`` float64 values.
_BLOCK_ROWS = 1024


@dataclass(frozen=True)
class PruningPoint:
    """Metrics of the pruned head at one fraction of a :class:`PruningCurve`."""

    fraction: float
    n_pruned: int
    accuracy: float | None
    agreement: float

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-serialisable values, with None for NaN."""
        return {
            "fraction": self.fraction,
            "n_pruned": self.n_pruned,
            "accuracy": None if self.accuracy is None else float_or_none(self.accuracy),
            "agreement": float_or_none(self.agreement),
        }


@dataclass(frozen=True)
class PruningCurve:
    """Top-1 accuracy and agreement of the head as a function of the pruned fraction.

    Fields:
        fractions: sorted unique fractions, starting with 0 (the unpruned head).
        n_pruned: number of directions pruned at each fraction, ``floor(fraction * rank)``.
        accuracy: top-1 accuracy over the ``n_labelled`` labelled rows at each fraction, or
            None when no scored row is labelled.
        agreement: share of the ``n_rows`` scored rows whose top-1 class equals the one of the
            unpruned head, at each fraction (1 at fraction 0, NaN when no row was scored).
        n_rows: rows scored, that is rows without NaN or inf.
        n_labelled: scored rows with a label other than ``UNLABELLED`` (-1).
        n_nonfinite: rows excluded because they contain NaN or inf.
        order: ``"sigma"`` or ``"importance"``, the order of :func:`pruning_curve`.
        rank: number of singular directions r.
        pruning_order: indices of the directions (in decreasing-sigma order) from the first
            pruned to the last.
    """

    fractions: tuple[float, ...]
    n_pruned: tuple[int, ...]
    accuracy: tuple[float, ...] | None
    agreement: tuple[float, ...]
    n_rows: int
    n_labelled: int
    n_nonfinite: int
    order: str
    rank: int
    pruning_order: tuple[int, ...]

    def at(self, fraction: float) -> PruningPoint:
        """Return the metrics at ``fraction``, which must be one of ``fractions`` (within 1e-9)."""
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
            raise ValueError(f"fraction must be a number, got {fraction!r}.")
        for index, value in enumerate(self.fractions):
            if abs(value - float(fraction)) <= 1e-9:
                return PruningPoint(
                    fraction=value,
                    n_pruned=self.n_pruned[index],
                    accuracy=None if self.accuracy is None else self.accuracy[index],
                    agreement=self.agreement[index],
                )
        raise ValueError(f"fraction {fraction!r} is not on this curve, which has fractions {list(self.fractions)}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-serialisable values: lists for tuples, None for NaN."""
        return {
            "fractions": list(self.fractions),
            "n_pruned": list(self.n_pruned),
            "accuracy": None if self.accuracy is None else [float_or_none(value) for value in self.accuracy],
            "agreement": [float_or_none(value) for value in self.agreement],
            "n_rows": self.n_rows,
            "n_labelled": self.n_labelled,
            "n_nonfinite": self.n_nonfinite,
            "order": self.order,
            "rank": self.rank,
            "pruning_order": list(self.pruning_order),
        }


def _sigma_order(rank: int) -> np.ndarray:
    """Return the directions by increasing sigma. Ties in sigma follow the reverse SVD order."""
    return np.arange(rank)[::-1].copy()


def _importance_order(importance: np.ndarray) -> np.ndarray:
    """Return the directions by increasing importance, ties broken by increasing sigma.

    When the importance is undefined (NaN, no row scored), the order is by increasing sigma.
    """
    rank = importance.size
    if np.isnan(importance).any():
        return _sigma_order(rank)
    # np.lexsort sorts by the last key first, so importance is the primary key and the
    # reversed index (increasing sigma) breaks ties.
    return np.lexsort((-np.arange(rank), importance))


def _count_agreements(
    projection: np.ndarray,
    labels: np.ndarray,
    svd: HeadSVD,
    bias: np.ndarray | None,
    pruning_order: np.ndarray,
    n_pruned: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Count, at each fraction, the correct top-1 predictions and the agreements with the unpruned head.

    Parameters:
        projection: ``P = H V`` of shape ``(N, r)`` for finite rows.
        labels: int64 labels of shape ``(N,)``, ``UNLABELLED`` for rows without one.
        svd: the decomposition of the head.
        bias: head bias of shape ``(d_Y,)`` or None.
        pruning_order: direction indices from the first pruned to the last.
        n_pruned: number of pruned directions at each fraction, non-decreasing.

    Returns:
        Two int64 arrays of shape ``(len(n_pruned),)``: correct predictions among labelled
        rows and agreements with the unpruned prediction.
    """
    n_correct = np.zeros(len(n_pruned), dtype=np.int64)
    n_agree = np.zeros(len(n_pruned), dtype=np.int64)
    ordered_U = svd.U[:, pruning_order]
    ordered_S = svd.S[pruning_order]

    for start in range(0, projection.shape[0], _BLOCK_ROWS):
        block = projection[start : start + _BLOCK_ROWS]
        block_labels = labels[start : start + _BLOCK_ROWS]
        labelled = block_labels != UNLABELLED
        ordered_block = block[:, pruning_order] * ordered_S

        # Start from the most pruned head and add directions back, so that no fraction
        # subtracts large contributions from the logits (no cancellation).
        kept_from = n_pruned[-1]
        logits = ordered_block[:, kept_from:] @ ordered_U[:, kept_from:].T
        if bias is not None:
            logits += bias
        predictions = np.empty((len(n_pruned), block.shape[0]), dtype=np.int64)
        for index in range(len(n_pruned) - 1, -1, -1):
            count = n_pruned[index]
            if count < kept_from:
                logits += ordered_block[:, count:kept_from] @ ordered_U[:, count:kept_from].T
                kept_from = count
            predictions[index] = logits.argmax(axis=1)

        # n_pruned[0] is 0, so predictions[0] is the unpruned head.
        n_agree += (predictions == predictions[0]).sum(axis=1)
        n_correct += (predictions[:, labelled] == block_labels[labelled]).sum(axis=1)
    return n_correct, n_agree


class PruningAccumulator(Accumulator):
    """Stream the pruning curve of a linear head over batches of activations.

    Parameters:
        svd: the decomposition of the head from :func:`head_svd`.
        bias: head bias of shape ``(d_Y,)``, or None for a head without bias.
        fractions: fractions of directions to prune, each in ``[0, 1)``. They are sorted,
            deduplicated, and 0 is added.
        order: ``"sigma"`` prunes by increasing sigma with O(len(fractions)) state.
            ``"importance"`` prunes by increasing importance over all rows folded in.
    """

    def __init__(
        self,
        svd: HeadSVD,
        bias: ArrayLike | None = None,
        fractions: Any = DEFAULT_FRACTIONS,
        order: str = "sigma",
    ) -> None:
        if not isinstance(svd, HeadSVD):
            raise ValueError(f"svd must be a HeadSVD from head_svd(W), got {type(svd).__name__}.")
        if order not in ORDERS:
            raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}.")
        self.svd = svd
        self.bias = None if bias is None else to_vector(bias, "bias", length=svd.d_y)
        self.fractions = to_fractions(fractions)
        self.n_pruned = tuple(n_pruned_for(fraction, svd.rank) for fraction in self.fractions)
        self.order = order
        self.reset()

    def reset(self) -> None:
        """Clear the state."""
        self._n_rows = 0
        self._n_labelled = 0
        self._n_nonfinite = 0
        self._n_correct = np.zeros(len(self.fractions), dtype=np.int64)
        self._n_agree = np.zeros(len(self.fractions), dtype=np.int64)
        # Importance order only: the sum of |cos(v_i, h_n)| over rows with a non-zero norm.
        self._abs_cos_sums = np.zeros(self.svd.rank)
        self._n_importance_rows = 0
        self._projections: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    def update(self, h: ArrayLike, labels: ArrayLike | None = None) -> None:
        """Fold one batch into the state.

        Parameters:
            h: activations of shape ``(batch, d_H)``. Rows with NaN or inf are counted and skipped.
            labels: class indices of shape ``(batch,)`` in ``[0, d_Y)``, ``UNLABELLED`` (-1)
                for rows without a label, or None when no row has one.
        """
        rows = to_matrix(h, "h", columns=self.svd.d_h)
        label_array = to_labels(labels, rows.shape[0], self.svd.d_y)
        finite, nonfinite = split_finite(rows)
        finite_labels = label_array[~nonfinite]
        projection, abs_cos, zero_norm = project_rows(finite, self.svd)

        self._n_rows += finite.shape[0]
        self._n_labelled += int((finite_labels != UNLABELLED).sum())
        self._n_nonfinite += int(nonfinite.sum())

        if self.order == "sigma":
            n_correct, n_agree = _count_agreements(
                projection, finite_labels, self.svd, self.bias, _sigma_order(self.svd.rank), self.n_pruned
            )
            self._n_correct += n_correct
            self._n_agree += n_agree
            return

        # NOTE: the importance order is known only after the last row, so this order keeps
        # P (r float64 values per row) for every row, and memory grows with N.
        self._abs_cos_sums += abs_cos[~zero_norm].sum(axis=0)
        self._n_importance_rows += int((~zero_norm).sum())
        self._projections.append(projection)
        self._labels.append(finite_labels)

    def merge(self, other: Accumulator) -> "PruningAccumulator":
        """Fold another ``PruningAccumulator`` with the same configuration into this one and return self."""
        if not isinstance(other, PruningAccumulator):
            raise ValueError(f"other must be a PruningAccumulator, got {type(other).__name__}.")
        if not same_svd(self.svd, other.svd):
            raise ValueError("other was built for a different head: both accumulators need the same HeadSVD.")
        same_bias = (self.bias is None and other.bias is None) or (
            self.bias is not None and other.bias is not None and np.array_equal(self.bias, other.bias)
        )
        if not same_bias:
            raise ValueError("other was built with a different bias.")
        if self.fractions != other.fractions or self.order != other.order:
            raise ValueError(
                f"other has fractions {list(other.fractions)} and order {other.order!r}, but this accumulator "
                f"has fractions {list(self.fractions)} and order {self.order!r}."
            )
        self._n_rows += other._n_rows
        self._n_labelled += other._n_labelled
        self._n_nonfinite += other._n_nonfinite
        self._n_correct += other._n_correct
        self._n_agree += other._n_agree
        self._abs_cos_sums += other._abs_cos_sums
        self._n_importance_rows += other._n_importance_rows
        self._projections.extend(other._projections)
        self._labels.extend(other._labels)
        return self

    def compute(self) -> PruningCurve:
        """Return the pruning curve over every row folded so far. The state is left unchanged."""
        if self.order == "sigma":
            pruning_order = _sigma_order(self.svd.rank)
            n_correct, n_agree = self._n_correct, self._n_agree
        else:
            importance = importance_from_sums(self.svd.S, self._abs_cos_sums, self._n_importance_rows)
            pruning_order = _importance_order(importance)
            if self._projections:
                projection = np.concatenate(self._projections)
                labels = np.concatenate(self._labels)
            else:
                projection = np.zeros((0, self.svd.rank))
                labels = np.zeros(0, dtype=np.int64)
            n_correct, n_agree = _count_agreements(
                projection, labels, self.svd, self.bias, pruning_order, self.n_pruned
            )

        if self._n_rows == 0:
            agreement = tuple(math.nan for _ in self.fractions)
        else:
            agreement = tuple(float(count) / self._n_rows for count in n_agree)
        accuracy = None
        if self._n_labelled > 0:
            accuracy = tuple(float(count) / self._n_labelled for count in n_correct)
        return PruningCurve(
            fractions=self.fractions,
            n_pruned=self.n_pruned,
            accuracy=accuracy,
            agreement=agreement,
            n_rows=self._n_rows,
            n_labelled=self._n_labelled,
            n_nonfinite=self._n_nonfinite,
            order=self.order,
            rank=self.svd.rank,
            pruning_order=tuple(int(index) for index in pruning_order),
        )


def pruning_curve(
    H: ArrayLike,
    W: ArrayLike,
    b: ArrayLike | None = None,
    fractions: Any = DEFAULT_FRACTIONS,
    labels: ArrayLike | None = None,
    order: str = "sigma",
    svd: HeadSVD | None = None,
) -> PruningCurve:
    """Compute the accuracy and agreement of the head after pruning each fraction of its directions.

    Pruning a fraction p sets the ``floor(p * r)`` least important singular values of ``W`` to
    0 (Crabbé et al. 2023, Fig. 3). At fraction 0 the head is its rank-r SVD, equal to ``W``
    up to rounding.

    Parameters:
        H: activations of shape ``(N, d_H)``. Rows with NaN or inf are excluded and counted.
        W: head weights of shape ``(d_Y, d_H)``, finite.
        b: head bias of shape ``(d_Y,)``, or None.
        fractions: fractions to prune, each in ``[0, 1)``. They are sorted, deduplicated,
            and 0 is added as the unpruned reference.
        labels: class indices of shape ``(N,)`` in ``[0, d_Y)``, -1 for unlabelled rows, or None.
        order: ``"sigma"`` prunes by increasing singular value, ``"importance"`` by increasing
            importance (Crabbé et al. 2023, Eq. 4) computed on the rows of ``H``.
        svd: the decomposition of ``W`` from :func:`head_svd`, to reuse it. When None, it is computed.

    Returns:
        The curve. Its ``accuracy`` is None when no row is labelled.

    Warns:
        RuntimeWarning: when rows with NaN or inf are excluded, with their number.
    """
    weights, svd = resolve_svd(W, svd)
    rows = to_matrix(H, "H", columns=weights.shape[1])
    label_array = to_labels(labels, rows.shape[0], weights.shape[0])
    bias = None if b is None else to_vector(b, "b", length=weights.shape[0])

    accumulator = PruningAccumulator(svd, bias, fractions, order)
    for start in range(0, rows.shape[0], _BLOCK_ROWS):
        accumulator.update(rows[start : start + _BLOCK_ROWS], label_array[start : start + _BLOCK_ROWS])
    curve = accumulator.compute()
    warn_excluded("pruning_curve", "H", rows.shape[0], {"with NaN or inf values": curve.n_nonfinite})
    return curve
