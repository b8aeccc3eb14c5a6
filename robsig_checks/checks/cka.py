"""Layer-by-layer CKA against a reference model: did a finetune rewrite the last layer?

Crabbé et al. (2023, Appendix B) compare zero-shot CLIP models with their finetuned versions layer by
layer with linear CKA: similarity stays high through the trunk and drops sharply in the last layer.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from robsig_checks.checks.base import Check, Outcome, Requirements
from robsig_checks.errors import RobsigError

#: Layer name of the representation ``h`` itself, the last layer compared.
REPRESENTATION = "representation"


class LayerCKAAccumulator:
    """CKA of each named layer of a model with the same-named layer of one reference model.

    ``update_with_layers`` receives the layer activations of the model and of every reference of the
    pass; this accumulator reads the reference it was built for. With the ``minibatch`` estimator, batches
    of fewer than 4 rows cannot be scored and are counted in ``n_rows_dropped``.
    """

    def __init__(self, reference: str, estimator: str) -> None:
        self.reference = reference
        self.estimator = estimator
        self.names: list[str] | None = None
        self.exact: dict[str, Any] = {}
        self.minibatch: Any = None
        self.n_rows_dropped = 0

    def update(self, h: Any, labels: Any = None) -> None:
        raise TypeError("LayerCKAAccumulator needs layer activations: the extraction calls update_with_layers.")

    def update_with_layers(self, h: np.ndarray, labels: np.ndarray, layers: Mapping[str, np.ndarray],
                           references: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        from robsig_checks.metrics.cka import MIN_UNBIASED_ROWS, CKAAccumulator, MinibatchCKAAccumulator

        reference = references[self.reference]
        if self.names is None:
            self.names = [name for name in layers if name in reference]
        if self.estimator == "exact":
            for name in self.names:
                self.exact.setdefault(name, CKAAccumulator()).update_pair(layers[name], reference[name])
            return
        if h.shape[0] < MIN_UNBIASED_ROWS:
            self.n_rows_dropped += h.shape[0]
            return
        if self.minibatch is None:
            self.minibatch = MinibatchCKAAccumulator()
        self.minibatch.update_layers([layers[name] for name in self.names], [reference[name] for name in self.names])

    def compute(self) -> dict[str, Any]:
        names = self.names or []
        if self.estimator == "exact":
            values = [self.exact[name].compute().value for name in names]
            matrix = None
        else:
            matrix = self.minibatch.compute() if self.minibatch is not None else np.full((len(names),) * 2, np.nan)
            values = [float(matrix[index, index]) for index in range(len(names))]
        return {"layers": names, "cka": values, "matrix": None if matrix is None else matrix.tolist(),
                "n_rows_dropped": self.n_rows_dropped}


class CKALastLayerDrop(Check):
    """Linear CKA of every layer with the same layer of a reference model, and the drop at the last one.

    ``drop = mean(CKA of the earlier layers) - CKA of the last layer``, where the last layer is the
    representation ``h``. A finetune that keeps the zero-shot model's last layer scores a high
    last-layer CKA and a small drop.
    """

    name = "cka_last_layer_drop"
    summary = "CKA with a reference model layer by layer; the drop in the last layer"
    parameters = {
        # NOTE: provisional thresholds, not calibrated on real CLIP weights.
        "reference": {
            "type": ["string", "null"],
            "default": None,
            "description": "the reference model spec (e.g. the zero-shot model a candidate was finetuned from)",
        },
        "layers": {
            "anyOf": [{"const": "all"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
            "default": "all",
            "description": "layer names compared, or all the layer names the two models share",
        },
        "token": {"enum": ["cls", "mean"], "default": "cls",
                  "description": "ViT blocks: the class token or the mean over tokens"},
        "estimator": {"enum": ["exact", "minibatch"], "default": "exact",
                      "description": "exact CKA over all images, or the minibatch unbiased-HSIC estimator"},
        "min_last_cka": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.6,
                         "description": "minimum CKA of the last layer"},
        "max_drop": {"type": "number", "minimum": 0, "default": 0.3,
                     "description": "maximum drop of the last layer's CKA below the mean of the earlier layers"},
    }

    def _reference(self) -> str:
        reference = self.params["reference"]
        if not reference:
            raise RobsigError("cka_last_layer_drop needs a reference model: add `reference: SPEC` to the check in "
                              "the suite or pass --robsig-reference SPEC.")
        return reference

    def requirements(self) -> Requirements:
        if not self.params["reference"]:
            return Requirements()
        layers = self.params["layers"]
        return Requirements(layers=layers if layers == "all" else tuple(layers), token=self.params["token"],
                            references=(self._reference(),))

    def _key(self) -> str:
        return f"cka:{self._reference()}:{self.params['estimator']}:{self.params['token']}:{self.params['layers']}"

    def accumulators(self, model: Any, dataset: Any) -> dict[str, Callable[[], Any]]:
        if not self.params["reference"]:
            return {}
        reference, estimator = self._reference(), self.params["estimator"]
        return {self._key(): lambda: LayerCKAAccumulator(reference, estimator)}

    def evaluate(self, computed: Mapping[str, Any], run: Any) -> Outcome:
        result = computed[self._key()]  # _key() raises the missing-reference message
        names, values = result["layers"], result["cka"]

        minimum, maximum = self.params["min_last_cka"], self.params["max_drop"]
        threshold = f"last >= {minimum:g}, drop <= {maximum:g}"
        details = {"layers": names, "cka": [None if np.isnan(v) else v for v in values], "matrix": result["matrix"],
                   "reference": self._reference(), "estimator": self.params["estimator"]}
        if len(names) < 2 or np.isnan(values[-1]):
            return Outcome(dataset=run.dataset, n_images=run.n_scored, metric="cka_last", value=None,
                           threshold=threshold, passed=False, details=details,
                           explanation=f"CKA undefined on {run.dataset}: {len(names)} layer(s) compared, "
                                       "at least 2 needed and a representation that varies over the images")

        last = float(values[-1])
        earlier = float(np.nanmean(values[:-1]))
        drop = earlier - last
        passed = bool(last >= minimum and drop <= maximum)
        failing = [text for text, ok in ((f"last-layer CKA {last:.3f} < min {minimum:g}", last >= minimum),
                                         (f"drop {drop:.3f} > max {maximum:g}", drop <= maximum)) if not ok]
        summary = "; ".join(failing) if failing else f"last-layer CKA {last:.3f}, drop {drop:.3f} within limits"
        return Outcome(
            dataset=run.dataset,
            n_images=run.n_scored,
            metric="cka_last",
            value=last,
            threshold=threshold,
            passed=passed,
            explanation=(f"{summary} against {self._reference()} on {run.dataset}, {run.n_scored} images "
                         f"(mean of {len(values) - 1} earlier layers {earlier:.3f})"),
            metrics={"cka_last": last, "cka_earlier_mean": earlier, "drop": drop, "n_layers": len(names)},
            details=details,
        )
