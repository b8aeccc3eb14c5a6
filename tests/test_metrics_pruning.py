"""Tests of the pruning curve (Crabbé et al. 2023, Fig. 3) against rebuilding each pruned head."""

from __future__ import annotations

import json
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from robsig_checks.metrics import (
    DEFAULT_FRACTIONS,
    HeadSVD,
    PruningAccumulator,
    PruningCurve,
    head_svd,
    importance,
    pruning_curve,
)


def brute_force_curve(H, W, b, fractions, labels, order):
    """Rebuild W_p = U diag(sigma with pruned zeros) Vh for each fraction and compare argmax of the logits.

    Uses np.linalg.svd and explicit loops, independent of the package except for the
    importance order, which comes from a loop over rows below.
    """
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    rank = int(np.linalg.matrix_rank(W))
    U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]
    bias = np.zeros(W.shape[0]) if b is None else b

    if order == "sigma":
        pruning_order = list(range(rank - 1, -1, -1))
    else:
        scores = []
        for i in range(rank):
            cosines = [abs(h @ Vh[i]) / np.linalg.norm(h) for h in H if np.linalg.norm(h) > 0]
            scores.append(S[i] / S.sum() * np.mean(cosines))
        pruning_order = sorted(range(rank), key=lambda i: scores[i])

    unpruned = (H @ W.T + bias).argmax(axis=1)
    labelled = labels != -1 if labels is not None else np.zeros(H.shape[0], dtype=bool)
    accuracy, agreement, n_pruned = [], [], []
    for fraction in fractions:
        count = int(Fraction(repr(fraction)) * rank)  # exact floor of the decimal fraction
        kept = S.copy()
        kept[pruning_order[:count]] = 0.0
        W_pruned = U @ np.diag(kept) @ Vh
        prediction = (H @ W_pruned.T + bias).argmax(axis=1)
        n_pruned.append(count)
        agreement.append(float(np.mean(prediction == unpruned)))
        if labelled.any():
            accuracy.append(float(np.mean(prediction[labelled] == labels[labelled])))
    return {
        "n_pruned": tuple(n_pruned),
        "accuracy": tuple(accuracy) if labelled.any() else None,
        "agreement": tuple(agreement),
        "pruning_order": tuple(pruning_order),
    }


