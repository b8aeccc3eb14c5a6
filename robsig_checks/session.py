"""Planning and running the forward passes of a pytest session, independent of pytest itself.

Before any pass, every selected (check, model) item declares what it needs. The first item that uses
a (model, data set) pair triggers one pass, which feeds the accumulators of every check planned for
that pair. Models, data sets and passes are cached, and their errors too, so a broken model or folder fails
only the items that use it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from robsig_checks.errors import RobsigError
from robsig_checks.results import CheckResult, verdict_for

if TYPE_CHECKING:
    from robsig_checks.checks.base import Check
    from robsig_checks.datasets.base import ImageDataset
    from robsig_checks.extraction import DatasetRun, ModelContext
    from robsig_checks.options import RobsigOptions
    from robsig_checks.registry import Registry
    from robsig_checks.suite import CheckEntry, DataSpec, Suite

logger = logging.getLogger("robsig")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


@dataclass
class PassResult:
    """The computed accumulators of one (model, data set) pass and what the pass read."""

    computed: dict[str, Any]
    run: "DatasetRun"


@dataclass
class SignatureSession:
    """Caches and plans shared by every robsig item of one pytest process."""

    registry: "Registry"
    options: "RobsigOptions"
    #: Where live progress lines go (the terminal, in a pytest run); the ``robsig`` logger gets them anyway.
    write_line: Callable[[str], None] = print
    #: Passes over at least this many images print live progress lines; smaller ones only log them.
    live_threshold: int = 200
    plan: dict[tuple[str, tuple[Any, ...]], list["Check"]] = field(default_factory=dict)
    models: dict[str, "ModelContext | RobsigError"] = field(default_factory=dict)
    datasets: dict[tuple[Any, ...], "ImageDataset | RobsigError"] = field(default_factory=dict)
    passes: dict[tuple[str, tuple[Any, ...]], "PassResult | RobsigError"] = field(default_factory=dict)
    runs: dict[str, dict[str, "DatasetRun"]] = field(default_factory=dict)
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The loaded ``--robsig-baseline`` (a ``robsig_checks.baseline.Baseline``), or None.
    baseline: Any = None

    def add_to_plan(self, suite: "Suite", entry: "CheckEntry", model_spec: str) -> None:
        """Record that ``entry`` will run on ``model_spec``, so its accumulators join the shared pass."""
        check = self.registry.check_class(entry.check)(entry.params)
        for name in entry.data:
            spec = suite.data[name]
            if spec.available:
                self.plan.setdefault((model_spec, spec.key), []).append(check)

    def model(self, spec: str) -> "ModelContext":
        """Return the loaded model for ``spec``. A load error is cached and raised again on every call."""
        if spec not in self.models:
            from robsig_checks.extraction import ModelContext

            started = time.perf_counter()
            try:
                adapter = self.registry.create_model(spec).to(self.options.device)
                adapter.progress = self.write_line
                self.models[spec] = ModelContext(adapter, spec)
                self.provenance[spec] = self.models[spec].provenance
                logger.info("robsig: loaded %s in %.1f s", spec, time.perf_counter() - started)
            except RobsigError as error:
                self.models[spec] = error
            except (RuntimeError, OSError, ValueError, AssertionError) as error:
                self.models[spec] = RobsigError(
                    f"Failed to load model {spec!r} on device {self.options.device!r}: {type(error).__name__}: "
                    f"{_first_line(error)}. Check the weights and the device (e.g. --robsig-device cpu)."
                )
        cached = self.models[spec]
        if isinstance(cached, RobsigError):
            raise cached
        return cached

    def release_model(self, spec: str) -> None:
        """Free a model's weights once the next item uses another model; a later item reloads it."""
        if spec in self.models and not isinstance(self.models[spec], RobsigError):
            del self.models[spec]

    def dataset(self, spec: "DataSpec") -> "ImageDataset":
        if spec.key not in self.datasets:
            try:
                self.datasets[spec.key] = self.registry.create_dataset(spec.kind, spec.name, spec.path, dict(spec.options))
            except TypeError as error:
                self.datasets[spec.key] = RobsigError(f"data set {spec.name!r} (kind {spec.kind}): invalid options "
                                                      f"{dict(spec.options)} ({error}). Fix its `options:` in the suite.")
            except RobsigError as error:
                self.datasets[spec.key] = error
        cached = self.datasets[spec.key]
        if isinstance(cached, RobsigError):
            raise cached
        return cached

    def run_pass(self, model_spec: str, spec: "DataSpec") -> PassResult:
        """Run (once) the forward pass of ``model_spec`` over ``spec`` for every planned check."""
        key = (model_spec, spec.key)
        if key not in self.passes:
            self.passes[key] = self._run_pass(model_spec, spec)
        cached = self.passes[key]
        if isinstance(cached, RobsigError):
            raise cached
        return cached

    def _run_pass(self, model_spec: str, spec: "DataSpec") -> "PassResult | RobsigError":
        from robsig_checks.extraction import extract

        try:
            dataset = self.dataset(spec)
            model = self.model(model_spec)
        except RobsigError as error:
            return error

        checks = self.plan.get((model_spec, spec.key), [])
        try:
            layers, token, references = self._layer_plan(model, checks)
        except RobsigError as error:
            return error
        accumulators: dict[str, Any] = {}
        for check in checks:
            if not all(reference in references for reference in check.requirements().references):
                continue
            for key, factory in check.accumulators(model, dataset).items():
                if key not in accumulators:
                    accumulators[key] = factory()

        total = len(dataset.samples())
        if self.options.limit is not None:
            total = min(total, self.options.limit)
        live = total >= self.live_threshold
        start_line = f"robsig: {model_spec} on {spec.name}: reading {total} images ({dataset.description})"
        logger.info(start_line)
        if live:
            self.write_line(start_line)
        try:
            run = extract(model, dataset, accumulators, batch_size=self.options.batch_size, limit=self.options.limit,
                          device=self.options.device, progress=self._progress(model_spec, spec.name),
                          layers=layers, token=token, references=references)
        except RobsigError as error:
            return error
        if live:
            self.write_line(f"robsig: {model_spec} on {run.summary()}")
        self.runs.setdefault(model_spec, {})[spec.name] = run
        if run.n_read == 0:
            return RobsigError(f"data set {spec.name!r}: none of its {run.n_total} images could be read "
                               f"(first failure: {run.skipped[0][1] if run.skipped else 'none'}).")
        return PassResult({key: accumulator.compute() for key, accumulator in accumulators.items()}, run)

    def _layer_plan(self, model: "ModelContext", checks: list["Check"]) -> tuple[list[str], str, dict[str, Any]]:
        """Return the layers to hook, the token pooling and the reference models the checks of a pass need."""
        needs = [check.requirements() for check in checks]
        reference_specs = list(dict.fromkeys(spec for need in needs for spec in need.references))
        references = {}
        for spec in reference_specs:
            try:
                references[spec] = self.model(spec)
            except RobsigError:
                continue  # Reported by the checks that need it; the other checks of the pass still run.
        needs = [need for need in needs if all(spec in references for spec in need.references)]
        tokens = {need.token for need in needs if need.layers}
        if len(tokens) > 1:
            raise RobsigError(f"checks on {model.spec!r} ask for different token pooling ({', '.join(sorted(tokens))}) "
                              "in one pass; use the same `token` parameter in all of them.")

        layers: list[str] = []
        for need in needs:
            if need.layers == "all":
                shared = [name for name in model.adapter.layers()
                          if all(name in reference.adapter.layers() for reference in references.values())]
                if not shared:
                    raise RobsigError(
                        f"{model.spec!r} and its reference(s) {', '.join(reference_specs)} share no layer names "
                        f"({model.spec}: {', '.join(model.adapter.layers()) or 'none'}); list `layers` explicitly."
                    )
                layers.extend(shared)
            else:
                layers.extend(need.layers)
        return list(dict.fromkeys(layers)), tokens.pop() if tokens else "cls", references

    def _progress(self, model_spec: str, name: str) -> Callable[[int, int], None]:
        next_report = time.perf_counter() + 30.0

        def report(done: int, total: int) -> None:
            nonlocal next_report
            if done < total and time.perf_counter() >= next_report:
                logger.info("robsig: %s on %s: %d/%d images", model_spec, name, done, total)
                self.write_line(f"robsig: {model_spec} on {name}: {done}/{total} images")
                next_report = time.perf_counter() + 30.0

        return report

    def evaluate(self, suite: "Suite", entry: "CheckEntry", model_spec: str) -> CheckResult:
        """Run one check of a suite on one model over each of its data sets."""
        started = time.perf_counter()
        result = CheckResult(suite=suite.name, id=entry.id, check=entry.check, model=model_spec,
                             severity=entry.severity, params=dict(entry.params), position=entry.position)
        check = self.registry.check_class(entry.check)(entry.params)
        used_runs: dict[str, dict[str, Any]] = {}
        for name in entry.data:
            spec = suite.data[name]
            if not spec.available:
                if spec.required:
                    result.errors[name] = f"data set {name!r} has no path: pass --robsig-data {name}=PATH"
                else:
                    result.missing_data.append(name)
                continue
            try:
                passed = self.run_pass(model_spec, spec)
            except RobsigError as error:
                result.errors[name] = str(error)
                continue
            try:
                for reference in check.requirements().references:
                    self.model(reference)
                result.outcomes.append(check.evaluate(passed.computed, passed.run))
            except RobsigError as error:
                result.errors[name] = str(error)
                continue
            used_runs[name] = passed.run.to_dict()
        result.outcomes = check.combine(result.outcomes)
        if entry.relative:
            from robsig_checks.baseline import apply_relative

            result.errors.update(apply_relative(result.outcomes, entry, model_spec, used_runs, self.baseline,
                                                self.options.allow_data_mismatch))

        result.seconds = time.perf_counter() - started
        if result.errors:
            result.verdict = "error"
            result.message = "; ".join(dict.fromkeys(result.errors.values()))
            return result
        result.verdict = verdict_for(result.outcomes, entry.severity)
        if result.verdict == "skip":
            result.message = (f"no data: {', '.join(result.missing_data)} not given; pass "
                              + " ".join(f"--robsig-data {name}=PATH" for name in result.missing_data))
        else:
            result.message = "; ".join(outcome.explanation for outcome in result.outcomes)
        return result

