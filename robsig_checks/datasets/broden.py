"""The Broden data set (Bau et al. 2017) in the NetDissect layout, with the concepts of each image.

A Broden folder (``broden1_224`` or ``broden1_227`` from NetDissect-Lite) contains:

- ``index.csv``: one row per image with the columns ``image, split, ih, iw, sh, sw`` and one
  column per concept category (``color, object, part, material, scene, texture``). A category
  cell contains ``;``-separated entries: a label number (the whole image carries that label) or a
  mask PNG path relative to ``images/``, where the label at a pixel is ``R + 256 * G`` and 0
  means no label.
- ``label.csv``: ``number, name, category, frequency, coverage, syns``; ``category`` reads like
  ``material(36);object(3)``, the number of images with the label in each category.
- ``c_<category>.csv``: ``code, number, name, ...``, the labels of one category.
- ``images/``: the images and the mask PNGs.

Concepts are identified by label number, because names repeat across categories. Bad entries
do not stop a run: rows whose image file is missing are skipped, images with a missing or
corrupt mask are left out of concept probing, and label numbers missing from ``label.csv`` are
ignored. Each kind is counted and reported by :meth:`BrodenDataset.problems`.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from robsig_checks.datasets.base import UNLABELLED, ImageDataset, Sample
from robsig_checks.datasets.folder import load_rgb_image
from robsig_checks.errors import RobsigError

logger = logging.getLogger("robsig")

#: Columns of index.csv that describe the image rather than a concept category.
META_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")

#: Values of the ``split`` option.
SPLITS = ("all", "train", "val")

LAYOUT = (
    "Expected the NetDissect Broden layout (broden1_224 or broden1_227): index.csv, label.csv, "
    "c_<category>.csv for each category column of index.csv, and images/ with the images and mask PNGs."
)

# Examples of each problem kept for reports; the rest are only counted.
_MAX_EXAMPLES = 5

_CATEGORY_ENTRY = re.compile(r"^\s*([^()]+?)\s*\((\d+)\)\s*$")


@dataclass(frozen=True)
class BrodenLabel:
    """One row of label.csv: the concept number, its name and its primary category.

    ``category`` is the category in which the label occurs in the most images (from the
    ``category`` column of label.csv), or the first ``c_<category>.csv`` that lists the label
    when that column cannot be read.
    """

    number: int
    name: str
    category: str


@dataclass
class _IndexRow:
    image: str
    numbers: list[int]
    masks: list[str]


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Read a csv file with a header row, or raise naming the file, the missing columns and the layout."""
    if not path.is_file():
        raise RobsigError(f"Broden file {str(path)!r} not found. {LAYOUT}")
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            rows = list(reader)
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RobsigError(f"cannot read Broden file {str(path)!r}: {error}. {LAYOUT}") from error
    missing = [column for column in required if column not in header]
    if missing:
        raise RobsigError(
            f"Broden file {str(path)!r} has no column {', '.join(map(repr, missing))}; its header is "
            f"{header}. {LAYOUT}"
        )
    return rows


def _primary_category(cell: str) -> str | None:
    """Return the category with the largest count in a label.csv cell like ``material(36);object(3)``."""
    best: tuple[int, str] | None = None
    for entry in cell.split(";"):
        if not entry.strip():
            continue
        match = _CATEGORY_ENTRY.match(entry)
        if match is None:
            return None
        count, name = int(match.group(2)), match.group(1)
        if best is None or count > best[0]:
            best = (count, name)
    return None if best is None else best[1]


