"""Effective robustness on ImageNet and its five natural shifts (Crabbé et al. 2023, Eq. 1).

Each data set gets an accuracy outcome under its scoring protocol. ``combine`` then adds the ER
outcome, computed only when ImageNet and every required shift were scored: ER is never computed
from fewer shifts than the ``shifts`` parameter names.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from robsig_checks.checks.base import Check, Outcome
from robsig_checks.errors import RobsigError

#: Variant names, repeated here so that loading the check does not import the data set layer.
VARIANTS = ("imagenet", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")
SHIFTS = VARIANTS[1:]

#: Name of the data column of outcomes that combine several data sets.
COMBINED_DATASET = "imagenet+shifts"


def _describe_transform(transform: Any) -> str:
    return " ".join(repr(transform).split())[:400]


def variant_of(dataset: Any) -> str | None:
    """Return the ImageNet variant of a data set: its ``variant``, or its name when that is a variant name."""
    variant = getattr(dataset, "variant", None)
    if variant in VARIANTS:
        return variant
    return dataset.name if dataset.name in VARIANTS else None


def fractions_text(fractions: Any = None) -> str:
    """Return the last part of an accuracy accumulator key: the pruned fractions, ``0`` for the whole head."""
    return "0" if fractions is None else ",".join(f"{value:g}" for value in fractions)


def find_accuracy(computed: Mapping[str, Any], fractions: Any = None) -> Any:
    """Return the computed accuracy of :func:`accuracy_factory` for ``fractions``, or None when it was not planned."""
    suffix = f":{fractions_text(fractions)}"
    return next((value for key, value in computed.items() if key.startswith("accuracy:") and key.endswith(suffix)),
                None)


def accuracy_factory(model: Any, dataset: Any, fractions: Any = None) -> tuple[str, Callable[[], Any]]:
    """Return the accumulator key and factory of the accuracy of ``model`` under ``dataset``'s protocol.

    Data sets of :mod:`robsig_checks.datasets.imagenet_variants` bring their class grouping; other
    data sets are scored by plain top-1 accuracy over every logit.
    """
    import numpy as np

    from robsig_checks.metrics.effective_robustness import AccuracyAccumulator

    weight, bias = model.head
    variant = variant_of(dataset)
    if hasattr(dataset, "class_groups"):
        if weight.shape[0] != 1000:
            raise RobsigError(
                f"data set {dataset.name!r} ({variant}) is scored over ImageNet-1k classes, but model "
                f"{model.spec!r} has a head of {weight.shape[0]} classes. Use a model with an ImageNet-1k head."
            )
        groups = dataset.class_groups()
        protocol = dict(dataset.protocol)
    else:
        groups = np.arange(weight.shape[0], dtype=np.int64)
        protocol = {"variant": variant, "scoring": f"arg-max over all {weight.shape[0]} logits",
                    "labels": "wnid in the file or folder name"}
    protocol["preprocessing"] = _describe_transform(model.adapter.preprocess)

    key = f"accuracy:{variant}:{protocol.get('mask_logits', True)}:{fractions_text(fractions)}"
    svd = model.svd if fractions is not None else None
    return key, lambda: AccuracyAccumulator(weight, bias, groups, fractions, svd=svd, protocol=protocol)


def accuracy_outcome(result: Any, run: Any) -> Outcome:
    """Turn an :class:`~robsig_checks.metrics.effective_robustness.AccuracyResult` into an informational outcome."""
    protocol = result.protocol
    variant = protocol.get("variant") or "not an ImageNet variant"

    problems = []
    if run.n_skipped:
        problems.append(f"{run.n_skipped} unreadable images skipped")
    if protocol.get("n_foreign_folders"):
        problems.append(f"{protocol['n_foreign_folders']} folders that are not classes skipped "
                        f"({', '.join(protocol['foreign_folders'][:3])})")
    if protocol.get("n_empty_classes"):
        problems.append(f"{protocol['n_empty_classes']} empty classes ({', '.join(protocol['empty_classes'][:3])})")
    release = protocol.get("release_images")
    if release and protocol.get("n_images") != release:
        problems.append(f"the folder has {protocol.get('n_images')} of the {release:,} images of the release")
    if result.n_unscored:
        problems.append(f"{result.n_unscored} images not scored (unlabelled or outside the scored classes)")
    suffix = f"; {'; '.join(problems)}" if problems else ""

    metrics = {"n_correct": result.n_correct[0], "n_scored": result.n_scored, "n_unscored": result.n_unscored,
               "n_skipped": run.n_skipped}
    details = {"protocol": protocol}
    if result.accuracy is None:
        return Outcome(
            dataset=run.dataset, n_images=0, metric="accuracy", value=None, threshold="", passed=None,
            metrics=metrics, details=details,
            explanation=f"accuracy undefined on {run.dataset} ({variant}): no labelled image of a scored class{suffix}",
        )

    accuracy = result.accuracy[0]
    metrics["accuracy"] = accuracy
    return Outcome(
        dataset=run.dataset, n_images=result.n_scored, metric="accuracy", value=accuracy, threshold="",
        passed=None, metrics=metrics, details=details,
        explanation=(f"accuracy {accuracy:.4f} on {run.dataset} ({variant}): {result.n_correct[0]} of "
                     f"{result.n_scored} scored images correct{suffix}"),
    )


def accuracies_by_variant(outcomes: list[Outcome]) -> dict[str, Outcome]:
    """Return, per ImageNet variant, the first outcome whose protocol names that variant."""
    found: dict[str, Any] = {}
    for outcome in outcomes:
        variant = outcome.details.get("protocol", {}).get("variant")
        if variant in VARIANTS and variant not in found:
            found[variant] = outcome
    return found


def missing_reason(missing: list[str], required: list[str]) -> str:
    """Explain why ER was not computed and how to supply the missing data."""
    return (f"ER not computed: no scored accuracy for {', '.join(missing)}. ER needs {', '.join(required)}; "
            "pass --robsig-data NAME=PATH or --robsig-data-root ROOT, or name a subset of shifts in the check's "
            "`shifts` parameter")


class EffectiveRobustness(Check):
    """Accuracy on ImageNet and on its shifts, and effective robustness gated on a minimum.

    ``ER = ACC(S) - logit^-1(beta1 * logit(ACC(I)) + beta0)`` (Crabbé et al. 2023, Eq. 1), with
    ``ACC(S)`` the mean accuracy over the shifts named in ``shifts``. The combined outcome's
    ``value`` is ER, a fraction.
    """

    name = "effective_robustness"
    summary = "accuracy on ImageNet and its natural shifts, and effective robustness (ER) above a minimum"
    parameters = {
        "min_er": {
            "type": ["number", "null"],
            "default": 0.05,
            "description": "minimum ER as a fraction (0.05 is 5 points); null reports ER without a gate",
        },
        "shifts": {
            "type": "array",
            "items": {"enum": list(SHIFTS)},
            "minItems": 1,
            "uniqueItems": True,
            "default": list(SHIFTS),
            "description": "shifts whose mean accuracy is ACC(S); ER is not computed while one of them is missing",
        },
        "beta1": {"type": "number", "default": 0.76,
                  "description": "slope of the baseline line in logit space (Taori et al. 2020)"},
        "beta0": {"type": "number", "default": -1.49,
                  "description": "intercept of the baseline line in logit space (Taori et al. 2020)"},
    }

    def accumulators(self, model: Any, dataset: Any) -> dict[str, Callable[[], Any]]:
        key, factory = accuracy_factory(model, dataset)
        return {key: factory}

    def evaluate(self, computed: Mapping[str, Any], run: Any) -> Outcome:
        return accuracy_outcome(find_accuracy(computed), run)

    def combine(self, outcomes: list[Outcome]) -> list[Outcome]:
        from robsig_checks.metrics.effective_robustness import effective_robustness, predicted_shift_accuracy

        if not outcomes:
            return outcomes
        required = ["imagenet", *self.params["shifts"]]
        found = accuracies_by_variant(outcomes)
        missing = [variant for variant in required if variant not in found or found[variant].value is None]
        n_images = sum(found[variant].n_images for variant in required if variant in found)
        metrics: dict[str, Any] = {"shifts": list(self.params["shifts"]), "beta1": self.params["beta1"],
                                   "beta0": self.params["beta0"]}
        minimum = self.params["min_er"]
        threshold = "" if minimum is None else f">= {minimum:g}"
        if missing:
            metrics["missing"] = missing
            return [*outcomes, Outcome(dataset=COMBINED_DATASET, n_images=n_images, metric="effective_robustness",
                                       value=None, threshold=threshold, passed=None, metrics=metrics,
                                       explanation=missing_reason(missing, required))]

        acc_id = found["imagenet"].value
        acc_shifts = {variant: found[variant].value for variant in self.params["shifts"]}
        metrics.update({"acc_imagenet": acc_id, "acc_shifts": acc_shifts,
                        "acc_shift_mean": sum(acc_shifts.values()) / len(acc_shifts)})
        try:
            er = effective_robustness(acc_id, acc_shifts, self.params["beta1"], self.params["beta0"])
        except ValueError as error:
            return [*outcomes, Outcome(dataset=COMBINED_DATASET, n_images=n_images, metric="effective_robustness",
                                       value=None, threshold=threshold, passed=None, metrics=metrics,
                                       explanation=f"ER undefined: {error}")]
        metrics["predicted_shift_accuracy"] = predicted_shift_accuracy(acc_id, self.params["beta1"],
                                                                       self.params["beta0"])
        metrics["effective_robustness"] = er
        passed = None
        relation = ""
        if minimum is not None:
            passed = er >= minimum - 1e-12
            relation = f" >= min {minimum:g}" if passed else f" < min {minimum:g}"
        explanation = (f"ER {er:+.4f}{relation}: mean shift accuracy {metrics['acc_shift_mean']:.4f} over "
                       f"{len(acc_shifts)} shifts vs {metrics['predicted_shift_accuracy']:.4f} predicted from "
                       f"ImageNet accuracy {acc_id:.4f}")
        return [*outcomes, Outcome(dataset=COMBINED_DATASET, n_images=n_images, metric="effective_robustness",
                                   value=er, threshold=threshold, passed=passed, metrics=metrics,
                                   explanation=explanation)]
