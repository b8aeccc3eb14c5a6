"""One plugin manager for robsig: built-ins and ``robsig`` entry points, merged into name tables."""

from __future__ import annotations

import contextvars
import difflib
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from robsig_checks import hookspecs
from robsig_checks.errors import RobsigError

if TYPE_CHECKING:
    from robsig_checks.adapters.base import ModelAdapter, ModelFactory
    from robsig_checks.checks.base import Check
    from robsig_checks.datasets.base import DatasetFactory, ImageDataset

#: The adapter that handles ``ARCH:TAG`` specs whose prefix no plugin registered.
DEFAULT_MODEL_ADAPTER = "open_clip"

#: The registry whose ``create_model`` is running, so composite adapters (WiSE-FT) build their parts
#: with the same plugins.
_BUILDING: contextvars.ContextVar["Registry | None"] = contextvars.ContextVar("robsig_registry", default=None)


def close_matches(name: str, choices: list[str]) -> str:
    """Return a ``did you mean`` hint for ``name`` among ``choices``, or an empty string."""
    matches = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return f" Did you mean {', '.join(matches)}?" if matches else ""


def _merge(hook_name: str, results: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for plugin_name, table in results:
        for key, value in (table or {}).items():
            if key in merged:
                raise RobsigError(
                    f"{hook_name}: the name {key!r} is registered by both {owners[key]!r} and {plugin_name!r}. "
                    "Uninstall one of the two packages or rename the entry in one of them."
                )
            merged[key] = value
            owners[key] = plugin_name
    return merged


@dataclass
class Registry:
    """The merged tables of every registered plugin."""

    plugin_manager: pluggy.PluginManager
    model_adapters: dict[str, "ModelFactory"]
    datasets: dict[str, "DatasetFactory"]
    checks: dict[str, type["Check"]]
    suites: dict[str, Path]

    def create_model(self, spec: str) -> "ModelAdapter":
        """Build the adapter for a model spec (``PREFIX:REST``, a bare ``PREFIX`` or ``ARCH:TAG``)."""
        spec = spec.strip()
        if not spec:
            raise RobsigError("Empty model spec. Pass e.g. --robsig-model=ViT-B-16:laion2b or efficientnet-lite0.")
        token = _BUILDING.set(self)
        try:
            return self._create_model(spec)
        finally:
            _BUILDING.reset(token)

    def _create_model(self, spec: str) -> "ModelAdapter":
        prefix, _, rest = spec.partition(":")
        if prefix in self.model_adapters:
            return self.model_adapters[prefix](rest, spec)
        if not rest:
            raise RobsigError(
                f"Unknown model {spec!r}: no adapter is registered under that name, and it is not of the "
                f"form ARCH:TAG for open_clip.{close_matches(spec, list(self.model_adapters))} "
                f"Registered adapters: {', '.join(sorted(self.model_adapters))}. "
                "Use timm:NAME for a timm classifier; `robsig list` shows everything registered."
            )
        return self.model_adapters[DEFAULT_MODEL_ADAPTER](spec, spec)

    def create_dataset(self, kind: str, name: str, path: str | None, options: dict[str, Any]) -> "ImageDataset":
        """Build a data set of a registered kind."""
        if kind not in self.datasets:
            raise RobsigError(
                f"Unknown data set kind {kind!r} for data set {name!r}.{close_matches(kind, list(self.datasets))} "
                f"Registered kinds: {', '.join(sorted(self.datasets))}."
            )
        return self.datasets[kind](name, path, **options)

    def check_class(self, name: str) -> type["Check"]:
        """Return the class of a registered check."""
        if name not in self.checks:
            raise RobsigError(
                f"Unknown check {name!r}.{close_matches(name, list(self.checks))} "
                f"Registered checks: {', '.join(sorted(self.checks))}."
            )
        return self.checks[name]


def _collect(plugin_manager: pluggy.PluginManager, hook_name: str) -> dict[str, Any]:
    hook = getattr(plugin_manager.hook, hook_name)
    results = []
    for implementation in reversed(hook.get_hookimpls()):
        table = implementation.function()
        results.append((implementation.plugin_name, table))
    return _merge(hook_name, results)


def build_registry(extra_plugins: tuple[Any, ...] = (), load_entry_points: bool = True) -> Registry:
    """Create the plugin manager, register built-ins, entry points and ``extra_plugins``, merge tables."""
    from robsig_checks import builtins

    plugin_manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    plugin_manager.add_hookspecs(hookspecs)
    plugin_manager.register(builtins, name="robsig.builtins")
    if load_entry_points:
        plugin_manager.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    for plugin in extra_plugins:
        plugin_manager.register(plugin)
    return Registry(
        plugin_manager=plugin_manager,
        model_adapters=_collect(plugin_manager, "robsig_model_adapters"),
        datasets=_collect(plugin_manager, "robsig_datasets"),
        checks=_collect(plugin_manager, "robsig_checks"),
        suites=_collect(plugin_manager, "robsig_suites"),
    )


def current_registry() -> Registry:
    """Return the registry that is building a model right now, or the default registry."""
    return _BUILDING.get() or default_registry()


@functools.lru_cache(maxsize=1)
def default_registry() -> Registry:
    """Return the registry of built-ins and installed plugins, built once per process."""
    return build_registry()
