"""ImageNet validation images and its five natural shifts, read in their released folder layouts.

Every data set labels its images with ImageNet-1k class indices (sorted-wnid order) and describes
the scoring protocol that effective robustness needs (Crabbé et al. 2023, Eq. 1, after Taori et
al. 2020): which logits are scored and how a prediction maps to a class of the data set.

=================  ===================================================================================
variant            layout
=================  ===================================================================================
imagenet           wnid folders (``n01440764/*.JPEG``), or flat files whose names carry a wnid, or flat
                   files with a labels file (``NAME LABEL`` per line, LABEL a wnid or a class index)
imagenet-v2        folders ``0`` to ``999``: the label is ``int(folder name)``
imagenet-r, -a     200 wnid folders; logits are masked to those 200 classes (``mask_logits``)
imagenet-sketch    1,000 wnid folders (50,889 images in the release)
objectnet          313 class folders; the 113 classes that map to ImageNet-1k classes are scored, the
                   prediction is the ObjectNet class of the arg-max over the mapped ImageNet logits
=================  ===================================================================================

Folders that are not classes of the data set, class folders without images and files that are not
images are counted, listed in the ``protocol`` and skipped. Images that fail to decode are counted and
skipped by the extraction.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from robsig_checks.datasets.base import UNLABELLED, ImageDataset, Sample
from robsig_checks.datasets.folder import DEFAULT_EXTENSIONS, load_rgb_image
from robsig_checks.datasets.imagenet import IMAGENET_CLASS_COUNT, find_wnid, imagenet_wnids, wnid_to_index
from robsig_checks.errors import RobsigError

#: Variant names in the order of Crabbé et al. (2023), Table 1: ImageNet, then the five shifts.
VARIANTS: tuple[str, ...] = ("imagenet", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")
SHIFTS: tuple[str, ...] = VARIANTS[1:]

#: Folder names under ``--robsig-data-root`` accepted for each variant, tried in this order.
ROOT_FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "imagenet": ("imagenet/val", "imagenet", "imagenet-val", "val"),
    "imagenet-v2": ("imagenet-v2", "imagenetv2", "imagenetv2-matched-frequency-format-val",
                    "imagenetv2-matched-frequency"),
    "imagenet-r": ("imagenet-r", "imagenet_r"),
    "imagenet-sketch": ("imagenet-sketch/sketch", "imagenet-sketch", "imagenet_sketch", "sketch"),
    "objectnet": ("objectnet/images", "objectnet-1.0/images", "objectnet"),
    "imagenet-a": ("imagenet-a", "imagenet_a"),
}

#: Number of images in each full release, to flag partial copies. ImageNet-V2 is its
#: matched-frequency set; ObjectNet counts all 313 classes, of which the 113 shared ones are scored.
RELEASE_IMAGES: dict[str, int] = {
    "imagenet": 50_000,
    "imagenet-v2": 10_000,
    "imagenet-r": 30_000,
    "imagenet-sketch": 50_889,
    "objectnet": 50_000,
    "imagenet-a": 7_500,
}

# Maximum number of names listed per kind of problem in the protocol.
_MAX_LISTED = 20


@functools.cache
def _read_lines(filename: str) -> tuple[str, ...]:
    text = importlib.resources.files("robsig_checks.datasets").joinpath(filename).read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line.strip() and not line.startswith("#"))


def subset_wnids(variant: str) -> tuple[str, ...]:
    """Return the 200 wnids of ``imagenet-r`` or ``imagenet-a`` in sorted order."""
    if variant not in ("imagenet-r", "imagenet-a"):
        raise ValueError(f"variant must be 'imagenet-r' or 'imagenet-a', got {variant!r}.")
    wnids = tuple(line.strip() for line in _read_lines(f"imagenet_{variant[-1]}_wnids.txt"))
    if len(wnids) != 200 or any(wnid_to_index(wnid) is None for wnid in wnids):
        raise RuntimeError(f"the class list of {variant} shipped with robsig is damaged. Reinstall robsig.")
    return wnids


@dataclass(frozen=True)
class ObjectNetClass:
    """One ObjectNet class: its folder, its label and the ImageNet-1k wnids mapped to it (maybe none)."""

    folder: str
    label: str
    wnids: tuple[str, ...]


@functools.cache
def objectnet_classes() -> tuple[ObjectNetClass, ...]:
    """Return the 313 ObjectNet classes sorted by folder name, with their ImageNet-1k wnids."""
    classes = []
    for line in _read_lines("objectnet_classes.txt"):
        folder, label, wnids = line.split("\t")
        classes.append(ObjectNetClass(folder, label, tuple(wnid for wnid in wnids.split(",") if wnid)))
    if len(classes) != 313 or sum(1 for item in classes if item.wnids) != 113:
        raise RuntimeError("the ObjectNet class mapping shipped with robsig is damaged. Reinstall robsig.")
    return tuple(classes)


def class_groups(variant: str, mask_logits: bool = True) -> np.ndarray:
    """Return the group of each of the 1,000 ImageNet logits under ``variant``'s protocol (-1: masked).

    ImageNet, -V2 and -Sketch score every logit as its own class. ImageNet-R and -A mask the
    logits outside their 200 classes unless ``mask_logits`` is False. ObjectNet groups the
    ImageNet classes of each of its 113 shared classes (group = position among the mapped
    classes sorted by folder) and masks the other logits.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}.")
    groups = np.arange(IMAGENET_CLASS_COUNT, dtype=np.int64)
    if variant in ("imagenet-r", "imagenet-a") and mask_logits:
        keep = np.zeros(IMAGENET_CLASS_COUNT, dtype=bool)
        keep[[wnid_to_index(wnid) for wnid in subset_wnids(variant)]] = True
        groups[~keep] = -1
    elif variant == "objectnet":
        groups[:] = -1
        mapped = [item for item in objectnet_classes() if item.wnids]
        for group, item in enumerate(mapped):
            for wnid in item.wnids:
                groups[wnid_to_index(wnid)] = group
    return groups


