"""Tests of the image folder data set, the RGB loader and the ImageNet wnid helpers."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from robsig_checks.datasets import (
    DEFAULT_EXTENSIONS,
    UNLABELLED,
    ImageFolderDataset,
    create_folder_dataset,
    find_wnid,
    imagenet_class_name,
    imagenet_wnids,
    load_rgb_image,
    wnid_to_index,
)
from robsig_checks.errors import RobsigError

WNID_FILE = (
    Path(__file__).resolve().parents[1] / "robsig_checks" / "datasets" / "imagenet_wnids.txt"
)
IMAGENET_SAMPLES = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-samples"
)


def reference_index(wnid: str) -> int:
    """Return the class index of ``wnid`` from the raw wnid file, without robsig's helpers."""
    wnids = sorted(line.strip() for line in WNID_FILE.read_text().splitlines() if line.strip())
    return wnids.index(wnid)


def write_image(
    path: Path, mode: str = "RGB", size: tuple[int, int] = (8, 6), color=(200, 30, 40)
) -> Path:
    """Write a one-colour image in the format that the file extension names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def write_noise_jpeg(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def write_png_rgb16(path: Path, pixels: np.ndarray) -> Path:
    """Write a 16-bit-per-channel RGB PNG by hand, because PIL cannot save one."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return path


# --------------------------------------------------------------------------- ImageNet wnids


def test_imagenet_wnids_sorted_and_complete():
    wnids = imagenet_wnids()

    assert len(wnids) == 1000
    assert len(set(wnids)) == 1000
    assert wnids == sorted(wnids)
    assert wnids[0] == "n01440764"
    assert wnids[999] == "n15075141"


def test_imagenet_wnids_match_timm_class_order():
    spec = importlib.util.find_spec("timm")
    if spec is None:
        pytest.skip(
            "timm is not installed, so its ImageNet-1k synset list cannot serve as reference"
        )
    timm_file = Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synsets.txt"
    if not timm_file.is_file():
        pytest.skip(f"this timm version has no {timm_file.name}")

    assert imagenet_wnids() == timm_file.read_text().split()


def test_imagenet_wnids_returns_a_copy():
    wnids = imagenet_wnids()
    wnids.clear()

    assert len(imagenet_wnids()) == 1000


def test_wnid_to_index_known_and_unknown():
    assert wnid_to_index("n01440764") == 0
    assert wnid_to_index("n01443537") == 1
    assert wnid_to_index("n15075141") == 999
    assert wnid_to_index("n04592741") == reference_index("n04592741")
    assert wnid_to_index("n99999999") is None
    assert wnid_to_index("N01440764") is None
    assert wnid_to_index("n01440764.jpg") is None
    assert wnid_to_index("") is None


def test_wnid_to_index_rejects_non_str():
    with pytest.raises(TypeError, match=r"wnid must be a str.*got int 1440764"):
        wnid_to_index(1440764)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n01443537.jpg", "n01443537"),
        ("n01443537_123.JPEG", "n01443537"),
        ("ILSVRC2012_val_00000001_n01443537.JPEG", "n01443537"),
        ("n01443537", "n01443537"),
        ("photo-n01443537-crop.png", "n01443537"),
        ("n01443537_n01491361.jpg", "n01443537"),
        ("ILSVRC2012_val_00000001.JPEG", None),
        ("n0144353.jpg", None),
        ("n014435370.jpg", None),
        ("xn01443537.jpg", None),
        ("9n01443537.jpg", None),
        ("N01443537.jpg", None),
        ("", None),
    ],
)
def test_find_wnid_cases(text, expected):
    assert find_wnid(text) == expected


def test_find_wnid_rejects_non_str():
    with pytest.raises(TypeError, match="text must be a str"):
        find_wnid(Path("n01443537.jpg"))


def test_imagenet_class_name_from_timm_table():
    spec = importlib.util.find_spec("timm")
    lemma_file = (
        Path(spec.submodule_search_locations[0]) / "data" / "_info" / "imagenet_synset_to_lemma.txt"
        if spec is not None
        else None
    )
    if lemma_file is None or not lemma_file.is_file():
        pytest.skip("timm's lemma table is not installed, so class names are unavailable")

    assert imagenet_class_name("n01440764") == "tench, Tinca tinca"
    assert imagenet_class_name("n01443537") == "goldfish, Carassius auratus"
    # n00004475 is an ImageNet-21k synset ("organism, being") but not an ImageNet-1k class.
    assert imagenet_class_name("n00004475") is None
    assert imagenet_class_name("n99999999") is None


