"""open_clip models as zero-shot ImageNet-1k classifiers.

Spec forms (an ``open_clip:`` prefix is optional)::

    ARCH:TAG             weights of an open_clip pretrained tag, or of a unique tag prefix such as ``laion2b``
    ARCH:/path/to/file   a local checkpoint (.safetensors, or a torch pickle read with weights_only=True)

The representation ``h`` is ``model.encode_image(x)`` (not L2-normalised), and the head is the zero-shot
classifier of CLIP (Radford et al. 2021) as used by Crabbé et al. 2023: one row per class, the
L2-normalised mean of the L2-normalised text embeddings of the class over the 80 OpenAI ImageNet templates.
Building that head runs the text encoder on 80,000 prompts, so it is cached on disk under
``$ROBSIG_CACHE_DIR/zero_shot_heads`` keyed by the weights' SHA-256 and a hash of the prompts.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

from robsig_checks.adapters.base import ModelAdapter, Provenance, check_image_batch
from robsig_checks.adapters.imagenet import imagenet_class_names, openai_imagenet_templates
from robsig_checks.adapters.weights import (
    load_state_dict_file,
    resolve_hub_file,
    resolve_url_file,
    robsig_cache_dir,
    sha256_file,
    write_bytes_atomic,
)
from robsig_checks.errors import RobsigError

logger = logging.getLogger("robsig")

ADAPTER_NAME = "open_clip"
SPEC_PREFIX = "open_clip:"

#: File name endings that make the part after ``ARCH:`` a local weights path even when no such file exists.
WEIGHTS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")

#: The pretrained-config keys that set the evaluation transform.
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode")

#: Prompts encoded per text-encoder call when the zero-shot head is built.
HEAD_PROMPTS_PER_BATCH = 800

#: Prompts on which the prefix text encoder is compared with ``encode_text`` before it is used.
PREFIX_CHECK_PROMPTS = 8

HEAD_CACHE_FOLDER = "zero_shot_heads"


# ---------------------------------------------------------------------------------------------
# Spec parsing and tag resolution
# ---------------------------------------------------------------------------------------------


def parse_open_clip_spec(spec: str) -> tuple[str, str]:
    """Split ``[open_clip:]ARCH:TAG_OR_PATH`` into the architecture and the rest (which may contain colons).

    Raises
    ------
    RobsigError
        When ``spec`` has no ``ARCH:`` part or nothing after it.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, got {type(spec).__name__}")
    body = spec.strip()
    if body.startswith(SPEC_PREFIX):
        body = body[len(SPEC_PREFIX) :]
    architecture, _, tag = body.partition(":")
    architecture, tag = architecture.strip(), tag.strip()
    if not architecture or not tag:
        raise RobsigError(
            f"Invalid open_clip model spec {spec!r}: expected ARCH:TAG (e.g. ViT-B-16:laion2b) or "
            "ARCH:/path/to/weights. `python -c \"import open_clip; print(open_clip.list_pretrained())\"` "
            "lists the architectures and tags."
        )
    return architecture, tag


def check_architecture(architecture: str) -> None:
    """Raise :class:`RobsigError` with close matches unless ``architecture`` is an open_clip model config."""
    known = open_clip.list_models()
    if architecture in known:
        return
    matches = difflib.get_close_matches(architecture, known, n=5, cutoff=0.6)
    hint = f" Close matches: {', '.join(matches)}." if matches else ""
    raise RobsigError(
        f"Unknown open_clip architecture {architecture!r}.{hint} `open_clip.list_models()` lists all "
        f"{len(known)}. For a timm ImageNet classifier use the spec timm:NAME instead."
    )


def _normalise_tag(tag: str) -> str:
    # open_clip compares tags lower-cased with '-' read as '_'.
    return tag.lower().replace("-", "_")


