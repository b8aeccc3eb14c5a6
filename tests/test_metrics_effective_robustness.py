"""Effective robustness, the logit-space refit and protocol accuracy, against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from robsig_checks.metrics.effective_robustness import (
    AccuracyAccumulator,
    effective_robustness,
    fit_baseline_line,
    grouped_accuracy,
    inverse_logit,
    logit,
    predicted_shift_accuracy,
)


def test_er_at_half_imagenet_accuracy():
    # logit(0.5) = 0, so the predicted shift accuracy is 1 / (1 + exp(1.49)).
    shifts = [0.6, 0.5, 0.4, 0.3, 0.2]
    expected = 0.4 - 1.0 / (1.0 + math.exp(1.49))
    assert effective_robustness(0.5, shifts) == pytest.approx(expected, abs=1e-15)


def test_er_matches_scipy_reference():
    acc_id, shifts = 0.683, {"v2": 0.619, "r": 0.777, "sketch": 0.482, "objectnet": 0.554, "a": 0.5}
    expected = np.mean(list(shifts.values())) - special.expit(0.76 * special.logit(acc_id) - 1.49)
    assert effective_robustness(acc_id, shifts) == pytest.approx(expected, rel=1e-12)
    assert effective_robustness(acc_id, shifts, beta1=1.0, beta0=0.0) == pytest.approx(
        np.mean(list(shifts.values())) - acc_id, rel=1e-12)


def test_logit_round_trip():
    p = np.array([1e-6, 0.2, 0.5, 0.9, 1 - 1e-6])
    assert np.allclose(logit(p), special.logit(p), rtol=1e-12)
    assert np.allclose(inverse_logit(logit(p)), p, rtol=1e-12)
    assert predicted_shift_accuracy(0.76) == pytest.approx(special.expit(0.76 * special.logit(0.76) - 1.49))


@pytest.mark.parametrize("acc_id, fragment", [
    (0.0, "strictly between 0 and 1"),
    (1.0, "strictly between 0 and 1"),
    (76.2, "looks like a percent"),
    (True, "fraction in \\(0, 1\\)"),
])
def test_er_rejects_invalid_imagenet_accuracy(acc_id, fragment):
    with pytest.raises(ValueError, match=fragment) as error:
        effective_robustness(acc_id, [0.5])
    assert "acc_id" in str(error.value)


def test_er_shift_accuracy_bounds():
    # A supervised model can score 0 on ImageNet-A: shift accuracies enter ER linearly.
    assert effective_robustness(0.5, [0.0, 1.0]) == pytest.approx(0.5 - special.expit(-1.49))
    with pytest.raises(ValueError, match="acc_shifts\\['a'\\].*looks like a percent"):
        effective_robustness(0.5, {"a": 55.0})
    with pytest.raises(ValueError, match="at least one"):
        effective_robustness(0.5, [])
    with pytest.raises(ValueError, match="beta1 must be a finite number"):
        effective_robustness(0.5, [0.5], beta1=float("nan"))


def test_fit_recovers_exact_line():
    x = np.array([0.55, 0.62, 0.7, 0.76, 0.81, 0.88])
    y = special.expit(0.8 * special.logit(x) - 1.2)
    fit = fit_baseline_line(x, y, n_bootstrap=200, seed=3)
    assert fit.beta1 == pytest.approx(0.8, abs=1e-10)
    assert fit.beta0 == pytest.approx(-1.2, abs=1e-10)
    assert fit.beta1_interval == pytest.approx((0.8, 0.8), abs=1e-9)
    assert fit.n_models == 6


def test_fit_matches_linregress_and_seed():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 0.9, size=40)
    y = special.expit(0.76 * special.logit(x) - 1.49 + rng.normal(0, 0.1, size=40))
    reference = stats.linregress(special.logit(x), special.logit(y))
    fit = fit_baseline_line(x, y, n_bootstrap=500, seed=1)
    assert fit.beta1 == pytest.approx(reference.slope, rel=1e-10)
    assert fit.beta0 == pytest.approx(reference.intercept, rel=1e-10)
    assert fit.beta1_interval[0] < fit.beta1 < fit.beta1_interval[1]
    assert fit.beta0_interval[0] < fit.beta0 < fit.beta0_interval[1]
    # A 95 % interval is about 2 * 1.96 standard errors wide.
    width = fit.beta1_interval[1] - fit.beta1_interval[0]
    assert 2.5 * reference.stderr < width < 6 * reference.stderr
    assert fit_baseline_line(x, y, n_bootstrap=500, seed=1) == fit
    assert fit_baseline_line(x, y, n_bootstrap=500, seed=2).beta1_interval != fit.beta1_interval


def test_fit_rejects_bad_pools():
    with pytest.raises(ValueError, match="at least 3 models"):
        fit_baseline_line([0.5, 0.6], [0.3, 0.4])
    with pytest.raises(ValueError, match="2 distinct"):
        fit_baseline_line([0.5, 0.5, 0.5], [0.3, 0.4, 0.5])
    with pytest.raises(ValueError, match="same length"):
        fit_baseline_line([0.5, 0.6, 0.7], [0.3, 0.4])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        fit_baseline_line([0.5, 0.6, 1.0], [0.3, 0.4, 0.5])


def circle_head(n_classes: int) -> np.ndarray:
    angles = 2 * np.pi * np.arange(n_classes) / n_classes
    return np.column_stack([np.cos(angles), np.sin(angles)])


def rows_for(classes) -> np.ndarray:
    angles = 2 * np.pi * np.asarray(classes, dtype=np.float64) / 12
    return np.column_stack([np.cos(angles), np.sin(angles)])


def test_grouped_accuracy_hand_cases():
    W = circle_head(12)
    # Rows predict classes 0, 1, 5, 7; labels 0, 0, 5, 6.
    H, labels = rows_for([0, 1, 5, 7]), np.array([0, 0, 5, 6])
    assert grouped_accuracy(H, W, labels=labels).accuracy == (0.5,)

    # Mask to classes {0, 5, 6}: class 1 -> nearest kept class 0, class 7 -> 6. All four correct.
    groups = np.full(12, -1)
    groups[[0, 5, 6]] = [0, 5, 6]
    assert grouped_accuracy(H, W, labels=labels, class_groups=groups).accuracy == (1.0,)

    # Groups {0, 1} -> A and {5, 6, 7} -> B: same four rows, all correct; a label in a masked class is unscored.
    groups = np.full(12, -1)
    groups[[0, 1]] = 0
    groups[[5, 6, 7]] = 1
    result = grouped_accuracy(rows_for([0, 1, 5, 7, 3]), W, labels=np.array([1, 0, 7, 5, 3]), class_groups=groups)
    assert result.accuracy == (1.0,)
    assert (result.n_scored, result.n_unscored) == (4, 1)


def test_accumulator_merge_and_nonfinite():
    rng = np.random.default_rng(5)
    W, b = rng.normal(size=(20, 6)), rng.normal(size=20)
    H, labels = rng.normal(size=(300, 6)), rng.integers(-1, 20, size=300)
    H[7, 2] = np.nan
    whole = AccuracyAccumulator(W, b)
    whole.update(H, labels)
    left, right = AccuracyAccumulator(W, b), AccuracyAccumulator(W, b)
    left.update(H[:100], labels[:100])
    right.update(H[100:], labels[100:])
    merged = left.merge(right).compute()
    assert merged == whole.compute()

    finite = np.isfinite(H).all(axis=1)
    scored = finite & (labels >= 0)
    expected = ((H[scored] @ W.T + b).argmax(axis=1) == labels[scored]).mean()
    assert merged.accuracy[0] == pytest.approx(expected)
    assert merged.n_nonfinite == 1
    assert merged.n_scored == scored.sum()


def test_pruned_accuracy_matches_reconstruction():
    rng = np.random.default_rng(7)
    W, b = rng.normal(size=(30, 10)), rng.normal(size=30)
    H, labels = rng.normal(size=(200, 10)), rng.integers(0, 30, size=200)
    groups = np.where(np.arange(30) % 3 == 0, np.arange(30) // 3, -1)
    result = AccuracyAccumulator(W, b, groups, fractions=[0.3, 0.8])
    result.update(H, labels)
    computed = result.compute()

    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    kept = groups >= 0
    for fraction, accuracy in zip(computed.fractions, computed.accuracy):
        n_pruned = int(math.floor(fraction * 10 + 1e-9))
        pruned = (U[:, : 10 - n_pruned] * S[: 10 - n_pruned]) @ Vh[: 10 - n_pruned]
        logits = (H @ pruned.T + b)[:, kept]
        predictions = groups[kept][logits.argmax(axis=1)]
        scored = groups[labels] >= 0
        assert accuracy == pytest.approx((predictions[scored] == groups[labels][scored]).mean())


def test_accumulator_rejects_bad_groups():
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        AccuracyAccumulator(np.eye(4), class_groups=np.arange(3))
    with pytest.raises(ValueError, match="at least one unmasked"):
        AccuracyAccumulator(np.eye(4), class_groups=np.full(4, -1))


def test_package_exports_function():
    import robsig_checks.metrics as metrics

    assert metrics.effective_robustness(0.5, [0.3]) == pytest.approx(0.3 - special.expit(-1.49))
