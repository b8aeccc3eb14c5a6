"""Effective robustness (ER) and top-1 accuracy under the scoring protocols of ImageNet's shifts.

Crabbé et al. (2023), "Robust multimodal models have outlier features and encode more concepts",
Eq. 1, measure how much better a model does on distribution shifts than its ImageNet accuracy
predicts::

    ER = ACC(S) - logit^-1(beta1 * logit(ACC(I)) + beta0)

with ``ACC(I)`` the top-1 accuracy on ImageNet, ``ACC(S)`` the mean top-1 accuracy over
ImageNet-V2, -R, -Sketch, ObjectNet and -A, and ``(beta1, beta0) = (0.76, -1.49)``, the line that
Taori et al. (2020), "Measuring robustness to natural distribution shifts in image
classification", fitted in logit space to standard ImageNet models. All accuracies are fractions.

:class:`AccuracyAccumulator` streams the top-1 accuracy of a linear head under a class grouping:
``class_groups[i]`` is the group (the scored class) of logit ``i``, or -1 to mask that logit out.
The prediction is the group of the arg-max over the unmasked logits, and a row is correct when it
equals the group of the row's label. The identity grouping is plain top-1 accuracy; ImageNet-R
and -A mask the logits outside their 200 classes; ObjectNet groups the ImageNet classes that map
to one ObjectNet class.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from robsig_checks.metrics._validation import (
    UNLABELLED,
    n_pruned_for,
    to_fractions,
    to_labels,
    to_matrix,
    to_vector,
)
from robsig_checks.metrics.base import Accumulator
from robsig_checks.metrics.importance import HeadSVD, head_svd, split_finite

#: Slope and intercept of the ImageNet-to-shift accuracy line in logit space (Taori et al. 2020).
DEFAULT_BETA1 = 0.76
DEFAULT_BETA0 = -1.49

_BLOCK_ROWS = 1024


# --------------------------------------------------------------------------- logit space


def _check_accuracy(value: Any, name: str) -> float:
    """Return ``value`` as a float in the open interval (0, 1), or raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be an accuracy as a fraction in (0, 1), got {value!r}.")
    number = float(value)
    if not 0.0 < number < 1.0:
        hint = " It looks like a percent: divide it by 100." if 1.0 < number <= 100.0 else ""
        raise ValueError(
            f"{name} must be an accuracy as a fraction strictly between 0 and 1, got {value!r}: the logit "
            f"of 0 or 1 is infinite, so ER is undefined there.{hint}"
        )
    return number


