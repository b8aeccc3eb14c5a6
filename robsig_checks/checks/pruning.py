"""Tolerance to pruning the least important singular directions of the head (Crabbé et al. 2023, Fig. 3)."""

from __future__ import annotations

from typing import Any, Callable, Mapping

from robsig_checks.checks.base import Check, Outcome
from robsig_checks.checks.effective_robustness import (
    COMBINED_DATASET,
    accuracies_by_variant,
    accuracy_factory,
    find_accuracy,
    missing_reason,
)

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
        "max_er_drop": {
            "type": "number",
            "minimum": 0,
            "default": 0.02,
            "description": "maximum drop of effective robustness at fraction (0.02 is 2 points), gated when "
                           "ImageNet and the shifts of er_shifts are data sets of the suite",
        },
        "er_shifts": {
            "type": "array",
            "items": {"enum": ["imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a"]},
            "minItems": 1,
            "uniqueItems": True,
            "default": ["imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a"],
            "description": "shifts whose mean accuracy enters ER at each pruned fraction",
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
        factories = {self._key(): lambda: PruningAccumulator(model.svd, model.head[1], fractions, order=order)}
        if hasattr(dataset, "class_groups") and order == "sigma":
            # ImageNet and its shifts: the accuracy curve under the data set's scoring protocol, for ER.
            key, factory = accuracy_factory(model, dataset, fractions)
            factories[key] = factory
        return factories

    def evaluate(self, computed: Mapping[str, Any], run: Any) -> Outcome:
        curve = computed[self._key()]
        protocol_curve = find_accuracy(computed, self._fractions())
        if protocol_curve is not None and protocol_curve.accuracy is not None:
            return self._evaluate_protocol(curve, protocol_curve, run)
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

    def _evaluate_protocol(self, curve: Any, protocol_curve: Any, run: Any) -> Outcome:
        """Gate the accuracy drop measured under the scoring protocol of an ImageNet variant."""
        fraction = float(self.params["fraction"])
        before, after = protocol_curve.at(0.0), protocol_curve.at(fraction)
        drop = float(before - after)
        maximum = self.params["max_accuracy_drop"]
        passed = drop <= maximum + 1e-12
        protocol = protocol_curve.protocol
        metrics = {"fraction": fraction, "order": curve.order, "n_rows": curve.n_rows,
                   "n_labelled": curve.n_labelled, "agreement": float(curve.at(fraction).agreement),
                   "accuracy": float(before), "accuracy_pruned": float(after), "accuracy_drop": drop,
                   "n_scored": protocol_curve.n_scored}
        relation = "<=" if passed else ">"
        return Outcome(
            dataset=run.dataset, n_images=protocol_curve.n_scored, metric="accuracy_drop", value=drop,
            threshold=f"<= {maximum:g}", passed=passed, metrics=metrics,
            details={"curve": curve.to_dict(), "protocol_curve": protocol_curve.to_dict(), "protocol": protocol},
            explanation=(
                f"accuracy drop {drop:.3f} {relation} max {maximum:g} after pruning {fraction:.0%} on {run.dataset} "
                f"({protocol.get('variant')}: {before:.3f} -> {after:.3f}, {protocol_curve.n_scored} scored images; "
                f"agreement {metrics['agreement']:.3f})"
            ),
        )

    def combine(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Add the ER at each pruned fraction when ImageNet and the shifts of ``er_shifts`` were measured.

        When ImageNet or some shifts are present but not all, the added row names the missing ones.
        """
        from robsig_checks.metrics.effective_robustness import effective_robustness

        found = {variant: outcome for variant, outcome in accuracies_by_variant(outcomes).items()
                 if "protocol_curve" in outcome.details}
        if not found:
            return outcomes
        shifts = list(self.params["er_shifts"])
        required = ["imagenet", *shifts]
        missing = [variant for variant in required if variant not in found]
        fraction = float(self.params["fraction"])
        maximum = self.params["max_er_drop"]
        n_images = sum(found[variant].n_images for variant in required if variant in found)
        if missing:
            return [*outcomes, Outcome(dataset=COMBINED_DATASET, n_images=n_images, metric="er_drop", value=None,
                                       threshold=f"<= {maximum:g}", passed=None, metrics={"missing": missing},
                                       explanation=missing_reason(missing, required))]

        curves = {variant: found[variant].details["protocol_curve"] for variant in required}
        fractions = curves["imagenet"]["fractions"]
        er_curve: list[float | None] = []
        for index in range(len(fractions)):
            try:
                er_curve.append(effective_robustness(curves["imagenet"]["accuracy"][index],
                                                     {variant: curves[variant]["accuracy"][index] for variant in shifts}))
            except ValueError:
                er_curve.append(None)
        at = next(index for index, value in enumerate(fractions) if abs(value - fraction) <= 1e-9)
        metrics = {"fraction": fraction, "shifts": shifts, "effective_robustness": er_curve[0],
                   "effective_robustness_pruned": er_curve[at]}
        details = {"er_curve": {"fractions": fractions, "effective_robustness": er_curve}}
        if er_curve[0] is None or er_curve[at] is None:
            return [*outcomes, Outcome(dataset=COMBINED_DATASET, n_images=n_images, metric="er_drop", value=None,
                                       threshold=f"<= {maximum:g}", passed=None, metrics=metrics, details=details,
                                       explanation="ER drop undefined: an accuracy is 0 or 1, where ER is undefined")]
        drop = er_curve[0] - er_curve[at]
        metrics["er_drop"] = drop
        passed = drop <= maximum + 1e-12
        relation = "<=" if passed else ">"
        return [*outcomes, Outcome(
            dataset=COMBINED_DATASET, n_images=n_images, metric="er_drop", value=drop, threshold=f"<= {maximum:g}",
            passed=passed, metrics=metrics, details=details,
            explanation=(f"ER drop {drop:.3f} {relation} max {maximum:g} after pruning {fraction:.0%} "
                         f"(ER {er_curve[0]:+.3f} -> {er_curve[at]:+.3f} over imagenet and {len(shifts)} shifts)"),
        )]