def _is_image(name: str, extensions: tuple[str, ...]) -> bool:
    return name.lower().endswith(extensions) and not name.startswith(".")


def _list_images(folder: Path, extensions: tuple[str, ...]) -> tuple[list[PurePosixPath], int]:
    """List the images under ``folder`` (recursively) relative to it, and count the other files."""
    images, others = [], 0
    for directory, subdirectories, filenames in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
        relative = PurePosixPath(Path(directory).relative_to(folder).as_posix())
        for filename in filenames:
            if _is_image(filename, extensions):
                images.append(relative / filename)
            elif not filename.startswith("."):
                others += 1
    images.sort(key=lambda path: path.parts)
    return images, others


class ImageNetVariantDataset(ImageDataset):
    """ImageNet validation images or one of its shifts, in the folder layout of its release.

    Parameters:
        name: the data set's name in reports.
        path: the folder of the release (the one that contains the class folders).
        variant: one of :data:`VARIANTS`.
        mask_logits: ImageNet-R and -A only: score over their 200 classes (True, the published
            protocol) or over all 1,000 (False).
        labels_file: ImageNet only: a text file with one ``FILE LABEL`` line per image (space, tab
            or comma separated; LABEL a wnid or a class index 0-999 in sorted-wnid order; FILE
            with or without its extension). A first line that starts with ``ImageId`` is a header,
            and only the first word of LABEL is read, so ``LOC_val_solution.csv`` works.
        extensions: file extensions read as images.

    Raises:
        RobsigError: when the folder is missing, no class folder or image of the variant is
            found, or the labels file is invalid.
    """

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        variant: str,
        mask_logits: bool = True,
        labels_file: str | os.PathLike[str] | None = None,
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
    ) -> None:
        if variant not in VARIANTS:
            raise RobsigError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}.")
        if not isinstance(mask_logits, bool):
            raise RobsigError(f"data set {name!r}: mask_logits must be true or false, got {mask_logits!r}.")
        if labels_file is not None and variant != "imagenet":
            raise RobsigError(f"data set {name!r}: labels_file applies only to the imagenet variant, not {variant}.")
        self.name = name
        self.variant = variant
        self.mask_logits = mask_logits
        self.extensions = tuple(extension.lower() for extension in extensions)
        self.path = Path(path).expanduser()
        if not self.path.is_dir():
            raise RobsigError(
                f"data set {name!r} ({variant}): folder {str(self.path)!r} does not exist or is not a folder. "
                f"Pass --robsig-data {name}=PATH with the folder that contains the class folders."
            )
        self.foreign: list[str] = []
        self.empty_classes: list[str] = []
        self.n_foreign_images = 0
        self.n_other_files = 0
        self.n_unlabelled = 0
        self.n_class_folders = 0
        if labels_file is not None:
            self._samples = self._read_flat_with_labels(Path(labels_file).expanduser())
        else:
            self._samples = self._read_class_folders()
        if not self._samples:
            raise RobsigError(self._empty_message())

    # ------------------------------------------------------------------ layouts

    def _class_of_folder(self, folder: str) -> int | None:
        """Return the label of the images in class folder ``folder``, UNLABELLED for an unscored ObjectNet
        class, or None when the folder is not a class of this variant."""
        if self.variant == "imagenet-v2":
            if re.fullmatch(r"0|[1-9]\d{0,2}", folder):
                return int(folder)
            return None
        if self.variant == "objectnet":
            item = _objectnet_by_folder().get(folder)
            if item is None:
                return None
            return wnid_to_index(item.wnids[0]) if item.wnids else UNLABELLED
        if not re.fullmatch(r"n\d{8}", folder):
            return None
        if self.variant in ("imagenet-r", "imagenet-a") and folder not in subset_wnids(self.variant):
            return None
        return wnid_to_index(folder)

    def _read_class_folders(self) -> list[Sample]:
        entries = sorted(entry for entry in os.listdir(self.path) if not entry.startswith("."))
        folders = [entry for entry in entries if (self.path / entry).is_dir()]
        files = [entry for entry in entries if not (self.path / entry).is_dir()]
        if self.variant == "imagenet" and not any(self._class_of_folder(folder) is not None for folder in folders):
            return self._read_flat_with_wnids(files)
        self.n_other_files += len(files)

        samples = []
        labelled_folders = []
        for folder in folders:
            label = self._class_of_folder(folder)
            images, others = _list_images(self.path / folder, self.extensions)
            if label is None:
                self.foreign.append(folder)
                self.n_foreign_images += len(images)
                continue
            self.n_class_folders += 1
            self.n_other_files += others
            if not images:
                self.empty_classes.append(folder)
            labelled_folders.append((folder, label, images))
        if self.variant == "imagenet-v2":
            labelled_folders.sort(key=lambda item: item[1])
        for folder, label, images in labelled_folders:
            for relative in images:
                sample_id = f"{folder}/{relative.as_posix()}"
                samples.append(Sample(sample_id, functools.partial(load_rgb_image, self.path / folder / relative),
                                      label))
        self.n_unlabelled = sum(sample.label == UNLABELLED for sample in samples)
        return samples

    def _read_flat_with_wnids(self, files: list[str]) -> list[Sample]:
        samples = []
        for filename in files:
            if not _is_image(filename, self.extensions):
                self.n_other_files += 1
                continue
            wnid = find_wnid(filename)
            label = wnid_to_index(wnid) if wnid is not None else None
            samples.append(Sample(filename, functools.partial(load_rgb_image, self.path / filename),
                                  UNLABELLED if label is None else label))
        self.n_unlabelled = sum(sample.label == UNLABELLED for sample in samples)
        return samples

    def _read_flat_with_labels(self, labels_file: Path) -> list[Sample]:
        labels = read_labels_file(labels_file)
        samples = []
        for filename in sorted(os.listdir(self.path)):
            if (self.path / filename).is_dir() or filename.startswith("."):
                continue
            if not _is_image(filename, self.extensions):
                self.n_other_files += 1
                continue
            label = labels.get(filename, labels.get(filename.rsplit(".", 1)[0], UNLABELLED))
            samples.append(Sample(filename, functools.partial(load_rgb_image, self.path / filename), label))
        self.n_unlabelled = sum(sample.label == UNLABELLED for sample in samples)
        return samples

    def _empty_message(self) -> str:
        expected = {
            "imagenet": "wnid folders such as n01440764/, or images named with a wnid, or labels_file",
            "imagenet-v2": "folders named 0 to 999",
            "imagenet-r": "folders named by the 200 wnids of ImageNet-R, such as n01443537/",
            "imagenet-a": "folders named by the 200 wnids of ImageNet-A, such as n01498041/",
            "imagenet-sketch": "folders named by the 1,000 ImageNet wnids, such as n01440764/",
            "objectnet": "ObjectNet class folders such as alarm_clock/ (the images/ folder of the release)",
        }[self.variant]
        found = f" Folders found that are not classes: {', '.join(self.foreign[:5])}." if self.foreign else ""
        return (f"data set {self.name!r} ({self.variant}): no images found in {str(self.path)!r}. Expected "
                f"{expected}.{found}")

    # ------------------------------------------------------------------ protocol

    def samples(self) -> list[Sample]:
        """Return the samples, class folder by class folder (V2 in numeric order), then by path."""
        return list(self._samples)

    def class_groups(self) -> np.ndarray:
        """Return the group of each ImageNet logit under this data set's protocol (-1: masked)."""
        return class_groups(self.variant, self.mask_logits)

    @property
    def protocol(self) -> dict[str, Any]:
        """The scoring protocol and what the folder contained, as plain data for reports."""
        if self.variant in ("imagenet-r", "imagenet-a"):
            scoring = ("arg-max over the logits of the 200 classes of the data set" if self.mask_logits
                       else "arg-max over all 1,000 logits")
        elif self.variant == "objectnet":
            # NOTE: ObjectNet images are read whole. Some published evaluations first crop a border of
            # 2 or 3 pixels; this protocol does not, which may shift accuracies slightly.
            scoring = ("ObjectNet class of the arg-max over the 125 ImageNet logits mapped to its 113 shared "
                       "classes; images of the other 200 classes are not scored")
        else:
            scoring = "arg-max over all 1,000 logits"
        labels = {
            "imagenet-v2": "int(folder name)",
            "objectnet": "ObjectNet class folder, mapped to ImageNet-1k classes by the ObjectNet release",
        }.get(self.variant, "wnid of the class folder or file name")
        return {
            "variant": self.variant,
            "scoring": scoring,
            "labels": labels,
            "scored_classes": int(len(set(self.class_groups()[self.class_groups() >= 0].tolist()))),
            "mask_logits": self.mask_logits,
            "class_folders": self.n_class_folders,
            "foreign_folders": self.foreign[:_MAX_LISTED],
            "n_foreign_folders": len(self.foreign),
            "n_foreign_images": self.n_foreign_images,
            "empty_classes": self.empty_classes[:_MAX_LISTED],
            "n_empty_classes": len(self.empty_classes),
            "n_other_files": self.n_other_files,
            "n_unlabelled": self.n_unlabelled,
            "n_images": len(self._samples),
            "release_images": RELEASE_IMAGES[self.variant],
        }

    @property
    def description(self) -> str:
        """One-line summary: variant, folder, images and problems found."""
        text = f"{self.variant} {self.path}, {len(self._samples)} images"
        if self.foreign:
            text += f", {len(self.foreign)} folders that are not classes skipped"
        if self.empty_classes:
            text += f", {len(self.empty_classes)} empty classes"
        return text


