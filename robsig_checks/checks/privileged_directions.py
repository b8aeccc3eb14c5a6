"""Privileged directions of the head: the tail of the importance spectrum (Crabbé et al. 2023, Eq. 3–4)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from robsig_checks.checks.base import Check, Outcome


class PrivilegedDirectionTail(Check):
    """``tail = max_i Importance(i) / mean_i Importance(i)`` over the right singular vectors of ``W``.

    A robust zero-shot model has at least one direction far above the mean; supervised models have none.
    """

    name = "privileged_direction_tail"
    summary = "max / mean importance of the head's singular directions (privileged directions)"
    parameters = {
        # NOTE: provisional absolute threshold, not calibrated on real CLIP weights. Releases of one architecture
        # are better gated against that architecture's own baseline.
        "min_tail": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 5.0,
            "description": "minimum ratio of the largest importance to the mean importance",
        },
        "factor": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 5.0,
            "description": "a direction counts as privileged when its importance exceeds factor x mean",
        },
    }

    def accumulators(self, model: Any, dataset: Any) -> dict[str, Callable[[], Any]]:
        from robsig_checks.metrics import ImportanceAccumulator

        return {"importance": lambda: ImportanceAccumulator(model.svd)}

    def evaluate(self, computed: Mapping[str, Any], run: Any) -> Outcome:
        from robsig_checks.metrics import importance_tail

        result = computed["importance"]
        minimum = self.params["min_tail"]
        threshold = f">= {minimum:g}"
        if result.n_rows == 0:
            return Outcome(
                dataset=run.dataset, n_images=0, metric="tail", value=None, threshold=threshold, passed=False,
                metrics=result.to_dict(),
                explanation=f"importance undefined on {run.dataset}: no image had a finite, non-zero representation",
            )
        tail, n_privileged = importance_tail(result.importance, factor=self.params["factor"])
        passed = bool(tail >= minimum)
        relation = ">=" if passed else "<"
        metrics = result.to_dict()
        spectrum = sorted((float(value) for value in result.importance), reverse=True)
        metrics.pop("importance", None)
        metrics.update({"tail": float(tail), "n_privileged": int(n_privileged), "rank": len(spectrum)})
        return Outcome(
            dataset=run.dataset,
            n_images=result.n_rows,
            metric="tail",
            value=float(tail),
            threshold=threshold,
            passed=passed,
            explanation=(
                f"importance tail {tail:.2f} {relation} min {minimum:g} on {run.dataset}, {result.n_rows} images; "
                f"{n_privileged} of {len(spectrum)} directions above {self.params['factor']:g} x mean"
            ),
            metrics=metrics,
            details={"importance_sorted": spectrum},
        )
