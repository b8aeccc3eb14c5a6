"""ImageNet-1k class names and prompt templates for the adapters' heads."""

from __future__ import annotations

import functools

#: Number of ImageNet-1k classes. A head with this many rows is read in sorted-WordNet-id order.
IMAGENET_CLASS_COUNT = 1000


@functools.lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    # open_clip ships the CLIP authors' curated names, in sorted-WordNet-id order.
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[str, ...]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    # open_clip stores each template as a function of the class name. Applied to "{}", it gives the
    # equivalent str.format template, which can be hashed and stored.
    return tuple(template("{}") for template in OPENAI_IMAGENET_TEMPLATES)


def imagenet_class_names() -> list[str]:
    """Return the 1,000 ImageNet-1k class names used in CLIP prompts, in sorted-WordNet-id order.

    Two names occur twice (``missile`` and ``sunglasses``), as in the CLIP release, so a name is not a
    unique key: use the row index.
    """
    return list(_class_names())


def openai_imagenet_templates() -> list[str]:
    """Return the 80 OpenAI ImageNet prompt templates as ``str.format`` strings with one ``{}``."""
    return list(_templates())


def generic_class_names(count: int) -> list[str]:
    """Return ``class_0 … class_{count-1}`` for a head whose rows are not ImageNet-1k classes."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive int, got {count!r}")
    return [f"class_{index}" for index in range(count)]


def class_names_for_head(rows: int) -> list[str]:
    """Return ImageNet-1k names for a 1,000-row head, generic names otherwise."""
    if rows == IMAGENET_CLASS_COUNT:
        return imagenet_class_names()
    return generic_class_names(rows)