def _check_shift_accuracy(value: Any, name: str) -> float:
    """Return ``value`` as a float in [0, 1]: shift accuracies enter ER linearly, so 0 and 1 are valid."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be an accuracy as a fraction in [0, 1], got {value!r}.")
    number = float(value)
    if not 0.0 <= number <= 1.0:
        hint = " It looks like a percent: divide it by 100." if 1.0 < number <= 100.0 else ""
        raise ValueError(f"{name} must be an accuracy as a fraction in [0, 1], got {value!r}.{hint}")
    return number


def _check_real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def logit(p: Any) -> np.ndarray | float:
    """Return ``log(p / (1 - p))`` for fractions ``p`` in (0, 1) (a float for a scalar input).

    Raises:
        ValueError: when a value is outside the open interval (0, 1) or not finite.
    """
    values = np.asarray(p, dtype=np.float64)
    if not np.all((values > 0.0) & (values < 1.0)):
        bad = values[~((values > 0.0) & (values < 1.0))]
        raise ValueError(f"p must contain fractions strictly between 0 and 1, got {bad.ravel()[:5].tolist()}.")
    result = np.log(values) - np.log1p(-values)
    return float(result) if result.ndim == 0 else result


def inverse_logit(x: Any) -> np.ndarray | float:
    """Return ``1 / (1 + exp(-x))``, the inverse of :func:`logit` (a float for a scalar input)."""
    values = np.asarray(x, dtype=np.float64)
    result = np.exp(-np.logaddexp(0.0, -values))
    return float(result) if result.ndim == 0 else result


def _shift_values(acc_shifts: Any) -> list[tuple[str, float]]:
    """Return (name, accuracy) pairs from a mapping or a sequence of shift accuracies."""
    if isinstance(acc_shifts, Mapping):
        items = [(str(name), value) for name, value in acc_shifts.items()]
    elif isinstance(acc_shifts, (str, bytes)) or not isinstance(acc_shifts, (Sequence, np.ndarray)):
        raise ValueError(
            f"acc_shifts must be a mapping from shift name to accuracy or a sequence of accuracies, "
            f"got {type(acc_shifts).__name__}."
        )
    else:
        items = [(f"acc_shifts[{index}]", value) for index, value in enumerate(list(acc_shifts))]
    if not items:
        raise ValueError("acc_shifts must contain at least one shift accuracy, got none.")
    return [(name, _check_shift_accuracy(value, name if name.startswith("acc_shifts[") else f"acc_shifts[{name!r}]"))
            for name, value in items]


def predicted_shift_accuracy(acc_id: float, beta1: float = DEFAULT_BETA1, beta0: float = DEFAULT_BETA0) -> float:
    """Return the shift accuracy ``logit^-1(beta1 * logit(acc_id) + beta0)`` that the baseline line predicts."""
    accuracy = _check_accuracy(acc_id, "acc_id")
    return float(inverse_logit(_check_real(beta1, "beta1") * logit(accuracy) + _check_real(beta0, "beta0")))


def effective_robustness(
    acc_id: float,
    acc_shifts: Any,
    beta1: float = DEFAULT_BETA1,
    beta0: float = DEFAULT_BETA0,
) -> float:
    """Compute the effective robustness of one model (Crabbé et al. 2023, Eq. 1).

    Parameters:
        acc_id: top-1 accuracy on ImageNet, a fraction in the open interval (0, 1), because its
            logit must be finite.
        acc_shifts: top-1 accuracies on the shifts, fractions in [0, 1] (they enter ER linearly,
            and a supervised model can score 0 on ImageNet-A), as a mapping from shift name to
            accuracy or a sequence. Their mean is ``ACC(S)``.
        beta1, beta0: slope and intercept of the baseline line in logit space.

    Returns:
        ``ACC(S) - logit^-1(beta1 * logit(acc_id) + beta0)``, a fraction (0.05 is 5 points).

    Raises:
        ValueError: when ``acc_id`` is outside (0, 1), a shift accuracy is outside [0, 1]
            (percents are detected and named), or a beta is not a finite number.
    """
    shifts = _shift_values(acc_shifts)
    mean_shift = float(np.mean([value for _, value in shifts]))
    return mean_shift - predicted_shift_accuracy(acc_id, beta1, beta0)


# --------------------------------------------------------------------------- refit


@dataclass(frozen=True)
class LineFit:
    """A line ``logit(ACC(S)) = beta1 * logit(ACC(I)) + beta0`` fitted by least squares.

    Fields:
        beta1, beta0: the least-squares slope and intercept over all models.
        beta1_interval, beta0_interval: percentile bootstrap confidence intervals (low, high).
        confidence: the level of the intervals, e.g. 0.95.
        n_models: number of (ACC(I), ACC(S)) pairs.
        n_bootstrap: bootstrap resamples drawn; ``n_degenerate`` of them had a single distinct
            ``ACC(I)`` (no slope) and were redrawn.
        seed: the seed of the resampling.
    """

    beta1: float
    beta0: float
    beta1_interval: tuple[float, float]
    beta0_interval: tuple[float, float]
    confidence: float
    n_models: int
    n_bootstrap: int
    n_degenerate: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-serialisable values."""
        return {
            "beta1": self.beta1,
            "beta0": self.beta0,
            "beta1_interval": list(self.beta1_interval),
            "beta0_interval": list(self.beta0_interval),
            "confidence": self.confidence,
            "n_models": self.n_models,
            "n_bootstrap": self.n_bootstrap,
            "n_degenerate": self.n_degenerate,
            "seed": self.seed,
        }


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    design = np.column_stack([x, np.ones_like(x)])
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(slope), float(intercept)


