"""pytest glue: options, suite collection, one item per (check, model), verdicts and reports.

The plugin is loaded through the ``pytest11`` entry point and stays inert unless a robsig option
(command line or ini) or a suite file is given, so it never changes other test runs.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

from robsig_checks.errors import RobsigError
from robsig_checks.options import RobsigOptions, add_options
from robsig_checks.results import CheckResult

SUITE_SUFFIXES = (".yaml", ".yml")
STATE_KEY = pytest.StashKey["RobsigPlugin"]()


class RobsigWarning(UserWarning):
    """A check with severity ``warn`` whose threshold was not met."""


class CheckFailed(Exception):
    """Raised by an item whose check failed; shown as its one-line explanation."""


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _explicit_suites(config: pytest.Config) -> list[Path]:
    paths = []
    for arg in config.args:
        candidate = Path(arg.split("::")[0])
        if candidate.suffix in SUITE_SUFFIXES and candidate.is_file():
            paths.append(candidate.resolve())
    return paths


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "robsig: a robustness-signature check collected from a robsig suite")
    try:
        options = RobsigOptions.from_config(config)
    except RobsigError as error:
        raise pytest.UsageError(str(error)) from None
    explicit = _explicit_suites(config)
    if not options.given and not explicit:
        return
    plugin = RobsigPlugin(config, options, explicit)
    config.stash[STATE_KEY] = plugin
    config.pluginmanager.register(plugin, "robsig-session")


def _registry_with_local_plugins(config: pytest.Config, default_registry: Any) -> Any:
    """Return the registry, extended by conftest modules and pytest plugins that implement robsig hooks."""
    from robsig_checks import hookspecs
    from robsig_checks.registry import build_registry

    names = [name for name in dir(hookspecs) if name.startswith("robsig_")]
    local = [plugin for plugin in config.pluginmanager.get_plugins()
             if plugin is not None and any(callable(getattr(plugin, name, None)) for name in names)]
    return build_registry(tuple(local)) if local else default_registry()


def _check_option_syntax(options: RobsigOptions) -> None:
    """Reject malformed ``NAME=PATH`` and ``CHECK.PARAM=VALUE`` options before anything is collected."""
    from robsig_checks.suite import parse_assignment

    for text in options.data:
        parse_assignment(text, "--robsig-data")
    for text in options.overrides:
        target, _ = parse_assignment(text, "--robsig-set")
        check, dot, param = target.partition(".")
        if not dot or not check or not param:
            raise RobsigError(f"--robsig-set {text!r}: expected CHECK.PARAM=VALUE, e.g. --robsig-set kurtosis.min=4")


class RobsigPlugin:
    """The per-run state of an active robsig session and the hooks that need it."""

    def __init__(self, config: pytest.Config, options: RobsigOptions, explicit: list[Path]) -> None:
        from robsig_checks.registry import default_registry
        from robsig_checks.session import SignatureSession

        self.config = config
        self.options = options
        try:
            self.registry = _registry_with_local_plugins(config, default_registry)
            _check_option_syntax(options)
        except RobsigError as error:
            raise pytest.UsageError(str(error)) from None
        self.bundled: set[Path] = set()
        self.suite_paths = explicit or [self._resolve_suite(options.suite or "default")]
        if options.suite and explicit:
            self.suite_paths.insert(0, self._resolve_suite(options.suite))
        self._add_suite_args(config, explicit)
        self.session = SignatureSession(self.registry, options, write_line=self._write_line,
                                        live_threshold=0 if config.get_verbosity() > 0 else 200)
        self.results: list[dict[str, Any]] = []
        self.suites: list[Any] = []
        self.started = time.time()
        self.written: list[str] = []
        self.baseline = None
        if options.baseline is not None:
            from robsig_checks.baseline import load_baseline

            try:
                self.baseline = load_baseline(options.baseline)
            except RobsigError as error:
                raise pytest.UsageError(str(error)) from None
        self.session.baseline = self.baseline

    # -- suites --------------------------------------------------------------------------------

    def _resolve_suite(self, value: str) -> Path:
        path = Path(value).expanduser()
        if path.suffix in SUITE_SUFFIXES or path.exists():
            if not path.is_file():
                raise pytest.UsageError(f"--robsig-suite {value}: file not found. Give a YAML file or one of the "
                                        f"bundled suites: {', '.join(sorted(self.registry.suites))}.")
            return path.resolve()
        if value not in self.registry.suites:
            raise pytest.UsageError(f"--robsig-suite {value}: no such file and no bundled suite of that name; "
                                    f"bundled suites: {', '.join(sorted(self.registry.suites))}.")
        resolved = self.registry.suites[value].resolve()
        self.bundled.add(resolved)
        return resolved

    def _add_suite_args(self, config: pytest.Config, explicit: list[Path]) -> None:
        """Make pytest collect the suites: alone when no path was given, else next to the given paths."""
        given = {Path(arg.split("::")[0]).resolve() for arg in config.args}
        missing = [str(path) for path in self.suite_paths if path not in given]
        if not missing:
            return
        if config.args_source != pytest.Config.ArgsSource.ARGS and not explicit:
            config.args[:] = missing
        else:
            config.args.extend(missing)

    @pytest.hookimpl
    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        resolved = file_path.resolve()
        if resolved not in self.suite_paths:
            return None
        if resolved in self.bundled:
            return SuiteFile.from_parent(parent, path=file_path, nodeid=file_path.name)
        return SuiteFile.from_parent(parent, path=file_path)

    # -- running -------------------------------------------------------------------------------

    def _write_line(self, line: str) -> None:
        """Write a progress line to the terminal, past output capturing."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None or hasattr(self.config, "workerinput"):
            return
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.ensure_newline()
            reporter.write_line(line)

    @pytest.hookimpl
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            if isinstance(item, SignatureItem):
                self.session.add_to_plan(item.suite, item.entry, item.model_spec)

    @pytest.hookimpl
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        if isinstance(item, SignatureItem):
            if not isinstance(nextitem, SignatureItem) or nextitem.model_spec != item.model_spec:
                self.session.release_model(item.model_spec)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        result = getattr(item, "robsig_result", None)
        if report.when == "call" and result is not None:
            report.robsig_result = result.to_dict()
            report.robsig_provenance = self.session.provenance.get(result.model)
            runs = self.session.runs.get(result.model, {})
            report.robsig_runs = {name: run.to_dict() for name, run in runs.items()}
        return report

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        result = getattr(report, "robsig_result", None)
        if result is None:
            return
        self.results.append(result)
        if report.robsig_provenance:
            self.session.provenance.setdefault(result["model"], report.robsig_provenance)
        for name, run in (report.robsig_runs or {}).items():
            self.session.runs.setdefault(result["model"], {}).setdefault(name, run)

    # -- reporting -----------------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        from robsig_checks.report.terminal import collection_lines, header_lines

        lines = header_lines(self)
        if getattr(config.option, "dist", "no") != "no":
            # Under pytest-xdist the controller collects nothing, so the suite summary is read here instead.
            suites = []
            for path in self.suite_paths:
                try:
                    suites.append(prepare_suite(path, self))
                except RobsigError:
                    continue  # the worker's invalid-suite item reports it
            lines += collection_lines(suites, self.options)
        return lines

    def pytest_report_collectionfinish(self, config: pytest.Config, items: list[pytest.Item]) -> list[str]:
        from robsig_checks.report.terminal import collection_lines

        return collection_lines(self.suites, self.options)

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from robsig_checks.report.terminal import write_summary

        if self.results:
            write_summary(terminalreporter, self.results, self.session.runs)
        for line in self.written:
            terminalreporter.write_line(line)

    @pytest.hookimpl
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        options = self.options
        if hasattr(self.config, "workerinput"):
            return
        if not any((options.report, options.html, options.plots, options.save_baseline)):
            return
        from robsig_checks.report.json_report import build_report
        from robsig_checks.report.outputs import write_outputs

        self.written = write_outputs(build_report(self), options)


