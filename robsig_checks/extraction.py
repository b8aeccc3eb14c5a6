"""One forward pass per (model, data set), feeding every accumulator the session's checks asked for."""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from robsig_checks.errors import RobsigError

if TYPE_CHECKING:
    from robsig_checks.adapters.base import ModelAdapter
    from robsig_checks.datasets.base import ImageDataset, Sample
    from robsig_checks.metrics.base import Accumulator

logger = logging.getLogger("robsig")

#: Exceptions that mean "this image cannot be decoded": counted and skipped, never fatal.
IMAGE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)

#: How many skipped images are listed by id in reports; the rest are only counted.
MAX_LISTED_SKIPS = 20


class ModelContext:
    """A loaded model with its head and the head's SVD, computed once and shared by every check."""

    def __init__(self, adapter: "ModelAdapter", spec: str) -> None:
        self.adapter = adapter
        self.spec = spec

    @functools.cached_property
    def head(self) -> tuple[np.ndarray, np.ndarray | None]:
        weight, bias = self.adapter.head()
        weight = weight.detach().to("cpu", torch.float64).numpy()
        bias = None if bias is None else bias.detach().to("cpu", torch.float64).numpy()
        return weight, bias

    @functools.cached_property
    def svd(self) -> Any:
        from robsig_checks.metrics import head_svd

        return head_svd(self.head[0])

    @functools.cached_property
    def provenance(self) -> dict[str, Any]:
        return self.adapter.provenance().to_dict()


@dataclass
class DatasetRun:
    """Counts of one pass (read, skipped with reasons, labelled, non-finite), its time and data fingerprint."""

    dataset: str
    description: str
    n_total: int
    n_read: int = 0
    n_skipped: int = 0
    n_labelled: int = 0
    n_nonfinite: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    fingerprint: str = ""

    @property
    def n_scored(self) -> int:
        """Images whose activations reached the accumulators."""
        return self.n_read - self.n_nonfinite

    def summary(self) -> str:
        """Return the one log line of this pass."""
        line = (
            f"{self.dataset}: {self.n_read} images read, {self.n_skipped} skipped, "
            f"{self.n_labelled} labelled in {self.seconds:.1f} s"
        )
        if self.n_nonfinite:
            line += f"; {self.n_nonfinite} with NaN or infinite activations excluded"
        return line

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "description": self.description,
            "n_total": self.n_total,
            "n_read": self.n_read,
            "n_skipped": self.n_skipped,
            "n_labelled": self.n_labelled,
            "n_nonfinite": self.n_nonfinite,
            "skipped": [{"id": sample_id, "reason": reason} for sample_id, reason in self.skipped],
            "seconds": round(self.seconds, 3),
            "fingerprint": self.fingerprint,
        }


#: The name under which ``h`` joins the layer activations given to layer-wise accumulators.
REPRESENTATION = "representation"


def _load(sample: "Sample", transforms: Sequence[Callable[[Image.Image], torch.Tensor]]) -> list[torch.Tensor] | str:
    """Decode one image and preprocess it for each model, or return the reason it failed."""
    try:
        image = sample.load()
        return [transform(image) for transform in transforms]
    except IMAGE_ERRORS as error:
        return f"{type(error).__name__}: {error}"


