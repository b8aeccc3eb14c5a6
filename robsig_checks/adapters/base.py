"""The model adapter protocol: what the extraction and the checks may ask of a model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from PIL import Image


@dataclass(frozen=True)
class Provenance:
    """Where a model's weights came from: enough to tell two runs apart in a report."""

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
    ImageNet-1k class order (sorted WordNet ids) unless ``class_names`` says otherwise.
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

    def to(self, device: str) -> "ModelAdapter":
        """Move the model to ``device`` and return self."""
        return self


def check_image_batch(images: object) -> None:
    """Raise ``ValueError`` unless ``images`` is a tensor of shape ``(batch, channels, height, width)``."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"images must be a tensor of shape (batch, 3, height, width), got {shape}")


#: A model factory registered under a prefix: called with the part of the spec after
#: ``PREFIX:`` (an empty string when the spec is the bare prefix) and the full spec.
ModelFactory = Callable[[str, str], ModelAdapter]