def resolve_pretrained_tag(architecture: str, requested: str) -> str:
    """Return the open_clip pretrained tag of ``architecture`` that ``requested`` names.

    An exact tag is returned as is. Otherwise ``requested`` is an alias for the tags that start with it
    (``laion2b`` → ``laion2b_s34b_b88k`` for ViT-B-16), and it must match exactly one.

    Raises
    ------
    RobsigError
        For an alias that matches several tags (the message lists them) or none (the message lists the
        architecture's tags).
    """
    tags = open_clip.list_pretrained_tags_by_model(architecture)
    normalised_tag = _normalise_tag(requested)
    if normalised_tag in tags:
        return normalised_tag
    if not tags:
        raise RobsigError(
            f"open_clip has no pretrained weights for architecture {architecture!r}, so tag {requested!r} "
            f"cannot be resolved. Pass a local checkpoint instead: {architecture}:/path/to/weights.safetensors."
        )
    candidates = [tag for tag in tags if tag.startswith(normalised_tag)]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise RobsigError(
            f"Ambiguous open_clip tag {requested!r} for {architecture}: it matches {', '.join(candidates)}. "
            f"Use the full tag, e.g. {architecture}:{candidates[0]}."
        )
    raise RobsigError(
        f"Unknown open_clip tag {requested!r} for {architecture}. Its tags are: {', '.join(tags)}. "
        f"A local checkpoint is given as {architecture}:/path/to/weights."
    )


def _is_weights_path(value: str) -> bool:
    return value.lower().endswith(WEIGHTS_SUFFIXES) or os.path.sep in value or os.path.exists(value)


# ---------------------------------------------------------------------------------------------
# Weights location
# ---------------------------------------------------------------------------------------------


def hub_weights_candidates(hf_hub: str) -> tuple[str, list[str]]:
    """Split an open_clip ``hf_hub`` entry into the repo id and the file names open_clip tries, in order.

    open_clip 3.3.0 stores ``org/name/`` (trailing slash: the default file ``open_clip_pytorch_model.bin``)
    or ``org/name/file.bin``, and prefers a ``.safetensors`` twin of the file when the repo has one.
    """
    repo_id, filename = os.path.split(hf_hub)
    if not filename:
        return repo_id, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    if filename.endswith((".bin", ".pth")):
        return repo_id, [filename[:-4] + ".safetensors", filename]
    return repo_id, [filename]


def open_clip_download_dir() -> Path:
    """Return the folder open_clip downloads URL weights into when no cache_dir is given (``~/.cache/clip``)."""
    return Path(os.path.expanduser("~/.cache/clip"))


def resolve_tag_weights(architecture: str, tag: str, pretrained_cfg: dict[str, Any]) -> tuple[Path, dict[str, str]]:
    """Return the local weights file of a pretrained tag and a description of its source.

    The Hugging Face Hub location is used when the tag has one, as open_clip does. A tag with only a
    ``url`` uses open_clip's download folder.
    """
    description = f"open_clip weights for {architecture}:{tag}"
    local_hint = f"{architecture}:/path/to/weights.safetensors"
    hf_hub = pretrained_cfg.get("hf_hub") or ""
    if hf_hub:
        repo_id, filenames = hub_weights_candidates(hf_hub)
        path = resolve_hub_file(repo_id, filenames, description=description, local_hint=f"{architecture}:/path/to/{filenames[0]}")
        return path, {"hf_hub_repo": repo_id, "hf_hub_file": path.name}
    url = pretrained_cfg.get("url") or ""
    if url:
        path = resolve_url_file(url, open_clip_download_dir(), description=description, local_hint=local_hint)
        return path, {"url": url}
    raise RobsigError(
        f"open_clip's registry gives no download location for {architecture}:{tag}. "
        f"Pass the weights file directly as {local_hint}."
    )


# ---------------------------------------------------------------------------------------------
# Zero-shot head
# ---------------------------------------------------------------------------------------------


def validate_class_names(class_names: Sequence[str]) -> None:
    """Check that ``class_names`` is a non-empty sequence of non-empty strings."""
    if isinstance(class_names, str) or not class_names or not all(isinstance(name, str) and name for name in class_names):
        raise ValueError(f"class_names must be a non-empty list of non-empty str, got {class_names!r:.200}")


def validate_templates(templates: Sequence[str]) -> None:
    """Check that ``templates`` is a non-empty sequence of strings with exactly one ``{}`` each."""
    if isinstance(templates, str) or not templates or not all(isinstance(template, str) for template in templates):
        raise ValueError(f"templates must be a non-empty list of str, got {templates!r:.200}")
    malformed = [template for template in templates if template.count("{}") != 1]
    if malformed:
        raise ValueError(f"every template must contain exactly one '{{}}' for the class name; these do not: {malformed[:5]}")