# --------------------------------------------------------------------------- labels and ids


@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    """A folder with every supported naming pattern, unlabelled and unknown-wnid images."""
    root = tmp_path / "images"
    write_image(root / "n01443537.jpg")
    write_image(root / "n01491361_123.JPEG")
    write_image(root / "ILSVRC2012_val_00000001_n01494475.JPEG")
    write_image(root / "n01496331" / "image_0001.jpg")
    write_image(root / "n01498041" / "crops" / "left.png")
    write_image(root / "n01514668" / "n01514859" / "bird.jpg")
    write_image(root / "misc" / "photo.jpg")
    write_image(root / "n99999999.jpg")
    return root


MIXED_EXPECTED = {
    "ILSVRC2012_val_00000001_n01494475.JPEG": "n01494475",
    "misc/photo.jpg": None,
    "n01443537.jpg": "n01443537",
    "n01491361_123.JPEG": "n01491361",
    "n01496331/image_0001.jpg": "n01496331",
    "n01498041/crops/left.png": "n01498041",
    # The nearest folder name wins over an outer one.
    "n01514668/n01514859/bird.jpg": "n01514859",
    # A wnid outside ImageNet-1k leaves the image unlabelled in "auto" mode.
    "n99999999.jpg": None,
}


def test_folder_auto_labels_each_pattern(mixed_folder):
    dataset = ImageFolderDataset("mixed", mixed_folder)
    labels = {sample.id: sample.label for sample in dataset.samples()}

    assert set(labels) == set(MIXED_EXPECTED)
    for sample_id, wnid in MIXED_EXPECTED.items():
        expected = UNLABELLED if wnid is None else reference_index(wnid)
        assert labels[sample_id] == expected, sample_id
    assert dataset.labelled_count == 6


def test_folder_ids_sorted_by_path_parts(tmp_path):
    for relative in ["b.png", "a0.jpg", "a/z.jpg", "a.jpg", "a/b/c.jpg", "A.jpg"]:
        write_image(tmp_path / relative)

    ids = [sample.id for sample in ImageFolderDataset("order", tmp_path).samples()]

    # Compared folder by folder: the folder "a" sorts before the file "a.jpg".
    assert ids == ["A.jpg", "a/b/c.jpg", "a/z.jpg", "a.jpg", "a0.jpg", "b.png"]


def test_folder_description_counts(mixed_folder):
    dataset = ImageFolderDataset("mixed", mixed_folder)

    assert dataset.description == f"folder {mixed_folder}, 8 images, 6 labelled"


def test_folder_labels_none_leaves_all_unlabelled(mixed_folder):
    dataset = ImageFolderDataset("mixed", mixed_folder, labels="none")
    samples = dataset.samples()

    assert len(samples) == 8
    assert all(sample.label == UNLABELLED for sample in samples)
    assert dataset.labelled_count == 0


def test_folder_labels_wnid_accepts_all_known(tmp_path):
    write_image(tmp_path / "n01443537.jpg")
    write_image(tmp_path / "n15075141" / "x.png")

    dataset = ImageFolderDataset("strict", tmp_path, labels="wnid")
    labels = [sample.label for sample in dataset.samples()]

    assert labels == [1, 999]


def test_folder_labels_wnid_lists_offenders(mixed_folder):
    with pytest.raises(RobsigError) as raised:
        ImageFolderDataset("strict", mixed_folder, labels="wnid")
    message = str(raised.value)

    assert "labels='wnid'" in message
    assert "2 of 8 images" in message
    assert "'misc/photo.jpg' (no wnid)" in message
    assert "'n99999999.jpg' (n99999999 is not an ImageNet-1k class)" in message
    assert str(mixed_folder) in message
    assert "labels='auto'" in message


def test_folder_labels_wnid_truncates_long_list(tmp_path):
    for index in range(7):
        write_image(tmp_path / f"photo_{index}.jpg")

    with pytest.raises(RobsigError) as raised:
        ImageFolderDataset("strict", tmp_path, labels="wnid")
    message = str(raised.value)

    assert "7 of 7 images" in message
    assert "photo_4.jpg" in message
    assert "photo_5.jpg" not in message
    assert "and 2 more" in message


def test_folder_rejects_invalid_labels(tmp_path):
    write_image(tmp_path / "a.jpg")

    with pytest.raises(
        RobsigError, match=r"labels must be one of 'auto', 'wnid', 'none', got 'yes'"
    ):
        ImageFolderDataset("bad", tmp_path, labels="yes")