def fit_baseline_line(
    acc_id: Any,
    acc_shift: Any,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> LineFit:
    """Refit ``(beta1, beta0)`` of the ER baseline from a pool of models, with bootstrap intervals.

    The fit is ordinary least squares of ``logit(ACC(S))`` on ``logit(ACC(I))``, as Taori et al.
    (2020) fit their baseline. The intervals resample the models with replacement ``n_bootstrap``
    times and take the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles.

    Parameters:
        acc_id: ImageNet accuracies of shape ``(n_models,)``, fractions in (0, 1).
        acc_shift: mean shift accuracies ``ACC(S)`` of shape ``(n_models,)``, fractions in (0, 1).
        n_bootstrap: number of resamples, at least 1.
        confidence: level of the intervals, in (0, 1).
        seed: seed of ``numpy.random.default_rng``, so that the intervals are reproducible.

    Returns:
        The fitted line with its intervals.

    Raises:
        ValueError: with fewer than 3 models, fewer than 2 distinct ImageNet accuracies, arrays of
            different lengths, or an accuracy outside (0, 1).
    """
    x_acc = np.asarray(acc_id, dtype=np.float64).ravel()
    y_acc = np.asarray(acc_shift, dtype=np.float64).ravel()
    if x_acc.shape != y_acc.shape:
        raise ValueError(f"acc_id and acc_shift must have the same length, got {x_acc.size} and {y_acc.size}.")
    if x_acc.size < 3:
        raise ValueError(f"fitting a line with a confidence interval needs at least 3 models, got {x_acc.size}.")
    if np.unique(x_acc).size < 2:
        raise ValueError("acc_id must contain at least 2 distinct accuracies to fit a slope.")
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, numbers.Integral) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}.")
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a number in (0, 1), e.g. 0.95, got {confidence!r}.")
    x, y = logit(x_acc), logit(y_acc)
    beta1, beta0 = _least_squares(x, y)

    rng = np.random.default_rng(seed)
    slopes, intercepts = [], []
    n_degenerate = 0
    while len(slopes) < n_bootstrap:
        rows = rng.integers(0, x.size, size=x.size)
        if np.unique(x[rows]).size < 2:
            n_degenerate += 1
            if n_degenerate > 100 * n_bootstrap:
                raise ValueError("bootstrap resamples keep drawing a single distinct acc_id; add more models.")
            continue
        slope, intercept = _least_squares(x[rows], y[rows])
        slopes.append(slope)
        intercepts.append(intercept)

    tail = 100.0 * (1.0 - confidence) / 2.0
    low_high = (tail, 100.0 - tail)
    beta1_interval = tuple(float(value) for value in np.percentile(slopes, low_high))
    beta0_interval = tuple(float(value) for value in np.percentile(intercepts, low_high))
    return LineFit(beta1, beta0, beta1_interval, beta0_interval, float(confidence), int(x.size),
                   int(n_bootstrap), n_degenerate, int(seed))


# --------------------------------------------------------------------------- accuracy


def identity_groups(n_classes: int) -> np.ndarray:
    """Return the grouping of plain top-1 accuracy: logit ``i`` scores class ``i``."""
    return np.arange(n_classes, dtype=np.int64)


def _check_groups(class_groups: Any, n_classes: int) -> np.ndarray:
    groups = np.asarray(class_groups)
    if groups.shape != (n_classes,) or not np.issubdtype(groups.dtype, np.integer):
        raise ValueError(
            f"class_groups must be integers of shape ({n_classes},), one group per logit, "
            f"got dtype {groups.dtype} and shape {groups.shape}."
        )
    if (groups < -1).any() or not (groups >= 0).any():
        raise ValueError("class_groups must be -1 (masked) or a group index >= 0, with at least one unmasked logit.")
    return groups.astype(np.int64)


