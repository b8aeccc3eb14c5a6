"""A folder of image files as a data set, and the RGB loader that all built-in data sets use."""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from robsig_checks.datasets.base import UNLABELLED, ImageDataset, Sample
from robsig_checks.datasets.imagenet import find_wnid, wnid_to_index
from robsig_checks.errors import RobsigError

#: File extensions read as images by default, compared without regard to letter case.
DEFAULT_EXTENSIONS: tuple[str, ...] = (
    ".bmp",
    ".gif",
    ".jpeg",
    ".jpg",
    ".png",
    ".tif",
    ".tiff",
    ".webp",
)

#: Accepted values of ``labels``: see :class:`ImageFolderDataset`.
LABEL_MODES: tuple[str, ...] = ("auto", "wnid", "none")

# Maximum number of file names listed in an error message.
_MAX_LISTED_NAMES = 5

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


# --------------------------------------------------------------------------- image loading


def load_rgb_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file completely and return it as an 8-bit RGB image.

    The whole file is decoded before the file is closed, so a truncated or corrupt file fails
    here and not later in a transform. PIL's ``LOAD_TRUNCATED_IMAGES`` setting is left as the
    process has it. Modes are converted as follows:

    - grayscale, palette, CMYK, YCbCr and the other 8-bit modes: ``Image.convert("RGB")``;
    - alpha channels (RGBA, LA, palette with transparency): dropped, as the torchvision and
      timm loaders do, so fully transparent pixels keep their stored colour;
    - 16-bit grayscale (``I;16*``) and 32-bit integer (``I``) images: values in 0..65535 are
      scaled to 0..255 by ``round(v / 257)`` (PIL's own conversion clips them at 255);
    - multi-frame files (GIF, TIFF): the first frame.

    EXIF orientation is not applied, which matches the torchvision and timm loaders.

    Parameters
    ----------
    path : str or os.PathLike
        The image file.

    Returns
    -------
    PIL.Image.Image
        An RGB image with the file's width and height, detached from the file.

    Raises
    ------
    OSError
        The file is missing, unreadable, not an image, truncated or corrupt.
    ValueError
        The image is too large for PIL's decompression-bomb limit, or its mode has no defined
        8-bit scale (floating point, or 32-bit integers outside 0..65535).
    """
    try:
        with Image.open(path) as image:
            image.load()
    except Image.DecompressionBombError as error:
        raise ValueError(f"image {path} is too large to decode safely: {error}") from error
    except ValueError as error:
        raise ValueError(f"cannot decode image {path}: {error}") from error
    except (SyntaxError, EOFError, struct.error) as error:
        # Some PIL plugins report broken data with these exception types.
        raise OSError(f"cannot decode image {path}: {error}") from error
    except OSError as error:
        # PIL's messages for truncated data do not name the file.
        raise OSError(f"cannot decode image {path}: {error}") from error

    # The pixels stay in memory after the file is closed, because load() has read them all.
    return _convert_to_rgb(image, path)


def _convert_to_rgb(image: Image.Image, path: str | os.PathLike[str]) -> Image.Image:
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _scale_sixteen_bit_to_rgb(image, path)
    if mode == "F":
        raise ValueError(
            f"image {path} has floating-point pixels (PIL mode 'F'), which have no standard "
            "8-bit scale. Save it as an 8-bit or 16-bit image."
        )
    if mode == "P" and "transparency" in image.info:
        # Going through RGBA avoids the warning that Image.convert("RGB") issues when the
        # palette transparency is given as bytes (one alpha value per palette entry).
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise ValueError(
            f"cannot convert image {path} from PIL mode {mode!r} to RGB: {error}"
        ) from error


def _scale_sixteen_bit_to_rgb(image: Image.Image, path: str | os.PathLike[str]) -> Image.Image:
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(
            f"image {path} has 32-bit integer pixels from {values.min()} to {values.max()}, "
            "outside the 16-bit range 0..65535 that robsig scales to 8 bits. Save it as an "
            "8-bit or 16-bit image."
        )
    # 65535 / 255 = 257 exactly, so this is round(v / 257) with halves rounded up.
    gray = ((values + 128) // 257).astype(np.uint8)
    return Image.fromarray(np.stack([gray, gray, gray], axis=-1))


# --------------------------------------------------------------------------- argument checks


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise RobsigError(f"data set name must be a non-empty str, got {name!r}")
    return name


def _check_labels(labels: object) -> str:
    if labels not in LABEL_MODES:
        raise RobsigError(
            f"labels must be one of {', '.join(repr(mode) for mode in LABEL_MODES)}, got {labels!r}"
        )
    return str(labels)


def _normalize_extensions(extensions: object) -> tuple[str, ...]:
    """Return lower-case extensions with one leading dot, sorted and without duplicates."""
    allowed = "a list of file extensions such as ['.jpg', '.png']"
    if isinstance(extensions, str):
        extensions = [extensions]
    if not isinstance(extensions, Iterable):
        raise RobsigError(f"extensions must be {allowed}, got {extensions!r}")

    items = list(extensions)
    if not items:
        raise RobsigError(f"extensions must be {allowed}, got an empty list")

    normalized = set()
    for item in items:
        if not isinstance(item, str) or not item.strip(".") or any(c in item for c in "/\\ "):
            raise RobsigError(
                f"extensions must be {allowed}, but it contains {item!r}, which is not an extension"
            )
        normalized.add("." + item.lower().lstrip("."))
    return tuple(sorted(normalized))


def _check_folder(path: object) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise RobsigError(f"path must be the path of a folder of images, got {path!r}")

    folder = Path(path).expanduser()
    if not folder.exists():
        raise RobsigError(
            f"image folder {str(folder)!r} does not exist (absolute path "
            f"{str(folder.absolute())!r}). Fix the path, or create the folder and put images in it."
        )
    if not folder.is_dir():
        raise RobsigError(
            f"path {str(folder)!r} is a file, not a folder. Set path to the folder that contains "
            "the images."
        )
    return folder


# --------------------------------------------------------------------------- folder walk


def _list_files(root: Path) -> tuple[list[PurePosixPath], int]:
    """List the files under ``root`` as relative paths, and count the hidden entries skipped.

    Symbolic links to folders are followed, and each real folder is listed once, which also
    stops link cycles. Names starting with ``.`` (``.DS_Store``, macOS ``._*`` resource files,
    ``.git``) are skipped and counted.
    """

    def raise_unreadable(error: OSError) -> None:
        raise RobsigError(
            f"cannot list folder {error.filename!r} inside image folder {str(root)!r}: "
            f"{error.strerror}. Fix its permissions or move it out of the image folder."
        ) from error

    files: list[PurePosixPath] = []
    hidden_count = 0
    visited: set[str] = set()
    for directory, subdirectories, filenames in os.walk(
        root, onerror=raise_unreadable, followlinks=True
    ):
        real_directory = os.path.realpath(directory)
        if real_directory in visited:
            subdirectories.clear()
            continue
        visited.add(real_directory)

        hidden_count += sum(name.startswith(".") for name in subdirectories)
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))

        relative_directory = PurePosixPath(Path(directory).relative_to(root).as_posix())
        for filename in filenames:
            if filename.startswith("."):
                hidden_count += 1
            else:
                files.append(relative_directory / filename)

    files.sort(key=lambda relative: relative.parts)
    return files, hidden_count


def _wnid_for(relative: PurePosixPath) -> str | None:
    """Return the wnid token of the file name, else of the nearest enclosing folder name."""
    wnid = find_wnid(relative.name)
    if wnid is not None:
        return wnid
    for folder_name in reversed(relative.parts[:-1]):
        wnid = find_wnid(folder_name)
        if wnid is not None:
            return wnid
    return None


def _format_name_list(names: list[str], total: int) -> str:
    listed = ", ".join(names[:_MAX_LISTED_NAMES])
    return listed + (f" and {total - _MAX_LISTED_NAMES} more" if total > _MAX_LISTED_NAMES else "")


# --------------------------------------------------------------------------- data set


class ImageFolderDataset(ImageDataset):
    """The image files under a folder and its subfolders, with ImageNet-1k labels when known.

    The folder is listed once, when the object is created. Samples follow the sorted relative
    paths (compared folder by folder), and a sample's id is its path relative to the folder
    with ``/`` separators. Files whose extension is not in ``extensions`` are ignored and
    counted in ``ignored_count``. Hidden files and folders (name starting with ``.``) are
    skipped and counted in ``hidden_count``.

    A label is the class index of a wnid (``n`` and 8 digits) found in the file name
    (``n01443537.jpg``, ``n01443537_123.JPEG``, ``ILSVRC2012_val_00000001_n01443537.JPEG``).
    When the file name has none, the nearest enclosing folder name inside ``path`` that has one
    is used (``n01443537/image_0001.jpg``). A wnid in the file name takes precedence even when it
    is not one of the 1,000 ImageNet-1k classes.

    Parameters
    ----------
    name : str
        The data set's name in reports.
    path : str or os.PathLike
        The folder. ``~`` is expanded.
    labels : {"auto", "wnid", "none"}
        ``"auto"`` labels the images that carry an ImageNet-1k wnid and leaves the others
        ``UNLABELLED``. ``"wnid"`` requires an ImageNet-1k wnid for every image and raises
        otherwise. ``"none"`` leaves all images ``UNLABELLED``.
    extensions : iterable of str
        File extensions to read, with or without the leading dot, in any letter case.

    Raises
    ------
    RobsigError
        The folder is missing, is a file, or contains no images, an argument is invalid, or
        ``labels="wnid"`` and some images carry no ImageNet-1k wnid.
    """

    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        labels: str = "auto",
        extensions: Iterable[str] = DEFAULT_EXTENSIONS,
    ) -> None:
        self.name = _check_name(name)
        self.labels = _check_labels(labels)
        self.extensions = _normalize_extensions(extensions)
        self.path = _check_folder(path)

        files, self.hidden_count = _list_files(self.path)
        image_files = [relative for relative in files if self._has_image_extension(relative)]
        other_files = [relative for relative in files if not self._has_image_extension(relative)]
        self.ignored_count = len(other_files)
        if not image_files:
            raise RobsigError(self._no_images_message(other_files))

        self._samples = self._label_samples(image_files)
        self.labelled_count = sum(sample.label != UNLABELLED for sample in self._samples)

    def _has_image_extension(self, relative: PurePosixPath) -> bool:
        return relative.name.lower().endswith(self.extensions)

    def _no_images_message(self, other_files: list[PurePosixPath]) -> str:
        message = (
            f"image folder {str(self.path)!r} contains no images: no file in it or its subfolders "
            f"ends in {', '.join(self.extensions)} (any letter case). "
            f"Other files found: {len(other_files)}"
        )
        if other_files:
            names = [repr(relative.as_posix()) for relative in other_files]
            message += f" ({_format_name_list(names, len(names))})"
        if self.hidden_count:
            message += f". Hidden entries skipped (names starting with '.'): {self.hidden_count}"
        return message + (
            ". Put images in the folder, point path at the folder that contains them, or pass "
            "extensions to read other file types."
        )

    def _label_samples(self, image_files: list[PurePosixPath]) -> list[Sample]:
        samples = []
        offenders = []
        for relative in image_files:
            label = UNLABELLED
            if self.labels != "none":
                wnid = _wnid_for(relative)
                index = wnid_to_index(wnid) if wnid is not None else None
                if index is not None:
                    label = index
                elif wnid is None:
                    offenders.append(f"{relative.as_posix()!r} (no wnid)")
                else:
                    offenders.append(
                        f"{relative.as_posix()!r} ({wnid} is not an ImageNet-1k class)"
                    )

            loader = functools.partial(load_rgb_image, self.path / relative)
            samples.append(Sample(id=relative.as_posix(), load=loader, label=label))

        if self.labels == "wnid" and offenders:
            raise RobsigError(
                f"labels='wnid' requires an ImageNet-1k wnid such as n01443537 in the file name "
                f"or a folder name of every image, but {len(offenders)} of {len(image_files)} "
                f"images in {str(self.path)!r} have none or an unknown one: "
                f"{_format_name_list(offenders, len(offenders))}. Rename these files or their "
                "folders, or pass labels='auto' to leave them unlabelled."
            )
        return samples

    def samples(self) -> list[Sample]:
        """Return the samples in sorted path order (a new list on every call)."""
        return list(self._samples)

    @property
    def description(self) -> str:
        """One-line summary: ``folder PATH, N images, M labelled``."""
        return f"folder {self.path}, {len(self._samples)} images, {self.labelled_count} labelled"

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(name={self.name!r}, path={str(self.path)!r}, "
            f"labels={self.labels!r}, images={len(self._samples)})"
        )


def create_folder_dataset(
    name: str, path: str | os.PathLike[str] | None, **options: Any
) -> ImageFolderDataset:
    """Create the data set of kind ``folder`` from a suite entry.

    Parameters
    ----------
    name : str
        The data set's name.
    path : str or os.PathLike
        The image folder. None raises because this kind needs a folder.
    **options
        ``labels`` and ``extensions``, as in :class:`ImageFolderDataset`.

    Raises
    ------
    RobsigError
        ``path`` is None, an option is unknown, or :class:`ImageFolderDataset` raises.
    """
    if path is None:
        raise RobsigError(
            f"data set {name!r} of kind 'folder' has no path. Set path to a folder of images."
        )
    unknown = sorted(set(options) - {"labels", "extensions"})
    if unknown:
        raise RobsigError(
            f"data set {name!r} of kind 'folder' got unknown options {unknown}. "
            "The allowed options are 'labels' and 'extensions'."
        )
    return ImageFolderDataset(name, path, **options)
