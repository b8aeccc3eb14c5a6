"""The extraction loop: batches, skipped images, non-finite rows and per-sample indices."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from robsig_checks.adapters.base import ModelAdapter, Provenance
from robsig_checks.datasets.base import ImageDataset, Sample
from robsig_checks.extraction import ModelContext, extract


class MeanColourModel(ModelAdapter):
    """h = the mean RGB colour of the image; the third image's h is NaN."""

    class_names = ["r", "g", "b"]

    @property
    def preprocess(self):
        return lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)

    def representation(self, images):
        h = images.mean(dim=(2, 3))
        h[images[:, 0, 0, 0] == 3] = float("nan")
        return h

    def head(self):
        return torch.eye(3), None

    def provenance(self):
        return Provenance("mean", "test", "mean", "none", None)


class ListDataset(ImageDataset):
    def __init__(self, samples):
        self.name = "list"
        self._samples = samples

    def samples(self):
        return self._samples


def solid(value: int) -> Sample:
    return Sample(id=f"img{value}", load=lambda: Image.new("RGB", (2, 2), (value, value, value)), label=value % 3)


def broken() -> Sample:
    def load():
        buffer = io.BytesIO()
        Image.new("RGB", (32, 32)).save(buffer, format="JPEG")
        return Image.open(io.BytesIO(buffer.getvalue()[:50])).convert("RGB")

    return Sample(id="broken", load=load)


class Recorder:
    def __init__(self, with_samples: bool):
        self.rows, self.labels, self.indices = [], [], []
        if with_samples:
            self.update_with_samples = self._update_with_samples

    def update(self, h, labels=None):
        self.rows.append(np.array(h))
        self.labels.append(np.array(labels))

    def _update_with_samples(self, h, labels, indices):
        self.update(h, labels)
        self.indices.append(np.array(indices))


def test_indices_skip_unreadable_and_nonfinite():
    dataset = ListDataset([solid(1), broken(), solid(3), solid(4), solid(5)])
    plain, indexed = Recorder(with_samples=False), Recorder(with_samples=True)
    run = extract(ModelContext(MeanColourModel(), "mean"), dataset, {"plain": plain, "indexed": indexed}, batch_size=2)

    assert run.n_read == 4
    assert run.n_skipped == 1
    assert run.skipped[0][0] == "broken"
    assert run.n_nonfinite == 1
    assert np.concatenate(indexed.indices).tolist() == [0, 3, 4]
    assert plain.indices == []
    assert np.concatenate(plain.rows)[:, 0].tolist() == [1.0, 4.0, 5.0]
    assert np.concatenate(plain.labels).tolist() == [1, 1, 2]


def test_limit_reads_first_samples():
    dataset = ListDataset([solid(value) for value in (10, 11, 12, 13)])
    recorder = Recorder(with_samples=True)
    run = extract(ModelContext(MeanColourModel(), "mean"), dataset, {"r": recorder}, batch_size=3, limit=2)
    assert run.n_total == 2
    assert np.concatenate(recorder.indices).tolist() == [0, 1]
