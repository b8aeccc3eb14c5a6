"""Speed of concept-probing AP: robsig's vectorised engine against a loop of sklearn calls.

Both compute, for every (concept, direction) pair, the average precision of the projections on
the concept's balanced set (all positives, as many drawn negatives), on the same inputs:

- robsig: :func:`descending_groups` once for all directions, then
  :func:`subset_average_precision`, which returns AP(s) and AP(-s) together;
- baseline: ``sklearn.metrics.average_precision_score(positive, scores[rows, i])`` per pair.

The sklearn loop over all pairs takes many minutes. By default it runs on every concept and
``--baseline-directions`` of the directions, and its time is extrapolated linearly to all
directions, which are interchangeable here because every one has the same rows. The script says so in its output, checks that both agree to 1e-9 on the pairs both computed, and
prints the ratio of the times.

The concept frequencies are synthetic: concept k (k = 1..C) is present in
``max(min_count, round(max_frequency * k ** -zipf))`` random images. With the defaults this
gives about 6 concepts per image; the real Broden frequencies are not bundled here.

    python bench/bench_average_precision.py [--images 63305] [--concepts 1197] [--directions 512]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import average_precision_score

from robsig_checks.metrics.average_precision import descending_groups, subset_average_precision
from robsig_checks.metrics.concepts import balanced_concept_sets


def synthetic_memberships(images: int, concepts: int, max_frequency: int, zipf: float, min_count: int,
                          generator: np.random.Generator) -> list[list[int]]:
    """Return, per image, the concept numbers present, with Zipf-like concept frequencies."""
    memberships: list[list[int]] = [[] for _ in range(images)]
    for rank in range(1, concepts + 1):
        frequency = min(images - 1, max(min_count, round(max_frequency * rank ** -zipf)))
        for image in generator.choice(images, frequency, replace=False):
            memberships[image].append(rank)
    return memberships


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=63_305)
    parser.add_argument("--concepts", type=int, default=1_197)
    parser.add_argument("--directions", type=int, default=512)
    parser.add_argument("--max-frequency", type=int, default=25_000, help="images containing the commonest concept")
    parser.add_argument("--zipf", type=float, default=0.8, help="exponent of the frequency law")
    parser.add_argument("--min-count", type=int, default=12, help="images containing the rarest concepts")
    parser.add_argument("--repeats", type=int, default=3, help="runs of robsig's engine; the fastest counts")
    parser.add_argument("--baseline-directions", type=int, default=16,
                        help="directions the sklearn loop runs on (0 = all, no extrapolation)")
    arguments = parser.parse_args()

    generator = np.random.default_rng(0)
    memberships = synthetic_memberships(arguments.images, arguments.concepts, arguments.max_frequency,
                                        arguments.zipf, arguments.min_count, generator)
    sets = balanced_concept_sets(memberships, min_positives=10, seed=0)
    subsets = list(zip(sets.rows, sets.positive))
    scores = generator.standard_normal((arguments.images, arguments.directions)).astype(np.float32)
    pairs = sum(len(member) for member in memberships)
    rows_per_direction = sum(rows.size for rows, _ in subsets)
    print(f"{arguments.images} images, {len(subsets)} concepts scored, {arguments.directions} directions; "
          f"{pairs} (image, concept) pairs, {pairs / arguments.images:.1f} per image; "
          f"{rows_per_direction} balanced-set rows per direction")

    ours_seconds = float("inf")
    for _ in range(max(1, arguments.repeats)):
        started = time.perf_counter()
        high, low = subset_average_precision(descending_groups(scores), subsets)
        ours_seconds = min(ours_seconds, time.perf_counter() - started)
    print(f"robsig: {ours_seconds:.2f} s (fastest of {max(1, arguments.repeats)} runs) for AP(s) and AP(-s) of all "
          f"{high.size} pairs")

    baseline_directions = arguments.baseline_directions or arguments.directions
    baseline_directions = min(baseline_directions, arguments.directions)
    started = time.perf_counter()
    reference = np.empty((len(subsets), baseline_directions))
    for index, (rows, positive) in enumerate(subsets):
        block = scores[rows]
        for direction in range(baseline_directions):
            reference[index, direction] = average_precision_score(positive, block[:, direction])
    measured = time.perf_counter() - started
    scale = arguments.directions / baseline_directions
    baseline_seconds = measured * scale
    if scale == 1:
        print(f"sklearn loop: {baseline_seconds:.1f} s for AP(s) of all {reference.size} pairs")
    else:
        print(f"sklearn loop: {measured:.1f} s measured on {reference.size} pairs ({baseline_directions} of "
              f"{arguments.directions} directions), extrapolated linearly to {baseline_seconds:.1f} s for all "
              f"{high.size} pairs")

    difference = float(np.abs(high[:, :baseline_directions] - reference).max())
    print(f"max |AP robsig - AP sklearn| over {reference.size} pairs: {difference:.2e}")
    if difference > 1e-9:
        raise SystemExit("robsig and sklearn disagree by more than 1e-9")
    print(f"ratio: {baseline_seconds / ours_seconds:.0f}x faster for AP(s) alone (robsig also returned AP(-s); "
          f"against two sklearn calls per pair the ratio is {2 * baseline_seconds / ours_seconds:.0f}x)")


if __name__ == "__main__":
    main()
