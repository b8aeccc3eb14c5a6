"""Concepts encoded in the head's singular directions, probed on Broden (Crabbé et al. 2023, Sec. 4, Eq. 5).

The check reports ``N_unique``, the number of Broden concepts with ``AP >= 0.9`` in some right
singular direction of the head. It also reports the polysemanticity (mean number of such
concepts per direction), the top concepts of the most privileged direction and the counts per
category. The
2024 revision of the paper found no link between ``N_unique`` and robustness, so the check only
reports unless a suite sets ``min_unique``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from robsig_checks.checks.base import Check, Outcome
from robsig_checks.metrics.base import Accumulator

#: Decimal places of the per-concept best AP listed in the report details.
_DETAIL_DIGITS = 6


@dataclass(frozen=True, eq=False)
class ConceptReport:
    """The probing result of one pass, with the data set's label table and its bad-entry counts."""

    result: Any
    labels: dict[int, Any]
    problems: dict[str, Any]
    n_images_probed: int
    n_images_unknown: int


class ConceptProbeAccumulator(Accumulator):
    """Keep the projections of one pass and probe them against the data set's concept sets.

    Parameters:
        svd: the head's decomposition.
        dataset: a data set with ``concept_sets(positions)``, ``labels`` and ``problems()``,
            such as :class:`~robsig_checks.datasets.broden.BrodenDataset`.
        min_positives, seed, sign_invariant: as in :func:`~robsig_checks.metrics.concepts.concept_probing`.
    """

    def __init__(self, svd: Any, dataset: Any, min_positives: int, seed: int, sign_invariant: bool) -> None:
        from robsig_checks.metrics.concepts import ProjectionAccumulator

        self.projections = ProjectionAccumulator(svd)
        self.dataset = dataset
        self.min_positives = min_positives
        self.seed = seed
        self.sign_invariant = sign_invariant

    def reset(self) -> None:
        """Clear the state."""
        self.projections.reset()

    def update(self, h: Any, labels: Any = None) -> None:
        """Reject batches without sample positions, as :class:`ProjectionAccumulator` does."""
        self.projections.update(h, labels)

    def update_with_samples(self, h: Any, labels: Any, indices: Any) -> None:
        """Fold one batch with the rows' positions in the data set."""
        self.projections.update_with_samples(h, labels, indices)

    def merge(self, other: Accumulator) -> "ConceptProbeAccumulator":
        """Fold the projections of another shard of the same data set into this one."""
        if not isinstance(other, ConceptProbeAccumulator):
            raise ValueError(f"other must be a ConceptProbeAccumulator, got {type(other).__name__}.")
        self.projections.merge(other.projections)
        return self

    def compute(self) -> ConceptReport:
        """Pair each projected image with its concepts and compute AP for every (concept, direction)."""
        from robsig_checks.metrics.concepts import concept_probing

        projections = self.projections.compute()
        concept_sets = self.dataset.concept_sets(projections.indices) if projections.indices.size else []
        known = np.array([concepts is not None for concepts in concept_sets], dtype=bool)
        memberships = [concepts for concepts in concept_sets if concepts is not None]
        result = None
        # NOTE: negatives are drawn among the images of this pass only, so with --robsig-limit the
        # balanced sets (and N_unique) come from the first images of index.csv, not from all of Broden.
        if memberships:
            result = concept_probing(
                projections.values[known] if known.size else projections.values,
                memberships,
                concepts=sorted(self.dataset.labels),
                min_positives=self.min_positives,
                seed=self.seed,
                sign_invariant=self.sign_invariant,
            )
        return ConceptReport(
            result=result,
            labels=dict(self.dataset.labels),
            problems=self.dataset.problems(),
            n_images_probed=len(memberships),
            n_images_unknown=int((~known).sum()),
        )


