"""The data set protocol: a finite, ordered list of images with optional ImageNet-1k labels."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from PIL import Image

#: Label of an image with no known ImageNet-1k class.
UNLABELLED = -1


@dataclass(frozen=True)
class Sample:
    """One image of a data set: a stable id, a loader and a class index (or ``UNLABELLED``).

    ``load`` returns an RGB PIL image or raises ``OSError`` (or ``ValueError``) when the image
    cannot be decoded. The extraction counts and skips such images.
    """

    id: str
    load: Callable[[], Image.Image]
    label: int = UNLABELLED


class ImageDataset(ABC):
    """A named, deterministic sequence of samples."""

    name: str

    @abstractmethod
    def samples(self) -> list[Sample]:
        """Return the samples in a fixed order (the same on every call and every machine)."""

    @property
    def description(self) -> str:
        """Return a one-line description for logs and reports (kind and location)."""
        return self.name

    def fingerprint(self, limit: int | None = None) -> str:
        """Return a SHA-256 over the ids and labels of the first ``limit`` samples."""
        digest = hashlib.sha256()
        for sample in self.samples()[:limit]:
            digest.update(f"{sample.id}\t{sample.label}\n".encode())
        return digest.hexdigest()


#: A data set factory registered under a kind name (``folder``, ``embedded-photos`` ...):
#: called with the data set's name, its path (None when the kind needs none) and the
#: remaining options of its suite entry.
DatasetFactory = Callable[..., ImageDataset]
