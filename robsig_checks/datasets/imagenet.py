"""ImageNet-1k class ids: the WordNet ids (wnids) in class-index order, and a finder for them.

Class index ``i`` of an ImageNet-1k head is the ``i``-th wnid in sorted order (``n01440764``
is class 0, ``n15075141`` is class 999). torchvision's ``ImageFolder`` gives this order to the
ILSVRC-2012 class folders, and timm's ``imagenet_synsets.txt`` lists it.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import re
from pathlib import Path

#: Number of classes in ImageNet-1k.
IMAGENET_CLASS_COUNT = 1000

#: A wnid token inside a longer text: ``n`` and 8 digits, not glued to a preceding letter or
#: digit nor followed by a digit. ``_`` and ``-`` count as separators, so the token is found in
#: ``n01443537_123.JPEG`` and ``ILSVRC2012_val_00000001_n01443537.JPEG``.
WNID_PATTERN = re.compile(r"(?<![A-Za-z0-9])n\d{8}(?!\d)")

_WNID_FILE = "imagenet_wnids.txt"

# timm (checked with 1.0.31) ships the lemmas of all ImageNet-21k synsets as "wnid<TAB>lemmas".
# It is read only when present, so that this module does not depend on timm.
_TIMM_LEMMA_FILE = ("data", "_info", "imagenet_synset_to_lemma.txt")


@functools.cache
def _wnid_tuple() -> tuple[str, ...]:
    text = (
        importlib.resources.files("robsig_checks.datasets")
        .joinpath(_WNID_FILE)
        .read_text(encoding="ascii")
    )
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip())

    malformed = [wnid for wnid in wnids if not re.fullmatch(r"n\d{8}", wnid)]
    if len(wnids) != IMAGENET_CLASS_COUNT or malformed or list(wnids) != sorted(set(wnids)):
        raise RuntimeError(
            f"robsig_checks/datasets/{_WNID_FILE} is damaged: expected {IMAGENET_CLASS_COUNT} "
            f"distinct sorted wnids, found {len(wnids)} lines ({len(malformed)} malformed). "
            "Reinstall robsig."
        )
    return wnids


@functools.cache
def _index_by_wnid() -> dict[str, int]:
    return {wnid: index for index, wnid in enumerate(_wnid_tuple())}


def _require_str(parameter: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(
            f"{parameter} must be a str such as 'n01443537', got {type(value).__name__} {value!r}"
        )


def imagenet_wnids() -> list[str]:
    """Return the 1,000 ImageNet-1k wnids in class-index order (sorted).

    The file is read once per process. Each call returns a new list, so callers may modify it.
    """
    return list(_wnid_tuple())


def wnid_to_index(wnid: str) -> int | None:
    """Return the ImageNet-1k class index (0 to 999) of ``wnid``, or None if it is not one of them.

    Parameters
    ----------
    wnid : str
        A WordNet id such as ``"n01443537"`` (case-sensitive, no surrounding text).

    Raises
    ------
    TypeError
        If ``wnid`` is not a str.
    """
    _require_str("wnid", wnid)
    return _index_by_wnid().get(wnid)


def find_wnid(text: str) -> str | None:
    """Find the first wnid token (``n`` and 8 digits) in ``text``.

    The token must stand apart from letters and digits around it (see ``WNID_PATTERN``). The
    result is any token of that form: use :func:`wnid_to_index` to tell whether it is one of the
    ImageNet-1k classes.

    Parameters
    ----------
    text : str
        A file or folder name, for example ``"ILSVRC2012_val_00000001_n01443537.JPEG"``.

    Returns
    -------
    str or None
        The first token, or None when ``text`` contains none.
    """
    _require_str("text", text)
    match = WNID_PATTERN.search(text)
    return match.group(0) if match else None


@functools.cache
def _class_names_by_wnid() -> dict[str, str]:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    lemma_file = Path(spec.submodule_search_locations[0]).joinpath(*_TIMM_LEMMA_FILE)
    if not lemma_file.is_file():
        return {}

    known = _index_by_wnid()
    names: dict[str, str] = {}
    for line in lemma_file.read_text(encoding="utf-8").splitlines():
        wnid, _, lemmas = line.partition("\t")
        if wnid in known and lemmas.strip():
            names[wnid] = lemmas.strip()
    return names


def imagenet_class_name(wnid: str) -> str | None:
    """Return the WordNet lemmas of an ImageNet-1k class, such as ``"tench, Tinca tinca"``.

    The names come from the lemma table that timm ships. Without timm, or for a wnid that is not
    an ImageNet-1k class, the result is None.

    Parameters
    ----------
    wnid : str
        A WordNet id such as ``"n01440764"``.

    Raises
    ------
    TypeError
        If ``wnid`` is not a str.
    """
    _require_str("wnid", wnid)
    return _class_names_by_wnid().get(wnid)
