"""Linear CKA: the exact streamed estimator and the minibatch unbiased-HSIC estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robsig_checks.metrics.cka import (
    CKAAccumulator,
    MinibatchCKAAccumulator,
    linear_cka,
    minibatch_cka,
    unbiased_hsic,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def gram_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """CKA from biased HSIC = tr(K H L H) / (n - 1)^2 on linear Gram matrices (Kornblith et al. 2019)."""
    n = X.shape[0]
    centring = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T

    def hsic(A, B):
        return np.trace(A @ centring @ B @ centring) / (n - 1) ** 2

    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def song_unbiased_hsic(X: np.ndarray, Y: np.ndarray) -> float:
    """The unbiased HSIC of Song et al. (2012), written out term by term."""
    n = X.shape[0]
    K, L = X @ X.T, Y @ Y.T
    np.fill_diagonal(K, 0)
    np.fill_diagonal(L, 0)
    ones = np.ones(n)
    term = np.trace(K @ L) + (ones @ K @ ones) * (ones @ L @ ones) / ((n - 1) * (n - 2)) - 2 / (n - 2) * (ones @ K @ L @ ones)
    return term / (n * (n - 3))


def test_exact_matches_gram_formula():
    generator = rng(1)
    X = generator.standard_normal((40, 7))
    Y = X @ generator.standard_normal((7, 5)) + 0.5 * generator.standard_normal((40, 5))
    assert linear_cka(X, Y) == pytest.approx(gram_cka(X, Y), rel=1e-12)


def test_unbiased_hsic_matches_song_formula():
    generator = rng(2)
    X, Y = generator.standard_normal((12, 4)), generator.standard_normal((12, 6))
    assert unbiased_hsic(X, Y) == pytest.approx(song_unbiased_hsic(X, Y), rel=1e-10)


def test_self_similarity_is_one_for_every_estimator():
    X = rng(3).standard_normal((200, 16))
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    streamed = CKAAccumulator()
    for start in range(0, 200, 33):
        streamed.update_pair(X[start : start + 33], X[start : start + 33])
    assert streamed.compute().value == pytest.approx(1.0, abs=1e-12)
    assert minibatch_cka(X, X, batch_size=32) == pytest.approx(1.0, abs=1e-12)


def test_invariant_to_orthogonal_transform_and_scaling():
    generator = rng(4)
    X = generator.standard_normal((100, 10))
    Y = np.tanh(X @ generator.standard_normal((10, 8)))
    rotation, _ = np.linalg.qr(generator.standard_normal((10, 10)))
    reference = linear_cka(X, Y)
    assert linear_cka(X @ rotation, Y) == pytest.approx(reference, rel=1e-10)
    assert linear_cka(3.7 * X, 0.01 * Y) == pytest.approx(reference, rel=1e-10)
    minibatch = minibatch_cka(X, Y, batch_size=25)
    assert minibatch_cka(X @ rotation * 5.0, Y, batch_size=25) == pytest.approx(minibatch, rel=1e-10)


@pytest.mark.parametrize("n", [32, 2000])
def test_independent_gaussians_near_zero_unbiased(n):
    generator = rng(5)
    X, Y = generator.standard_normal((n, 64)), generator.standard_normal((n, 64))
    # The biased estimator is far from 0 at n = 32 (about d / n); the unbiased one is centred on 0.
    assert abs(minibatch_cka(X, Y, batch_size=n)) < 0.05
    if n == 32:
        assert linear_cka(X, Y) > 0.5


def test_streaming_equals_exact_any_batching():
    generator = rng(6)
    X = generator.standard_normal((301, 9)) + 1e6
    Y = X[:, :4] * 2 + generator.standard_normal((301, 4))
    expected = linear_cka(X, Y)
    for batch in (1, 7, 64, 301):
        accumulator = CKAAccumulator()
        for start in range(0, 301, batch):
            accumulator.update_pair(X[start : start + batch], Y[start : start + batch])
        assert accumulator.compute().value == pytest.approx(expected, rel=1e-9)
    first, second = CKAAccumulator(), CKAAccumulator()
    first.update_pair(X[:100], Y[:100])
    second.update_pair(X[100:], Y[100:])
    merged = first.merge(second).compute()
    assert merged.value == pytest.approx(expected, rel=1e-9)
    assert merged.n_rows == 301


def test_finite_at_large_feature_scale():
    generator = rng(7)
    X = generator.standard_normal((500, 32)) * 1e6
    Y = X[:, :16] + generator.standard_normal((500, 16)) * 1e6
    value = linear_cka(X, Y)
    assert np.isfinite(value)
    assert value == pytest.approx(linear_cka(X / 1e6, Y / 1e6), rel=1e-9)
    assert np.isfinite(minibatch_cka(X, Y, batch_size=50))


def test_minibatch_all_pairs_match_single_pairs():
    generator = rng(8)
    layers = [generator.standard_normal((96, 6)) for _ in range(3)]
    references = [layers[0] @ generator.standard_normal((6, 5)), generator.standard_normal((96, 4))]
    accumulator = MinibatchCKAAccumulator()
    for start in range(0, 96, 32):
        accumulator.update_layers([layer[start : start + 32] for layer in layers],
                                  [reference[start : start + 32] for reference in references])
    matrix = accumulator.compute()
    assert matrix.shape == (3, 2)
    for i, layer in enumerate(layers):
        for j, reference in enumerate(references):
            assert matrix[i, j] == pytest.approx(minibatch_cka(layer, reference, batch_size=32), rel=1e-10)


def test_minibatch_rejects_small_batches():
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match="at least 4 rows per batch, got 3"):
        MinibatchCKAAccumulator().update_layers([X], [X])
    with pytest.raises(ValueError, match="at least 4 rows per batch"):
        unbiased_hsic(X, X)


def test_mismatched_rows_rejected():
    with pytest.raises(ValueError, match="got 5 rows in X and 4 in Y"):
        linear_cka(np.ones((5, 2)), np.ones((4, 2)))


def test_torch_inputs_accepted():
    X = torch.randn(50, 5, generator=torch.Generator().manual_seed(0))
    assert linear_cka(X, X.double() * 2) == pytest.approx(1.0, abs=1e-12)
