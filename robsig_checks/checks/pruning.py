"""Tolerance to pruning the least important singular directions of the head (Crabbé et al. 2023, Fig. 3)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from robsig_checks.checks.base import Check, Outcome

DEFAULT_FRACTIONS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


class PruningTolerance(Check):
    """Accuracy and agreement after zeroing the ``fraction`` smallest singular values of ``W``.

    With labels, the gate is the accuracy drop at ``fraction``; without labels, the top-1 agreement with
    the unpruned head. The whole curve comes from one projection of ``h`` on the right singular vectors.
    """

    name = "pruning_tolerance"
    summary = "accuracy / agreement after pruning 80 % of the head's least important directions"
    parameters = {
        "fraction": {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "default": 0.8,
            "description": "fraction of singular directions pruned at the gate, in [0, 1): 0.8 prunes 80 %",
        },
        "fractions": {
            "type": "array",
            "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
            "minItems": 1,
            "default": DEFAULT_FRACTIONS,
            "description": "fractions in [0, 1) at which the curve is reported",
        },
        "order": {
            "enum": ["sigma", "importance"],
            "default": "sigma",
            "description": "prune by increasing singular value or by increasing importance",
        },
        "max_accuracy_drop": {
            "type": "number",
            "minimum": 0,
            "default": 0.02,
            "description": "maximum drop of top-1 accuracy (a fraction: 0.02 is 2 points) on labelled data",
        },
        "min_agreement": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "default": 0.9,
            "description": "minimum top-1 agreement with the unpruned head, gated on unlabelled data",
        },
    }

    def _fractions(self) -> tuple[float, ...]:
        return tuple(sorted({0.0, float(self.params["fraction"]), *map(float, self.params["fractions"])}))

    def _key(self) -> str:
        return f"pruning:{self.params['order']}:{','.join(f'{f:g}' for f in self._fractions())}"

    def accumulators(self, model: Any, dataset: Any) -> dict[str, Callable[[], Any]]:
        from robsig_checks.metrics import PruningAccumulator

        fractions, order = self._fractions(), self.params["order"]
        return {self._key(): lambda: PruningAccumulator(model.svd, model.head[1], fractions, order=order)}

    def evaluate(self, computed: Mapping[str, Any], run: Any) -> Outcome:
        curve = computed[self._key()]
        fraction = float(self.params["fraction"])
        percent = f"{fraction:.0%}"
        metrics: dict[str, Any] = {"fraction": fraction, "order": curve.order, "n_rows": curve.n_rows,
                                   "n_labelled": curve.n_labelled}
        details = {"curve": curve.to_dict()}
        if curve.n_rows == 0:
            return Outcome(
                dataset=run.dataset, n_images=0, metric="agreement", value=None, threshold="", passed=False,
                metrics=metrics, details=details,
                explanation=f"pruning undefined on {run.dataset}: no image had finite activations",
            )

        at_fraction = curve.at(fraction)
        at_zero = curve.at(0.0)
        metrics["agreement"] = float(at_fraction.agreement)
        agreement_text = f"agreement {at_fraction.agreement:.3f}"

        if curve.n_labelled:
            drop = float(at_zero.accuracy - at_fraction.accuracy)
            maximum = self.params["max_accuracy_drop"]
            passed = drop <= maximum + 1e-12
            metrics.update({"accuracy": float(at_zero.accuracy), "accuracy_pruned": float(at_fraction.accuracy),
                            "accuracy_drop": drop})
            relation = "<=" if passed else ">"
            return Outcome(
                dataset=run.dataset, n_images=curve.n_labelled, metric="accuracy_drop", value=drop,
                threshold=f"<= {maximum:g}", passed=passed, metrics=metrics, details=details,
                explanation=(
                    f"accuracy drop {drop:.3f} {relation} max {maximum:g} after pruning {percent} on {run.dataset} "
                    f"({at_zero.accuracy:.3f} -> {at_fraction.accuracy:.3f}, {curve.n_labelled} labelled images; "
                    f"{agreement_text})"
                ),
            )

        minimum = self.params["min_agreement"]
        passed = at_fraction.agreement >= minimum
        relation = ">=" if passed else "<"
        return Outcome(
            dataset=run.dataset, n_images=curve.n_rows, metric="agreement", value=metrics["agreement"],
            threshold=f">= {minimum:g}", passed=bool(passed), metrics=metrics, details=details,
            explanation=(
                f"{agreement_text} {relation} min {minimum:g} with the unpruned head after pruning {percent} "
                f"on {run.dataset}, {curve.n_rows} unlabelled images"
            ),
        )