def extract(
    model: ModelContext,
    dataset: "ImageDataset",
    accumulators: Mapping[str, "Accumulator"],
    batch_size: int = 32,
    limit: int | None = None,
    device: str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    layers: Sequence[str] = (),
    token: str = "cls",
    references: Mapping[str, ModelContext] | None = None,
) -> DatasetRun:
    """Run ``model`` once over ``dataset`` and fold every batch of ``h`` into every accumulator.

    An accumulator that defines ``update_with_samples(h, labels, indices)`` receives, instead of
    ``update``, the positions in ``dataset.samples()`` of the rows too (for per-image targets that a
    class label cannot carry). When ``layers`` are given, the activations of those layers (one vector per
    image, see :meth:`ModelAdapter.forward_with_layers`) and ``h`` as ``"representation"`` go to
    accumulators that define ``update_with_layers(h, labels, layers, references)``; ``references`` maps
    a model spec to a reference model that sees the same images in the same batches, and its layers
    arrive in ``references[spec]``. Images that fail to decode are counted and skipped. Rows whose ``h``
    has NaN or infinite values are counted and left out, so every accumulator sees the same rows.
    """
    started = time.perf_counter()
    samples = dataset.samples()
    if limit is not None:
        samples = samples[:limit]
    run = DatasetRun(
        dataset=dataset.name,
        description=dataset.description,
        n_total=len(samples),
        fingerprint=dataset.fingerprint(limit),
    )
    references = dict(references or {})
    contexts = [model, *references.values()]
    transforms = [context.adapter.preprocess for context in contexts]

    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(samples), batch_size):
            batch = samples[start : start + batch_size]
            loaded = list(pool.map(lambda sample: _load(sample, transforms), batch))
            tensors, labels, indices = [], [], []
            for offset, (sample, item) in enumerate(zip(batch, loaded)):
                if isinstance(item, str):
                    run.n_skipped += 1
                    if len(run.skipped) < MAX_LISTED_SKIPS:
                        run.skipped.append((sample.id, item))
                    continue
                tensors.append(item)
                labels.append(sample.label)
                indices.append(start + offset)
            if tensors:
                images = [torch.stack([item[position] for item in tensors]) for position in range(len(contexts))]
                batch_data = _Batch(np.asarray(labels, dtype=np.int64), np.asarray(indices, dtype=np.int64),
                                    list(layers), token, device)
                _fold_batch(model, images[0], dict(zip(references, images[1:])), references, batch_data,
                            accumulators, run)
            if progress is not None:
                progress(min(start + batch_size, len(samples)), len(samples))

    run.seconds = time.perf_counter() - started
    logger.info("robsig: %s on %s", model.spec, run.summary())
    return run


@dataclass
class _Batch:
    labels: np.ndarray
    indices: np.ndarray
    layers: list[str]
    token: str
    device: str


def _forward(model: ModelContext, images: torch.Tensor, batch: _Batch) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Return ``h`` and, when layers are requested, their activations with ``h`` as ``"representation"``."""
    with torch.inference_mode():
        if batch.layers:
            h, activations = model.adapter.forward_with_layers(images.to(batch.device), batch.layers, batch.token)
        else:
            h, activations = model.adapter.representation(images.to(batch.device)), {}
    h = h.detach().to("cpu", torch.float64).numpy()
    if h.ndim != 2 or h.shape[0] != len(batch.labels):
        raise RobsigError(
            f"Model {model.spec!r} returned a representation of shape {tuple(h.shape)} for a batch of "
            f"{len(batch.labels)} images; the adapter must return (batch, d_H)."
        )
    layers = {name: value.to("cpu", torch.float64).numpy() for name, value in activations.items()}
    if batch.layers:
        layers[REPRESENTATION] = h
    return h, layers


def _fold_batch(
    model: ModelContext,
    images: torch.Tensor,
    reference_images: dict[str, torch.Tensor],
    references: Mapping[str, ModelContext],
    batch: _Batch,
    accumulators: Mapping[str, "Accumulator"],
    run: DatasetRun,
) -> None:
    h, layers = _forward(model, images, batch)
    reference_layers = {spec: _forward(references[spec], reference_images[spec], batch)[1] for spec in references}

    finite = np.isfinite(h).all(axis=1)
    run.n_read += len(batch.labels)
    run.n_nonfinite += int((~finite).sum())
    run.n_labelled += int((batch.labels[finite] >= 0).sum())
    if not finite.any():
        return
    h, labels, indices = h[finite], batch.labels[finite], batch.indices[finite]
    layers = {name: value[finite] for name, value in layers.items()}
    reference_layers = {spec: {name: value[finite] for name, value in by_name.items()}
                        for spec, by_name in reference_layers.items()}
    for accumulator in accumulators.values():
        if hasattr(accumulator, "update_with_layers"):
            accumulator.update_with_layers(h, labels, layers, reference_layers)
        elif hasattr(accumulator, "update_with_samples"):
            accumulator.update_with_samples(h, labels, indices)
        else:
            accumulator.update(h, labels)