@functools.cache
def _objectnet_by_folder() -> dict[str, ObjectNetClass]:
    return {item.folder: item for item in objectnet_classes()}


def read_labels_file(path: Path) -> dict[str, int]:
    """Read ``FILE LABEL`` lines (space, tab or comma separated) into a mapping from file name to class index.

    LABEL is a wnid or an integer class index in 0-999 (sorted-wnid order). Only the first word of
    LABEL is read. A first line starting with ``ImageId`` is skipped as a header.

    Raises:
        RobsigError: when the file is missing or a line is invalid, naming the file and the line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise RobsigError(f"labels_file {str(path)!r} cannot be read: {error}. Give the path of the labels file.")
    wnids = imagenet_wnids()
    labels = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (number == 1 and line.startswith("ImageId")):
            continue
        parts = re.split(r"[\s,]+", line.strip())
        if len(parts) < 2:
            raise RobsigError(
                f"{path}:{number}: expected FILE LABEL, got {line.strip()!r}. A file with labels only (such "
                "as the devkit's ground truth, whose ids are not the sorted-wnid order) is not accepted: give "
                "each file name with its wnid or its class index 0-999 in sorted-wnid order."
            )
        name, label = parts[0], parts[1]
        if re.fullmatch(r"n\d{8}", label) and wnid_to_index(label) is not None:
            labels[name] = wnid_to_index(label)
        elif re.fullmatch(r"\d+", label) and int(label) < IMAGENET_CLASS_COUNT:
            labels[name] = int(label)
        else:
            raise RobsigError(
                f"{path}:{number}: label {label!r} of {name!r} is neither an ImageNet-1k wnid (such as "
                f"{wnids[0]}) nor a class index 0-999."
            )
    return labels


def create_variant_dataset(variant: str, name: str, path: str | os.PathLike[str] | None,
                           **options: Any) -> ImageNetVariantDataset:
    """Create a data set of kind ``variant`` from a suite entry; options as in :class:`ImageNetVariantDataset`."""
    if path is None:
        raise RobsigError(f"data set {name!r} of kind {variant!r} has no path. Pass --robsig-data {name}=PATH or "
                          "--robsig-data-root ROOT.")
    allowed = {"mask_logits", "extensions"} | ({"labels_file"} if variant == "imagenet" else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise RobsigError(f"data set {name!r} of kind {variant!r} got unknown options {unknown}; allowed: "
                          f"{', '.join(sorted(allowed))}.")
    if "extensions" in options:
        options["extensions"] = tuple("." + str(item).lower().lstrip(".") for item in options["extensions"])
    return ImageNetVariantDataset(name, path, variant, **options)


def create_imagenet(name: str, path: Any, **options: Any) -> ImageNetVariantDataset:
    return create_variant_dataset("imagenet", name, path, **options)


def create_imagenet_v2(name: str, path: Any, **options: Any) -> ImageNetVariantDataset:
    return create_variant_dataset("imagenet-v2", name, path, **options)


def create_imagenet_r(name: str, path: Any, **options: Any) -> ImageNetVariantDataset:
    return create_variant_dataset("imagenet-r", name, path, **options)


def create_imagenet_sketch(name: str, path: Any, **options: Any) -> ImageNetVariantDataset:
    return create_variant_dataset("imagenet-sketch", name, path, **options)


def create_objectnet(name: str, path: Any, **options: Any) -> ImageNetVariantDataset:
    return create_variant_dataset("objectnet", name, path, **options)


def create_imagenet_a(name: str, path: Any, **options: Any) -> ImageNetVariantDataset:
    return create_variant_dataset("imagenet-a", name, path, **options)


def find_root_folder(root: str | os.PathLike[str], variant: str) -> Path | None:
    """Return the first folder of :data:`ROOT_FOLDER_NAMES` for ``variant`` that exists under ``root``."""
    for candidate in ROOT_FOLDER_NAMES[variant]:
        folder = Path(root).expanduser() / candidate
        if folder.is_dir():
            return folder.resolve()
    return None
