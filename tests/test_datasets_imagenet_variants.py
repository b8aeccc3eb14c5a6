"""ImageNet and its shifts in their released layouts: labels, protocols, bad folders, data roots."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robsig_checks.data_root import apply_data_root
from robsig_checks.datasets.base import UNLABELLED
from robsig_checks.datasets.imagenet import imagenet_wnids
from robsig_checks.datasets.imagenet_variants import (
    ImageNetVariantDataset,
    class_groups,
    create_variant_dataset,
    objectnet_classes,
    subset_wnids,
)
from robsig_checks.errors import RobsigError
from robsig_checks.suite import DataSpec, Suite

WNIDS = imagenet_wnids()
TIMM_INFO = Path(importlib.util.find_spec("timm").submodule_search_locations[0]) / "data" / "_info"


def image(path: Path, colour=(10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)


def labels_of(dataset) -> dict[str, int]:
    return {sample.id: sample.label for sample in dataset.samples()}


def test_v2_label_is_int_of_folder(tmp_path):
    for folder in ("2", "10", "999"):
        image(tmp_path / folder / "a.jpeg")
    image(tmp_path / "010" / "x.jpeg")
    image(tmp_path / "1000" / "x.jpeg")
    dataset = ImageNetVariantDataset("v2", tmp_path, "imagenet-v2")
    assert labels_of(dataset) == {"2/a.jpeg": 2, "10/a.jpeg": 10, "999/a.jpeg": 999}
    assert [sample.id for sample in dataset.samples()] == ["2/a.jpeg", "10/a.jpeg", "999/a.jpeg"]
    assert dataset.foreign == ["010", "1000"]
    assert dataset.protocol["labels"] == "int(folder name)"


def test_r_folders_outside_subset_are_foreign(tmp_path):
    in_r = subset_wnids("imagenet-r")[0]
    assert WNIDS[0] not in subset_wnids("imagenet-r")
    image(tmp_path / in_r / "a.jpg")
    image(tmp_path / WNIDS[0] / "a.jpg")
    image(tmp_path / "notes" / "a.jpg")
    dataset = ImageNetVariantDataset("r", tmp_path, "imagenet-r")
    assert labels_of(dataset) == {f"{in_r}/a.jpg": WNIDS.index(in_r)}
    assert dataset.foreign == [WNIDS[0], "notes"]
    assert dataset.protocol["n_foreign_images"] == 2
    assert dataset.protocol["scored_classes"] == 200


def test_subset_lists_match_timm():
    for variant, filename in (("imagenet-r", "imagenet_r_synsets.txt"), ("imagenet-a", "imagenet_a_synsets.txt")):
        expected = sorted((TIMM_INFO / filename).read_text().split())
        assert list(subset_wnids(variant)) == expected


def test_masked_groups_keep_only_subset():
    groups = class_groups("imagenet-r")
    kept = {WNIDS[index] for index in np.flatnonzero(groups >= 0)}
    assert kept == set(subset_wnids("imagenet-r"))
    assert (groups[groups >= 0] == np.flatnonzero(groups >= 0)).all()
    assert (class_groups("imagenet-r", mask_logits=False) == np.arange(1000)).all()
    assert (class_groups("imagenet-sketch") == np.arange(1000)).all()


def test_objectnet_mapping_package_data():
    classes = objectnet_classes()
    assert len(classes) == 313
    mapped = [item for item in classes if item.wnids]
    assert len(mapped) == 113
    assert sum(len(item.wnids) for item in mapped) == 125
    by_folder = {item.folder: item for item in classes}
    lemmas = dict(line.split("\t", 1) for line in (TIMM_INFO / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    assert [lemmas[wnid] for wnid in by_folder["alarm_clock"].wnids] == ["analog clock", "digital clock"]
    assert [lemmas[wnid] for wnid in by_folder["banana"].wnids] == ["banana"]
    assert by_folder["air_freshener"].wnids == ()


def test_objectnet_groups_share_mapped_classes():
    groups = class_groups("objectnet")
    analog, digital = WNIDS.index("n02708093"), WNIDS.index("n03196217")
    assert groups[analog] == groups[digital] >= 0
    assert (groups >= 0).sum() == 125
    assert len(set(groups[groups >= 0].tolist())) == 113


def test_objectnet_unshared_classes_unlabelled(tmp_path):
    image(tmp_path / "alarm_clock" / "1.png")
    image(tmp_path / "air_freshener" / "1.png")
    image(tmp_path / "not_a_class" / "1.png")
    (tmp_path / "banana").mkdir()
    dataset = ImageNetVariantDataset("objectnet", tmp_path, "objectnet")
    assert labels_of(dataset) == {"air_freshener/1.png": UNLABELLED, "alarm_clock/1.png": WNIDS.index("n02708093")}
    assert dataset.foreign == ["not_a_class"]
    assert dataset.empty_classes == ["banana"]
    assert dataset.protocol["n_unlabelled"] == 1


def test_sketch_reports_empty_class_and_other_files(tmp_path):
    image(tmp_path / WNIDS[5] / "sketch_1.JPEG")
    (tmp_path / WNIDS[6]).mkdir()
    (tmp_path / WNIDS[5] / "readme.txt").write_text("x")
    dataset = ImageNetVariantDataset("sketch", tmp_path, "imagenet-sketch")
    assert labels_of(dataset) == {f"{WNIDS[5]}/sketch_1.JPEG": 5}
    assert dataset.empty_classes == [WNIDS[6]]
    assert dataset.protocol["n_other_files"] == 1


def test_imagenet_flat_files_with_labels_file(tmp_path):
    image(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    image(tmp_path / "val" / "ILSVRC2012_val_00000002.JPEG")
    image(tmp_path / "val" / "ILSVRC2012_val_00000003.JPEG")
    labels = tmp_path / "LOC_val_solution.csv"
    labels.write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01751748 1 2 3 4\n"
                      "ILSVRC2012_val_00000002.JPEG 65\n")
    dataset = create_variant_dataset("imagenet", "imagenet", tmp_path / "val", labels_file=str(labels))
    assert labels_of(dataset) == {"ILSVRC2012_val_00000001.JPEG": WNIDS.index("n01751748"),
                                  "ILSVRC2012_val_00000002.JPEG": 65, "ILSVRC2012_val_00000003.JPEG": UNLABELLED}
    assert dataset.protocol["n_unlabelled"] == 1


def test_imagenet_flat_files_named_by_wnid(tmp_path):
    image(tmp_path / f"ILSVRC2012_val_00000001_{WNIDS[7]}.JPEG")
    dataset = ImageNetVariantDataset("imagenet", tmp_path, "imagenet")
    assert labels_of(dataset) == {f"ILSVRC2012_val_00000001_{WNIDS[7]}.JPEG": 7}


@pytest.mark.parametrize("content, fragment", [
    ("0\n1\n", "expected FILE LABEL"),
    ("a.JPEG n99999999\n", "neither an ImageNet-1k wnid"),
    ("a.JPEG 1000\n", "neither an ImageNet-1k wnid"),
])
def test_bad_labels_file_names_line(tmp_path, content, fragment):
    image(tmp_path / "val" / "a.JPEG")
    labels = tmp_path / "labels.txt"
    labels.write_text(content)
    with pytest.raises(RobsigError, match=fragment) as error:
        ImageNetVariantDataset("imagenet", tmp_path / "val", "imagenet", labels_file=labels)
    assert f"{labels}:1" in str(error.value)


def test_no_class_folder_is_an_error(tmp_path):
    image(tmp_path / "cats" / "1.png")
    with pytest.raises(RobsigError, match="no images found.*folders named 0 to 999.*cats"):
        ImageNetVariantDataset("v2", tmp_path, "imagenet-v2")


def test_unknown_option_rejected(tmp_path):
    image(tmp_path / "0" / "1.png")
    with pytest.raises(RobsigError, match="unknown options \\['labels_file'\\]"):
        create_variant_dataset("imagenet-v2", "v2", tmp_path, labels_file="x")
    with pytest.raises(RobsigError, match="has no path.*--robsig-data-root"):
        create_variant_dataset("imagenet-v2", "v2", None)


def test_data_root_fills_missing_paths(tmp_path):
    image(tmp_path / "imagenet" / "val" / WNIDS[0] / "1.png")
    image(tmp_path / "imagenetv2-matched-frequency-format-val" / "0" / "1.png")
    image(tmp_path / "objectnet-1.0" / "images" / "banana" / "1.png")
    given = str(tmp_path / "elsewhere")
    suite = Suite("s", tmp_path / "s.yaml", "", [], {
        "imagenet": DataSpec("imagenet", "imagenet", None, False),
        "v2": DataSpec("v2", "imagenet-v2", None, False),
        "objectnet": DataSpec("objectnet", "objectnet", None, False),
        "imagenet-r": DataSpec("imagenet-r", "imagenet-r", given, True),
        "imagenet-a": DataSpec("imagenet-a", "imagenet-a", None, False),
    })
    applied = apply_data_root(suite, tmp_path)
    assert applied == {"imagenet": str(tmp_path / "imagenet" / "val"),
                       "v2": str(tmp_path / "imagenetv2-matched-frequency-format-val"),
                       "objectnet": str(tmp_path / "objectnet-1.0" / "images")}
    assert suite.data["imagenet-r"].path == given
    assert suite.data["imagenet-a"].path is None
    assert not suite.data["imagenet-a"].available