def prefix_text_encoder(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Return a text encoder that skips the padding after the last end-of-text token, or None.

    In open_clip's ``CLIP`` with a causal attention mask and ``argmax`` pooling, the text embedding is
    the output at the end-of-text position ``p = argmax(tokens)``, and a causal mask makes that output
    independent of positions after ``p``. Cutting a batch after its largest ``p`` therefore gives the
    same embeddings as ``encode_text`` on the full context. CLIP's context is 77 tokens while the OpenAI
    ImageNet prompts are at most 22 tokens long, so this ran about 5x faster for ViT-B-16 on a 2-core CPU.
    Other text towers return None.
    """
    if type(model) is not open_clip.CLIP or getattr(model, "text_pool_type", None) != "argmax":
        return None
    mask = getattr(model, "attn_mask", None)
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
        return None
    causal = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    if not torch.equal(torch.isneginf(mask), causal):
        return None

    def encode(tokens: torch.Tensor) -> torch.Tensor:
        end_positions = tokens.argmax(dim=-1)
        length = int(end_positions.max()) + 1
        tokens = tokens[:, :length]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = model.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), end_positions]
        if isinstance(model.text_projection, torch.nn.Linear):
            return model.text_projection(x)
        return x if model.text_projection is None else x @ model.text_projection

    return encode


def _checked_text_encoder(model: torch.nn.Module, sample_tokens: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return :func:`prefix_text_encoder` if it reproduces ``encode_text`` on ``sample_tokens``, else ``encode_text``."""
    encode = prefix_text_encoder(model)
    if encode is None:
        return model.encode_text
    expected = model.encode_text(sample_tokens).float()
    difference = float((encode(sample_tokens).float() - expected).abs().max())
    tolerance = 1e-4 * max(1.0, float(expected.abs().max()))
    if difference > tolerance:
        logger.warning(
            "robsig: the prefix text encoder differs from encode_text by %.3g on %d prompts, so the "
            "zero-shot head is built with encode_text on the full context, which is slower",
            difference,
            len(sample_tokens),
        )
        return model.encode_text
    return encode


def build_zero_shot_head(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Compute CLIP's zero-shot classifier weights, one row per class.

    Row ``c`` is ``normalize(mean_t normalize(encode_text(template_t.format(class_c))))``: the construction of
    Radford et al. 2021 used by Crabbé et al. 2023 for the head ``W`` of zero-shot models. It equals the
    transpose of open_clip's ``build_zero_shot_classifier`` (3.3.0). Prompts are encoded in batches sorted by
    token length, with :func:`prefix_text_encoder` where the text tower allows it.

    Parameters
    ----------
    model:
        An open_clip CLIP model with ``encode_text``.
    tokenizer:
        The model's tokenizer (``open_clip.get_tokenizer(arch)``).
    class_names, templates:
        ``d_Y`` names and ``str.format`` templates with one ``{}``.
    progress:
        Called as ``progress(prompts_done, prompts_total)`` after each batch of prompts.

    Returns
    -------
    torch.Tensor
        ``W`` of shape ``(d_Y, embed_dim)``, float32 on the CPU, rows of unit L2 norm.
    """
    validate_class_names(class_names)
    validate_templates(templates)
    prompts = [template.format(name) for name in class_names for template in templates]
    prompt_class = torch.arange(len(class_names)).repeat_interleave(len(templates))

    with torch.no_grad():
        tokens = tokenizer(prompts)
        encode = _checked_text_encoder(model, tokens[:PREFIX_CHECK_PROMPTS].to(device))
        # Sorting by end-of-text position keeps each batch's prefix short.
        order = torch.argsort(tokens.argmax(dim=-1), stable=True)
        sums: torch.Tensor | None = None
        for start in range(0, len(prompts), HEAD_PROMPTS_PER_BATCH):
            batch = order[start : start + HEAD_PROMPTS_PER_BATCH]
            embeddings = F.normalize(encode(tokens[batch].to(device)).float(), dim=-1).to("cpu", torch.float64)
            if sums is None:
                sums = torch.zeros(len(class_names), embeddings.shape[1], dtype=torch.float64)
            sums.index_add_(0, prompt_class[batch], embeddings)
            if progress is not None:
                progress(min(start + HEAD_PROMPTS_PER_BATCH, len(prompts)), len(prompts))

    assert sums is not None  # validate_* guarantee at least one prompt
    return F.normalize(sums / len(templates), dim=-1).to(torch.float32).contiguous()


def _prompt_config_digest(architecture: str, quick_gelu: bool, class_names: Sequence[str], templates: Sequence[str]) -> str:
    payload = {
        "architecture": architecture,
        "quick_gelu": quick_gelu,
        "class_names": list(class_names),
        "templates": list(templates),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def zero_shot_head_cache_path(weights_sha256: str, prompt_digest: str) -> Path:
    """Return the cache file of a zero-shot head: ``<robsig cache>/zero_shot_heads/<sha>-<digest>.safetensors``."""
    return robsig_cache_dir() / HEAD_CACHE_FOLDER / f"{weights_sha256[:16]}-{prompt_digest[:16]}.safetensors"


def load_cached_head(path: Path, weights_sha256: str, prompt_digest: str, rows: int) -> torch.Tensor | None:
    """Return the cached head at ``path`` when it exists and its metadata match, else None (logging why)."""
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as stream:
            metadata = stream.metadata() or {}
            weight = stream.get_tensor("weight")
    except (SafetensorError, OSError, KeyError) as error:
        logger.warning("robsig: ignoring unreadable zero-shot head cache %s (%s); rebuilding it", path, error)
        return None
    if metadata.get("weights_sha256") != weights_sha256 or metadata.get("prompt_sha256") != prompt_digest:
        logger.warning("robsig: ignoring zero-shot head cache %s: it was built for other weights or prompts", path)
        return None
    if weight.ndim != 2 or weight.shape[0] != rows:
        logger.warning("robsig: ignoring zero-shot head cache %s: shape %s, expected %d rows", path, tuple(weight.shape), rows)
        return None
    return weight.to(torch.float32)


def store_cached_head(path: Path, weight: torch.Tensor, weights_sha256: str, prompt_digest: str) -> None:
    """Write a head to ``path`` atomically (temporary file, then ``os.replace``)."""
    from safetensors.torch import save

    metadata = {"weights_sha256": weights_sha256, "prompt_sha256": prompt_digest}
    try:
        write_bytes_atomic(path, save({"weight": weight.contiguous()}, metadata=metadata))
    except OSError as error:
        logger.warning("robsig: could not cache the zero-shot head in %s: %s", path, error)


# ---------------------------------------------------------------------------------------------
# Adapter
# ---------------------------------------------------------------------------------------------


def open_clip_layer_names(model: torch.nn.Module) -> list[str]:
    """Return the names of the visual trunk's residual blocks (ViT), stages (ResNet) or timm features."""
    modules = dict(model.named_modules())
    visual = getattr(model, "visual", None)
    transformer = getattr(visual, "transformer", None)
    resblocks = getattr(transformer, "resblocks", None)
    if resblocks is not None and "visual.transformer.resblocks" in modules:
        return [f"visual.transformer.resblocks.{index}" for index in range(len(resblocks))]
    stages = [f"visual.layer{index}" for index in range(1, 5)]
    if all(name in modules for name in stages):
        return stages
    trunk = getattr(visual, "trunk", None)
    if trunk is not None:
        from robsig_checks.adapters.timm import timm_layer_names

        return [f"visual.trunk.{name}" for name in timm_layer_names(trunk)]
    return []


class OpenClipAdapter(ModelAdapter):
    """An open_clip model read as a zero-shot classifier: ``h = encode_image(x)``, ``W`` from text prompts.

    Parameters
    ----------
    model:
        An open_clip CLIP model with its weights loaded; it is put in eval mode and never trained.
    spec:
        The model spec as the user wrote it, for provenance.
    architecture:
        The open_clip model config name (``ViT-B-16``).
    weights_path:
        The checkpoint loaded into ``model``; its SHA-256 keys the head cache.
    config:
        Provenance configuration (pretrained tag, QuickGELU, preprocessing, weights source).
    class_names, templates:
        The head's classes and prompt templates; ImageNet-1k and the 80 OpenAI templates by default.
    weights_sha256:
        The checkpoint's SHA-256 when already known.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        spec: str,
        architecture: str,
        weights_path: Path,
        config: dict[str, Any],
        class_names: Sequence[str] | None = None,
        templates: Sequence[str] | None = None,
        weights_sha256: str | None = None,
        linear_head: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> None:
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.architecture = architecture
        self.weights_path = Path(weights_path)
        self.class_names = list(class_names) if class_names is not None else imagenet_class_names()
        self.templates = list(templates) if templates is not None else openai_imagenet_templates()
        validate_class_names(self.class_names)
        validate_templates(self.templates)
        self.weights_sha256 = weights_sha256 or sha256_file(self.weights_path)
        self.quick_gelu = bool(config.get("quick_gelu", False))
        self._config = dict(config)
        self._preprocess = image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)
        self._head: torch.Tensor | None = None
        self._linear_head = linear_head
        if linear_head is not None and class_names is None and linear_head[0].shape[0] != len(self.class_names):
            self.class_names = [f"class_{index}" for index in range(linear_head[0].shape[0])]
        self._head_progress_tenth = 0
        self._head_cache_path: Path | None = None

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        """Return open_clip's evaluation transform for these weights (resize, crop, mean/std of the tag)."""
        return self._preprocess

    def representation(self, images: torch.Tensor) -> torch.Tensor:
        """Return ``encode_image(images)`` of shape ``(batch, embed_dim)``, float32, on the model's device.

        Parameters
        ----------
        images:
            Preprocessed images ``(batch, 3, height, width)``; they are moved to the model's device.
        """
        check_image_batch(images)
        with torch.no_grad():
            return self.model.encode_image(images.to(self.device)).float()

    def _prompt_digest(self) -> str:
        return _prompt_config_digest(self.architecture, self.quick_gelu, self.class_names, self.templates)

    def head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the head ``W`` (``(d_Y, embed_dim)``, float32, CPU) and its bias.

        A checkpoint with its own linear head (a finetuned classifier) gives that head. Otherwise the
        zero-shot head, with no bias, is built on first use or read from the disk cache, and later calls
        return the same tensor.
        """
        if self._linear_head is not None:
            return self._linear_head
        if self._head is not None:
            return self._head, None
        digest = self._prompt_digest()
        path = zero_shot_head_cache_path(self.weights_sha256, digest)
        self._head_cache_path = path
        cached = load_cached_head(path, self.weights_sha256, digest, len(self.class_names))
        if cached is not None:
            logger.info("robsig: loaded the zero-shot head of %s from cache %s", self.spec, path)
            self._head = cached
            return cached, None

        prompts = len(self.class_names) * len(self.templates)
        logger.info(
            "robsig: building the zero-shot head of %s: %d classes x %d templates = %d prompts through the "
            "text encoder; the result is cached in %s",
            self.spec,
            len(self.class_names),
            len(self.templates),
            prompts,
            path,
        )
        try:
            tokenizer = open_clip.get_tokenizer(self.architecture)
        # Tokenizers of Hugging Face text towers are fetched from the Hub and fail offline.
        except Exception as error:  # noqa: BLE001
            raise RobsigError(
                f"Could not create the tokenizer of open_clip architecture {self.architecture} for the zero-shot "
                f"head of {self.spec}: {type(error).__name__}: {error}. Tokenizers of Hugging Face text towers "
                "need their files in the Hugging Face cache."
            ) from error
        if self.progress is not None:
            self.progress(f"robsig: building the zero-shot head of {self.spec} ({prompts} prompts; slow on a CPU, "
                          f"cached afterwards in {path.parent})")
        weight = build_zero_shot_head(self.model, tokenizer, self.class_names, self.templates, device=self.device,
                                      progress=self._report_head_progress)
        store_cached_head(path, weight, self.weights_sha256, digest)
        self._head = weight
        return weight, None

    def _report_head_progress(self, done: int, total: int) -> None:
        """Pass the zero-shot head's progress on to ``progress`` at each further tenth of the prompts."""
        tenth = done * 10 // total
        if self.progress is None or done == total or tenth == self._head_progress_tenth:
            return
        self._head_progress_tenth = tenth
        self.progress(f"robsig: zero-shot head of {self.spec}: {done}/{total} prompts")

    def provenance(self) -> Provenance:
        """Return the spec, the checkpoint and its SHA-256, and the tag, QuickGELU and preprocessing settings."""
        config = dict(self._config)
        if self._linear_head is not None:
            config["head"] = {"kind": "checkpoint", "classes": int(self._linear_head[0].shape[0])}
        else:
            config["head"] = {
                "kind": "zero-shot",
                "classes": len(self.class_names),
                "templates": len(self.templates),
                "prompt_sha256": self._prompt_digest(),
            }
        if self._head_cache_path is not None:
            config["head"]["cache_file"] = str(self._head_cache_path)
        config["open_clip_version"] = open_clip.__version__
        return Provenance(
            spec=self.spec,
            adapter=ADAPTER_NAME,
            architecture=self.architecture,
            weights=str(self.weights_path),
            weights_sha256=self.weights_sha256,
            config=config,
        )

    def layers(self) -> list[str]:
        """Return the names of the visual trunk's residual blocks (``visual.transformer.resblocks.N`` for a ViT)."""
        return open_clip_layer_names(self.model)

    def to(self, device: str) -> "OpenClipAdapter":
        """Move the model to ``device`` and return self."""
        try:
            target = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise RobsigError(f"Invalid device {device!r}: {error}. Use e.g. 'cpu' or 'cuda:0'.") from error
        self.model.to(target)
        return self


def _create_model(
    architecture: str, weights_path: Path, quick_gelu: bool, preprocess_overrides: dict[str, Any], spec: str
) -> torch.nn.Module:
    try:
        return open_clip.create_model(
            architecture,
            pretrained=str(weights_path),
            force_quick_gelu=quick_gelu,
            force_preprocess_cfg=preprocess_overrides,
            weights_only=True,
        )
    # open_clip reports a strict key mismatch as RuntimeError, an unreadable file as RuntimeError,
    # UnpicklingError or OSError, and a config that does not fit the weights as ValueError or KeyError.
    except (RuntimeError, ValueError, KeyError, OSError, pickle.UnpicklingError) as error:
        message = str(error).strip()
        if len(message) > 1500:
            message = message[:1500] + " …"
        raise RobsigError(
            f"Could not load open_clip model {spec!r} (architecture {architecture}) from {weights_path}: "
            f"{type(error).__name__}: {message}. Check that the file holds weights of this architecture."
        ) from error


#: Key prefixes of a linear classification head stored next to the CLIP weights in a finetuned checkpoint.
HEAD_PREFIXES = ("classification_head.", "head.", "classifier.", "fc.")


def _checkpoint_keys(path: Path) -> list[str]:
    """Return the tensor names of a checkpoint without reading its tensors where the format allows."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    return list(load_state_dict_file(path))


def _checkpoint_head_prefix(path: Path) -> str | None:
    """Return the prefix of a top-level linear head (``classification_head.weight``, ...) in the file, if any."""
    try:
        keys = set(_checkpoint_keys(path))
    except (RobsigError, OSError, RuntimeError, ValueError, pickle.UnpicklingError):
        return None  # open_clip's own loader reports unreadable files
    return next((prefix for prefix in HEAD_PREFIXES if f"{prefix}weight" in keys), None)


def _create_finetuned_classifier(
    architecture: str, weights_path: Path, head_prefix: str, spec: str
) -> tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor | None]]:
    """Load a finetuned classifier: CLIP weights plus a linear head ``{head_prefix}weight`` / ``bias``.

    The image tower must match the architecture exactly; text-tower weights may be absent, since the
    head replaces the zero-shot head. Missing image-tower keys and any unexpected key are listed.
    """
    state_dict = load_state_dict_file(weights_path)
    weight = state_dict.pop(f"{head_prefix}weight").float()
    bias = state_dict.pop(f"{head_prefix}bias", None)
    model = open_clip.create_model(architecture, pretrained=None)
    expected = model.state_dict()
    missing = sorted(key for key in set(expected) - set(state_dict) if key.startswith("visual."))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise RobsigError(
            f"The finetuned checkpoint {weights_path} of {spec!r} does not match open_clip {architecture}: "
            f"{len(missing)} missing image-tower keys ({', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}), "
            f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''})."
            " Check that the architecture named in the spec is the one that was finetuned."
        )
    model.load_state_dict(state_dict, strict=False)
    embed_dim = model.visual.output_dim
    if weight.ndim != 2 or weight.shape[1] != embed_dim:
        raise RobsigError(f"The head {head_prefix}weight in {weights_path} has shape {tuple(weight.shape)}; "
                          f"{architecture} embeddings have {embed_dim} dimensions, so (classes, {embed_dim}) is expected.")
    return model, (weight, None if bias is None else bias.float())


def create_open_clip_adapter(
    rest: str,
    spec: str,
    *,
    class_names: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
) -> OpenClipAdapter:
    """Build the adapter for ``[open_clip:]ARCH:TAG`` or ``[open_clip:]ARCH:/path/to/weights``.

    For a tag, the weights come from the Hugging Face cache (downloaded only when missing and downloads
    are allowed, see :mod:`robsig_checks.adapters.weights`). The model uses QuickGELU when open_clip's
    pretrained config marks the weights as trained with it (``quick_gelu``: OpenAI, YFCC-15M, CC-12M,
    MetaCLIP and DFN-2B weights among others).
    For a local file, QuickGELU follows the architecture's config: name ``ARCH-quickgelu`` (e.g.
    ``ViT-B-16-quickgelu``) for QuickGELU weights, and preprocessing uses open_clip's defaults (OpenAI
    mean/std, bicubic, shortest-side resize).

    Parameters
    ----------
    rest:
        The spec after ``open_clip:`` when that prefix was given; unused, since ``spec`` is parsed.
    spec:
        The full model spec.
    class_names, templates:
        Override the zero-shot head's classes and templates (default: ImageNet-1k, 80 OpenAI templates).

    Raises
    ------
    RobsigError
        For an unknown architecture or tag, an ambiguous alias, missing weights, or weights that do not
        load into the architecture.
    """
    del rest  # the full spec carries the same information with or without the prefix
    architecture, tag_or_path = parse_open_clip_spec(spec)
    check_architecture(architecture)
    if class_names is not None:
        validate_class_names(class_names)
    if templates is not None:
        validate_templates(templates)

    config: dict[str, Any] = {}
    preprocess_overrides: dict[str, Any] = {}
    force_quick_gelu = False
    if tag_or_path in open_clip.list_pretrained_tags_by_model(architecture) or not _is_weights_path(tag_or_path):
        tag = resolve_pretrained_tag(architecture, tag_or_path)
        pretrained_cfg = open_clip.get_pretrained_cfg(architecture, tag)
        weights_path, source = resolve_tag_weights(architecture, tag, pretrained_cfg)
        force_quick_gelu = bool(pretrained_cfg.get("quick_gelu", False))
        preprocess_overrides = {key: pretrained_cfg[key] for key in PREPROCESS_KEYS if key in pretrained_cfg}
        config.update(pretrained_tag=tag, requested_tag=tag_or_path, **source)
    else:
        weights_path = Path(tag_or_path).expanduser()
        if not weights_path.is_file():
            raise RobsigError(
                f"Weights file {str(weights_path)!r} of open_clip model spec {spec!r} not found. Pass an existing "
                f"file ({', '.join(WEIGHTS_SUFFIXES)}) or a pretrained tag of {architecture}."
            )
        config.update(pretrained_tag=None, local_file=str(weights_path))

    weights_sha256 = sha256_file(weights_path)
    linear_head = None
    if config.get("local_file") and (head_prefix := _checkpoint_head_prefix(weights_path)) is not None:
        model, linear_head = _create_finetuned_classifier(architecture, weights_path, head_prefix, spec)
        config["head_keys"] = f"{head_prefix}weight"
    else:
        model = _create_model(architecture, weights_path, force_quick_gelu, preprocess_overrides, spec)
    model_config = open_clip.get_model_config(architecture) or {}
    preprocess_cfg = dict(model.visual.preprocess_cfg)
    config.update(
        quick_gelu=force_quick_gelu or bool(model_config.get("quick_gelu", False)),
        image_size=preprocess_cfg.get("size"),
        mean=list(preprocess_cfg.get("mean", ())),
        std=list(preprocess_cfg.get("std", ())),
        interpolation=preprocess_cfg.get("interpolation"),
        resize_mode=preprocess_cfg.get("resize_mode"),
    )
    logger.info(
        "robsig: loaded open_clip %s from %s (QuickGELU %s)", spec, weights_path, "on" if config["quick_gelu"] else "off"
    )
    return OpenClipAdapter(
        model,
        spec=spec,
        architecture=architecture,
        weights_path=weights_path,
        config=config,
        class_names=class_names,
        templates=templates,
        weights_sha256=weights_sha256,
        linear_head=linear_head,
    )