class UniqueConcepts(Check):
    """``N_unique``: Broden concepts encoded (AP >= threshold) in some right singular direction of ``W``."""

    name = "unique_concepts"
    summary = "number of Broden concepts encoded in the head's singular directions (informational)"
    parameters = {
        "ap_threshold": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 1,
            "default": 0.9,
            "description": "a concept is encoded in a direction when its average precision there is at least this",
        },
        "min_positives": {
            "type": "integer",
            "minimum": 1,
            "default": 10,
            "description": "concepts with fewer positive (or available negative) images are excluded and counted",
        },
        "seed": {
            "type": "integer",
            "minimum": 0,
            "default": 0,
            "description": "seed of the draw of negative images for each concept's balanced set",
        },
        "sign_invariant": {
            "type": "boolean",
            "default": True,
            "description": "score each direction with max(AP(s), AP(-s)), because singular vector signs are arbitrary",
        },
        "top_k": {
            "type": "integer",
            "minimum": 1,
            "default": 10,
            "description": "number of top concepts of the most privileged direction listed in the report",
        },
        "min_unique": {
            "type": ["integer", "null"],
            "minimum": 0,
            "default": None,
            "description": "gate: minimum number of unique concepts; null (default) only reports",
        },
    }

    def _key(self) -> str:
        return f"concepts:{self.params['min_positives']}:{self.params['seed']}:{self.params['sign_invariant']}"

    def accumulators(self, model: Any, dataset: Any) -> dict[str, Callable[[], Any]]:
        from robsig_checks.metrics import ImportanceAccumulator

        if not hasattr(dataset, "concept_sets"):
            return {}
        params = self.params
        return {
            "importance": lambda: ImportanceAccumulator(model.svd),
            self._key(): lambda: ConceptProbeAccumulator(
                model.svd, dataset, params["min_positives"], params["seed"], params["sign_invariant"]
            ),
        }

    def _threshold_text(self) -> str:
        minimum = self.params["min_unique"]
        return "" if minimum is None else f">= {minimum}"

    def evaluate(self, computed: Mapping[str, Any], run: Any) -> Outcome:
        report = computed.get(self._key())
        if report is None:
            # Reported, never failed: --robsig-data NAME=PATH adds a folder to every check of a suite.
            return Outcome(
                dataset=run.dataset, n_images=0, metric="n_unique", value=None, threshold=self._threshold_text(),
                passed=None,
                explanation=(
                    f"not probed: unique_concepts needs a data set with concept labels, such as kind 'broden', "
                    f"but {run.dataset!r} has none. Set `data: [broden]` on this check in the suite."
                ),
            )
        result = report.result
        metrics: dict[str, Any] = {
            "seed": self.params["seed"],
            "min_positives": self.params["min_positives"],
            "ap_threshold": self.params["ap_threshold"],
            "sign_invariant": self.params["sign_invariant"],
            "n_images_probed": report.n_images_probed,
            "n_images_without_concepts": report.n_images_unknown,
            "n_concepts_labelled": len(report.labels),
            "data_problems": report.problems["counts"],
        }
        details: dict[str, Any] = {"data_problem_examples": report.problems["examples"]}
        if result is None or result.concepts.size == 0:
            reason = "no image with known concepts" if result is None else "no concept has enough positives"
            if result is not None:
                metrics["n_concepts_excluded"] = result.excluded_counts()
            return Outcome(
                dataset=run.dataset, n_images=report.n_images_probed, metric="n_unique", value=None,
                threshold=self._threshold_text(), passed=False if self.params["min_unique"] is not None else None,
                metrics=metrics, details=details,
                explanation=f"concept probing undefined on {run.dataset}: {reason} (min_positives "
                            f"{self.params['min_positives']}, {report.n_images_probed} images probed)",
            )
        return self._outcome(result, report, computed.get("importance"), metrics, details, run)

    def _outcome(self, result: Any, report: ConceptReport, importance: Any, metrics: dict[str, Any],
                 details: dict[str, Any], run: Any) -> Outcome:
        threshold = float(self.params["ap_threshold"])
        encoded = result.encoded(threshold)
        n_unique = result.n_unique(threshold)
        poly = result.polysemanticity(threshold)
        excluded = result.excluded_counts()

        metrics.update({
            "n_unique": n_unique,
            "polysemanticity": poly,
            "n_directions": result.rank,
            "n_concepts_scored": int(result.concepts.size),
            "n_concepts_excluded": excluded,
            "n_positives_subsampled": int((result.n_positive_available > result.set_sizes).sum()),
            "balanced_set_sizes": {"min": int(result.set_sizes.min()), "max": int(result.set_sizes.max()),
                                   "total": int(result.set_sizes.sum())},
            "per_category": self._per_category(result, report.labels, encoded),
        })
        details.update(self._details(result, report.labels, encoded, importance))

        minimum = self.params["min_unique"]
        passed = None if minimum is None else bool(n_unique >= minimum)
        gate = "" if minimum is None else (f" {'>=' if passed else '<'} min {minimum}")
        top = details.get("most_privileged_direction", {}).get("top_concepts", [])
        top_text = ", ".join(f"{item['name']} ({item['category']}, {item['ap']:.2f})" for item in top[:3])
        explanation = (
            f"{n_unique} unique concepts{gate} with AP >= {threshold:g} on {run.dataset} "
            f"({result.concepts.size} scored, {sum(excluded.values())} excluded; {report.n_images_probed} images; "
            f"seed {result.seed}); polysemanticity {poly:.2f}"
        )
        if top_text:
            explanation += f"; most privileged direction: {top_text}"
        problems = sum(report.problems["counts"].values())
        if problems:
            explanation += f"; data problems: {problems} (see metrics.data_problems)"
        return Outcome(
            dataset=run.dataset, n_images=report.n_images_probed, metric="n_unique", value=float(n_unique),
            threshold=self._threshold_text(), passed=passed, explanation=explanation, metrics=metrics,
            details=details,
        )

    @staticmethod
    def _per_category(result: Any, labels: dict[int, Any], encoded: np.ndarray) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for number, is_encoded in zip(result.concepts.tolist(), encoded.any(axis=1).tolist()):
            category = labels[number].category if number in labels else "unknown"
            entry = counts.setdefault(category, {"scored": 0, "encoded": 0})
            entry["scored"] += 1
            entry["encoded"] += int(is_encoded)
        return dict(sorted(counts.items()))

    def _details(self, result: Any, labels: dict[int, Any], encoded: np.ndarray, importance: Any) -> dict[str, Any]:
        def describe(number: int) -> dict[str, Any]:
            label = labels.get(number)
            return {"number": number, "name": label.name if label else str(number),
                    "category": label.category if label else "unknown"}

        best_direction = result.ap.argmax(axis=1)
        concepts = []
        for row, number in enumerate(result.concepts.tolist()):
            direction = int(best_direction[row])
            concepts.append({**describe(number), "best_ap": round(float(result.ap[row, direction]), _DETAIL_DIGITS),
                             "direction": direction, "sign": int(result.sign[row, direction]),
                             "n_positives": int(result.n_positive_available[row]),
                             "set_size": int(result.set_sizes[row]), "encoded": bool(encoded[row].any())})
        details: dict[str, Any] = {
            "concepts": concepts,
            "excluded": [{**describe(number), "reason": reason} for number, reason in sorted(result.excluded.items())],
            "concepts_per_direction": encoded.sum(axis=0).astype(int).tolist(),
        }

        if importance is not None and getattr(importance, "n_rows", 0) > 0:
            direction = int(np.nanargmax(importance.importance))
            order = np.argsort(-result.ap[:, direction], kind="stable")[: self.params["top_k"]]
            details["most_privileged_direction"] = {
                "direction": direction,
                "importance": float(importance.importance[direction]),
                "top_concepts": [
                    {**describe(int(result.concepts[row])), "ap": float(result.ap[row, direction]),
                     "sign": int(result.sign[row, direction])}
                    for row in order
                ],
            }
        return details