def prepare_suite(path: Path, plugin: RobsigPlugin) -> Any:
    """Load a suite and apply the run's data paths, data root, reference model and overrides to it."""
    from robsig_checks.suite import (apply_data_paths, apply_param_overrides, apply_reference, load_suite,
                                     parse_assignment)

    options = plugin.options
    suite = load_suite(path, plugin.registry)
    apply_data_paths(suite, dict(parse_assignment(text, "--robsig-data") for text in options.data))
    if options.data_root is not None:
        from robsig_checks.data_root import apply_data_root

        apply_data_root(suite, options.data_root)
    if options.reference:
        apply_reference(suite, options.reference, plugin.registry)
    apply_param_overrides(suite, options.overrides, plugin.registry)
    return suite


class SuiteFile(pytest.File):
    """A YAML suite: one item per (model, check), grouped by model so each model is loaded once."""

    def collect(self) -> Iterator[pytest.Item]:
        plugin: RobsigPlugin = self.config.stash[STATE_KEY]
        options = plugin.options
        try:
            suite = prepare_suite(self.path, plugin)
            models = options.models or suite.models
            if not models:
                raise RobsigError(f"{self.path}: no model to check. Pass --robsig-model=SPEC (e.g. "
                                  "ViT-B-16:laion2b) or list `models:` in the suite.")
        except RobsigError as error:
            # One failing item instead of a collection error, so the other suites and tests still run.
            yield InvalidSuiteItem.from_parent(self, name="invalid-suite", error=error)
            return

        plugin.suites.append(suite)
        for model_spec in dict.fromkeys(models):
            for entry in suite.checks:
                yield SignatureItem.from_parent(self, name=f"{entry.id}[{model_spec}]", suite=suite, entry=entry,
                                                model_spec=model_spec)

