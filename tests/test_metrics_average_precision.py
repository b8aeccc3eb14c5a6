"""Tests of column-wise average precision against sklearn, and of the concept-probing math built on it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from robsig_checks.metrics import average_precision, head_svd
from robsig_checks.metrics.average_precision import descending_groups, subset_average_precision
from robsig_checks.metrics.concepts import (
    FEW_NEGATIVES,
    FEW_POSITIVES,
    NO_POSITIVES,
    ProjectionAccumulator,
    balanced_concept_sets,
    concept_probing,
    polysemanticity,
    unique_concepts,
)


def sklearn_matrix(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.array([[average_precision_score(labels[:, c], scores[:, i]) for i in range(scores.shape[1])]
                     for c in range(labels.shape[1])])


# --------------------------------------------------------------------------- average_precision


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_matches_sklearn_per_column(decimals):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((500, 9))
    if decimals is not None:
        scores = np.round(scores, decimals)
    labels = rng.random((500, 6)) < np.linspace(0.02, 0.7, 6)
    np.testing.assert_allclose(average_precision(scores, labels), sklearn_matrix(scores, labels), rtol=0, atol=1e-9)


def test_float32_scores_match_sklearn():
    rng = np.random.default_rng(1)
    scores = (rng.standard_normal((2000, 4)) * 1e-3).astype(np.float32)
    labels = rng.random((2000, 3)) < 0.3
    np.testing.assert_allclose(average_precision(scores, labels), sklearn_matrix(scores, labels), rtol=0, atol=1e-9)


def test_all_scores_equal_gives_prevalence():
    labels = np.zeros(10_000, dtype=bool)
    labels[:37] = True
    value = average_precision(np.full(10_000, 3.5), labels)
    assert value == pytest.approx(average_precision_score(labels, np.full(10_000, 3.5)), abs=1e-12)
    assert value == pytest.approx(37 / 10_000, abs=1e-15)


def test_one_positive_among_ten_thousand():
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((10_000, 3))
    labels = np.zeros(10_000, dtype=bool)
    labels[4321] = True
    expected = [average_precision_score(labels, scores[:, i]) for i in range(3)]
    np.testing.assert_allclose(average_precision(scores, labels), expected, rtol=0, atol=1e-12)
    rank = (scores[:, 0] >= scores[4321, 0]).sum()
    assert average_precision(scores[:, 0], labels) == pytest.approx(1 / rank, abs=1e-15)


def test_ties_between_positive_and_negative():
    # Two tied rows (one of each class) share one threshold: precision 1/2 there, so AP = 1/2.
    assert average_precision(np.array([1.0, 1.0]), np.array([True, False])) == pytest.approx(0.5)
    # Hand-computed: thresholds 3 (1 of 1 positive), 2 (2 of 3, recall 1): AP = 1/2 * 1 + 1/2 * 2/3.
    scores = np.array([3.0, 2.0, 2.0, 1.0])
    labels = np.array([1, 1, 0, 0])
    assert average_precision(scores, labels) == pytest.approx(0.5 + 1 / 3, abs=1e-15)


def test_perfect_and_reversed_ranking():
    scores = np.arange(10, dtype=np.float64)
    labels = scores >= 5
    assert average_precision(scores, labels) == 1.0
    assert average_precision(-scores, labels) == pytest.approx(average_precision_score(labels, -scores), abs=1e-15)


def test_undefined_columns_are_nan_with_warning():
    scores = np.random.default_rng(3).standard_normal((20, 2))
    labels = np.zeros((20, 3), dtype=bool)
    labels[:5, 1] = True
    labels[:, 2] = True
    with pytest.warns(RuntimeWarning, match=r"undefined for 2 of 3 label columns \(1 with no positives, 1 with no negatives\)"):
        result = average_precision(scores, labels)
    assert np.isnan(result[0]).all()
    assert np.isnan(result[2]).all()
    np.testing.assert_allclose(result[1], sklearn_matrix(scores, labels[:, 1:2])[0], atol=1e-12)


def test_shapes_follow_inputs():
    rng = np.random.default_rng(4)
    scores = rng.standard_normal((30, 4))
    labels = rng.random((30, 2)) < 0.5
    assert average_precision(scores, labels).shape == (2, 4)
    assert average_precision(scores, labels[:, 0]).shape == (4,)
    assert average_precision(scores[:, 0], labels).shape == (2,)
    assert isinstance(average_precision(scores[:, 0], labels[:, 0]), float)


def test_torch_inputs_accepted():
    rng = np.random.default_rng(5)
    scores = rng.standard_normal((50, 2))
    labels = rng.random(50) < 0.4
    np.testing.assert_allclose(average_precision(torch.from_numpy(scores), torch.from_numpy(labels)),
                               average_precision(scores, labels), atol=0)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.array([1.0, np.nan]), np.array([1, 0]), "scores contains 1 NaN or inf"),
        (np.array([1, 2]), np.array([1, 0]), "scores must have a real floating-point dtype"),
        (np.zeros((2, 2, 2)), np.array([1, 0]), r"scores must have shape \(N,\) or \(N, k\)"),
        (np.array([1.0, 2.0]), np.array([1, 2]), "labels must contain only 0 and 1, got 2"),
        (np.array([1.0, 2.0]), np.array([1.0, 0.0]), "labels must be bool or integer 0/1, got dtype float64"),
        (np.array([1.0, 2.0]), np.array([1, 0, 1]), r"labels must have shape \(2,\) or \(2, C\)"),
        (np.array([1.0, 2.0]), [1, 0], "labels must be a numpy.ndarray or torch.Tensor, got list"),
    ],
)
def test_bad_inputs_rejected(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        average_precision(scores, labels)


# --------------------------------------------------------------------------- engine on subsets


def test_subsets_match_sklearn_both_signs():
    rng = np.random.default_rng(6)
    scores = np.round(rng.standard_normal((400, 7)), 1)
    groups = descending_groups(scores)
    subsets = []
    for size in (2, 20, 150):
        rows = rng.choice(400, size, replace=False)
        positive = np.zeros(size, dtype=bool)
        positive[: size // 2] = True
        subsets.append((rows, positive))
    high, low = subset_average_precision(groups, subsets)
    for index, (rows, positive) in enumerate(subsets):
        for column in range(7):
            assert high[index, column] == pytest.approx(
                average_precision_score(positive, scores[rows, column]), abs=1e-9)
            assert low[index, column] == pytest.approx(
                average_precision_score(positive, -scores[rows, column]), abs=1e-9)


def test_descending_groups_number_distinct_values():
    groups = descending_groups(np.array([[0.5], [2.0], [0.5], [-1.0]]))
    assert groups.tolist() == [[1, 0, 1, 2]]


def test_engine_rejects_rows_out_of_range():
    groups = descending_groups(np.zeros((5, 1)))
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        subset_average_precision(groups, [(np.array([0, 7]), np.array([True, False]))])


# --------------------------------------------------------------------------- balanced concept sets


def test_balanced_sets_take_all_positives_and_equal_negatives():
    memberships = [[1] if row < 12 else [] for row in range(40)]
    sets = balanced_concept_sets(memberships, min_positives=10, seed=3)
    rows, positive = sets.rows[0], sets.positive[0]
    assert sets.concepts.tolist() == [1]
    assert rows[positive].tolist() == list(range(12))
    negatives = rows[~positive]
    assert negatives.size == 12
    assert np.unique(negatives).size == 12
    assert negatives.min() >= 12
    again = balanced_concept_sets(memberships, min_positives=10, seed=3)
    assert np.array_equal(again.rows[0], rows)
    other = balanced_concept_sets(memberships, min_positives=10, seed=4)
    assert not np.array_equal(other.rows[0], rows)


def test_majority_concept_subsamples_positives():
    memberships = [[2] if row < 30 else [] for row in range(40)]
    sets = balanced_concept_sets(memberships, min_positives=5, seed=0)
    assert sets.set_sizes.tolist() == [10]
    assert sets.n_positives_subsampled == 1
    assert sorted(sets.rows[0][~sets.positive[0]].tolist()) == list(range(30, 40))


def test_exclusion_reasons_counted():
    memberships = [[1, 2] if row < 3 else [1] for row in range(20)]
    sets = balanced_concept_sets(memberships, concepts=[1, 2, 9], min_positives=5)
    assert sets.excluded == {1: FEW_NEGATIVES, 2: FEW_POSITIVES, 9: NO_POSITIVES}
    assert sets.excluded_counts() == {NO_POSITIVES: 1, FEW_POSITIVES: 1, FEW_NEGATIVES: 1}
    assert sets.concepts.size == 0


@pytest.mark.parametrize(("kwargs", "message"), [({"min_positives": 0}, "min_positives must be an integer >= 1"),
                                                 ({"seed": -1}, "seed must be an integer >= 0")])
def test_balanced_sets_reject_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        balanced_concept_sets([[1]], **kwargs)


# --------------------------------------------------------------------------- probing and counts


def test_probing_counts_planted_concepts():
    rng = np.random.default_rng(7)
    n = 200
    has = rng.random((n, 3)) < 0.3
    projections = rng.standard_normal((n, 5))
    projections[:, 0] = has[:, 0] * 5.0 + rng.random(n)   # concept 10 encoded along +v_0
    projections[:, 1] = -(has[:, 1] * 5.0) + rng.random(n)  # concept 11 encoded along -v_1
    projections[:, 2] = has[:, 1] * 5.0 + rng.random(n)   # concept 11 also along +v_2
    memberships = [[10 + c for c in range(3) if has[row, c]] for row in range(n)]
    result = concept_probing(projections, memberships, min_positives=10, seed=0)

    assert result.concepts.tolist() == [10, 11, 12]
    assert result.n_unique(0.9) == 2
    assert result.polysemanticity(0.9) == pytest.approx(3 / 5)
    assert result.sign[1, 1] == -1
    sets = balanced_concept_sets(memberships, min_positives=10, seed=0)
    for index, number in enumerate(result.concepts):
        rows = sets.rows[index]
        labels = np.isin(rows, [row for row in range(n) if number in memberships[row]])
        for column in range(5):
            expected = max(average_precision_score(labels, projections[rows, column]),
                           average_precision_score(labels, -projections[rows, column]))
            assert result.ap[index, column] == pytest.approx(expected, abs=1e-9)

    one_sided = concept_probing(projections, memberships, min_positives=10, seed=0, sign_invariant=False)
    assert one_sided.n_unique(0.9) == 2
    assert one_sided.ap[1, 1] < 0.5


def test_unique_and_polysemanticity_by_hand():
    ap = np.array([[0.95, 0.2, 0.91], [0.5, 0.5, 0.5], [0.89, 0.9, np.nan]])
    assert unique_concepts(ap, 0.9) == 2
    assert polysemanticity(ap, 0.9) == pytest.approx(3 / 3)
    assert unique_concepts(ap, 0.96) == 0
    with pytest.raises(ValueError, match=r"threshold must be a number in \(0, 1\], got 1.5"):
        unique_concepts(ap, 1.5)


def test_probing_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="memberships has 2 rows but projections has 3"):
        concept_probing(np.zeros((3, 2)), [[1], [2]])


# --------------------------------------------------------------------------- projection accumulator


def test_projection_shards_merge_in_data_set_order():
    rng = np.random.default_rng(8)
    W = rng.standard_normal((6, 4))
    svd = head_svd(W)
    H = rng.standard_normal((10, 4))
    whole = ProjectionAccumulator(svd)
    whole.update_with_samples(H, None, np.arange(10))
    first, second = ProjectionAccumulator(svd), ProjectionAccumulator(svd)
    second.update_with_samples(H[6:], None, np.arange(6, 10))
    first.update_with_samples(H[:6], None, np.arange(6))
    merged = second.merge(first).compute()
    assert merged.indices.tolist() == list(range(10))
    np.testing.assert_array_equal(merged.values, whole.compute().values)
    np.testing.assert_allclose(merged.values, H @ svd.Vh.T, rtol=1e-6, atol=1e-6)
    assert merged.values.dtype == np.float32


def test_projection_repeated_position_rejected():
    svd = head_svd(np.eye(3))
    accumulator = ProjectionAccumulator(svd)
    accumulator.update_with_samples(np.ones((2, 3)), None, np.array([0, 1]))
    accumulator.update_with_samples(np.ones((1, 3)), None, np.array([1]))
    with pytest.raises(ValueError, match="data-set position 1 was folded more than once"):
        accumulator.compute()


def test_projection_update_without_positions_rejected():
    accumulator = ProjectionAccumulator(head_svd(np.eye(3)))
    with pytest.raises(ValueError, match="call update_with_samples"):
        accumulator.update(np.ones((1, 3)))


def test_no_warning_for_defined_columns():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        average_precision(np.array([0.1, 0.2, 0.3]), np.array([0, 1, 1]))
