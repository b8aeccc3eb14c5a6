"""The whole extension surface of robsig.

Built-in adapters, data sets, checks and suites register through these hooks, exactly as a
third-party package does from a module listed under the ``robsig`` entry-point group::

    [project.entry-points.robsig]
    my_models = "my_package.robsig_plugin"

Every hook below is called on all registered plugins and the results are merged. Two plugins
that register the same name are an error that names both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from robsig_checks.adapters.base import ModelFactory
    from robsig_checks.checks.base import Check
    from robsig_checks.datasets.base import DatasetFactory

PROJECT_NAME = "robsig"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def robsig_model_adapters() -> dict[str, "ModelFactory"]:
    """Register model adapters.

    Return a mapping from a spec prefix to a factory. A spec ``PREFIX:REST`` (or the bare
    ``PREFIX``) is passed to the factory registered under ``PREFIX`` as ``factory(REST, spec)``;
    specs with an unregistered prefix go to the ``open_clip`` adapter (``ARCH:TAG``).
    The factory returns a :class:`~robsig_checks.adapters.base.ModelAdapter` or raises
    :class:`~robsig_checks.errors.RobsigError` with a message for the user.
    """


@hookspec
def robsig_datasets() -> dict[str, "DatasetFactory"]:
    """Register data set kinds.

    Return a mapping from a kind name (the ``kind:`` of a suite's data entry) to a factory
    called as ``factory(name, path, **options)`` that returns an
    :class:`~robsig_checks.datasets.base.ImageDataset`.
    """


@hookspec
def robsig_checks() -> dict[str, type["Check"]]:
    """Register checks: a mapping from the check name used in suites to its class."""


@hookspec
def robsig_suites() -> dict[str, Path]:
    """Register bundled suites: a mapping from a suite name to its YAML file."""
