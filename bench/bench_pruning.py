"""Speed of the pruning curve: one projection per batch against rebuilding the pruned head per fraction.

The baseline is what a direct reading of the definition does: for every fraction, rebuild
``W_p = U diag(sigma_p) V^T`` and compute ``H W_p^T + b``. Both run here, in the same process, on the
same activations; the script checks that they agree and prints the ratio of their times.

    python bench/bench_pruning.py [--images 10000] [--dim 1280] [--classes 1000]
"""

from __future__ import annotations

import argparse

import numpy as np

from robsig_checks.metrics import head_svd, pruning_curve
from timing import best_of

FRACTIONS = tuple(i / 10 for i in range(10))


def baseline_curve(H: np.ndarray, W: np.ndarray, b: np.ndarray, labels: np.ndarray) -> list[tuple[float, float]]:
    """Return (accuracy, agreement) per fraction by rebuilding the pruned head each time."""
    U, S, Vh = np.linalg.svd(W, full_matrices=False)
    reference = np.argmax(H @ W.T + b, axis=1)
    points = []
    for fraction in FRACTIONS:
        kept = S.copy()
        kept[len(S) - int(np.floor(fraction * len(S))):] = 0.0
        predictions = np.argmax(H @ ((U * kept) @ Vh).T + b, axis=1)
        points.append((float(np.mean(predictions == labels)), float(np.mean(predictions == reference))))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args()

    generator = np.random.default_rng(0)
    W = generator.standard_normal((arguments.classes, arguments.dim)) * np.linspace(3, 0.1, arguments.dim)
    b = generator.standard_normal(arguments.classes) * 0.1
    H = generator.standard_normal((arguments.images, arguments.dim))
    labels = generator.integers(0, arguments.classes, arguments.images)
    svd = head_svd(W)

    ours_seconds, curve = best_of(arguments.repeats,
                                  lambda: pruning_curve(H, W, b, fractions=FRACTIONS, labels=labels, svd=svd))
    base_seconds, points = best_of(arguments.repeats, lambda: baseline_curve(H, W, b, labels))

    for fraction, (accuracy, agreement) in zip(FRACTIONS, points):
        point = curve.at(fraction)
        assert abs(point.accuracy - accuracy) < 1e-12, fraction
        assert abs(point.agreement - agreement) < 1e-12, fraction
    print(f"pruning curve, {arguments.images} images, d_H={arguments.dim}, {arguments.classes} classes, "
          f"{len(FRACTIONS)} fractions")
    print(f"  one projection:      {ours_seconds:.3f} s")
    print(f"  rebuild per fraction: {base_seconds:.3f} s")
    print(f"  ratio: {base_seconds / ours_seconds:.1f}x (values equal)")


if __name__ == "__main__":
    main()