class InvalidSuiteItem(pytest.Item):
    """Stands for a suite that could not be loaded and fails with the reason."""

    def __init__(self, *, error: RobsigError, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error

    def runtest(self) -> None:
        raise self.error

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        return str(excinfo.value)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, "invalid robsig suite"


class SignatureItem(pytest.Item):
    """One check of a suite on one model."""

    def __init__(self, *, suite: Any, entry: Any, model_spec: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.entry = entry
        self.model_spec = model_spec
        self.robsig_result: Any = None
        self.add_marker(pytest.mark.robsig)

    def runtest(self) -> None:
        plugin: RobsigPlugin = self.config.stash[STATE_KEY]
        try:
            result = plugin.session.evaluate(self.suite, self.entry, self.model_spec)
        except Exception as error:
            # Recorded before re-raising, so the summary and the JSON report show the error too.
            self.robsig_result = CheckResult(
                suite=self.suite.name, id=self.entry.id, check=self.entry.check, model=self.model_spec,
                severity=self.entry.severity, params=dict(self.entry.params), verdict="error",
                message=f"{type(error).__name__}: {error}", position=self.entry.position,
            )
            raise
        self.robsig_result = result
        for outcome in result.outcomes:
            for name, value in outcome.metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.user_properties.append((f"robsig.{outcome.dataset}.{name}", value))
            if outcome.metric not in outcome.metrics and outcome.value is not None:
                self.user_properties.append((f"robsig.{outcome.dataset}.{outcome.metric}", outcome.value))
            for comparison in outcome.relative:
                if comparison["baseline"] is not None:
                    self.user_properties.append((f"robsig.{outcome.dataset}.{comparison['metric']}.baseline",
                                                 comparison["baseline"]))
            self.user_properties.append((f"robsig.{outcome.dataset}.threshold", outcome.threshold))
        self.user_properties.append(("robsig.verdict", result.verdict))

        if result.verdict == "error":
            raise RobsigError(result.message)
        if result.verdict == "skip":
            pytest.skip(result.message)
        if result.verdict == "fail":
            raise CheckFailed(result.message)
        if result.verdict == "warn":
            warnings.warn_explicit(RobsigWarning(f"{self.entry.id}[{self.model_spec}]: {result.message}"),
                                   RobsigWarning, filename=str(self.path), lineno=self.entry.line)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, (CheckFailed, RobsigError)):
            return f"{self.entry.check} on {self.model_spec}: {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.entry.line - 1, f"{self.entry.id}[{self.model_spec}] ({self.entry.check})"
