"""Concept probing of the head's singular directions: balanced concept sets, AP, unique concepts.

Crabbé et al. (2023), "Robust multimodal models have outlier features and encode more
concepts", Sec. 4: for each concept c, the positives P_c (images that contain c) and as many
negatives N_c (images without c) form a balanced set. The projection ``h . v_i`` of an image on
the right singular vector ``v_i`` of the head scores it, and ``AP_ci`` is the average precision
of those scores for "contains c". The concept is encoded in ``v_i`` when ``AP_ci >= 0.9``:

    N_unique = |{c : AP_ci >= 0.9 for some i}|                      (Eq. 5)
    polysemanticity = mean over directions i of |{c : AP_ci >= 0.9}|

The sign of a singular vector is arbitrary, so by default ``AP_ci = max(AP(s), AP(-s))``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robsig_checks.metrics._validation import ArrayLike, to_labels, to_matrix
from robsig_checks.metrics.average_precision import descending_groups, subset_average_precision
from robsig_checks.metrics.base import Accumulator
from robsig_checks.metrics.importance import HeadSVD

#: Reasons for leaving a concept out, as they appear in results and reports.
NO_POSITIVES = "no positives"
FEW_POSITIVES = "fewer positives than min_positives"
FEW_NEGATIVES = "fewer negatives than min_positives"


def _check_count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not (0 < threshold <= 1):
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}.")
    return float(threshold)


@dataclass(frozen=True, eq=False)
class ConceptSets:
    """Balanced positive and negative rows per concept.

    Fields:
        concepts: int64 concept numbers that are scored, shape ``(C,)``, increasing.
        rows: for each scored concept, the row indices of its positives then its negatives.
        positive: for each scored concept, a bool array marking the positives among ``rows``.
        n_positive_available: int64 positives per scored concept before balancing, shape ``(C,)``.
        excluded: concept number -> reason, for every concept left out (never scored).
        n_rows: rows the sets were drawn from.
        seed: seed of the negative (and, when positives outnumber negatives, positive) draws.
        min_positives: minimum size of each half of a balanced set.
    """

    concepts: np.ndarray
    rows: list[np.ndarray]
    positive: list[np.ndarray]
    n_positive_available: np.ndarray
    excluded: dict[int, str]
    n_rows: int
    seed: int
    min_positives: int

    @property
    def set_sizes(self) -> np.ndarray:
        """Number of positives (equal to the number of negatives) of each scored concept."""
        return np.array([int(mask.sum()) for mask in self.positive], dtype=np.int64)

    @property
    def n_positives_subsampled(self) -> int:
        """Concepts present in more than half of the rows, whose positives were subsampled."""
        return int((self.n_positive_available > self.set_sizes).sum())

    def excluded_counts(self) -> dict[str, int]:
        """Return the number of excluded concepts per reason."""
        counts = {NO_POSITIVES: 0, FEW_POSITIVES: 0, FEW_NEGATIVES: 0}
        for reason in self.excluded.values():
            counts[reason] += 1
        return counts


def balanced_concept_sets(
    memberships: Sequence[Iterable[int]],
    concepts: Iterable[int] | None = None,
    min_positives: int = 10,
    seed: int = 0,
) -> ConceptSets:
    """Draw a balanced set of positives and negatives for each concept (Crabbé et al. 2023, Sec. 4).

    A concept with ``p`` positives among ``n`` rows gets ``b = min(p, n - p)`` positives and
    ``b`` negatives: all positives and ``b`` negatives drawn without replacement, or, when
    positives outnumber negatives, all negatives and ``b`` drawn positives. Concepts with no
    positives, or with ``b < min_positives``, are excluded with the reason. Each concept's draw
    uses ``numpy.random.default_rng([seed, concept])``, so it does not depend on the other concepts.

    Parameters:
        memberships: for each row, the concept numbers (non-negative integers) present in it.
        concepts: concept numbers to consider, or None for every number in ``memberships``.
            Numbers that appear in no row are excluded as having no positives.
        min_positives: minimum size of each half of a balanced set, at least 1.
        seed: non-negative integer seed.

    Returns:
        The sets, in increasing concept number.
    """
    min_positives = _check_count(min_positives, "min_positives", 1)
    seed = _check_count(seed, "seed", 0)
    n_rows = len(memberships)
    if n_rows == 0:
        raise ValueError("memberships must contain at least one row, got an empty sequence.")

    row_ids, numbers_present = [], []
    for row, present in enumerate(memberships):
        values = np.unique(np.asarray(list(present) if not isinstance(present, np.ndarray) else present, dtype=np.int64))
        if values.size and values.min() < 0:
            raise ValueError(f"memberships[{row}] contains {int(values.min())}; concept numbers must be >= 0.")
        row_ids.append(np.full(values.size, row, dtype=np.int64))
        numbers_present.append(values)
    all_rows = np.concatenate(row_ids) if row_ids else np.zeros(0, dtype=np.int64)
    all_numbers = np.concatenate(numbers_present) if numbers_present else np.zeros(0, dtype=np.int64)
    order = np.argsort(all_numbers, kind="stable")
    all_rows, all_numbers = all_rows[order], all_numbers[order]
    present_numbers, starts = np.unique(all_numbers, return_index=True)
    ends = np.append(starts[1:], all_numbers.size)
    positives_of = {int(number): all_rows[start:end] for number, start, end in zip(present_numbers, starts, ends)}

    requested = sorted(set(positives_of) if concepts is None else {int(number) for number in concepts})
    scored, rows, positive, available, excluded = [], [], [], [], {}
    for number in requested:
        positives = positives_of.get(number)
        if positives is None:
            excluded[number] = NO_POSITIVES
            continue
        size = min(positives.size, n_rows - positives.size)
        if size < min_positives:
            excluded[number] = FEW_POSITIVES if positives.size < min_positives else FEW_NEGATIVES
            continue
        generator = np.random.default_rng([seed, number])
        is_negative = np.ones(n_rows, dtype=bool)
        is_negative[positives] = False
        negatives = np.flatnonzero(is_negative)
        chosen_positives = np.sort(generator.choice(positives, size, replace=False)) if positives.size > size else positives
        chosen_negatives = np.sort(generator.choice(negatives, size, replace=False)) if negatives.size > size else negatives
        scored.append(number)
        rows.append(np.concatenate([chosen_positives, chosen_negatives]))
        positive.append(np.concatenate([np.ones(size, dtype=bool), np.zeros(size, dtype=bool)]))
        available.append(positives.size)

    return ConceptSets(
        concepts=np.array(scored, dtype=np.int64),
        rows=rows,
        positive=positive,
        n_positive_available=np.array(available, dtype=np.int64),
        excluded=excluded,
        n_rows=n_rows,
        seed=seed,
        min_positives=min_positives,
    )


def unique_concepts(ap: ArrayLike, threshold: float = 0.9) -> int:
    """Return ``N_unique``: the number of rows (concepts) of ``ap`` with AP >= threshold in some column.

    Parameters:
        ap: AP of shape ``(C, r)`` (concepts x directions). NaN never counts as encoded.
        threshold: AP at which a concept counts as encoded in a direction, in (0, 1].
    """
    values = np.asarray(ap, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"ap must have shape (concepts, directions), got shape {values.shape}.")
    threshold = _check_threshold(threshold)
    return int((values >= threshold).any(axis=1).sum())


def polysemanticity(ap: ArrayLike, threshold: float = 0.9) -> float:
    """Return the mean over directions (columns of ``ap``) of the number of concepts with AP >= threshold.

    Crabbé et al. (2023), Sec. 4, divide by the number of directions of the representation;
    here the denominator is the number of columns of ``ap``, the head's rank r.
    """
    values = np.asarray(ap, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] == 0:
        raise ValueError(f"ap must have shape (concepts, directions) with directions >= 1, got shape {values.shape}.")
    threshold = _check_threshold(threshold)
    return float((values >= threshold).sum() / values.shape[1])


@dataclass(frozen=True, eq=False)
class ConceptProbingResult:
    """AP of every scored concept in every direction, with what was excluded and why.

    Fields:
        concepts: int64 concept numbers, shape ``(C,)``.
        ap: float64 AP of shape ``(C, r)``; with ``sign_invariant`` it is ``max(AP(s), AP(-s))``.
        sign: int8 of shape ``(C, r)``: +1 where the projection itself reaches ``ap``, -1 where
            the negated projection does.
        set_sizes: positives (= negatives) in each concept's balanced set, shape ``(C,)``.
        n_positive_available: positives of each concept before balancing, shape ``(C,)``.
        excluded: concept number -> reason, for concepts never scored.
        n_rows: images the sets were drawn from.
        seed, min_positives, sign_invariant: the configuration.
    """

    concepts: np.ndarray
    ap: np.ndarray
    sign: np.ndarray
    set_sizes: np.ndarray
    n_positive_available: np.ndarray
    excluded: dict[int, str]
    n_rows: int
    seed: int
    min_positives: int
    sign_invariant: bool

    @property
    def rank(self) -> int:
        """Number of directions r."""
        return int(self.ap.shape[1])

    def encoded(self, threshold: float = 0.9) -> np.ndarray:
        """Return the bool ``(C, r)`` matrix of (concept, direction) pairs with AP >= threshold."""
        return self.ap >= _check_threshold(threshold)

    def n_unique(self, threshold: float = 0.9) -> int:
        """Return ``N_unique`` (Crabbé et al. 2023, Eq. 5)."""
        return unique_concepts(self.ap, threshold) if self.concepts.size else 0

    def polysemanticity(self, threshold: float = 0.9) -> float:
        """Return the mean number of encoded concepts per direction."""
        return polysemanticity(self.ap, threshold) if self.concepts.size else 0.0

    def excluded_counts(self) -> dict[str, int]:
        """Return the number of excluded concepts per reason."""
        counts = {NO_POSITIVES: 0, FEW_POSITIVES: 0, FEW_NEGATIVES: 0}
        for reason in self.excluded.values():
            counts[reason] += 1
        return counts


def concept_probing(
    projections: ArrayLike,
    memberships: Sequence[Iterable[int]],
    concepts: Iterable[int] | None = None,
    min_positives: int = 10,
    seed: int = 0,
    sign_invariant: bool = True,
) -> ConceptProbingResult:
    """Compute the AP of every concept in every direction on balanced concept sets.

    Parameters:
        projections: finite scores ``P = H V`` of shape ``(N, r)``: row n is image n projected on
            the r right singular vectors of the head.
        memberships: for each of the N rows, the concept numbers present in the image.
        concepts: concept numbers to consider (for example every label of the data set), or
            None for those present in some row.
        min_positives: minimum size of each half of a balanced set.
        seed: seed of the negative draws, see :func:`balanced_concept_sets`.
        sign_invariant: score each pair with ``max(AP(s), AP(-s))`` because the sign of a
            singular vector is arbitrary. When False, only the projection itself is scored.

    Returns:
        The AP matrix and what was excluded. Every AP equals
        ``sklearn.metrics.average_precision_score`` on the concept's balanced set.
    """
    if isinstance(projections, np.ndarray) and projections.dtype == np.float32:
        # float32 stays float32 (the accumulator's dtype): a float64 copy would double the memory.
        scores = projections
        if scores.ndim != 2 or 0 in scores.shape or not np.isfinite(scores).all():
            raise ValueError(
                f"projections must be a finite, non-empty 2-D array (N, r), got shape {scores.shape} with "
                f"{int((~np.isfinite(scores)).sum())} NaN or inf values."
            )
    else:
        scores = to_matrix(projections, "projections", finite=True)
    if len(memberships) != scores.shape[0]:
        raise ValueError(
            f"memberships has {len(memberships)} rows but projections has {scores.shape[0]}; "
            "give one concept set per row."
        )
    if not isinstance(sign_invariant, bool):
        raise ValueError(f"sign_invariant must be True or False, got {sign_invariant!r}.")
    sets = balanced_concept_sets(memberships, concepts, min_positives=min_positives, seed=seed)

    high, low = subset_average_precision(descending_groups(scores), list(zip(sets.rows, sets.positive)))
    if sign_invariant:
        ap = np.maximum(high, low)
        sign = np.where(high >= low, 1, -1).astype(np.int8)
    else:
        ap = high
        sign = np.ones(high.shape, dtype=np.int8)
    return ConceptProbingResult(
        concepts=sets.concepts,
        ap=ap.reshape(sets.concepts.size, scores.shape[1]),
        sign=sign.reshape(sets.concepts.size, scores.shape[1]),
        set_sizes=sets.set_sizes,
        n_positive_available=sets.n_positive_available,
        excluded=sets.excluded,
        n_rows=sets.n_rows,
        seed=sets.seed,
        min_positives=sets.min_positives,
        sign_invariant=sign_invariant,
    )


@dataclass(frozen=True, eq=False)
class Projections:
    """Projections of images on the head's right singular vectors, in data-set order.

    ``indices`` (int64, shape ``(N,)``, increasing) are the images' positions in the data set's
    ``samples()``, and row n of ``values`` (float32, shape ``(N, r)``) is ``h_n V`` for image
    ``indices[n]``.
    """

    indices: np.ndarray
    values: np.ndarray


class ProjectionAccumulator(Accumulator):
    """Keep ``P = H V`` (float32) with each row's position in the data set, for concept probing.

    Concept probing pairs each image with its own concept set and draws negatives across the
    whole data set, so the state is O(N r): 4 bytes per image and direction (about 130 MB for
    63,305 Broden images and 512 directions). Merging concatenates the shards.

    Parameters:
        svd: the decomposition of the head from :func:`~robsig_checks.metrics.head_svd`.
    """

    def __init__(self, svd: HeadSVD) -> None:
        if not isinstance(svd, HeadSVD):
            raise ValueError(f"svd must be a HeadSVD from head_svd(W), got {type(svd).__name__}.")
        self.svd = svd
        self.reset()

    def reset(self) -> None:
        """Clear the state."""
        self._indices = []
        self._values = []

    def update(self, h: ArrayLike, labels: ArrayLike | None = None) -> None:
        """Reject batches without sample positions: use :meth:`update_with_samples`."""
        raise ValueError(
            "ProjectionAccumulator needs each row's position in the data set: call "
            "update_with_samples(h, labels, indices) instead of update(h, labels)."
        )

    def update_with_samples(self, h: ArrayLike, labels: ArrayLike | None, indices: ArrayLike) -> None:
        """Fold one batch.

        Parameters:
            h: finite activations of shape ``(batch, d_H)``.
            labels: class labels of shape ``(batch,)`` or None; only their shape is checked.
            indices: integer positions of the rows in the data set's ``samples()``, shape ``(batch,)``.
        """
        rows = to_matrix(h, "h", columns=self.svd.d_h, finite=True)
        to_labels(labels, rows.shape[0])
        positions = np.asarray(indices)
        if positions.shape != (rows.shape[0],) or positions.dtype.kind not in "iu":
            raise ValueError(
                f"indices must be an integer array of shape ({rows.shape[0]},), one position per row, "
                f"got shape {positions.shape} and dtype {positions.dtype}."
            )
        if positions.size and positions.min() < 0:
            raise ValueError(f"indices must be >= 0, got {int(positions.min())}.")
        self._indices.append(positions.astype(np.int64))
        self._values.append((rows @ self.svd.right_singular_vectors).astype(np.float32))

    def merge(self, other: Accumulator) -> "ProjectionAccumulator":
        """Fold another ``ProjectionAccumulator`` of the same head into this one and return self."""
        if not isinstance(other, ProjectionAccumulator):
            raise ValueError(f"other must be a ProjectionAccumulator, got {type(other).__name__}.")
        if other.svd is not self.svd and not (
            np.array_equal(other.svd.S, self.svd.S) and np.array_equal(other.svd.Vh, self.svd.Vh)
        ):
            raise ValueError("other was built for a different head: both accumulators need the same HeadSVD.")
        self._indices.extend(other._indices)
        self._values.extend(other._values)
        return self

    def compute(self) -> Projections:
        """Return the projections sorted by data-set position. The state is left unchanged.

        Raises:
            ValueError: the same position was folded twice (for example, one shard merged twice).
        """
        if not self._indices:
            return Projections(np.zeros(0, dtype=np.int64), np.zeros((0, self.svd.rank), dtype=np.float32))
        indices = np.concatenate(self._indices)
        values = np.concatenate(self._values)
        order = np.argsort(indices, kind="stable")
        indices, values = indices[order], values[order]
        repeated = indices[1:][indices[1:] == indices[:-1]]
        if repeated.size:
            raise ValueError(
                f"data-set position {int(repeated[0])} was folded more than once ({repeated.size} repeats): "
                "each image must reach the accumulator once, in exactly one shard."
            )
        return Projections(indices, values)


__all__ = [
    "FEW_NEGATIVES",
    "FEW_POSITIVES",
    "NO_POSITIVES",
    "ConceptProbingResult",
    "ConceptSets",
    "ProjectionAccumulator",
    "Projections",
    "balanced_concept_sets",
    "concept_probing",
    "polysemanticity",
    "unique_concepts",
]