# --------------------------------------------------------------------------- file selection


def test_folder_ignores_and_counts_other_files(tmp_path):
    write_image(tmp_path / "n01443537.jpg")
    write_image(tmp_path / "upper.PNG")
    write_image(tmp_path / "mixed.TiFf")
    write_image(tmp_path / "sub" / "n01443537.bmp")
    (tmp_path / "README.txt").write_text("notes")
    (tmp_path / "sub" / "labels.csv").write_text("a,b")
    (tmp_path / "model.jpg.bak").write_text("backup")
    (tmp_path / ".DS_Store").write_bytes(b"\x00")
    (tmp_path / "._n01443537.jpg").write_bytes(b"\x00\x05\x16\x07")
    write_image(tmp_path / ".thumbnails" / "n01443537.jpg")

    dataset = ImageFolderDataset("select", tmp_path)
    ids = [sample.id for sample in dataset.samples()]

    assert ids == ["mixed.TiFf", "n01443537.jpg", "sub/n01443537.bmp", "upper.PNG"]
    assert dataset.ignored_count == 3
    assert dataset.hidden_count == 3


def test_folder_reads_every_default_extension(tmp_path):
    for extension in DEFAULT_EXTENSIONS:
        write_image(tmp_path / f"image{extension.upper()}")

    dataset = ImageFolderDataset("all", tmp_path)

    assert len(dataset.samples()) == len(DEFAULT_EXTENSIONS) == 8
    for sample in dataset.samples():
        assert sample.load().size == (8, 6), sample.id


def test_folder_custom_extensions(tmp_path):
    write_image(tmp_path / "a.jpg")
    write_image(tmp_path / "b.png")
    write_image(tmp_path / "c.PNG")

    dataset = ImageFolderDataset("png", tmp_path, extensions=["png"])

    assert [sample.id for sample in dataset.samples()] == ["b.png", "c.PNG"]
    assert dataset.extensions == (".png",)
    assert dataset.ignored_count == 1


@pytest.mark.parametrize("extensions", [[], [5], ["a/b"], ["."], None])
def test_folder_rejects_invalid_extensions(tmp_path, extensions):
    write_image(tmp_path / "a.jpg")

    with pytest.raises(RobsigError, match="extensions must be a list of file extensions"):
        ImageFolderDataset("bad", tmp_path, extensions=extensions)


def test_folder_follows_symlink_cycle_once(tmp_path):
    root = tmp_path / "root"
    write_image(root / "n01443537" / "a.jpg")
    try:
        os.symlink(root, root / "n01443537" / "loop")
    except OSError as error:
        pytest.skip(f"cannot create a symbolic link here: {error}")

    ids = [sample.id for sample in ImageFolderDataset("loop", root).samples()]

    assert ids == ["n01443537/a.jpg"]


# --------------------------------------------------------------------------- path errors


def test_folder_missing_path_error(tmp_path):
    missing = tmp_path / "nowhere"

    with pytest.raises(RobsigError) as raised:
        ImageFolderDataset("missing", missing)
    message = str(raised.value)

    assert str(missing) in message
    assert "does not exist" in message


def test_folder_path_is_file_error(tmp_path):
    image = write_image(tmp_path / "n01443537.jpg")

    with pytest.raises(RobsigError, match="is a file, not a folder"):
        ImageFolderDataset("file", image)


@pytest.mark.parametrize("path", ["", "   ", 42])
def test_folder_rejects_invalid_path(path):
    with pytest.raises(RobsigError, match="path must be the path of a folder of images"):
        ImageFolderDataset("bad", path)


def test_folder_rejects_empty_name(tmp_path):
    write_image(tmp_path / "a.jpg")

    with pytest.raises(RobsigError, match="data set name must be a non-empty str, got ''"):
        ImageFolderDataset("", tmp_path)


