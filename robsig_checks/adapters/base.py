"""The model adapter protocol: what the extraction and the checks may ask of a model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from robsig_checks.errors import RobsigError


@dataclass(frozen=True)
class Provenance:
    """Origin of a model's weights: enough to tell two runs apart in a report."""

    spec: str
    adapter: str
    architecture: str
    weights: str
    weights_sha256: str | None
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "adapter": self.adapter,
            "architecture": self.architecture,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "config": dict(self.config),
        }


class ModelAdapter(ABC):
    """A vision model seen through its last-layer representation and linear head.

    ``h = representation(preprocess(image))`` is the vector the head reads, and
    ``logits = h @ W.T + b`` with ``(W, b) = head()``. The head's rows follow the
    ImageNet-1k class order (sorted WordNet ids) unless ``class_names`` names other classes.
    """

    #: Number of classes and their names, in the order of the head's rows.
    class_names: list[str]

    #: Receives one-line progress messages during long preparation steps (such as building a zero-shot
    #: head); the pytest plugin points it at the terminal. None means silent.
    progress: Callable[[str], None] | None = None

    @property
    @abstractmethod
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        """Return the transform that the weights expect, from an RGB PIL image to a CHW tensor."""

    @abstractmethod
    def representation(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``h`` of shape ``(batch, d_H)`` for a batch of preprocessed images."""

    @abstractmethod
    def head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the linear head ``W`` of shape ``(d_Y, d_H)`` and its bias ``(d_Y,)`` or None."""

    @abstractmethod
    def provenance(self) -> Provenance:
        """Return the spec, weights location and hash, and configuration."""

    def layers(self) -> list[str]:
        """Return the names of intermediate layers this adapter can hook (none by default)."""
        return []

    def torch_module(self) -> torch.nn.Module | None:
        """Return the ``torch.nn.Module`` whose ``named_modules()`` the layer names refer to, if any."""
        module = getattr(self, "model", None)
        return module if isinstance(module, torch.nn.Module) else None

    @property
    def device(self) -> torch.device:
        """The device of the torch module's parameters (the CPU for an adapter without a module)."""
        module = self.torch_module()
        parameter = next(module.parameters(), None) if module is not None else None
        return parameter.device if parameter is not None else torch.device("cpu")

    def forward_with_layers(
        self, images: torch.Tensor, layers: Sequence[str], token: str = "cls"
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``h`` and the activations of ``layers`` from one forward pass, through forward hooks.

        Each activation becomes one vector per image: token sequences ``(batch, tokens, d)`` give the
        class token (``token="cls"``, position 0) or the mean over tokens (``token="mean"``), feature maps
        ``(batch, channels, height, width)`` are averaged over space, and other shapes are flattened.
        A layer name that does not exist, or a hook that never fires, raises :class:`RobsigError`
        naming the layer and listing the available ones.
        """
        if token not in TOKEN_POOLING:
            raise ValueError(f"token must be one of {', '.join(TOKEN_POOLING)}, got {token!r}")
        module = self.torch_module()
        if module is None:
            raise RobsigError(f"{type(self).__name__} exposes no torch module, so its layers cannot be hooked.")
        modules = dict(module.named_modules())
        unknown = [name for name in layers if name not in modules]
        if unknown:
            raise RobsigError(f"Layer(s) {', '.join(map(repr, unknown))} not found in {type(self).__name__}; "
                              f"available layers: {', '.join(self.layers()) or 'none'}.")

        captured: dict[str, Any] = {}
        handles = [
            modules[name].register_forward_hook(lambda _module, _inputs, output, name=name: captured.setdefault(name, output))
            for name in layers
        ]
        try:
            h = self.representation(images)
        finally:
            for handle in handles:
                handle.remove()

        silent = [name for name in layers if name not in captured]
        if silent:
            raise RobsigError(f"The forward hook of layer(s) {', '.join(map(repr, silent))} never fired: these "
                              f"modules are not used by the representation. Available layers: "
                              f"{', '.join(self.layers()) or 'none'}.")
        return h, {name: pool_activation(captured[name], images.shape[0], token) for name in layers}

    def to(self, device: str) -> "ModelAdapter":
        """Move the model to ``device`` and return self."""
        return self


#: Poolings that turn a token sequence into one vector per image.
TOKEN_POOLING = ("cls", "mean")


def pool_activation(output: Any, batch: int, token: str = "cls") -> torch.Tensor:
    """Reduce a module's output to ``(batch, features)`` float32: class token or token mean, spatial mean."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise RobsigError(f"a hooked layer returned {type(output).__name__}, not a tensor; choose another layer.")
    output = output.detach()
    if output.ndim == 3 and output.shape[0] != batch and output.shape[1] == batch:
        output = output.transpose(0, 1)  # (tokens, batch, width), as in sequence-first transformers
    if output.ndim == 3:
        output = output[:, 0] if token == "cls" else output.mean(dim=1)
    elif output.ndim == 4:
        output = output.mean(dim=(2, 3))
    elif output.ndim != 2:
        output = output.reshape(batch, -1)
    return output.float()


def check_image_batch(images: object) -> None:
    """Raise ``ValueError`` unless ``images`` is a tensor of shape ``(batch, channels, height, width)``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a tensor of shape (batch, 3, height, width), got {shape}")


#: A model factory registered under a prefix: called with the part of the spec after
#: ``PREFIX:`` (an empty string when the spec is the bare prefix) and the full spec.
ModelFactory = Callable[[str, str], ModelAdapter]
