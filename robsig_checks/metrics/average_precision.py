"""Column-wise average precision, exact with ties and vectorised over many (label, score) pairs.

Average precision (AP) summarises a precision-recall curve as the step-wise sum over the
distinct score thresholds ``t_1 > t_2 > ...`` in decreasing order:

    AP = sum_k (R_k - R_{k-1}) * P_k,    R_0 = 0,

where ``P_k`` and ``R_k`` are the precision and recall of "score >= t_k". Tied scores share one
threshold. This is the definition of ``sklearn.metrics.average_precision_score``, and the
functions here return the same values to rounding (about 1e-15).

Crabbé et al. (2023), "Robust multimodal models have outlier features and encode more
concepts", Sec. 4, score each (concept, direction) pair with AP. The engine below serves that
case: it ranks each score column once (:func:`descending_groups`) and then, for each label
vector restricted to its own subset of rows, sorts integer rank keys whose lowest bit carries
the label, so one sort gives both the order and the labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from robsig_checks.metrics._validation import ArrayLike, to_float64

#: Maximum number of elements of one (directions x rows) block of the engine. Four int32 and
#: float64 temporaries of this size take about 100 MB.
_BLOCK_ELEMENTS = 1 << 22

#: Maximum number of score columns ranked at once by :func:`descending_groups`.
_RANK_COLUMNS = 64


def _scores_matrix(scores: Any) -> tuple[np.ndarray, bool]:
    """Return finite float scores as ``(N, k)`` and whether the input was 1-D.

    float32 input stays float32: converting it to float64 is exact, so it changes no tie and no
    AP, and sorting float32 is about twice as fast.
    """
    if isinstance(scores, torch.Tensor) and scores.dtype == torch.float32:
        array = scores.detach().cpu().numpy()
    elif isinstance(scores, np.ndarray) and scores.dtype == np.float32:
        array = scores
    else:
        array = to_float64(scores, "scores")
    one_dimensional = array.ndim == 1
    if one_dimensional:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"scores must have shape (N,) or (N, k) with N >= 1 and k >= 1, got shape {tuple(np.shape(scores))}."
        )
    if not np.isfinite(array).all():
        raise ValueError(
            f"scores contains {int((~np.isfinite(array)).sum())} NaN or inf values (shape {array.shape}). "
            "AP needs finite scores: drop or replace those rows."
        )
    return array, one_dimensional


def _binary_labels(labels: Any, n_rows: int) -> tuple[np.ndarray, bool]:
    """Return binary labels as a bool ``(N, C)`` array and whether the input was 1-D."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if not isinstance(labels, np.ndarray):
        raise ValueError(f"labels must be a numpy.ndarray or torch.Tensor, got {type(labels).__name__}.")
    if labels.dtype.kind not in "biu":
        raise ValueError(
            f"labels must be bool or integer 0/1, got dtype {labels.dtype}. Convert it with labels.astype(bool)."
        )
    one_dimensional = labels.ndim == 1
    matrix = labels[:, None] if one_dimensional else labels
    if matrix.ndim != 2 or matrix.shape[0] != n_rows or matrix.shape[1] == 0:
        raise ValueError(
            f"labels must have shape ({n_rows},) or ({n_rows}, C) with C >= 1, one row per row of scores, "
            f"got shape {labels.shape}."
        )
    if labels.dtype.kind != "b":
        invalid = (matrix != 0) & (matrix != 1)
        if invalid.any():
            raise ValueError(
                f"labels must contain only 0 and 1, got {matrix[invalid][0].item()!r} among "
                f"{int(invalid.sum())} invalid values."
            )
    return matrix.astype(bool), one_dimensional


