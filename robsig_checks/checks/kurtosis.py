"""Activation kurtosis of the representation: outlier features (Crabbé et al. 2023, Eq. 2)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from robsig_checks.checks.base import Check, Outcome


class ActivationKurtosis(Check):
    """Mean over images of the kurtosis of the components of ``h``; Gaussian vectors give 3.

    Zero-shot CLIP embeddings reach 7–81 on ImageNet, finetuned and supervised models 2.9–4.6
    (Crabbé et al. 2023, Table 2), so the default gate sits between the groups.
    """

    name = "activation_kurtosis"
    summary = "kurtosis of the last-layer representation (outlier features); Gaussian = 3"
    parameters = {
        "min": {
            "type": "number",
            "default": 6.0,
            "description": "minimum mean activation kurtosis",
        },
    }

    def accumulators(self, model: Any, dataset: Any) -> dict[str, Callable[[], Any]]:
        from robsig_checks.metrics import KurtosisAccumulator

        return {"kurtosis": KurtosisAccumulator}

    def evaluate(self, computed: Mapping[str, Any], run: Any) -> Outcome:
        result = computed["kurtosis"]
        minimum = self.params["min"]
        threshold = f">= {minimum:g}"
        excluded = []
        if result.n_zero_variance:
            excluded.append(f"{result.n_zero_variance} constant")
        if run.n_nonfinite:
            excluded.append(f"{run.n_nonfinite} non-finite")
        note = f" ({', '.join(excluded)} excluded)" if excluded else ""

        if result.n_rows == 0:
            return Outcome(
                dataset=run.dataset, n_images=0, metric="kurtosis", value=None, threshold=threshold,
                passed=False, metrics=result.to_dict(),
                explanation=f"kurtosis undefined on {run.dataset}: no image had finite, non-constant activations{note}",
            )
        passed = bool(result.value >= minimum)
        relation = ">=" if passed else "<"
        return Outcome(
            dataset=run.dataset,
            n_images=result.n_rows,
            metric="kurtosis",
            value=float(result.value),
            threshold=threshold,
            passed=passed,
            explanation=f"kurtosis {result.value:.2f} {relation} min {minimum:g} on {run.dataset}, {result.n_rows} images{note}",
            metrics=result.to_dict(),
        )
