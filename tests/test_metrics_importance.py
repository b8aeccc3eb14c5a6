"""Tests of the privileged directions of a head (Crabbé et al. 2023, Eq. 3-4) against a direct numpy computation."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

from robsig_checks.metrics import (
    HeadSVD,
    ImportanceAccumulator,
    ImportanceResult,
    head_svd,
    importance,
    importance_tail,
)


def reference_importance(W: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Importance with np.linalg.svd, np.linalg.matrix_rank and explicit loops over rows."""
    _, S, Vh = np.linalg.svd(W, full_matrices=False)
    rank = np.linalg.matrix_rank(W)
    values = np.zeros(rank)
    for i in range(rank):
        v = Vh[i]
        cosines = []
        for h in H:
            norm = np.linalg.norm(h)
            if norm == 0 or not np.isfinite(h).all():
                continue
            cosines.append(abs(float(np.dot(h, v))) / (norm * np.linalg.norm(v)))
        values[i] = S[i] / S[:rank].sum() * np.mean(cosines)
    return values


def flip_signs(svd: HeadSVD, signs: np.ndarray) -> HeadSVD:
    return HeadSVD(U=svd.U * signs, S=svd.S, Vh=svd.Vh * signs[:, None], rank=svd.rank)


def random_head(d_y: int, d_h: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((d_y, d_h)) / np.sqrt(d_h)
    H = np.abs(rng.standard_normal((3 * d_h, d_h))) + rng.standard_normal(d_h)
    return W, H


SHAPES = [(10, 16), (16, 10), (50, 64), (1, 5), (7, 1)]


@pytest.mark.parametrize(("d_y", "d_h"), SHAPES)
def test_head_svd_matches_numpy(d_y, d_h):
    W, _ = random_head(d_y, d_h, seed=d_y + d_h)
    svd = head_svd(W)
    S = np.linalg.svd(W, compute_uv=False)

    assert svd.rank == min(d_y, d_h)
    np.testing.assert_allclose(svd.S, S, rtol=1e-12)
    assert np.all(np.diff(svd.S) <= 0)
    assert svd.U.shape == (d_y, svd.rank)
    assert svd.Vh.shape == (svd.rank, d_h)
    np.testing.assert_allclose(svd.U @ np.diag(svd.S) @ svd.Vh, W, atol=1e-12)
    np.testing.assert_array_equal(svd.right_singular_vectors, svd.Vh.T)
    np.testing.assert_allclose(svd.Vh @ svd.Vh.T, np.eye(svd.rank), atol=1e-12)
    np.testing.assert_allclose(svd.U.T @ svd.U, np.eye(svd.rank), atol=1e-12)


@pytest.mark.parametrize(("d_y", "d_h"), SHAPES)
def test_importance_matches_reference(d_y, d_h):
    W, H = random_head(d_y, d_h, seed=100 + d_y + d_h)

    values = importance(W, H)

    np.testing.assert_allclose(values, reference_importance(W, H), rtol=1e-10)


def test_importance_values_in_open_interval():
    W, H = random_head(40, 32, seed=1)

    values = importance(W, H)

    assert values.shape == (32,)
    assert np.all(values > 0)
    assert np.all(values < 1)


def test_importance_sign_flips_change_nothing():
    W, H = random_head(20, 24, seed=2)
    svd = head_svd(W)
    signs = np.where(np.random.default_rng(2).random(svd.rank) < 0.5, -1.0, 1.0)
    assert (signs < 0).any()
    assert (signs > 0).any()
    flipped = flip_signs(svd, signs)

    np.testing.assert_array_equal(importance(W, H, svd=flipped), importance(W, H, svd=svd))
    accumulator = ImportanceAccumulator(flipped)
    accumulator.update(H)
    np.testing.assert_allclose(accumulator.compute().importance, importance(W, H), rtol=1e-14)


def test_importance_torch_input():
    W, H = random_head(12, 9, seed=3)
    W32 = torch.from_numpy(W).float()
    H32 = torch.from_numpy(H).float()

    values = importance(W32, H32)

    reference = reference_importance(W32.numpy().astype(np.float64), H32.numpy().astype(np.float64))
    np.testing.assert_allclose(values, reference, rtol=1e-10)


def test_dominant_aligned_direction_gives_max_tail():
    rng = np.random.default_rng(4)
    d_y, d_h = 6, 8
    left, _ = np.linalg.qr(rng.standard_normal((d_y, d_y)))
    right, _ = np.linalg.qr(rng.standard_normal((d_h, d_h)))
    sigmas = np.array([100.0, 2.0, 1.5, 1.0, 0.5, 0.25])
    W = left @ np.diag(sigmas) @ right[:, :d_y].T
    # Every activation is a non-zero multiple of the dominant right singular vector.
    coefficients = rng.uniform(0.5, 3.0, size=50) * np.where(rng.random(50) < 0.5, -1, 1)
    H = coefficients[:, None] * right[:, 0]

    values = importance(W, H)
    tail, n_privileged = importance_tail(values)

    assert values[0] == pytest.approx(100.0 / sigmas.sum(), rel=1e-12)
    np.testing.assert_allclose(values[1:], 0.0, atol=1e-14)
    # tail = max / mean reaches its upper bound r when one direction carries all importance.
    assert tail == pytest.approx(d_y, rel=1e-10)
    assert n_privileged == 1


def test_rank_deficient_head_keeps_rank_directions():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((12, 3)) @ rng.standard_normal((3, 20))
    H = rng.standard_normal((40, 20))

    svd = head_svd(W)
    values = importance(W, H)

    assert np.linalg.matrix_rank(W) == 3
    assert svd.rank == 3
    assert svd.S.shape == (3,)
    assert values.shape == (3,)
    np.testing.assert_allclose(values, reference_importance(W, H), rtol=1e-10)
    np.testing.assert_allclose(svd.U @ np.diag(svd.S) @ svd.Vh, W, atol=1e-12)


def test_head_svd_rejects_zero_head():
    with pytest.raises(ValueError, match=r"W \(shape \(4, 3\)\) is all zeros"):
        head_svd(np.zeros((4, 3)))


def test_zero_norm_and_nonfinite_rows_excluded():
    W, H = random_head(10, 8, seed=6)
    dirty = H.copy()
    dirty[2] = 0.0
    dirty[5, 1] = np.nan
    dirty[7, 0] = -np.inf
    clean = np.delete(dirty, [2, 5, 7], axis=0)

    with pytest.warns(RuntimeWarning) as record:
        values = importance(W, dirty)
    message = str(record[0].message)

    assert f"excluded 3 of {H.shape[0]} rows of H" in message
    assert "1 with zero norm" in message
    assert "2 with NaN or inf values" in message
    np.testing.assert_allclose(values, reference_importance(W, clean), rtol=1e-10)

    accumulator = ImportanceAccumulator(head_svd(W))
    accumulator.update(dirty)
    result = accumulator.compute()
    assert result.n_rows == H.shape[0] - 3
    assert result.n_zero_norm == 1
    assert result.n_nonfinite == 2


def test_importance_tiny_and_huge_rows():
    W, H = random_head(10, 8, seed=7)
    expected = importance(W, H)

    np.testing.assert_allclose(importance(W, H * 1e-300), expected, rtol=1e-12)
    np.testing.assert_allclose(importance(W, H * 1e300), expected, rtol=1e-12)


def test_importance_no_scored_row_is_nan():
    W, _ = random_head(5, 4, seed=8)

    with pytest.warns(RuntimeWarning, match="excluded 2 of 2 rows"):
        values = importance(W, np.zeros((2, 4)))

    assert values.shape == (4,)
    assert np.isnan(values).all()


def test_importance_no_warning_when_all_rows_scored():
    W, H = random_head(5, 4, seed=9)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importance(W, H)


def test_importance_tail_hand_computed():
    values = np.array([1.0, 1.0, 1.0, 1.0, 16.0])

    # mean = 4 and max = 16, so tail = 4. 16 > 3 * 4, but 16 is not > 5 * 4.
    assert importance_tail(values) == (4.0, 0)
    assert importance_tail(values, factor=3.0) == (4.0, 1)
    assert importance_tail(values, factor=0.2) == (4.0, 5)
    assert importance_tail(np.full(7, 0.2)) == (pytest.approx(1.0), 0)
    assert importance_tail(torch.tensor([0.0, 2.0])) == (2.0, 0)


def test_importance_tail_all_zero_is_nan():
    tail, n_privileged = importance_tail(np.zeros(3))

    assert math.isnan(tail)
    assert n_privileged == 0


@pytest.mark.parametrize(
    ("values", "factor", "pattern"),
    [
        (np.array([]), 5.0, r"non-empty 1-D array, got shape \(0,\)"),
        (np.ones((2, 2)), 5.0, r"non-empty 1-D array, got shape \(2, 2\)"),
        (np.array([1.0, np.nan]), 5.0, "finite and non-negative"),
        (np.array([1.0, -0.1]), 5.0, "finite and non-negative"),
        (np.array([1, 2]), 5.0, "float numpy array"),
        ([0.1, 0.2], 5.0, "float numpy array or torch tensor, got list"),
        (np.ones(3), 0.0, "factor must be a positive finite number, got 0.0"),
        (np.ones(3), math.inf, "factor must be a positive finite number"),
        (np.ones(3), "5", "factor must be a positive finite number"),
    ],
)
def test_importance_tail_rejects_bad_input(values, factor, pattern):
    with pytest.raises(ValueError, match=pattern):
        importance_tail(values, factor)


def random_splits(n_rows: int, n_parts: int, rng: np.random.Generator) -> list[slice]:
    """Split range(n_rows) into min(n_parts, n_rows) non-empty consecutive slices at random cuts."""
    n_parts = min(n_parts, n_rows)
    cuts = np.sort(rng.choice(np.arange(1, n_rows), size=n_parts - 1, replace=False))
    bounds = [0, *cuts.tolist(), n_rows]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def test_accumulator_matches_function():
    rng = np.random.default_rng(10)
    W, H = random_head(30, 20, seed=10)
    H[4] = 0.0
    H[9, 3] = np.nan
    svd = head_svd(W)
    with pytest.warns(RuntimeWarning):
        expected = importance(W, H, svd=svd)

    single = ImportanceAccumulator(svd)
    for part in random_splits(H.shape[0], 7, rng):
        single.update(torch.from_numpy(H[part]))
    merged = ImportanceAccumulator(svd)
    for shard_part in random_splits(H.shape[0], 3, rng):
        shard = ImportanceAccumulator(svd)
        shard.update(H[shard_part])
        assert merged.merge(shard) is merged

    for result in (single.compute(), merged.compute()):
        assert isinstance(result, ImportanceResult)
        np.testing.assert_allclose(result.importance, expected, rtol=1e-12)
        np.testing.assert_array_equal(result.singular_values, svd.S)
        assert (result.tail, result.n_privileged) == importance_tail(expected)
        assert result.n_rows == H.shape[0] - 2
        assert result.n_zero_norm == 1
        assert result.n_nonfinite == 1
        assert result.rank == 20
        np.testing.assert_allclose(result.mean_abs_cos * svd.S / svd.S.sum(), expected, rtol=1e-12)


def test_accumulator_result_spectrum_and_json():
    W, H = random_head(15, 10, seed=11)
    accumulator = ImportanceAccumulator(head_svd(W), factor=1.5)
    accumulator.update(H)
    result = accumulator.compute()

    spectrum = result.sorted_importance()
    np.testing.assert_array_equal(spectrum, np.sort(result.importance)[::-1])
    assert np.all(np.diff(spectrum) <= 0)
    assert result.n_privileged == int((result.importance > 1.5 * result.importance.mean()).sum())
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["importance"] == pytest.approx(result.importance.tolist(), rel=1e-15)
    assert payload["factor"] == 1.5
    assert payload["rank"] == 10
    with pytest.raises(ValueError):
        result.importance[0] = 1.0


def test_accumulator_empty_and_reset():
    W, H = random_head(6, 5, seed=12)
    accumulator = ImportanceAccumulator(head_svd(W))
    empty = accumulator.compute()
    assert np.isnan(empty.importance).all()
    assert math.isnan(empty.tail)
    assert empty.n_privileged == 0
    payload = json.loads(json.dumps(empty.to_dict(), allow_nan=False))
    assert payload["importance"] == [None] * 5
    assert payload["tail"] is None

    accumulator.update(H)
    assert accumulator.compute().n_rows == H.shape[0]
    accumulator.reset()
    assert accumulator.compute().n_rows == 0


def test_accumulator_merge_rejects_other_head():
    W, _ = random_head(6, 5, seed=13)
    accumulator = ImportanceAccumulator(head_svd(W))

    with pytest.raises(ValueError, match="different head"):
        accumulator.merge(ImportanceAccumulator(head_svd(W + 1.0)))
    with pytest.raises(ValueError, match="ImportanceAccumulator"):
        accumulator.merge(object())
    # An equal decomposition built separately merges.
    accumulator.merge(ImportanceAccumulator(head_svd(W)))


def test_importance_rejects_svd_of_other_head():
    W, H = random_head(8, 6, seed=14)
    other = head_svd(W + 0.5)

    with pytest.raises(ValueError, match="svd does not decompose W"):
        importance(W, H, svd=other)
    with pytest.raises(ValueError, match=r"svd decomposes a head of shape \(6, 8\) but W has shape \(8, 6\)"):
        importance(W, H, svd=head_svd(W.T))
    with pytest.raises(ValueError, match="svd must be a HeadSVD"):
        importance(W, H, svd=np.linalg.svd(W))


@pytest.mark.parametrize(
    ("W", "H", "pattern"),
    [
        (np.ones((3, 4)), np.ones((2, 5)), r"H has 5 columns \(shape \(2, 5\)\) but the head expects d_H = 4"),
        (np.ones((3, 4)), np.ones(4), r"H must be 2-D"),
        (np.ones((3, 4)), np.ones((0, 4)), r"H must not be empty"),
        (np.ones(4), np.ones((2, 4)), r"W must be 2-D.*\(4,\)"),
        (np.array([[1.0, np.nan]]), np.ones((2, 2)), r"W contains NaN or inf"),
        (np.ones((3, 4), dtype=np.int32), np.ones((2, 4)), r"W must have a real floating-point dtype.*int32"),
    ],
)
def test_importance_rejects_bad_input(W, H, pattern):
    with pytest.raises(ValueError, match=pattern):
        importance(W, H)


def test_accumulator_rejects_bad_input():
    W, _ = random_head(6, 5, seed=15)
    svd = head_svd(W)

    with pytest.raises(ValueError, match="svd must be a HeadSVD"):
        ImportanceAccumulator(W)
    with pytest.raises(ValueError, match="factor must be a positive finite number, got -1"):
        ImportanceAccumulator(svd, factor=-1)
    with pytest.raises(ValueError, match=r"h has 4 columns"):
        ImportanceAccumulator(svd).update(np.ones((2, 4)))


@pytest.mark.parametrize(
    ("fields", "pattern"),
    [
        ({"S": np.array([1.0, 2.0])}, "positive and non-increasing"),
        ({"S": np.array([1.0, 0.0])}, "positive and non-increasing"),
        ({"U": np.ones((3, 3))}, r"U must have shape \(d_Y, 2\)"),
        ({"Vh": np.ones((3, 4))}, r"Vh must have shape \(2, d_H\)"),
        ({"rank": 3}, "rank must be the number of singular values, 2, got 3"),
        ({"S": np.array([np.inf, 1.0])}, "must be finite"),
    ],
)
def test_head_svd_dataclass_validates(fields, pattern):
    base = {"U": np.ones((3, 2)), "S": np.array([2.0, 1.0]), "Vh": np.ones((2, 4)), "rank": 2}
    base.update(fields)

    with pytest.raises(ValueError, match=pattern):
        HeadSVD(**base)


def test_head_svd_is_read_only_and_serialises():
    W, _ = random_head(4, 3, seed=16)
    svd = head_svd(torch.from_numpy(W))

    with pytest.raises(ValueError):
        svd.S[0] = 0.0
    payload = json.loads(json.dumps(svd.to_dict(), allow_nan=False))
    assert payload == {"d_y": 4, "d_h": 3, "rank": 3, "singular_values": svd.S.tolist()}