def descending_groups(scores: ArrayLike) -> np.ndarray:
    """Number the distinct values of each score column in decreasing order.

    Parameters:
        scores: finite scores of shape ``(N, k)`` or ``(N,)``, torch or numpy, any float dtype.

    Returns:
        int32 array of shape ``(k, N)``: entry ``[i, n]`` is 0 for the highest score of column
        ``i``, 1 for the next distinct value, and so on. Equal scores get equal numbers.
    """
    matrix, _ = _scores_matrix(scores)
    n_rows, n_columns = matrix.shape
    if n_rows >= 1 << 30:
        raise ValueError(f"scores has {n_rows} rows, but at most 2**30 - 1 rows are supported.")
    groups = np.empty((n_columns, n_rows), dtype=np.int32)
    for start in range(0, n_columns, _RANK_COLUMNS):
        columns = np.ascontiguousarray(matrix[:, start : start + _RANK_COLUMNS].T)
        # Tied scores get one number whatever their order, so the faster unstable sort is enough.
        order = np.argsort(-columns, axis=1)
        # Flat indices are much faster than take_along_axis and put_along_axis here.
        flat_order = (order + (np.arange(columns.shape[0]) * n_rows)[:, None]).ravel()
        ordered = columns.ravel()[flat_order].reshape(columns.shape)
        new_value = np.empty(columns.shape, dtype=np.int32)
        new_value[:, 0] = 0
        np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new_value[:, 1:])
        block = np.empty(columns.size, dtype=np.int32)
        block[flat_order] = np.cumsum(new_value, axis=1, dtype=np.int32).ravel()
        groups[start : start + columns.shape[0]] = block.reshape(columns.shape)
    return groups


