"""Tests of the activation kurtosis (Crabbé et al. 2023, Eq. 2) against scipy and closed forms."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import scipy.stats
import torch

from robsig_checks.metrics import KurtosisAccumulator, KurtosisResult, kurtosis, row_kurtosis


def scipy_row_kurtosis(H: np.ndarray) -> np.ndarray:
    return scipy.stats.kurtosis(H, axis=1, fisher=False, bias=True)


def one_outlier_kurtosis(d: int) -> float:
    """Kurtosis of a vector with d - 1 zeros and one non-zero value a, for any a.

    With mu = a/d, the centred values are a(d-1)/d once and -a/d (d-1) times, so
    m2 = a^2 (d-1) / d^2 and m4 = a^4 (d-1) ((d-1)^3 + 1) / d^5. Then
    m4 / m2^2 = ((d-1)^3 + 1) / (d (d-1)) = (d^2 - 3d + 3) / (d-1) = d - 2 + 1/(d-1).
    """
    return d - 2 + 1 / (d - 1)


def random_matrix(kind: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "student_t3":
        return rng.standard_t(3, size=shape)
    if kind == "lognormal":
        return rng.lognormal(0.0, 1.5, size=shape)
    if kind == "sparse_outliers":
        H = rng.standard_normal(shape) * 0.1
        H[:, : max(1, shape[1] // 50)] += 30.0
        return H
    raise AssertionError(kind)


KINDS = ["normal", "student_t3", "lognormal", "sparse_outliers"]
SHAPES = [(1, 5), (7, 64), (40, 1280), (200, 3)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_row_kurtosis_matches_scipy(kind, shape):
    H = random_matrix(kind, shape, seed=shape[0] * 31 + shape[1])
    expected = scipy_row_kurtosis(H)

    np.testing.assert_allclose(row_kurtosis(H), expected, rtol=1e-9, atol=0)
    assert kurtosis(H) == pytest.approx(expected.mean(), rel=1e-9, abs=0)


@pytest.mark.parametrize("kind", KINDS)
def test_kurtosis_with_large_offset(kind):
    H = random_matrix(kind, (30, 512), seed=3)
    shifted = H + 1e6

    assert kurtosis(shifted) == pytest.approx(scipy_row_kurtosis(shifted).mean(), rel=1e-9, abs=0)
    # Shifting all components leaves kurtosis unchanged, up to the precision lost to 1e6.
    assert kurtosis(shifted) == pytest.approx(kurtosis(H), rel=1e-6)


def test_kurtosis_torch_float32_input():
    H = torch.from_numpy(random_matrix("student_t3", (20, 100), seed=4)).float()
    expected = scipy_row_kurtosis(H.numpy().astype(np.float64))

    np.testing.assert_allclose(row_kurtosis(H), expected, rtol=1e-9)
    assert kurtosis(H) == pytest.approx(expected.mean(), rel=1e-9)
    assert isinstance(kurtosis(H), float)


def test_kurtosis_gaussian_rows_near_three():
    H = np.random.default_rng(5).standard_normal((200, 4096))
    # The biased estimator has mean 3 - 6/(d+1), about 2.9985 here, and the mean over 200
    # rows has a standard deviation of about sqrt(24/4096/200) = 0.0054, so 0.03 is > 5 sd.
    assert kurtosis(H) == pytest.approx(3.0, abs=0.03)


@pytest.mark.parametrize("d", [2, 3, 10, 1000])
@pytest.mark.parametrize("value", [1.0, -7.5, 1e-3, 1e200, 1e-300])
def test_one_outlier_closed_form(d, value):
    h = np.zeros((1, d))
    h[0, d // 2] = value

    assert row_kurtosis(h)[0] == pytest.approx(one_outlier_kurtosis(d), rel=1e-12)


def test_one_outlier_closed_form_values():
    # Hand-computed instances of d - 2 + 1/(d-1).
    assert one_outlier_kurtosis(2) == 1.0
    assert one_outlier_kurtosis(5) == 3.25
    h = np.array([[0.0, 0.0, 0.0, 0.0, 4.0]])
    assert row_kurtosis(h)[0] == pytest.approx(3.25, rel=1e-14)
    assert scipy_row_kurtosis(h)[0] == pytest.approx(3.25, rel=1e-14)


def test_kurtosis_scale_invariant():
    H = random_matrix("student_t3", (10, 50), seed=6)

    for scale in (1e-150, 1e-3, 7.0, 1e150):
        np.testing.assert_allclose(row_kurtosis(H * scale), row_kurtosis(H), rtol=1e-12)


def test_zero_variance_rows_excluded_and_warned():
    H = random_matrix("normal", (7, 16), seed=7)
    H[1] = 0.0
    H[3] = 0.1
    H[5] = 1e6 + 0.1
    valid = [0, 2, 4, 6]

    values = row_kurtosis(H)
    assert np.isnan(values[[1, 3, 5]]).all()
    np.testing.assert_allclose(values[valid], scipy_row_kurtosis(H[valid]), rtol=1e-9)

    with pytest.warns(RuntimeWarning, match=r"excluded 3 of 7 rows of H \(3 with zero variance"):
        value = kurtosis(H)
    assert value == pytest.approx(scipy_row_kurtosis(H[valid]).mean(), rel=1e-9)


def test_nonfinite_rows_excluded_and_counted():
    H = random_matrix("normal", (6, 16), seed=8)
    H[0, 3] = np.nan
    H[2, 0] = np.inf
    H[4] = 2.0
    valid = [1, 3, 5]

    values = row_kurtosis(H)
    assert np.isnan(values[[0, 2, 4]]).all()
    with pytest.warns(RuntimeWarning) as record:
        value = kurtosis(H)
    message = str(record[0].message)
    assert "excluded 3 of 6 rows" in message
    assert "1 with zero variance" in message
    assert "2 with NaN or inf values" in message
    assert value == pytest.approx(scipy_row_kurtosis(H[valid]).mean(), rel=1e-9)

    accumulator = KurtosisAccumulator()
    accumulator.update(H)
    result = accumulator.compute()
    assert result.n_rows == 3
    assert result.n_zero_variance == 1
    assert result.n_nonfinite == 2
    assert result.n_seen == 6


def test_kurtosis_no_valid_row_is_nan():
    H = np.ones((3, 8))
    H[0, 0] = np.nan

    with pytest.warns(RuntimeWarning, match="excluded 3 of 3 rows"):
        value = kurtosis(H)
    assert math.isnan(value)


def test_kurtosis_no_warning_when_all_rows_valid():
    H = random_matrix("normal", (5, 10), seed=9)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kurtosis(H)


def random_splits(n_rows: int, n_parts: int, rng: np.random.Generator) -> list[slice]:
    """Split range(n_rows) into min(n_parts, n_rows) non-empty consecutive slices at random cuts."""
    n_parts = min(n_parts, n_rows)
    cuts = np.sort(rng.choice(np.arange(1, n_rows), size=n_parts - 1, replace=False))
    bounds = [0, *cuts.tolist(), n_rows]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def test_accumulator_matches_function_over_batches():
    rng = np.random.default_rng(10)
    H = random_matrix("student_t3", (301, 96), seed=10)
    H[[5, 77]] = 3.0
    H[100, 4] = np.nan
    valid_values = scipy_row_kurtosis(np.delete(H, [5, 77, 100], axis=0))

    accumulator = KurtosisAccumulator()
    for part in random_splits(H.shape[0], 13, rng):
        accumulator.update(H[part])
    result = accumulator.compute()

    with pytest.warns(RuntimeWarning):
        expected = kurtosis(H)
    assert result.value == pytest.approx(expected, rel=1e-12)
    assert result.n_rows == 298
    assert result.n_zero_variance == 2
    assert result.n_nonfinite == 1
    assert result.row_min == pytest.approx(valid_values.min(), rel=1e-9)
    assert result.row_max == pytest.approx(valid_values.max(), rel=1e-9)
    assert result.row_std == pytest.approx(valid_values.std(), rel=1e-9)


def test_accumulator_merged_shards_match_single_pass():
    rng = np.random.default_rng(11)
    H = random_matrix("lognormal", (250, 40), seed=11)
    single = KurtosisAccumulator()
    single.update(H)

    shards = []
    for shard_part in random_splits(H.shape[0], 4, rng):
        shard = KurtosisAccumulator()
        rows = H[shard_part]
        for part in random_splits(rows.shape[0], 3, rng):
            shard.update(rows[part])
        shards.append(shard)
    merged = KurtosisAccumulator()
    for shard in shards:
        assert merged.merge(shard) is merged
    merged_result = merged.compute()
    single_result = single.compute()

    assert merged_result.value == pytest.approx(kurtosis(H), rel=1e-12)
    assert merged_result.value == pytest.approx(single_result.value, rel=1e-12)
    assert merged_result.row_std == pytest.approx(single_result.row_std, rel=1e-10)
    assert merged_result.row_min == single_result.row_min
    assert merged_result.row_max == single_result.row_max
    assert merged_result.n_rows == 250


def test_accumulator_empty_and_reset():
    accumulator = KurtosisAccumulator()
    empty = accumulator.compute()
    assert math.isnan(empty.value)
    assert empty.n_rows == 0
    assert json.loads(json.dumps(empty.to_dict(), allow_nan=False))["value"] is None

    accumulator.update(random_matrix("normal", (4, 8), seed=12))
    assert accumulator.compute().n_rows == 4
    accumulator.reset()
    assert accumulator.compute().n_rows == 0
    accumulator.update(np.zeros((2, 3)))
    assert accumulator.compute().n_zero_variance == 2


def test_result_to_dict_is_json():
    accumulator = KurtosisAccumulator()
    H = random_matrix("normal", (5, 8), seed=13)
    accumulator.update(torch.from_numpy(H), labels=torch.tensor([0, 1, -1, 2, 3]))
    result = accumulator.compute()

    assert isinstance(result, KurtosisResult)
    payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert payload["value"] == pytest.approx(scipy_row_kurtosis(H).mean(), rel=1e-12)
    assert payload["n_rows"] == 5
    with pytest.raises(AttributeError):
        result.value = 0.0


def test_accumulator_rejects_changed_width():
    accumulator = KurtosisAccumulator()
    accumulator.update(np.ones((2, 8)))
    with pytest.raises(ValueError, match=r"d_H = 9.*d_H = 8"):
        accumulator.update(np.ones((2, 9)))

    other = KurtosisAccumulator()
    other.update(np.ones((2, 4)))
    with pytest.raises(ValueError, match="d_H = 4"):
        accumulator.merge(other)
    with pytest.raises(ValueError, match="KurtosisAccumulator"):
        accumulator.merge(object())


@pytest.mark.parametrize(
    ("value", "pattern"),
    [
        (np.ones(5), r"H must be 2-D.*\(5,\)"),
        (np.ones((2, 3, 4)), r"H must be 2-D.*\(2, 3, 4\)"),
        (np.ones((0, 5)), r"H must not be empty.*\(0, 5\)"),
        (np.ones((5, 0)), r"H must not be empty.*\(5, 0\)"),
        (np.ones((2, 3), dtype=np.int64), r"H must have a real floating-point dtype.*int64"),
        (np.ones((2, 3), dtype=bool), r"H must have a real floating-point dtype.*bool"),
        (np.ones((2, 3), dtype=np.complex128), r"H must have a real floating-point dtype.*complex128"),
        (torch.ones((2, 3), dtype=torch.int32), r"H must have a real floating-point dtype.*torch.int32"),
        ([[1.0, 2.0]], r"H must be a torch.Tensor or a numpy.ndarray, got list"),
    ],
)
def test_kurtosis_rejects_bad_input(value, pattern):
    with pytest.raises(ValueError, match=pattern):
        kurtosis(value)
    with pytest.raises(ValueError, match=pattern.replace("H must", "h must")):
        KurtosisAccumulator().update(value)


def test_accumulator_checks_label_shape():
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        KurtosisAccumulator().update(np.ones((3, 4)), labels=np.zeros(2, dtype=np.int64))