@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 accuracy under a class grouping, at one or more pruned fractions of the head.

    Fields:
        fractions: pruned fractions, starting with 0 (the head as given).
        accuracy: ``n_correct / n_scored`` at each fraction, None when no row was scored.
        n_correct: correct rows at each fraction.
        n_scored: labelled rows whose label belongs to an unmasked group.
        n_unscored: finite rows left out: unlabelled, or with a label in a masked class.
        n_nonfinite: rows with NaN or inf.
        protocol: the scoring protocol as plain data, as given to the accumulator.
    """

    fractions: tuple[float, ...]
    accuracy: tuple[float, ...] | None
    n_correct: tuple[int, ...]
    n_scored: int
    n_unscored: int
    n_nonfinite: int
    protocol: dict[str, Any] = field(default_factory=dict)

    def at(self, fraction: float) -> float | None:
        """Return the accuracy at ``fraction`` (one of ``fractions`` within 1e-9), None when nothing was scored."""
        for index, value in enumerate(self.fractions):
            if abs(value - float(fraction)) <= 1e-9:
                return None if self.accuracy is None else self.accuracy[index]
        raise ValueError(f"fraction {fraction!r} is not one of the fractions {list(self.fractions)}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as JSON-serialisable values."""
        return {
            "fractions": list(self.fractions),
            "accuracy": None if self.accuracy is None else list(self.accuracy),
            "n_correct": list(self.n_correct),
            "n_scored": self.n_scored,
            "n_unscored": self.n_unscored,
            "n_nonfinite": self.n_nonfinite,
            "protocol": dict(self.protocol),
        }