def _ap_of_sorted_keys(keys: np.ndarray, n_positive: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (AP of the scores, AP of the negated scores) for rows of sorted keys.

    Each row holds ``n_positive`` positives. Without ties, the j-th positive (1-based) at
    position ``p`` (0-based) contributes the precision ``j / (p + 1)`` in decreasing-score order
    and ``(n_positive - j + 1) / (m - p)`` in increasing order. Tied scores share one threshold,
    so :func:`_tie_corrections` replaces those terms for the positives inside runs of ties.
    """
    n_rows, m = keys.shape
    # np.flatnonzero is several times faster on a bool array than on the int32 keys.
    positive_flat = np.flatnonzero((keys & 1) != 0)
    positions = positive_flat.reshape(n_rows, n_positive) - (np.arange(n_rows) * m)[:, None]
    ordinal = np.arange(1, n_positive + 1, dtype=np.float64)
    high = (ordinal / (positions + 1)).sum(axis=1)
    low = (ordinal[::-1] / (m - positions)).sum(axis=1)

    tied = (keys[:, 1:] ^ keys[:, :-1]) < 2
    if tied.any():
        high_correction, low_correction = _tie_corrections(keys, tied, positive_flat, n_positive)
        high += high_correction
        low += low_correction
    return high / n_positive, low / n_positive


def _tie_corrections(
    keys: np.ndarray, tied: np.ndarray, positive_flat: np.ndarray, n_positive: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return per row the change of the summed precisions when runs of tied scores share one threshold.

    Parameters:
        keys: sorted keys of shape ``(rows, m)``.
        tied: bool ``(rows, m - 1)``, True where element k and k + 1 have the same score.
        positive_flat: sorted flat indices of the positives in ``keys``.
        n_positive: positives per row.

    A run at positions ``a..b`` with ``q`` positives after ``t`` earlier positives gives each
    of its positives the precision ``(t + q) / (b + 1)`` in decreasing order and
    ``(n_positive - t) / (m - a)`` in increasing order, in place of the per-position terms.
    """
    n_rows, m = keys.shape
    in_run = np.zeros((n_rows, m), dtype=bool)
    in_run[:, :-1] |= tied
    in_run[:, 1:] |= tied
    members = np.flatnonzero(in_run)
    row = members // m
    position = members - row * m
    starts_run = np.ones(members.size, dtype=bool)
    inner = position > 0
    starts_run[inner] = ~tied[row[inner], position[inner] - 1]
    run = np.cumsum(starts_run) - 1
    n_runs = int(run[-1]) + 1

    run_row = row[starts_run]
    run_first = position[starts_run]
    run_last = np.zeros(n_runs, dtype=np.int64)
    np.maximum.at(run_last, run, position)

    is_positive = (keys.ravel()[members] & 1).astype(bool)
    # Positives at or before each member in its row: its ordinal j when it is a positive.
    ordinal = np.searchsorted(positive_flat, members, side="right") - row * n_positive
    run_positives = np.bincount(run, weights=is_positive, minlength=n_runs)
    before = ordinal[starts_run] - is_positive[starts_run]

    separate_high = np.bincount(run, weights=np.where(is_positive, ordinal / (position + 1.0), 0.0), minlength=n_runs)
    separate_low = np.bincount(
        run, weights=np.where(is_positive, (n_positive - ordinal + 1.0) / (m - position), 0.0), minlength=n_runs
    )
    shared_high = run_positives * (before + run_positives) / (run_last + 1.0)
    shared_low = run_positives * (n_positive - before) / (m - run_first).astype(np.float64)

    high = np.bincount(run_row, weights=shared_high - separate_high, minlength=n_rows)
    low = np.bincount(run_row, weights=shared_low - separate_low, minlength=n_rows)
    return high, low


def subset_average_precision(
    groups: np.ndarray, subsets: Sequence[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Compute the AP of every score column for several label vectors, each on its own rows.

    Parameters:
        groups: int32 array of shape ``(k, N)`` from :func:`descending_groups`.
        subsets: C pairs ``(rows, positive)``: integer row indices in ``[0, N)`` without
            repeats, and a bool array of the same length that marks the positives among them.

    Returns:
        Two float64 arrays of shape ``(C, k)``: the AP of the scores, and the AP of the negated
        scores (a direction read with the opposite sign). Both equal
        ``sklearn.metrics.average_precision_score(positive, scores[rows, i])`` and the same with
        ``-scores``. A subset with no positives or no negatives has an undefined AP and gets NaN.
    """
    if not isinstance(groups, np.ndarray) or groups.dtype != np.int32 or groups.ndim != 2:
        raise ValueError("groups must be the int32 (k, N) array that descending_groups(scores) returns.")
    n_columns, n_rows = groups.shape
    # Key = 2 * group + label, so one integer sort orders a subset and carries its labels along.
    shifted = groups << 1
    high = np.full((len(subsets), n_columns), np.nan)
    low = np.full((len(subsets), n_columns), np.nan)
    for index, (rows, positive) in enumerate(subsets):
        rows = np.asarray(rows)
        positive = np.asarray(positive)
        if rows.ndim != 1 or rows.dtype.kind not in "iu" or positive.shape != rows.shape or positive.dtype != bool:
            raise ValueError(
                f"subsets[{index}] must be (rows, positive): a 1-D integer array and a bool array of the same "
                f"length, got shapes {rows.shape} and {positive.shape} with dtypes {rows.dtype} and {positive.dtype}."
            )
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise ValueError(f"subsets[{index}] has row indices outside [0, {n_rows}).")
        n_positive = int(positive.sum())
        if n_positive == 0 or n_positive == rows.size:
            continue
        label_bits = positive.astype(np.int32)
        chunk = max(1, _BLOCK_ELEMENTS // rows.size)
        for start in range(0, n_columns, chunk):
            keys = shifted[start : start + chunk][:, rows]
            keys |= label_bits
            keys.sort(axis=1)
            high[index, start : start + chunk], low[index, start : start + chunk] = _ap_of_sorted_keys(
                keys, n_positive
            )
    return high, low


def average_precision(scores: ArrayLike, labels: ArrayLike) -> np.ndarray | float:
    """Compute the average precision of each score column against one or many binary labels.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score thresholds in decreasing order,
    with tied scores sharing one threshold, which is the value of
    ``sklearn.metrics.average_precision_score(labels[:, c], scores[:, i])`` for every pair.
    Crabbé et al. (2023), Sec. 4, use it to decide whether a direction encodes a concept.

    Parameters:
        scores: finite scores of shape ``(N,)`` or ``(N, k)``: higher means "more likely positive".
        labels: bool or 0/1 integer labels of shape ``(N,)`` or ``(N, C)``.

    Returns:
        float64 AP of shape ``(C, k)`` for 2-D labels and 2-D scores; the label axis is dropped
        for 1-D labels and the score axis for 1-D scores, so two 1-D inputs give a float. AP
        is undefined for a label column with no positives or no negatives: it is NaN there.

    Warns:
        RuntimeWarning: when some label columns have an undefined AP, with their number per reason.
    """
    matrix, one_score = _scores_matrix(scores)
    label_matrix, one_label = _binary_labels(labels, matrix.shape[0])

    all_rows = np.arange(matrix.shape[0])
    subsets = [(all_rows, label_matrix[:, column]) for column in range(label_matrix.shape[1])]
    result, _ = subset_average_precision(descending_groups(matrix), subsets)

    n_positive = label_matrix.sum(axis=0)
    no_positive = int((n_positive == 0).sum())
    no_negative = int((n_positive == matrix.shape[0]).sum())
    if no_positive or no_negative:
        warnings.warn(
            f"average_precision: AP is undefined for {no_positive + no_negative} of {label_matrix.shape[1]} "
            f"label columns ({no_positive} with no positives, {no_negative} with no negatives); they are NaN.",
            RuntimeWarning,
            stacklevel=2,
        )

    if one_label:
        result = result[0]
    if one_score:
        result = result[..., 0]
    return float(result) if np.ndim(result) == 0 else result