class BrodenDataset(ImageDataset):
    """The images of a Broden folder, with the set of concept numbers present in each.

    Samples follow the rows of index.csv (rows whose image file is missing are skipped), their
    ids are the ``image`` paths of index.csv, and they carry no ImageNet label. The concept sets
    come from :meth:`concept_sets`, which decodes the mask PNGs of the images asked for once and
    keeps the result.

    Parameters:
        name: the data set's name in reports.
        path: the Broden folder.
        split: ``"all"`` (default), ``"train"`` or ``"val"``, compared with index.csv's ``split``.
        categories: category columns of index.csv to read concepts from, or None for all of them.
        workers: threads that decode mask PNGs.

    Raises:
        RobsigError: the folder or one of its files is missing or unreadable, or an option is invalid.
    """

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        split: str = "all",
        categories: list[str] | None = None,
        workers: int = 2,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise RobsigError(f"data set name must be a non-empty str, got {name!r}")
        if split not in SPLITS:
            raise RobsigError(f"Broden option split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}.")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise RobsigError(f"Broden option workers must be a positive integer, got {workers!r}.")
        self.name = name
        self.split = split
        self.workers = workers
        self.root = Path(path).expanduser()
        if not self.root.is_dir():
            raise RobsigError(f"Broden folder {str(self.root)!r} does not exist or is not a folder. {LAYOUT}")
        self.images_folder = self.root / "images"
        if not self.images_folder.is_dir():
            raise RobsigError(f"Broden folder {str(self.images_folder)!r} not found. {LAYOUT}")

        self._counts: Counter[str] = Counter()
        self._examples: dict[str, list[str]] = {}
        self._lock = threading.Lock()

        index_rows = _read_csv(self.root / "index.csv", ("image",))
        header = list(index_rows[0]) if index_rows else []
        available = [column for column in header if column not in META_COLUMNS]
        self.categories = self._choose_categories(available, categories)
        self.labels = self._read_labels()
        self._rows = self._read_index(index_rows)
        if not self._rows:
            raise RobsigError(
                f"Broden folder {str(self.root)!r} has no readable image for split {split!r}: index.csv lists "
                f"{len(index_rows)} rows and {self._counts['missing_images']} of them point at missing files. {LAYOUT}"
            )
        self._samples = [
            Sample(id=row.image, load=functools.partial(load_rgb_image, self.images_folder / row.image), label=UNLABELLED)
            for row in self._rows
        ]
        self._concept_sets: dict[int, np.ndarray | None] = {}
        if self._counts:
            logger.warning("robsig: Broden %s: %s", self.root, self.describe_problems())

    # ------------------------------------------------------------------ reading the csv files

    def _note(self, kind: str, example: str, count: int = 1) -> None:
        with self._lock:
            self._counts[kind] += count
            examples = self._examples.setdefault(kind, [])
            if len(examples) < _MAX_EXAMPLES and example not in examples:
                examples.append(example)

    def _choose_categories(self, available: list[str], requested: list[str] | None) -> list[str]:
        if requested is None:
            return available
        if isinstance(requested, str) or not isinstance(requested, (list, tuple)):
            raise RobsigError(f"Broden option categories must be a list of category names, got {requested!r}.")
        unknown = [category for category in requested if category not in available]
        if unknown:
            raise RobsigError(
                f"Broden option categories: {unknown} are not columns of {str(self.root / 'index.csv')!r}, "
                f"which has the categories {available}."
            )
        return list(requested)

    def _read_labels(self) -> dict[int, BrodenLabel]:
        label_rows = _read_csv(self.root / "label.csv", ("number", "name", "category"))
        listed_in: dict[int, list[str]] = {}
        for category in self.categories:
            for row in _read_csv(self.root / f"c_{category}.csv", ("number",)):
                number = row["number"].strip()
                if number.isdigit():
                    listed_in.setdefault(int(number), []).append(category)

        labels: dict[int, BrodenLabel] = {}
        for line, row in enumerate(label_rows, start=2):
            number_text = (row["number"] or "").strip()
            if not number_text.isdigit():
                self._note("malformed_label_rows", f"label.csv line {line}: number {number_text!r}")
                continue
            number = int(number_text)
            if number in labels:
                self._note("duplicate_label_numbers", f"label.csv line {line}: number {number}")
                continue
            category = _primary_category(row["category"] or "")
            if category is None:
                category = (listed_in.get(number) or ["unknown"])[0]
            labels[number] = BrodenLabel(number, (row["name"] or "").strip(), category)

        name_counts = Counter(label.name for label in labels.values())
        for label in labels.values():
            if name_counts[label.name] > 1:
                self._note("duplicate_label_names", f"{label.name!r} (number {label.number}, {label.category})")
        return labels

    def _read_index(self, index_rows: list[dict[str, str]]) -> list[_IndexRow]:
        rows = []
        for line, row in enumerate(index_rows, start=2):
            if self.split != "all" and (row.get("split") or "").strip() != self.split:
                continue
            image = (row["image"] or "").strip()
            if not image or not (self.images_folder / image).is_file():
                self._note("missing_images", f"index.csv line {line}: {image!r}")
                continue
            numbers, masks = [], []
            for category in self.categories:
                for entry in (row.get(category) or "").split(";"):
                    entry = entry.strip()
                    if not entry:
                        continue
                    if entry.isdigit():
                        numbers.append(int(entry))
                    else:
                        masks.append(entry)
            rows.append(_IndexRow(image, self._known(numbers, image), masks))
        return rows

    def _known(self, numbers: list[int] | np.ndarray, image: str) -> list[int]:
        """Return the numbers found in label.csv; count the others as unknown labels."""
        known = []
        for number in numbers:
            number = int(number)
            if number in self.labels:
                known.append(number)
            else:
                self._note("unknown_labels", f"label {number} in {image!r}")
        return known

    # ------------------------------------------------------------------ concept sets

    def _decode(self, position: int) -> np.ndarray | None:
        row = self._rows[position]
        numbers = list(row.numbers)
        for mask in row.masks:
            path = self.images_folder / mask
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"), dtype=np.int64)
            except FileNotFoundError:
                self._note("missing_masks", f"{mask!r} of {row.image!r}")
                return None
            except (OSError, ValueError, SyntaxError, EOFError) as error:
                self._note("corrupt_masks", f"{mask!r} of {row.image!r}: {type(error).__name__}")
                return None
            values = np.unique(pixels[..., 0] + 256 * pixels[..., 1])
            numbers.extend(self._known(values[values != 0], row.image))
        return np.unique(np.asarray(numbers, dtype=np.int64))

    def concept_sets(self, positions: np.ndarray | list[int]) -> list[np.ndarray | None]:
        """Return the concept numbers present in each image, decoding its masks on first use.

        Parameters:
            positions: positions of images in :meth:`samples`.

        Returns:
            One sorted int64 array of label numbers per position, or None for an image whose
            concepts are unknown because a mask PNG is missing or cannot be decoded.
        """
        positions = [int(position) for position in positions]
        for position in positions:
            if not 0 <= position < len(self._rows):
                raise ValueError(f"position {position} is outside the data set's {len(self._rows)} images.")
        todo = [position for position in dict.fromkeys(positions) if position not in self._concept_sets]
        if todo:
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                for position, concepts in zip(todo, pool.map(self._decode, todo)):
                    self._concept_sets[position] = concepts
            unknown = sum(self._concept_sets[position] is None for position in todo)
            logger.info("robsig: Broden %s: read the concepts of %d images in %.1f s, %d with a missing or "
                        "corrupt mask", self.root, len(todo), time.perf_counter() - started, unknown)
        return [self._concept_sets[position] for position in positions]

    # ------------------------------------------------------------------ reporting

    def problems(self) -> dict[str, Any]:
        """Return the count of each kind of bad entry found so far, with a few examples of each.

        Kinds: ``missing_images`` (index rows skipped), ``missing_masks`` and ``corrupt_masks``
        (images left out of concept probing), ``unknown_labels`` (label numbers not in
        label.csv, ignored), ``duplicate_label_names`` (labels sharing a name),
        ``duplicate_label_numbers`` and ``malformed_label_rows`` (label.csv rows ignored).
        Mask problems are found when :meth:`concept_sets` decodes the masks.
        """
        with self._lock:
            return {
                "counts": dict(sorted(self._counts.items())),
                "examples": {kind: list(examples) for kind, examples in sorted(self._examples.items())},
            }

    def describe_problems(self) -> str:
        """Return the problem counts as one line, or an empty string when there are none."""
        counts = self.problems()["counts"]
        return ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in counts.items() if count)

    def samples(self) -> list[Sample]:
        """Return the samples in index.csv order (a new list on every call)."""
        return list(self._samples)

    @property
    def description(self) -> str:
        """One-line summary: folder, images, concepts and categories."""
        return (
            f"broden {self.root}, {len(self._samples)} images, {len(self.labels)} concepts "
            f"({', '.join(self.categories)}), split {self.split}"
        )

    def __repr__(self) -> str:
        return f"BrodenDataset(name={self.name!r}, path={str(self.root)!r}, split={self.split!r}, images={len(self._samples)})"


def create_broden_dataset(name: str, path: str | os.PathLike[str] | None, **options: Any) -> BrodenDataset:
    """Create the data set of kind ``broden`` from a suite entry.

    Parameters:
        name: the data set's name.
        path: the Broden folder. None raises, because this kind reads a folder.
        **options: ``split``, ``categories`` and ``workers``, as in :class:`BrodenDataset`.
    """
    if path is None:
        raise RobsigError(
            f"data set {name!r} of kind 'broden' has no path. Pass --robsig-data {name}=PATH with the Broden "
            f"folder (for example broden1_224). {LAYOUT}"
        )
    unknown = sorted(set(options) - {"split", "categories", "workers"})
    if unknown:
        raise RobsigError(
            f"data set {name!r} of kind 'broden' got unknown options {unknown}. "
            "The allowed options are 'split', 'categories' and 'workers'."
        )
    return BrodenDataset(name, path, **options)
