"""The streaming accumulator protocol shared by every metric."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch


class Accumulator(ABC):
    """Fold batches of representations into a fixed-size state, then compute a metric once.

    ``update`` takes ``h`` of shape ``(batch, d_H)`` (torch or numpy, any float dtype) and an
    optional integer label vector. ``merge`` folds another accumulator of the same kind and
    configuration into this one (shards, workers, ranks), so one pass over all images and merged
    passes over shards give the same ``compute()``.

    An accumulator that needs per-image targets other than a class label may also define
    ``update_with_samples(h, labels, indices)``, where ``indices`` are the rows' positions in the
    data set's ``samples()``. The extraction then calls it instead of ``update``.
    """

    @abstractmethod
    def update(self, h: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray | None = None) -> None:
        """Fold one batch into the state."""

    @abstractmethod
    def merge(self, other: "Accumulator") -> "Accumulator":
        """Fold ``other`` into this accumulator and return self."""

    @abstractmethod
    def compute(self) -> Any:
        """Return the metric (a dataclass of plain values) for everything folded so far."""

    @abstractmethod
    def reset(self) -> None:
        """Clear the state."""