def test_folder_without_images_error_text(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.csv").write_text("x")
    (tmp_path / ".DS_Store").write_bytes(b"\x00")

    with pytest.raises(RobsigError) as raised:
        ImageFolderDataset("empty", tmp_path)
    message = str(raised.value)

    assert f"image folder {str(tmp_path)!r} contains no images" in message
    assert ".bmp, .gif, .jpeg, .jpg, .png, .tif, .tiff, .webp" in message
    assert "Other files found: 2" in message
    assert "'notes.txt'" in message
    assert "'sub/data.csv'" in message
    assert "Hidden entries skipped (names starting with '.'): 1" in message
    assert "extensions" in message


def test_empty_folder_error_counts_zero(tmp_path):
    with pytest.raises(RobsigError, match=r"contains no images.*Other files found: 0\. Put images"):
        ImageFolderDataset("empty", tmp_path)


def test_factory_builds_folder_dataset(tmp_path):
    write_image(tmp_path / "n01443537.jpg")
    write_image(tmp_path / "other.png")

    dataset = create_folder_dataset("f", str(tmp_path), labels="none", extensions=[".jpg"])

    assert isinstance(dataset, ImageFolderDataset)
    assert [(sample.id, sample.label) for sample in dataset.samples()] == [
        ("n01443537.jpg", UNLABELLED)
    ]


def test_factory_requires_path():
    with pytest.raises(RobsigError, match="data set 'f' of kind 'folder' has no path"):
        create_folder_dataset("f", None)


def test_factory_rejects_unknown_option(tmp_path):
    write_image(tmp_path / "a.jpg")

    with pytest.raises(RobsigError, match=r"unknown options \['recursive'\]"):
        create_folder_dataset("f", tmp_path, recursive=False)


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_label_sensitive(tmp_path):
    write_image(tmp_path / "n01443537.jpg")
    write_image(tmp_path / "misc" / "b.png")

    first = ImageFolderDataset("f", tmp_path).fingerprint()
    second = ImageFolderDataset("other name", tmp_path).fingerprint()
    unlabelled = ImageFolderDataset("f", tmp_path, labels="none").fingerprint()
    expected = hashlib.sha256(b"misc/b.png\t-1\nn01443537.jpg\t1\n").hexdigest()

    assert first == second
    assert first == expected
    assert unlabelled != first


def test_fingerprint_changes_with_wnid(tmp_path):
    write_image(tmp_path / "n01443537" / "a.jpg")
    before = ImageFolderDataset("f", tmp_path).fingerprint()

    (tmp_path / "n01443537").rename(tmp_path / "n01491361")
    after = ImageFolderDataset("f", tmp_path).fingerprint()

    assert before != after


# --------------------------------------------------------------------------- image loading


def test_load_converts_grayscale(tmp_path):
    image = load_rgb_image(write_image(tmp_path / "gray.png", mode="L", size=(7, 5), color=77))

    assert image.mode == "RGB"
    assert image.size == (7, 5)
    assert image.getpixel((3, 2)) == (77, 77, 77)


def test_load_converts_one_bit(tmp_path):
    image = load_rgb_image(write_image(tmp_path / "bw.png", mode="1", size=(4, 3), color=1))

    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == (255, 255, 255)


def test_load_drops_alpha(tmp_path):
    rgba = load_rgb_image(
        write_image(tmp_path / "rgba.png", mode="RGBA", size=(6, 4), color=(10, 20, 30, 0))
    )
    gray_alpha = load_rgb_image(
        write_image(tmp_path / "la.png", mode="LA", size=(6, 4), color=(90, 128))
    )

    assert rgba.mode == "RGB"
    assert rgba.size == (6, 4)
    assert rgba.getpixel((5, 3)) == (10, 20, 30)
    assert gray_alpha.getpixel((0, 0)) == (90, 90, 90)


def test_load_converts_palette_with_transparency(tmp_path):
    palette_image = Image.new("P", (5, 3), 1)
    palette_image.putpalette([0, 0, 0, 12, 200, 34] + [0] * (254 * 3))
    palette_image.putpixel((0, 0), 0)
    path = tmp_path / "palette.png"
    # One alpha value per palette entry, stored as bytes because entry 1 is half transparent.
    palette_image.save(path, transparency=bytes([0, 128]))
    assert isinstance(Image.open(path).info["transparency"], bytes)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_rgb_image(path)

    assert image.mode == "RGB"
    assert image.size == (5, 3)
    assert image.getpixel((4, 2)) == (12, 200, 34)
    assert image.getpixel((0, 0)) == (0, 0, 0)


def test_load_converts_cmyk_jpeg(tmp_path):
    image = load_rgb_image(
        write_image(tmp_path / "cmyk.jpg", mode="CMYK", size=(16, 16), color=(0, 255, 255, 0))
    )

    assert image.mode == "RGB"
    assert image.size == (16, 16)
    red, green, blue = image.getpixel((8, 8))
    assert red >= 245
    assert green <= 10
    assert blue <= 10


def test_load_scales_16bit_grayscale(tmp_path):
    values = np.array([[0, 128, 129, 257, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")

    image = load_rgb_image(path)
    pixels = np.asarray(image)

    assert image.mode == "RGB"
    assert image.size == (6, 1)
    # round(v / 257) for v = 0, 128, 129, 257, 32768, 65535.
    assert pixels[0, :, 0].tolist() == [0, 0, 1, 1, 128, 255]
    assert (pixels[..., 0] == pixels[..., 1]).all()
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_load_reduces_16bit_rgb(tmp_path):
    values = np.array([[[65535, 0, 32896], [4112, 61680, 0]]], dtype=np.uint16)
    path = write_png_rgb16(tmp_path / "rgb16.png", values)

    image = load_rgb_image(path)
    pixels = np.asarray(image).astype(int)

    assert image.mode == "RGB"
    assert image.size == (2, 1)
    # Each 16-bit value v maps to v / 257 within one step of 8-bit rounding.
    assert np.abs(pixels - values / 257).max() <= 1


def test_load_scales_32bit_integer_tiff(tmp_path):
    path = tmp_path / "int32.tif"
    Image.fromarray(np.array([[0, 65535, 25700]], dtype=np.int32)).save(path)

    pixels = np.asarray(load_rgb_image(path))

    assert pixels[0, :, 1].tolist() == [0, 255, 100]


def test_load_rejects_out_of_range_integers(tmp_path):
    path = tmp_path / "int32.tif"
    Image.fromarray(np.array([[0, 70000]], dtype=np.int32)).save(path)

    with pytest.raises(ValueError, match="outside the 16-bit range"):
        load_rgb_image(path)


def test_load_rejects_float_image(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32)).save(path)

    with pytest.raises(ValueError, match="floating-point pixels"):
        load_rgb_image(path)


def test_load_takes_first_gif_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), color) for color in [(255, 0, 0), (0, 0, 255)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])

    image = load_rgb_image(path)

    assert image.mode == "RGB"
    assert image.getpixel((1, 1)) == (255, 0, 0)


