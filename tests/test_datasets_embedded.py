"""Tests of the data set of photographs shipped inside scikit-image, scikit-learn and matplotlib."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robsig_checks.datasets import (
    UNLABELLED,
    EmbeddedPhotos,
    ImageFolderDataset,
    create_embedded_photos,
    embedded,
)
from robsig_checks.errors import RobsigError


@pytest.fixture(scope="module")
def photos() -> EmbeddedPhotos:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return EmbeddedPhotos()


def test_embedded_has_ten_or_more_photos(photos):
    samples = photos.samples()
    ids = [sample.id for sample in samples]

    assert len(samples) >= 10
    assert len(set(ids)) == len(ids)
    assert all(
        re.fullmatch(r"(skimage|sklearn|matplotlib)/[a-z_]+\.(png|jpg)", sample_id)
        for sample_id in ids
    )
    assert all(sample.label == UNLABELLED for sample in samples)


def test_embedded_ids_in_fixed_order(photos):
    ids = [sample.id for sample in photos.samples()]

    assert ids == sorted(ids)
    assert ids[0] == "matplotlib/grace_hopper.jpg"
    assert "skimage/chelsea.png" in ids
    assert "sklearn/china.jpg" in ids
    assert "sklearn/flower.jpg" in ids
    assert EmbeddedPhotos().fingerprint() == photos.fingerprint()


def test_embedded_photos_decode_to_rgb(photos):
    for sample in photos.samples():
        image = sample.load()
        pixels = np.asarray(image)

        assert image.mode == "RGB", sample.id
        assert min(image.size) >= 150, (sample.id, image.size)
        assert max(image.size) <= 2000, (sample.id, image.size)
        # A photograph has texture: a constant or nearly constant image is not one.
        assert pixels.std() > 10, sample.id
        assert len(np.unique(pixels)) > 50, sample.id


def test_embedded_pixels_match_skimage_reader(photos):
    skimage_data = pytest.importorskip("skimage.data")
    by_id = {sample.id: sample for sample in photos.samples()}

    chelsea = np.asarray(by_id["skimage/chelsea.png"].load())
    camera = np.asarray(by_id["skimage/camera.png"].load())

    assert np.array_equal(chelsea, skimage_data.chelsea())
    for channel in range(3):
        assert np.array_equal(camera[..., channel], skimage_data.camera())


def test_embedded_pixels_match_sklearn_loader(photos):
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    by_id = {sample.id: sample for sample in photos.samples()}

    reference = sklearn_datasets.load_sample_images()
    names = [Path(filename).name for filename in reference.filenames]

    for name, pixels in zip(names, reference.images, strict=True):
        assert np.array_equal(np.asarray(by_id[f"sklearn/{name}"].load()), pixels), name


def test_embedded_pixels_match_matplotlib_sample(photos):
    pytest.importorskip("matplotlib")
    import matplotlib
    import matplotlib.image

    by_id = {sample.id: sample for sample in photos.samples()}
    reference = matplotlib.image.imread(
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    )

    assert np.array_equal(np.asarray(by_id["matplotlib/grace_hopper.jpg"].load()), reference)


def test_embedded_description(photos):
    assert photos.description == (
        f"embedded photos, {len(photos.samples())} images from matplotlib, scikit-image, "
        "scikit-learn, 0 labelled"
    )


def test_missing_package_warns_and_skips(monkeypatch):
    real_folder = embedded._package_folder
    monkeypatch.setattr(
        embedded,
        "_package_folder",
        lambda package: None if package == "sklearn" else real_folder(package),
    )

    with pytest.warns(
        UserWarning, match="scikit-learn is not installed, so its 2 photos are skipped"
    ):
        dataset = EmbeddedPhotos()
    ids = [sample.id for sample in dataset.samples()]

    assert len(ids) == len(embedded.PHOTOS) - 2
    assert not any(sample_id.startswith("sklearn/") for sample_id in ids)
    assert "scikit-learn" not in dataset.description


def test_missing_file_warns_and_skips(monkeypatch, tmp_path):
    real_folder = embedded._package_folder
    monkeypatch.setattr(
        embedded,
        "_package_folder",
        lambda package: tmp_path if package == "matplotlib" else real_folder(package),
    )

    with pytest.warns(
        UserWarning, match=r"grace_hopper\.jpg is missing from the installed matplotlib"
    ):
        dataset = EmbeddedPhotos()
    ids = [sample.id for sample in dataset.samples()]

    assert "matplotlib/grace_hopper.jpg" not in ids
    assert len(ids) == len(embedded.PHOTOS) - 1


def test_no_photos_found_error(monkeypatch):
    monkeypatch.setattr(embedded, "_package_folder", lambda package: None)

    with pytest.warns(UserWarning):
        with pytest.raises(RobsigError) as raised:
            EmbeddedPhotos("nothing")
    message = str(raised.value)

    assert "data set 'nothing'" in message
    assert f"none of the {len(embedded.PHOTOS)} embedded photos were found" in message
    assert "kind 'folder'" in message


def test_package_folder_absent_package():
    assert embedded._package_folder("robsig_no_such_package_xyz") is None


def test_embedded_rejects_empty_name():
    with pytest.raises(RobsigError, match="data set name must be a non-empty str, got ''"):
        EmbeddedPhotos("")


def test_factory_builds_embedded_photos():
    dataset = create_embedded_photos("pics")

    assert isinstance(dataset, EmbeddedPhotos)
    assert dataset.name == "pics"
    assert len(dataset.samples()) == len(embedded.PHOTOS)


def test_factory_rejects_path(tmp_path):
    with pytest.raises(RobsigError, match="kind 'embedded-photos' takes no path"):
        create_embedded_photos("pics", tmp_path)


def test_factory_rejects_options():
    with pytest.raises(RobsigError, match=r"takes no options, got \['labels'\]"):
        create_embedded_photos("pics", None, labels="wnid")


def test_registry_builds_builtin_kinds(tmp_path):
    from robsig_checks.registry import build_registry

    registry = build_registry(load_entry_points=False)
    photos = registry.create_dataset("embedded-photos", "pics", None, {})
    assert isinstance(photos, EmbeddedPhotos)
    assert photos.name == "pics"
    Image.new("RGB", (4, 4)).save(tmp_path / "n01440764.png")
    folder = registry.create_dataset("folder", "imgs", str(tmp_path), {"labels": "wnid"})
    assert isinstance(folder, ImageFolderDataset)
    assert [sample.label for sample in folder.samples()] == [0]