def make_problem(d_y, d_h, n_rows, seed, label_mode="all"):
    """Return H, W, b and labels where the plain head is right on roughly 70 % of the rows."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d_y, d_h)) / np.sqrt(d_h)
    b = 0.1 * rng.standard_normal(d_y)
    H = rng.standard_normal((n_rows, d_h)) + 0.5
    logits = H @ W.T + b
    noisy = logits + 0.3 * rng.standard_normal(logits.shape)
    labels = noisy.argmax(axis=1).astype(np.int64)
    if label_mode == "none":
        labels = None
    elif label_mode == "some":
        labels[rng.random(n_rows) < 0.4] = -1
    return H, W, b, labels


def assert_curve_equals(curve: PruningCurve, expected: dict) -> None:
    assert curve.n_pruned == expected["n_pruned"]
    assert curve.pruning_order == expected["pruning_order"]
    assert curve.agreement == pytest.approx(expected["agreement"], abs=1e-12)
    if expected["accuracy"] is None:
        assert curve.accuracy is None
    else:
        assert curve.accuracy == pytest.approx(expected["accuracy"], abs=1e-12)


FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.65, 0.8, 0.9, 0.95)


@pytest.mark.parametrize("order", ["sigma", "importance"])
@pytest.mark.parametrize("label_mode", ["all", "some", "none"])
@pytest.mark.parametrize(("d_y", "d_h"), [(30, 20), (12, 40)])
def test_curve_matches_brute_force(order, label_mode, d_y, d_h):
    H, W, b, labels = make_problem(d_y, d_h, 300, seed=d_y * d_h, label_mode=label_mode)

    curve = pruning_curve(H, W, b, fractions=FRACTIONS, labels=labels, order=order)

    expected = brute_force_curve(H, W, b, FRACTIONS, labels, order)
    assert_curve_equals(curve, expected)
    assert curve.fractions == FRACTIONS
    assert curve.order == order
    assert curve.rank == min(d_y, d_h)
    assert curve.n_rows == 300
    n_labelled = 0 if labels is None else int((labels != -1).sum())
    assert curve.n_labelled == n_labelled
    # The curve must not be flat, or it would not tell a wrong pruning order apart.
    assert curve.agreement[-1] < 0.9


def test_curve_rank_deficient_head_without_bias():
    rng = np.random.default_rng(3)
    W = rng.standard_normal((25, 4)) @ rng.standard_normal((4, 18))
    H = rng.standard_normal((200, 18))
    labels = (H @ W.T).argmax(axis=1)

    for order in ("sigma", "importance"):
        curve = pruning_curve(H, W, fractions=(0.25, 0.5, 0.75), labels=labels, order=order)
        expected = brute_force_curve(H, W, None, (0.0, 0.25, 0.5, 0.75), labels, order)

        assert curve.rank == 4
        assert curve.n_pruned == (0, 1, 2, 3)
        assert_curve_equals(curve, expected)


def test_importance_order_follows_importance():
    H, W, b, labels = make_problem(20, 16, 200, seed=4)

    curve = pruning_curve(H, W, b, labels=labels, order="importance")

    assert curve.pruning_order == tuple(int(i) for i in np.argsort(importance(W, H)))


def test_fraction_zero_is_plain_head():
    H, W, b, labels = make_problem(40, 24, 500, seed=5, label_mode="some")
    labelled = labels != -1
    plain_accuracy = np.mean((H @ W.T + b).argmax(axis=1)[labelled] == labels[labelled])

    for order in ("sigma", "importance"):
        point = pruning_curve(H, W, b, fractions=(0.5,), labels=labels, order=order).at(0.0)

        assert point.fraction == 0.0
        assert point.n_pruned == 0
        assert point.accuracy == pytest.approx(plain_accuracy, abs=1e-12)
        assert 0.5 < point.accuracy < 0.95
        assert point.agreement == 1.0


def test_curve_sign_flips_change_nothing():
    H, W, b, labels = make_problem(20, 15, 200, seed=6, label_mode="some")
    svd = head_svd(W)
    signs = np.where(np.random.default_rng(6).random(svd.rank) < 0.5, -1.0, 1.0)
    flipped = HeadSVD(U=svd.U * signs, S=svd.S, Vh=svd.Vh * signs[:, None], rank=svd.rank)

    for order in ("sigma", "importance"):
        reference = pruning_curve(H, W, b, labels=labels, order=order, svd=svd)
        assert pruning_curve(H, W, b, labels=labels, order=order, svd=flipped) == reference
        assert pruning_curve(H, W, b, labels=labels, order=order) == reference


def random_splits(n_rows: int, n_parts: int, rng: np.random.Generator) -> list[slice]:
    """Split range(n_rows) into min(n_parts, n_rows) non-empty consecutive slices at random cuts."""
    n_parts = min(n_parts, n_rows)
    cuts = np.sort(rng.choice(np.arange(1, n_rows), size=n_parts - 1, replace=False))
    bounds = [0, *cuts.tolist(), n_rows]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.mark.parametrize("order", ["sigma", "importance"])
def test_accumulator_batches_and_shards_match_function(order):
    rng = np.random.default_rng(7)
    H, W, b, labels = make_problem(30, 20, 400, seed=7, label_mode="some")
    H[13, 2] = np.nan
    H[50] = 0.0
    svd = head_svd(W)
    with pytest.warns(RuntimeWarning, match="excluded 1 of 400 rows"):
        expected = pruning_curve(H, W, b, fractions=FRACTIONS, labels=labels, order=order, svd=svd)

    single = PruningAccumulator(svd, b, FRACTIONS, order)
    for part in random_splits(400, 9, rng):
        single.update(torch.from_numpy(H[part]), torch.from_numpy(labels[part]))
    merged = PruningAccumulator(svd, torch.from_numpy(b), list(FRACTIONS), order)
    for shard_part in random_splits(400, 4, rng):
        shard = PruningAccumulator(svd, b, FRACTIONS, order)
        for part in random_splits(shard_part.stop - shard_part.start, 3, rng):
            rows = slice(shard_part.start + part.start, shard_part.start + part.stop)
            shard.update(H[rows], labels[rows])
        assert merged.merge(shard) is merged

    assert single.compute() == expected
    assert merged.compute() == expected
    assert expected.n_rows == 399
    assert expected.n_nonfinite == 1
    assert expected.n_labelled == int((np.delete(labels, 13) != -1).sum())


def test_nonfinite_rows_excluded_from_curve():
    H, W, b, labels = make_problem(15, 10, 120, seed=8, label_mode="some")
    dirty = H.copy()
    dirty[[3, 40, 41], [0, 5, 9]] = [np.nan, np.inf, -np.inf]
    keep = np.setdiff1d(np.arange(120), [3, 40, 41])

    with pytest.warns(RuntimeWarning, match=r"pruning_curve: excluded 3 of 120 rows of H \(3 with NaN or inf"):
        curve = pruning_curve(dirty, W, b, labels=labels)
    clean = pruning_curve(H[keep], W, b, labels=labels[keep])

    assert curve.n_nonfinite == 3
    assert curve.n_rows == 117
    assert curve.accuracy == clean.accuracy
    assert curve.agreement == clean.agreement


def test_curve_no_warning_when_rows_finite():
    H, W, b, labels = make_problem(6, 5, 30, seed=9)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pruning_curve(H, W, b, labels=labels)


def test_fractions_normalised():
    H, W, b, _ = make_problem(10, 8, 20, seed=10)

    curve = pruning_curve(H, W, b, fractions=np.array([0.5, 0.25, 0.25]))

    assert curve.fractions == (0.0, 0.25, 0.5)
    assert curve.n_pruned == (0, 2, 4)
    assert pruning_curve(H, W, b).fractions == DEFAULT_FRACTIONS
    assert DEFAULT_FRACTIONS[8] == 0.8


def test_n_pruned_uses_decimal_floor():
    rng = np.random.default_rng(11)
    W = rng.standard_normal((100, 110))
    H = rng.standard_normal((5, 110))

    curve = pruning_curve(H, W, fractions=(0.29, 0.57, 0.8, 0.99))

    # 0.29 * 100 is 28.999999999999996 in float64, but the decimal 0.29 prunes 29 of 100.
    assert curve.rank == 100
    assert curve.n_pruned == (0, 29, 57, 80, 99)


@pytest.mark.parametrize(
    ("fractions", "pattern"),
    [
        ((0.5, 1.0), r"fractions must each be in \[0, 1\), got 1.0"),
        ((-0.1,), r"fractions must each be in \[0, 1\), got -0.1"),
        ((float("nan"),), r"fractions must each be in \[0, 1\), got nan"),
        ((0.2, "0.4"), r"fractions must contain only real numbers in \[0, 1\), got '0.4'"),
        ((True,), r"fractions must contain only real numbers"),
        ((), "fractions must contain at least one value"),
        (0.5, r"fractions must be a sequence of numbers in \[0, 1\), got 0.5"),
        ("0.5", r"fractions must be a sequence of numbers"),
        (np.array([[0.1, 0.2]]), "fractions must contain only real numbers"),
    ],
)
def test_bad_fractions_rejected(fractions, pattern):
    H, W, b, _ = make_problem(6, 5, 10, seed=12)

    with pytest.raises(ValueError, match=pattern):
        pruning_curve(H, W, b, fractions=fractions)
    with pytest.raises(ValueError, match=pattern):
        PruningAccumulator(head_svd(W), b, fractions)


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.array([0, 1, 2]), r"labels must have shape \(10,\), one label per row, got shape \(3,\)"),
        (np.full(10, 6), r"labels contains class index 6 but the head has 6 classes \(valid indices 0..5\)"),
        (np.full(10, -2), r"labels contains -2, but labels must be class indices >= 0 or -1"),
        (np.zeros(10), r"labels must have an integer dtype.*float64"),
        (torch.zeros(10, dtype=torch.bool), r"labels must have an integer dtype.*torch.bool"),
        ([0] * 10, r"labels must be a torch.Tensor, a numpy.ndarray or None, got list"),
    ],
)
def test_bad_labels_rejected(labels, pattern):
    H, W, b, _ = make_problem(6, 5, 10, seed=13)

    with pytest.raises(ValueError, match=pattern):
        pruning_curve(H, W, b, labels=labels)


def test_bad_arguments_rejected():
    H, W, b, _ = make_problem(6, 5, 10, seed=14)
    svd = head_svd(W)

    with pytest.raises(ValueError, match=r"order must be one of \['sigma', 'importance'\], got 'random'"):
        pruning_curve(H, W, b, order="random")
    with pytest.raises(ValueError, match=r"b must have shape \(6,\), got shape \(5,\)"):
        pruning_curve(H, W, b[:5])
    with pytest.raises(ValueError, match=r"b contains NaN or inf"):
        pruning_curve(H, W, np.full(6, np.nan))
    with pytest.raises(ValueError, match=r"H has 4 columns"):
        pruning_curve(H[:, :4], W, b)
    with pytest.raises(ValueError, match="svd does not decompose W"):
        pruning_curve(H, W, b, svd=head_svd(W * 2.0))
    with pytest.raises(ValueError, match="svd must be a HeadSVD"):
        PruningAccumulator(W, b)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        PruningAccumulator(svd, np.zeros(3))


def test_accumulator_merge_rejects_other_configuration():
    _, W, b, _ = make_problem(6, 5, 10, seed=15)
    svd = head_svd(W)
    accumulator = PruningAccumulator(svd, b, (0.5,))

    with pytest.raises(ValueError, match=r"other has fractions \[0.0, 0.4\] and order 'sigma'"):
        accumulator.merge(PruningAccumulator(svd, b, (0.4,)))
    with pytest.raises(ValueError, match=r"order 'importance'"):
        accumulator.merge(PruningAccumulator(svd, b, (0.5,), order="importance"))
    with pytest.raises(ValueError, match="different bias"):
        accumulator.merge(PruningAccumulator(svd, None, (0.5,)))
    with pytest.raises(ValueError, match="different head"):
        accumulator.merge(PruningAccumulator(head_svd(W + 1.0), b, (0.5,)))
    with pytest.raises(ValueError, match="PruningAccumulator"):
        accumulator.merge(object())


def test_curve_at_and_to_dict():
    H, W, b, labels = make_problem(12, 10, 80, seed=16, label_mode="some")
    curve = pruning_curve(H, W, b, labels=labels)

    point = curve.at(0.8)
    assert point.fraction == 0.8
    assert point.n_pruned == 8
    assert point.accuracy == curve.accuracy[8]
    assert point.agreement == curve.agreement[8]
    assert curve.at(0.1 * 8).n_pruned == 8
    with pytest.raises(ValueError, match=r"fraction 0.85 is not on this curve, which has fractions \[0.0, 0.1"):
        curve.at(0.85)

    payload = json.loads(json.dumps(curve.to_dict(), allow_nan=False))
    assert payload["fractions"] == list(DEFAULT_FRACTIONS)
    assert payload["accuracy"] == list(curve.accuracy)
    assert payload["pruning_order"] == list(range(9, -1, -1))
    assert json.loads(json.dumps(point.to_dict(), allow_nan=False))["n_pruned"] == 8


def test_unlabelled_matches_datasets():
    from robsig_checks.datasets.base import UNLABELLED as DATASET_UNLABELLED
    from robsig_checks.metrics._validation import UNLABELLED

    assert UNLABELLED == DATASET_UNLABELLED == -1


def test_accumulator_empty_and_reset():
    H, W, b, labels = make_problem(6, 5, 10, seed=17)
    for order in ("sigma", "importance"):
        accumulator = PruningAccumulator(head_svd(W), b, (0.5,), order)
        empty = accumulator.compute()
        assert empty.n_rows == 0
        assert empty.accuracy is None
        assert all(math.isnan(value) for value in empty.agreement)
        assert json.loads(json.dumps(empty.to_dict(), allow_nan=False))["agreement"] == [None, None]

        accumulator.update(H, labels)
        assert accumulator.compute().n_rows == 10
        assert accumulator.compute().n_labelled == 10
        accumulator.reset()
        assert accumulator.compute().n_rows == 0
