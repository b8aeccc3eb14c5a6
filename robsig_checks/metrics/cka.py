"""Linear centred kernel alignment (CKA) between two representations of the same images.

``CKA(X, Y) = HSIC(X, Y) / sqrt(HSIC(X, X) * HSIC(Y, Y))`` with linear kernels (Kornblith et al.
2019, "Similarity of neural network representations revisited"). With column-centred features this is
``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F * ||Yc^T Yc||_F)``. Crabbé et al. (2023, Appendix B) compare a
zero-shot model with its finetuned version layer by layer with it.

Two estimators:

- exact: over all images, from streamed float64 moments (means and centred cross-products, combined
  across batches and shards with the pairwise update of Chan et al. 1979), so the value does not depend
  on the batch size; :func:`linear_cka` and :class:`CKAAccumulator`;
- minibatch: the unbiased HSIC estimator of Song et al. (2012) averaged over batches, as in Nguyen,
  Raghu and Kornblith (2021, "Do wide and deep networks learn the same things?"). It needs at least 4
  rows per batch. :func:`minibatch_cka` and :class:`MinibatchCKAAccumulator` implement it, and the
  accumulator computes every (layer, reference layer) pair of a batch from one product of U-centred
  Gram matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from robsig_checks.metrics._validation import ArrayLike, to_matrix
from robsig_checks.metrics.base import Accumulator

#: Smallest batch the unbiased HSIC estimator accepts: its normalisation divides by n (n - 3).
MIN_UNBIASED_ROWS = 4


def _paired(X: ArrayLike, Y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = to_matrix(X, "X", finite=True)
    y = to_matrix(Y, "Y", finite=True)
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"X and Y must have one row per image, the same images in the same order; got {x.shape[0]} rows in X "
            f"and {y.shape[0]} in Y."
        )
    return x, y


def _scaled(matrix: np.ndarray) -> np.ndarray:
    """Divide by the largest absolute value; CKA is scale invariant and this keeps 4th powers finite."""
    peak = np.abs(matrix).max()
    return matrix / peak if peak > 0 else matrix


def _cka_from_moments(cross: np.ndarray, gram_x: np.ndarray, gram_y: np.ndarray) -> float:
    denominator = np.linalg.norm(gram_x) * np.linalg.norm(gram_y)
    if denominator == 0:
        return float("nan")
    return float(np.sum(cross * cross) / denominator)


def linear_cka(X: ArrayLike, Y: ArrayLike) -> float:
    """Return the exact linear CKA of two representations of the same N images.

    Parameters
    ----------
    X, Y:
        ``(N, d_X)`` and ``(N, d_Y)`` activations, row ``n`` of both from image ``n``.

    Returns
    -------
    float
        CKA in [0, 1]; NaN when a representation is constant over the images (zero HSIC).
    """
    x, y = _paired(X, Y)
    x = _scaled(x - x.mean(axis=0))
    y = _scaled(y - y.mean(axis=0))
    return _cka_from_moments(y.T @ x, x.T @ x, y.T @ y)


@dataclass(frozen=True)
class CKAResult:
    """Linear CKA of one pair of representations and the number of images it is measured on."""

    value: float
    n_rows: int
    estimator: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": None if np.isnan(self.value) else self.value, "n_rows": self.n_rows,
                "estimator": self.estimator}


class CKAAccumulator(Accumulator):
    """Stream the exact linear CKA of two representations over batches of the same images.

    State: the row count, the column means and the centred cross-product matrices
    ``Xc^T Xc``, ``Yc^T Yc`` and ``Yc^T Xc`` (float64, ``O(d_X^2 + d_Y^2 + d_X d_Y)``), combined with
    the pairwise update of Chan et al., so large offsets do not cancel.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean_x: np.ndarray | None = None
        self.mean_y: np.ndarray | None = None
        self.xx: np.ndarray | None = None
        self.yy: np.ndarray | None = None
        self.yx: np.ndarray | None = None

    def update(self, h: ArrayLike, labels: Any = None) -> None:
        raise TypeError("CKAAccumulator compares two representations: call update_pair(X, Y).")

    def update_pair(self, X: ArrayLike, Y: ArrayLike) -> None:
        """Fold a batch: ``X`` and ``Y`` are the two representations of the same images."""
        x, y = _paired(X, Y)
        batch = CKAAccumulator()
        batch.n = x.shape[0]
        batch.mean_x, batch.mean_y = x.mean(axis=0), y.mean(axis=0)
        xc, yc = x - batch.mean_x, y - batch.mean_y
        batch.xx, batch.yy, batch.yx = xc.T @ xc, yc.T @ yc, yc.T @ xc
        self.merge(batch)

    def merge(self, other: "CKAAccumulator") -> "CKAAccumulator":
        if not isinstance(other, CKAAccumulator):
            raise TypeError(f"can only merge a CKAAccumulator, got {type(other).__name__}")
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean_x, self.mean_y = other.n, other.mean_x.copy(), other.mean_y.copy()
            self.xx, self.yy, self.yx = other.xx.copy(), other.yy.copy(), other.yx.copy()
            return self
        if other.xx.shape != self.xx.shape or other.yy.shape != self.yy.shape:
            raise ValueError(
                f"cannot merge CKA states of different widths: ({self.xx.shape[0]}, {self.yy.shape[0]}) and "
                f"({other.xx.shape[0]}, {other.yy.shape[0]})"
            )
        total = self.n + other.n
        delta_x = other.mean_x - self.mean_x
        delta_y = other.mean_y - self.mean_y
        weight = self.n * other.n / total
        self.xx += other.xx + weight * np.outer(delta_x, delta_x)
        self.yy += other.yy + weight * np.outer(delta_y, delta_y)
        self.yx += other.yx + weight * np.outer(delta_y, delta_x)
        self.mean_x += delta_x * (other.n / total)
        self.mean_y += delta_y * (other.n / total)
        self.n = total
        return self

    def compute(self) -> CKAResult:
        if self.n == 0:
            return CKAResult(float("nan"), 0, "exact")
        scale_x = np.sqrt(np.abs(np.diag(self.xx)).max()) or 1.0
        scale_y = np.sqrt(np.abs(np.diag(self.yy)).max()) or 1.0
        value = _cka_from_moments(self.yx / (scale_x * scale_y), self.xx / scale_x**2, self.yy / scale_y**2)
        return CKAResult(value, self.n, "exact")


