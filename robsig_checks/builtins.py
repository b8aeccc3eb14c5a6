"""Built-in adapters, data sets, checks and suites, registered through the public hooks.

Factories are imported lazily so that loading the pytest plugin never imports torch, open_clip or timm.
"""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from robsig_checks.hookspecs import hookimpl


def lazy_factory(dotted: str, description: str) -> Callable[..., Any]:
    """Return a callable that imports ``module:function`` on first call and forwards to it.

    ``description`` becomes the callable's docstring, which ``robsig list`` shows.
    """
    module_name, _, attribute = dotted.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        function = getattr(importlib.import_module(module_name), attribute)
        return function(*args, **kwargs)

    call.__qualname__ = call.__name__ = attribute
    call.__doc__ = description
    return call


@hookimpl
def robsig_model_adapters() -> dict[str, Callable[..., Any]]:
    return {
        "open_clip": lazy_factory(
            "robsig_checks.adapters.open_clip:create_open_clip_adapter",
            "CLIP models: ARCH:TAG (ViT-B-16:laion2b) or ARCH:/path/weights, zero-shot ImageNet head",
        ),
        "timm": lazy_factory(
            "robsig_checks.adapters.timm:create_timm_adapter",
            "supervised classifiers: timm:NAME[:WEIGHTS_PATH], the model's own linear head",
        ),
        "wiseft": lazy_factory(
            "robsig_checks.adapters.wiseft:create_wiseft_adapter",
            "WiSE-FT weight interpolation: wiseft:ALPHA:BASE_SPEC:FINETUNED_SPEC",
        ),
    }


@hookimpl
def robsig_datasets() -> dict[str, Callable[..., Any]]:
    return {
        "folder": lazy_factory(
            "robsig_checks.datasets.folder:create_folder_dataset",
            "a folder of images, labelled by the WordNet id in the file or folder name (options: labels, extensions)",
        ),
        "embedded-photos": lazy_factory(
            "robsig_checks.datasets.embedded:create_embedded_photos",
            "the real photographs shipped inside scikit-image, scikit-learn and matplotlib (unlabelled)",
        ),
    }


@hookimpl
def robsig_checks() -> dict[str, type]:
    from robsig_checks.checks.kurtosis import ActivationKurtosis
    from robsig_checks.checks.privileged_directions import PrivilegedDirectionTail
    from robsig_checks.checks.pruning import PruningTolerance

    return {cls.name: cls for cls in (ActivationKurtosis, PrivilegedDirectionTail, PruningTolerance)}


@hookimpl
def robsig_suites() -> dict[str, Path]:
    folder = resources.files("robsig_checks.suites")
    return {entry.name[: -len(".yaml")]: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}