class AccuracyAccumulator(Accumulator):
    """Stream the top-1 accuracy of a linear head under a class grouping.

    Parameters:
        weight: head ``W`` of shape ``(d_Y, d_H)``.
        bias: head bias of shape ``(d_Y,)`` or None.
        class_groups: integer group of each logit, shape ``(d_Y,)``, -1 for a masked logit; None
            for plain top-1 accuracy.
        fractions: pruned fractions in [0, 1) at which the accuracy is also measured. Pruning a
            fraction p sets the ``floor(p * r)`` smallest singular values of ``W`` to 0 (Crabbé et
            al. 2023, Fig. 3). None or ``(0,)`` measures only the head as given.
        svd: the decomposition of ``weight`` from :func:`head_svd`, to reuse it; computed when
            needed and not given.
        protocol: plain data describing the protocol, copied into the result for reports.
    """

    def __init__(
        self,
        weight: Any,
        bias: Any = None,
        class_groups: Any = None,
        fractions: Any = None,
        svd: HeadSVD | None = None,
        protocol: Mapping[str, Any] | None = None,
    ) -> None:
        self.weight = to_matrix(weight, "weight", finite=True)
        n_classes = self.weight.shape[0]
        self.bias = None if bias is None else to_vector(bias, "bias", length=n_classes)
        self.groups = identity_groups(n_classes) if class_groups is None else _check_groups(class_groups, n_classes)
        self.fractions = (0.0,) if fractions is None else to_fractions(fractions)
        self.protocol = dict(protocol or {})
        self.svd = None
        if len(self.fractions) > 1:
            self.svd = svd if svd is not None else head_svd(self.weight)
            self.n_pruned = tuple(n_pruned_for(fraction, self.svd.rank) for fraction in self.fractions)
        self._unmasked = np.flatnonzero(self.groups >= 0)
        self.reset()

    def reset(self) -> None:
        """Clear the state."""
        self._n_correct = np.zeros(len(self.fractions), dtype=np.int64)
        self._n_scored = 0
        self._n_unscored = 0
        self._n_nonfinite = 0

    def _logits(self, rows: np.ndarray) -> list[np.ndarray]:
        """Return the unmasked logits of ``rows`` at each fraction."""
        if self.svd is None:
            logits = rows @ self.weight[self._unmasked].T
            if self.bias is not None:
                logits += self.bias[self._unmasked]
            return [logits]
        # The singular values are sorted in decreasing order, so pruning k directions drops the last k.
        projection = rows @ self.svd.Vh.T
        result = []
        U = self.svd.U[self._unmasked]
        for count in self.n_pruned:
            kept = self.svd.rank - count
            logits = (projection[:, :kept] * self.svd.S[:kept]) @ U[:, :kept].T
            if self.bias is not None:
                logits += self.bias[self._unmasked]
            result.append(logits)
        return result

    def update(self, h: Any, labels: Any = None) -> None:
        """Fold one batch into the state.

        Parameters:
            h: activations of shape ``(batch, d_H)``. Rows with NaN or inf are counted and skipped.
            labels: class indices of shape ``(batch,)`` in ``[0, d_Y)``, ``UNLABELLED`` (-1) for rows
                without one. Unlabelled rows and rows whose class is masked are counted as unscored.
        """
        rows = to_matrix(h, "h", columns=self.weight.shape[1])
        label_array = to_labels(labels, rows.shape[0], self.weight.shape[0])
        finite, nonfinite = split_finite(rows)
        finite_labels = label_array[~nonfinite]
        self._n_nonfinite += int(nonfinite.sum())

        scored = finite_labels != UNLABELLED
        scored[scored] = self.groups[finite_labels[scored]] >= 0
        self._n_unscored += int((~scored).sum())
        self._n_scored += int(scored.sum())
        rows, targets = finite[scored], self.groups[finite_labels[scored]]

        unmasked_groups = self.groups[self._unmasked]
        for start in range(0, rows.shape[0], _BLOCK_ROWS):
            block = rows[start : start + _BLOCK_ROWS]
            block_targets = targets[start : start + _BLOCK_ROWS]
            for index, logits in enumerate(self._logits(block)):
                predictions = unmasked_groups[logits.argmax(axis=1)]
                self._n_correct[index] += int((predictions == block_targets).sum())

    def merge(self, other: Accumulator) -> "AccuracyAccumulator":
        """Fold another accumulator with the same head, grouping and fractions into this one; return self."""
        if not isinstance(other, AccuracyAccumulator):
            raise ValueError(f"other must be an AccuracyAccumulator, got {type(other).__name__}.")
        same_bias = (self.bias is None) == (other.bias is None) and (
            self.bias is None or np.array_equal(self.bias, other.bias)
        )
        if (
            not np.array_equal(self.weight, other.weight)
            or not same_bias
            or not np.array_equal(self.groups, other.groups)
            or self.fractions != other.fractions
        ):
            raise ValueError("other was built with a different head, class grouping or fractions.")
        self._n_correct += other._n_correct
        self._n_scored += other._n_scored
        self._n_unscored += other._n_unscored
        self._n_nonfinite += other._n_nonfinite
        return self

    def compute(self) -> AccuracyResult:
        """Return the accuracy over every row folded so far. The state is left unchanged."""
        accuracy = None
        if self._n_scored:
            accuracy = tuple(float(count) / self._n_scored for count in self._n_correct)
        return AccuracyResult(
            fractions=self.fractions,
            accuracy=accuracy,
            n_correct=tuple(int(count) for count in self._n_correct),
            n_scored=self._n_scored,
            n_unscored=self._n_unscored,
            n_nonfinite=self._n_nonfinite,
            protocol=dict(self.protocol),
        )


def grouped_accuracy(
    H: Any, W: Any, b: Any = None, labels: Any = None, class_groups: Any = None
) -> AccuracyResult:
    """Compute the top-1 accuracy of ``logits = H W^T + b`` under a class grouping in one call.

    Parameters:
        H: activations of shape ``(N, d_H)``.
        W: head of shape ``(d_Y, d_H)``; b: bias ``(d_Y,)`` or None.
        labels: class indices of shape ``(N,)``, -1 for unlabelled rows.
        class_groups: group of each logit ``(d_Y,)``, -1 masked; None for plain top-1 accuracy.

    Returns:
        The accuracy at fraction 0 (the head as given).
    """
    accumulator = AccuracyAccumulator(W, b, class_groups)
    accumulator.update(H, labels)
    return accumulator.compute()
