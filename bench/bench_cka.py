"""Speed of minibatch CKA over all (layer, reference layer) pairs against a per-pair loop.

The baseline is the straightforward per-batch computation that PyTorch-Model-Compare (torch_cka)
performs: for every batch, one Gram matrix per layer of the first model, and for every layer pair the
reference layer's Gram matrix and the unbiased HSIC formula of Song et al. (2012) term by term, for
the pair and for the reference layer with itself. robsig computes one
U-centred Gram matrix per layer and batch and all pairs from one matrix product. Both run here, in the
same process, on the same activations; the script checks that the CKA matrices agree and prints the
ratio of their times.

    python bench/bench_cka.py [--images 10000] [--layers 12] [--dim 768] [--batch 100]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from robsig_checks.metrics.cka import MinibatchCKAAccumulator
from timing import best_of


def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Song et al. (2012) unbiased HSIC of two Gram matrices, written out as in a direct implementation."""
    n = K.shape[0]
    K = K.clone().fill_diagonal_(0)
    L = L.clone().fill_diagonal_(0)
    ones = torch.ones(n, 1, dtype=K.dtype)
    result = torch.trace(K @ L)
    result = result + (ones.T @ K @ ones @ ones.T @ L @ ones).squeeze() / ((n - 1) * (n - 2))
    result = result - (ones.T @ K @ L @ ones).squeeze() * 2 / (n - 2)
    return result / (n * (n - 3))


def baseline_cka(xs: list[np.ndarray], ys: list[np.ndarray], batch: int) -> np.ndarray:
    count_x, count_y = len(xs), len(ys)
    cross = torch.zeros(count_x, count_y, dtype=torch.float64)
    self_x = torch.zeros(count_x, dtype=torch.float64)
    self_y = torch.zeros(count_x, count_y, dtype=torch.float64)
    for start in range(0, xs[0].shape[0], batch):
        for i, x in enumerate(xs):
            X = torch.from_numpy(x[start : start + batch])
            K = X @ X.T
            self_x[i] += hsic_unbiased(K, K)
            for j, y in enumerate(ys):
                Y = torch.from_numpy(y[start : start + batch])
                L = Y @ Y.T
                cross[i, j] += hsic_unbiased(K, L)
                self_y[i, j] += hsic_unbiased(L, L)
    return (cross / (self_x.sqrt()[:, None] * self_y.sqrt())).numpy()


def robsig_cka(xs: list[np.ndarray], ys: list[np.ndarray], batch: int) -> np.ndarray:
    accumulator = MinibatchCKAAccumulator()
    for start in range(0, xs[0].shape[0], batch):
        accumulator.update_layers([x[start : start + batch] for x in xs], [y[start : start + batch] for y in ys])
    return accumulator.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the fastest counts")
    arguments = parser.parse_args()

    generator = np.random.default_rng(0)
    base = generator.standard_normal((arguments.images, arguments.dim))
    xs = [base + 0.5 * layer * generator.standard_normal(base.shape) for layer in range(arguments.layers)]
    ys = [x + 0.1 * generator.standard_normal(base.shape) for x in xs]

    # One thread for both: on a shared machine, idle BLAS threads spinning on a busy core distort ratios.
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        ours_seconds, ours = best_of(arguments.repeats, lambda: robsig_cka(xs, ys, arguments.batch))
        base_seconds, theirs = best_of(arguments.repeats, lambda: baseline_cka(xs, ys, arguments.batch))

    difference = float(np.abs(ours - theirs).max())
    assert difference < 1e-9, difference
    print(f"minibatch CKA, {arguments.layers} x {arguments.layers} layer pairs, {arguments.images} images, "
          f"d={arguments.dim}, batches of {arguments.batch}, one thread, best of {arguments.repeats}")
    print(f"  U-centred Grams, one product per batch: {ours_seconds:.2f} s")
    print(f"  per-pair loop (baseline):               {base_seconds:.2f} s")
    print(f"  ratio: {base_seconds / ours_seconds:.1f}x (max difference {difference:.1e})")


if __name__ == "__main__":
    main()
