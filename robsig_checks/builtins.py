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
        "broden": lazy_factory(
            "robsig_checks.datasets.broden:create_broden_dataset",
            "Broden in the NetDissect layout (broden1_224): images with concept labels (options: split, categories)",
        ),
        **imagenet_variant_kinds(),
    }


def imagenet_variant_kinds() -> dict[str, Callable[..., Any]]:
    """Return the data set kinds of ImageNet and its five shifts, in their released folder layouts."""
    descriptions = {
        "imagenet": ("create_imagenet", "ImageNet val: wnid folders, or flat files with wnids or a labels_file"),
        "imagenet-v2": ("create_imagenet_v2", "ImageNet-V2: folders 0..999, label = int(folder name)"),
        "imagenet-r": ("create_imagenet_r", "ImageNet-R: 200 wnid folders, logits masked to them (mask_logits)"),
        "imagenet-sketch": ("create_imagenet_sketch", "ImageNet-Sketch: 1,000 wnid folders"),
        "objectnet": ("create_objectnet", "ObjectNet: 313 class folders, the 113 shared with ImageNet scored"),
        "imagenet-a": ("create_imagenet_a", "ImageNet-A: 200 wnid folders, logits masked to them (mask_logits)"),
    }
    return {
        kind: lazy_factory(f"robsig_checks.datasets.imagenet_variants:{function}", description)
        for kind, (function, description) in descriptions.items()
    }


@hookimpl
def robsig_checks() -> dict[str, type]:
    from robsig_checks.checks.cka import CKALastLayerDrop
    from robsig_checks.checks.concepts import UniqueConcepts
    from robsig_checks.checks.effective_robustness import EffectiveRobustness
    from robsig_checks.checks.kurtosis import ActivationKurtosis
    from robsig_checks.checks.privileged_directions import PrivilegedDirectionTail
    from robsig_checks.checks.pruning import PruningTolerance

    checks = (ActivationKurtosis, PrivilegedDirectionTail, PruningTolerance, EffectiveRobustness, UniqueConcepts,
              CKALastLayerDrop)
    return {cls.name: cls for cls in checks}


@hookimpl
def robsig_suites() -> dict[str, Path]:
    folder = resources.files("robsig_checks.suites")
    return {entry.name[: -len(".yaml")]: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}
