"""Real photographs that ship inside installed Python packages, as a data set needing no download.

scikit-image, scikit-learn and matplotlib each install a few sample photographs in their
package folders. The files are read directly from those folders: ``skimage.data`` is not
called, because for files missing from the installation it downloads them with pooch.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

from robsig_checks.datasets.base import UNLABELLED, ImageDataset, Sample
from robsig_checks.datasets.folder import load_rgb_image
from robsig_checks.errors import RobsigError

#: Import name of each source package, mapped to the name to install it by.
PACKAGE_DISTRIBUTIONS: dict[str, str] = {
    "matplotlib": "matplotlib",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
}

#: The photographs as (import name, path inside the package folder), sorted by sample id.
#: Only camera photographs and scans are listed, no rendered or synthetic images (colour
#: wheels, phantoms, logos, checkerboards). scikit-image 0.26 ships these files in its wheel;
#: the matplotlib folder is the one ``matplotlib.get_data_path()`` returns.
PHOTOS: tuple[tuple[str, str], ...] = (
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/camera.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/coins.png"),
    ("skimage", "data/hubble_deep_field.jpg"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/moon.png"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/page.png"),
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/rocket.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
)


def _package_folder(package: str) -> Path | None:
    """Return the installed folder of ``package`` without importing it, or None if absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _sample_id(package: str, relative_path: str) -> str:
    return f"{package}/{relative_path.rsplit('/', 1)[-1]}"


def _find_photos() -> tuple[list[tuple[str, Path]], list[str]]:
    """Locate the photos: return (sample id, file) pairs found and the packages they came from.

    Each missing package, and each missing file of an installed package, is reported with a
    ``UserWarning`` and skipped.
    """
    found: list[tuple[str, Path]] = []
    sources: list[str] = []
    folders = {package: _package_folder(package) for package in PACKAGE_DISTRIBUTIONS}

    for package, distribution in PACKAGE_DISTRIBUTIONS.items():
        if folders[package] is None:
            count = sum(source == package for source, _ in PHOTOS)
            warnings.warn(
                f"embedded photos: {distribution} is not installed, so its {count} photos are "
                f"skipped. Install {distribution} to include them.",
                UserWarning,
                stacklevel=3,
            )

    for package, relative_path in PHOTOS:
        folder = folders[package]
        if folder is None:
            continue
        file = folder.joinpath(*relative_path.split("/"))
        if not file.is_file():
            warnings.warn(
                f"embedded photos: {file} is missing from the installed "
                f"{PACKAGE_DISTRIBUTIONS[package]}, so {_sample_id(package, relative_path)} is "
                "skipped.",
                UserWarning,
                stacklevel=3,
            )
            continue
        found.append((_sample_id(package, relative_path), file))
        if package not in sources:
            sources.append(package)
    return found, sources


class EmbeddedPhotos(ImageDataset):
    """The sample photographs of scikit-image, scikit-learn and matplotlib, unlabelled.

    The photos listed in ``PHOTOS`` are located once, when the object is created, and follow
    the order of ``PHOTOS``. Sample ids are ``PACKAGE/FILE`` (``skimage/chelsea.png``). The
    photos carry no ImageNet-1k label, so every label is ``UNLABELLED``.

    Parameters
    ----------
    name : str
        The data set's name in reports.

    Raises
    ------
    RobsigError
        ``name`` is invalid, or none of the photos is installed.
    """

    def __init__(self, name: str = "photos") -> None:
        if not isinstance(name, str) or not name.strip():
            raise RobsigError(f"data set name must be a non-empty str, got {name!r}")
        self.name = name

        found, self.sources = _find_photos()
        if not found:
            packages = ", ".join(PACKAGE_DISTRIBUTIONS.values())
            raise RobsigError(
                f"data set {name!r}: none of the {len(PHOTOS)} embedded photos were found, because "
                f"{packages} are not installed or ship none of them. Install scikit-image, or "
                "use kind 'folder' with a folder of your own images."
            )
        self._samples = [
            Sample(id=sample_id, load=functools.partial(load_rgb_image, file), label=UNLABELLED)
            for sample_id, file in found
        ]

    def samples(self) -> list[Sample]:
        """Return the photos in the order of ``PHOTOS`` (a new list on every call)."""
        return list(self._samples)

    @property
    def description(self) -> str:
        """One-line summary: the photo count and the packages they come from."""
        packages = ", ".join(PACKAGE_DISTRIBUTIONS[package] for package in self.sources)
        return f"embedded photos, {len(self._samples)} images from {packages}, 0 labelled"

    def __repr__(self) -> str:
        return f"EmbeddedPhotos(name={self.name!r}, images={len(self._samples)})"


def create_embedded_photos(
    name: str, path: str | os.PathLike[str] | None = None, **options: Any
) -> EmbeddedPhotos:
    """Create the data set of kind ``embedded-photos`` from a suite entry.

    Parameters
    ----------
    name : str
        The data set's name.
    path : None
        Must be None: the photos are read from the installed packages.
    **options
        None are accepted.

    Raises
    ------
    RobsigError
        ``path`` or an option is given, or :class:`EmbeddedPhotos` raises.
    """
    if path is not None:
        raise RobsigError(
            f"data set {name!r} of kind 'embedded-photos' takes no path, got {str(path)!r}: "
            "its photos are read from the installed scikit-image, scikit-learn and matplotlib. "
            "Remove path, or use kind 'folder' to read a folder."
        )
    if options:
        raise RobsigError(
            f"data set {name!r} of kind 'embedded-photos' takes no options, got "
            f"{sorted(options)}. Remove them."
        )
    return EmbeddedPhotos(name)
