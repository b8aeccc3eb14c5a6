"""Tests of the Broden data set: the NetDissect layout, concept sets from masks and numbers, bad entries."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from broden_layout import N_PROBE_IMAGES, label_mask, probe_images, write_broden
from robsig_checks.datasets.base import UNLABELLED
from robsig_checks.datasets.broden import BrodenDataset, create_broden_dataset
from robsig_checks.errors import RobsigError
from robsig_checks.registry import build_registry


@pytest.fixture
def broden(tmp_path):
    return write_broden(tmp_path / "broden")


def test_samples_skip_missing_image_rows(broden):
    dataset = BrodenDataset("broden", broden)
    samples = dataset.samples()
    assert len(samples) == N_PROBE_IMAGES + 2
    assert samples[0].id == "test/img_00.png"
    assert samples[-1].id == "test/nomask.png"
    assert all(sample.label == UNLABELLED for sample in samples)
    assert dataset.problems()["counts"]["missing_images"] == 1
    assert "test/gone.png" in dataset.problems()["examples"]["missing_images"][0]


def test_sample_loads_rgb_pixels(broden):
    image = BrodenDataset("broden", broden).samples()[7].load()
    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (200, 200, 200)


def test_concept_sets_match_planted_concepts(broden):
    dataset = BrodenDataset("broden", broden)
    sets = dataset.concept_sets(range(N_PROBE_IMAGES))
    expected = [sorted(image["concepts"]) for image in probe_images()]
    assert [concepts.tolist() for concepts in sets] == expected


def test_mask_label_is_red_plus_256_green(tmp_path):
    root = write_broden(tmp_path / "broden", bad_entries=False)
    label_mask(root / "images" / "test" / "img_00_object.png", 258)
    dataset = BrodenDataset("broden", root)
    assert 258 in dataset.concept_sets([0])[0].tolist()
    pixels = np.asarray(Image.open(root / "images" / "test" / "img_00_object.png"))
    assert pixels[0, 0, 0] == 2
    assert pixels[0, 0, 1] == 1


def test_corrupt_and_missing_masks_counted(broden):
    dataset = BrodenDataset("broden", broden)
    sets = dataset.concept_sets([N_PROBE_IMAGES, N_PROBE_IMAGES + 1])
    assert sets == [None, None]
    counts = dataset.problems()["counts"]
    assert counts["corrupt_masks"] == 1
    assert counts["missing_masks"] == 1
    assert "corrupt_material.png" in dataset.problems()["examples"]["corrupt_masks"][0]


def test_unknown_label_counted_and_ignored(broden):
    dataset = BrodenDataset("broden", broden)
    assert 99 not in dataset.concept_sets([5])[0].tolist()
    assert dataset.problems()["counts"]["unknown_labels"] == 1
    assert "label 99" in dataset.problems()["examples"]["unknown_labels"][0]


def test_duplicate_names_counted_and_kept_apart(broden):
    dataset = BrodenDataset("broden", broden)
    assert dataset.problems()["counts"]["duplicate_label_names"] == 2
    assert dataset.labels[258].name == dataset.labels[7].name == "grass"
    assert dataset.labels[258].category == "object"
    assert dataset.labels[7].category == "part"


def test_primary_category_is_largest_count(tmp_path):
    root = write_broden(tmp_path / "broden", bad_entries=False)
    text = (root / "label.csv").read_text().replace("material(20)", "material(2);object(9)")
    (root / "label.csv").write_text(text)
    assert BrodenDataset("broden", root).labels[4].category == "object"


def test_clean_folder_has_no_problems(tmp_path):
    dataset = BrodenDataset("broden", write_broden(tmp_path / "broden", bad_entries=False))
    dataset.concept_sets(range(len(dataset.samples())))
    assert dataset.problems()["counts"] == {}
    assert dataset.describe_problems() == ""


def test_split_option_filters_rows(broden):
    dataset = BrodenDataset("broden", broden, split="val")
    assert len(dataset.samples()) == N_PROBE_IMAGES // 2
    assert dataset.samples()[0].id == "test/img_01.png"


def test_categories_option_restricts_concepts(broden):
    dataset = BrodenDataset("broden", broden, categories=["scene"])
    first, second = dataset.concept_sets([0, 1])
    assert first.tolist() == [3]
    assert second.tolist() == []


def test_unknown_category_option_rejected(broden):
    with pytest.raises(RobsigError, match=r"\['weather'\] are not columns of .*index.csv"):
        BrodenDataset("broden", broden, categories=["weather"])


@pytest.mark.parametrize("missing", ["index.csv", "label.csv", "c_scene.csv"])
def test_missing_file_names_file_and_layout(broden, missing):
    (broden / missing).unlink()
    with pytest.raises(RobsigError) as error:
        BrodenDataset("broden", broden)
    assert missing in str(error.value)
    assert "index.csv, label.csv, c_<category>.csv" in str(error.value)


def test_missing_images_folder_names_layout(tmp_path):
    (tmp_path / "index.csv").write_text("image,split\n")
    with pytest.raises(RobsigError, match="images' not found. Expected the NetDissect Broden layout"):
        BrodenDataset("broden", tmp_path)


def test_missing_label_column_named(broden):
    rows = list(csv.reader((broden / "label.csv").open()))
    with (broden / "label.csv").open("w", newline="") as stream:
        csv.writer(stream).writerows([[cell for cell, header in zip(row, rows[0]) if header != "category"]
                                      for row in rows])
    with pytest.raises(RobsigError, match="has no column 'category'"):
        BrodenDataset("broden", broden)


def test_every_row_missing_is_error(broden):
    for path in (broden / "images" / "test").glob("img_*.png"):
        path.unlink()
    for path in (broden / "images" / "test").glob("*.png"):
        path.unlink()
    with pytest.raises(RobsigError, match="no readable image"):
        BrodenDataset("broden", broden)


def test_factory_requires_path():
    with pytest.raises(RobsigError, match="--robsig-data broden=PATH"):
        create_broden_dataset("broden", None)


def test_factory_rejects_unknown_option(broden):
    with pytest.raises(RobsigError, match=r"unknown options \['labels'\]"):
        create_broden_dataset("broden", broden, labels="wnid")


def test_registered_as_broden_kind(broden):
    dataset = build_registry(load_entry_points=False).create_dataset("broden", "b", str(broden), {"split": "train"})
    assert isinstance(dataset, BrodenDataset)
    assert len(dataset.samples()) == N_PROBE_IMAGES // 2 + 2


def test_position_out_of_range_rejected(broden):
    with pytest.raises(ValueError, match="position 99 is outside"):
        BrodenDataset("broden", broden).concept_sets([99])
