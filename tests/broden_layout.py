"""Write a small Broden-shaped folder whose concepts follow the image colours, for the Broden and concept tests.

The 40 probe images are 4 x 4 solid colours with R, G and B each 50 or 200 (8 combinations x 5
copies). Concepts, by label number:

- 1 ``red-c`` (color mask): present exactly when R = 200.
- 258 ``grass`` (object mask; 258 = R 2 + 256 * G 1): present exactly when G = 200.
- 3 ``beach`` (scene number): present exactly when B = 50, so a direction reads it with the negative sign.
- 4 ``wood`` (material mask): in 20 images, 10 at each level of each channel, so no direction separates it.
- 5 ``banded`` (texture number): in 3 images, below the default minimum of 10 positives.
- 6 ``sky`` and 7 ``grass`` (part): in no image; 7 repeats the name of 258.

Bad entries, on top of the 40 images: one image whose material mask is corrupt, one whose object
mask file is missing, one index row whose image file is missing, and the unknown label 99 in one
scene cell. Without bad entries, label 7 is named ``leaf`` so that no name repeats.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
from PIL import Image

HEADER = ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "material", "scene", "texture"]
LABELS = [
    (1, "red-c", "color(20)"),
    (258, "grass", "object(20)"),
    (3, "beach", "scene(20)"),
    (4, "wood", "material(20)"),
    (5, "banded", "texture(3)"),
    (6, "sky", "object(0)"),
    (7, "grass", "part(0)"),
]
CATEGORY_OF = {1: "color", 258: "object", 3: "scene", 4: "material", 5: "texture", 6: "object", 7: "part"}
LOW, HIGH = 50, 200
N_PROBE_IMAGES = 40


def probe_images() -> list[dict]:
    """Return the 40 probe images: colour bits and concept numbers, in index.csv order."""
    images = []
    for copy, (red, green, blue) in itertools.product(range(5), itertools.product((0, 1), repeat=3)):
        concepts = set()
        if red:
            concepts.add(1)
        if green:
            concepts.add(258)
        if not blue:
            concepts.add(3)
        # Three of five copies for combinations of even parity, two for odd: 10 per level of each channel.
        if copy < (3 if (red + green + blue) % 2 == 0 else 2):
            concepts.add(4)
        images.append({"bits": (red, green, blue), "concepts": concepts})
    for index in range(3):
        images[index]["concepts"].add(5)
    return images


def label_mask(path: Path, number: int) -> None:
    """Write a 4 x 4 mask PNG with ``number`` (R + 256 G) in its top half and 0 elsewhere."""
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[:2, :, 0] = number % 256
    pixels[:2, :, 1] = number // 256
    Image.fromarray(pixels).save(path)


def write_broden(root: Path, bad_entries: bool = True) -> Path:
    """Write the folder under ``root`` and return it."""
    folder = root / "images" / "test"
    folder.mkdir(parents=True)
    rows = []
    for index, image in enumerate(probe_images()):
        stem = f"test/img_{index:02d}"
        color = tuple(HIGH if bit else LOW for bit in image["bits"])
        Image.new("RGB", (4, 4), color).save(root / "images" / f"{stem}.png")
        cells = {"color": "", "object": "", "part": "", "material": "", "scene": "", "texture": ""}
        for number, category in ((1, "color"), (258, "object"), (4, "material")):
            mask = f"{stem}_{category}.png"
            label_mask(root / "images" / mask, number if number in image["concepts"] else 0)
            cells[category] = mask
        cells["scene"] = "3" if 3 in image["concepts"] else ""
        cells["texture"] = "5" if 5 in image["concepts"] else ""
        rows.append({"image": f"{stem}.png", "split": "train" if index % 2 == 0 else "val",
                     "ih": 4, "iw": 4, "sh": 4, "sw": 4, **cells})

    if bad_entries:
        rows[5]["scene"] = rows[5]["scene"] + ";99" if rows[5]["scene"] else "99"
        Image.new("RGB", (4, 4), (120, 120, 120)).save(folder / "corrupt.png")
        (folder / "corrupt_material.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
        rows.append({"image": "test/corrupt.png", "split": "train", "ih": 4, "iw": 4, "sh": 4, "sw": 4,
                     "color": "", "object": "", "part": "", "material": "test/corrupt_material.png",
                     "scene": "", "texture": ""})
        Image.new("RGB", (4, 4), (120, 120, 120)).save(folder / "nomask.png")
        rows.append({"image": "test/nomask.png", "split": "train", "ih": 4, "iw": 4, "sh": 4, "sw": 4,
                     "color": "", "object": "test/nomask_object.png", "part": "", "material": "",
                     "scene": "", "texture": ""})
        rows.append({"image": "test/gone.png", "split": "train", "ih": 4, "iw": 4, "sh": 4, "sw": 4,
                     "color": "", "object": "", "part": "", "material": "", "scene": "3", "texture": ""})

    with (root / "index.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, HEADER)
        writer.writeheader()
        writer.writerows(rows)
    with (root / "label.csv").open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for number, name, category in LABELS:
            name = name if bad_entries or number != 7 else "leaf"
            writer.writerow([number, name, category, category.split("(")[1].rstrip(")"), "1.0", ""])
    for category in HEADER[6:]:
        with (root / f"c_{category}.csv").open("w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["code", "number", "name", "frequency", "coverage"])
            members = [(number, name) for number, name, _ in LABELS if CATEGORY_OF[number] == category]
            for code, (number, name) in enumerate(members, start=1):
                writer.writerow([code, number, name, 0, 0.0])
    return root