def _u_centred_gram(matrix: np.ndarray) -> np.ndarray:
    """Return the U-centred linear Gram matrix of the rows (zero diagonal), as in Székely and Rizzo (2014).

    For U-centred ``K~`` and ``L~`` of n rows, ``<K~, L~> / (n (n - 3))`` is the unbiased HSIC estimator of
    Song et al. (2012).
    """
    n = matrix.shape[0]
    gram = matrix @ matrix.T
    np.fill_diagonal(gram, 0.0)
    row_sums = gram.sum(axis=1)
    total = row_sums.sum()
    centred = gram - row_sums[:, None] / (n - 2) - row_sums[None, :] / (n - 2) + total / ((n - 1) * (n - 2))
    np.fill_diagonal(centred, 0.0)
    return centred


def unbiased_hsic(X: ArrayLike, Y: ArrayLike) -> float:
    """Return the unbiased linear-kernel HSIC estimate of Song et al. (2012) for one batch of n >= 4 rows."""
    x, y = _paired(X, Y)
    n = x.shape[0]
    if n < MIN_UNBIASED_ROWS:
        raise ValueError(f"the unbiased HSIC estimator needs at least {MIN_UNBIASED_ROWS} rows per batch, got {n}. "
                         "Use a larger batch size.")
    return float(np.sum(_u_centred_gram(x) * _u_centred_gram(y)) / (n * (n - 3)))


