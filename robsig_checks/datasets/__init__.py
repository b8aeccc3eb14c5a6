"""Data sets: the protocol, image folders, photos shipped in installed packages, ImageNet ids."""

from robsig_checks.datasets.base import UNLABELLED, DatasetFactory, ImageDataset, Sample
from robsig_checks.datasets.embedded import EmbeddedPhotos, create_embedded_photos
from robsig_checks.datasets.folder import (
    DEFAULT_EXTENSIONS,
    LABEL_MODES,
    ImageFolderDataset,
    create_folder_dataset,
    load_rgb_image,
)
from robsig_checks.datasets.imagenet import (
    IMAGENET_CLASS_COUNT,
    find_wnid,
    imagenet_class_name,
    imagenet_wnids,
    wnid_to_index,
)

__all__ = [
    "DEFAULT_EXTENSIONS",
    "IMAGENET_CLASS_COUNT",
    "LABEL_MODES",
    "UNLABELLED",
    "DatasetFactory",
    "EmbeddedPhotos",
    "ImageDataset",
    "ImageFolderDataset",
    "Sample",
    "create_embedded_photos",
    "create_folder_dataset",
    "find_wnid",
    "imagenet_class_name",
    "imagenet_wnids",
    "load_rgb_image",
    "wnid_to_index",
]
