"""The check protocol: declared parameters, the accumulators a check needs, and a verdict per data set."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import jsonschema

from robsig_checks.errors import RobsigError

if TYPE_CHECKING:
    from robsig_checks.datasets.base import ImageDataset
    from robsig_checks.extraction import DatasetRun, ModelContext
    from robsig_checks.metrics.base import Accumulator

#: Severities: ``fail`` fails the pytest item, ``warn`` passes it with a pytest warning, ``info`` only reports.
SEVERITIES = ("fail", "warn", "info")


@dataclass
class Outcome:
    """The verdict of one check on one data set, as plain data for reports and baselines.

    ``passed`` is None for a purely informational result. ``metric`` and ``value`` are the headline
    number shown in tables; ``threshold`` reads like ``>= 6.0``. ``metrics`` contains every scalar the
    check measured and ``details`` contains curves and spectra.
    """

    dataset: str
    n_images: int
    metric: str
    value: float | None
    threshold: str
    passed: bool | None
    explanation: str
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    #: Relative thresholds evaluated against a baseline (``robsig_checks.baseline.Comparison`` dicts).
    relative: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "n_images": self.n_images,
            "metric": self.metric,
            "value": self.value,
            "threshold": self.threshold,
            "passed": self.passed,
            "explanation": self.explanation,
            "metrics": self.metrics,
            "details": self.details,
            "relative": self.relative,
        }


@dataclass(frozen=True)
class Requirements:
    """Layer activations and reference models that a check needs from a pass besides ``h``.

    ``layers`` is a tuple of layer names, or ``"all"`` for every layer name the model and its
    references share. ``references`` are model specs run on the same images in the same batches.
    """

    layers: tuple[str, ...] | str = ()
    token: str = "cls"
    references: tuple[str, ...] = ()


class Check(ABC):
    """One robustness signature turned into a verdict.

    Subclasses declare ``name``, ``summary`` and ``parameters`` (a JSON-schema ``properties`` table whose
    entries carry a ``default`` and a ``description``), build the accumulators they need in
    ``accumulators`` and turn the computed metrics into an :class:`Outcome` in ``evaluate``. Checks never
    call the model: the extraction feeds their accumulators.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    parameters: ClassVar[dict[str, dict[str, Any]]]

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        values = {key: copy.deepcopy(spec["default"]) for key, spec in self.parameters.items()}
        values.update(params or {})
        errors = sorted(jsonschema.Draft202012Validator(self.params_schema()).iter_errors(values), key=str)
        if errors:
            raise RobsigError(f"Invalid parameters for check {self.name!r}: {describe_schema_error(errors[0])}")
        self.params = values

    @classmethod
    def params_schema(cls) -> dict[str, Any]:
        """Return the JSON schema of this check's ``params`` mapping."""
        properties = {
            key: {k: v for k, v in spec.items() if k not in ("default", "description")}
            for key, spec in cls.parameters.items()
        }
        return {"type": "object", "properties": properties, "additionalProperties": False}

    @abstractmethod
    def accumulators(self, model: "ModelContext", dataset: "ImageDataset") -> dict[str, Callable[[], "Accumulator"]]:
        """Return accumulator factories by key for one (model, data set) pass.

        Checks that ask for the same key in the same pass share one accumulator, so a key must name
        everything that configures it.
        """

    @abstractmethod
    def evaluate(self, computed: Mapping[str, Any], run: "DatasetRun") -> Outcome:
        """Turn the computed metrics of one (model, data set) pass into an outcome."""

    def requirements(self) -> Requirements:
        """Return the layers and reference models this check needs in its passes (none by default)."""
        return Requirements()

    def combine(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Return the outcomes of all data sets, with any outcome that needs several of them added.

        Called once per (check, model) after every data set was evaluated. The default returns the
        per-data-set outcomes unchanged.
        """
        return outcomes


def format_path(parts: list[Any]) -> str:
    """Write a key path as ``checks[0].params.min``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif text:
            text += f".{part}"
        else:
            text = str(part)
    return text


def describe_schema_error(error: jsonschema.ValidationError) -> str:
    """Rewrite a jsonschema error as ``key: problem (allowed: ...)`` for people."""
    location = format_path(list(error.absolute_path))
    prefix = f"{location}: " if location else ""
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        return f"{prefix}unknown key(s) {', '.join(map(repr, extra))}; allowed keys: {', '.join(allowed)}"
    if error.validator == "enum":
        return f"{prefix}{error.instance!r} is not allowed; allowed values: {', '.join(map(repr, error.validator_value))}"
    if error.validator == "required":
        return f"{prefix}{error.message}"
    if error.validator == "type":
        return f"{prefix}{error.instance!r} is not of type {error.validator_value}"
    return f"{prefix}{error.message}"