class MinibatchCKAAccumulator(Accumulator):
    """Average the unbiased HSIC over batches for every pair of ``n_x`` and ``n_y`` representations.

    ``update_layers(xs, ys)`` takes one batch as two lists of activations, for example the layers of a
    model and the layers of its reference, each ``(batch, d)``. ``compute()`` returns the
    ``(n_x, n_y)`` matrix ``CKA[i, j] = sum_b HSIC_b(x_i, y_j) / sqrt(sum_b HSIC_b(x_i, x_i) sum_b HSIC_b(y_j, y_j))``
    (Nguyen et al. 2021). Each batch costs one U-centred Gram matrix per representation and one product of
    the flattened matrices, instead of one HSIC computation per pair.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.n_rows = 0
        self.n_batches = 0
        self.cross: np.ndarray | None = None
        self.self_x: np.ndarray | None = None
        self.self_y: np.ndarray | None = None

    def update(self, h: ArrayLike, labels: Any = None) -> None:
        raise TypeError("MinibatchCKAAccumulator compares representations: call update_layers(xs, ys).")

    def update_layers(self, xs: Sequence[ArrayLike], ys: Sequence[ArrayLike]) -> None:
        """Fold one batch: ``xs`` and ``ys`` are lists of ``(batch, d)`` activations of the same images."""
        if not xs or not ys:
            raise ValueError("xs and ys must each hold at least one representation")
        names = [f"xs[{index}]" for index in range(len(xs))] + [f"ys[{index}]" for index in range(len(ys))]
        matrices = [to_matrix(value, name) for value, name in zip([*xs, *ys], names)]
        n = matrices[0].shape[0]
        if any(matrix.shape[0] != n for matrix in matrices):
            raise ValueError(f"all representations of a batch must have the same rows; got row counts "
                             f"{[matrix.shape[0] for matrix in matrices]}")
        if n < MIN_UNBIASED_ROWS:
            raise ValueError(f"the unbiased HSIC estimator needs at least {MIN_UNBIASED_ROWS} rows per batch, got "
                             f"{n}. Use a larger batch size, or the exact estimator.")

        # No per-batch rescaling: HSIC scales with the features, so batches must share one scale.
        flat = np.stack([_u_centred_gram(matrix).ravel() for matrix in matrices])
        # A NaN or infinity in the features reaches its Gram matrix, which is n^2 values instead of n d.
        finite = np.isfinite(flat).all(axis=1)
        if not finite.all():
            raise ValueError(f"{names[int(np.argmin(finite))]} contains NaN or infinite values; drop those rows first.")
        hsic = flat @ flat.T / (n * (n - 3))
        count_x = len(xs)
        cross = hsic[:count_x, count_x:]
        self_x = np.diag(hsic)[:count_x]
        self_y = np.diag(hsic)[count_x:]
        if self.cross is None:
            self.cross, self.self_x, self.self_y = cross.copy(), self_x.copy(), self_y.copy()
        elif self.cross.shape != cross.shape:
            raise ValueError(f"expected {self.cross.shape[0]} and {self.cross.shape[1]} representations per batch, "
                             f"got {cross.shape[0]} and {cross.shape[1]}")
        else:
            self.cross += cross
            self.self_x += self_x
            self.self_y += self_y
        self.n_rows += n
        self.n_batches += 1

    def merge(self, other: "MinibatchCKAAccumulator") -> "MinibatchCKAAccumulator":
        if not isinstance(other, MinibatchCKAAccumulator):
            raise TypeError(f"can only merge a MinibatchCKAAccumulator, got {type(other).__name__}")
        if other.cross is None:
            return self
        if self.cross is None:
            self.cross, self.self_x, self.self_y = other.cross.copy(), other.self_x.copy(), other.self_y.copy()
        else:
            self.cross += other.cross
            self.self_x += other.self_x
            self.self_y += other.self_y
        self.n_rows += other.n_rows
        self.n_batches += other.n_batches
        return self

    def compute(self) -> np.ndarray:
        """Return the ``(n_x, n_y)`` CKA matrix (NaN where a representation had zero HSIC with itself)."""
        if self.cross is None:
            raise ValueError("no batch was folded into this accumulator")
        with np.errstate(invalid="ignore", divide="ignore"):
            denominator = np.sqrt(np.clip(np.outer(self.self_x, self.self_y), 0.0, None))
            return np.where(denominator > 0, self.cross / denominator, np.nan)


def minibatch_cka(X: ArrayLike, Y: ArrayLike, batch_size: int) -> float:
    """Return the minibatch CKA of Nguyen et al. (2021) over consecutive batches of ``batch_size`` rows.

    A last batch of fewer than 4 rows is dropped, because the unbiased estimator is undefined there.
    """
    x, y = _paired(X, Y)
    if batch_size < MIN_UNBIASED_ROWS:
        raise ValueError(f"batch_size must be at least {MIN_UNBIASED_ROWS}, got {batch_size}")
    accumulator = MinibatchCKAAccumulator()
    for start in range(0, x.shape[0], batch_size):
        if x.shape[0] - start >= MIN_UNBIASED_ROWS:
            accumulator.update_layers([x[start : start + batch_size]], [y[start : start + batch_size]])
    return float(accumulator.compute()[0, 0])