def test_truncated_jpeg_raises_oserror(tmp_path):
    path = write_noise_jpeg(tmp_path / "n01443537.jpg")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as header_only:
        assert header_only.size == (64, 48)

    sample = ImageFolderDataset("cut", tmp_path).samples()[0]

    with pytest.raises(OSError, match="n01443537.jpg"):
        sample.load()
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_intact_jpeg_loads(tmp_path):
    path = write_noise_jpeg(tmp_path / "whole.jpg")
    reference = np.asarray(Image.open(path).convert("RGB"))

    image = load_rgb_image(path)

    assert image.size == (64, 48)
    assert np.array_equal(np.asarray(image), reference)


def test_non_image_with_jpg_extension_raises(tmp_path):
    (tmp_path / "fake.jpg").write_text("this is not a JPEG file")

    sample = ImageFolderDataset("fake", tmp_path).samples()[0]

    with pytest.raises(OSError, match="fake.jpg"):
        sample.load()


def test_file_removed_after_listing_raises(tmp_path):
    path = write_image(tmp_path / "gone.png")
    sample = ImageFolderDataset("gone", tmp_path).samples()[0]
    path.unlink()

    with pytest.raises(OSError, match="gone.png"):
        sample.load()


def test_decompression_bomb_raises_valueerror(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.png", size=(20, 20))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)

    with pytest.raises(ValueError, match="too large to decode safely"):
        load_rgb_image(path)


def test_loaded_image_is_independent_of_file(tmp_path):
    path = write_image(tmp_path / "a.png", color=(1, 2, 3))

    image = load_rgb_image(path)
    path.write_bytes(b"")
    copy = io.BytesIO()
    image.save(copy, format="PNG")

    assert Image.open(copy).getpixel((0, 0)) == (1, 2, 3)


# --------------------------------------------------------------------------- real ImageNet photos


def test_real_imagenet_samples_labelled():
    if not IMAGENET_SAMPLES.is_dir():
        pytest.skip(
            f"the ImageNet sample folder {IMAGENET_SAMPLES} is absent "
            "(it is not part of the repository)"
        )
    reference = sorted(WNID_FILE.read_text().split())

    dataset = ImageFolderDataset("imagenet-samples", IMAGENET_SAMPLES, labels="wnid")
    samples = dataset.samples()

    assert len(samples) == 600
    assert dataset.labelled_count == 600
    for sample in samples:
        wnid = Path(sample.id).stem
        assert sample.label == reference.index(wnid), sample.id
    for sample in samples[:3]:
        image = sample.load()
        assert image.mode == "RGB"
        assert min(image.size) >= 32
