"""timm ImageNet classifiers as robsig models.

Spec forms::

    timm:NAME                  timm's pretrained weights for NAME (``arch`` or ``arch.tag``), offline first
    timm:NAME:/path/to/file    a local state dict (.safetensors, or a torch pickle read with weights_only=True)

The representation ``h`` is ``forward_head(forward_features(x), pre_logits=True)``, the pooled features
that the classifier reads, and the head is the classifier's ``nn.Linear`` weight and bias.
:class:`TimmAdapter` wraps any timm model, so plugins that build or load a model their own way reuse it.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Callable

import timm
import timm.data
import torch
from PIL import Image

from robsig_checks.adapters.base import ModelAdapter, Provenance, check_image_batch
from robsig_checks.adapters.imagenet import IMAGENET_CLASS_COUNT, class_names_for_head
from robsig_checks.adapters.weights import (
    load_state_dict_file,
    load_state_dict_strict,
    resolve_hub_file,
    resolve_url_file,
    sha256_file,
)
from robsig_checks.errors import RobsigError

logger = logging.getLogger("robsig")

ADAPTER_NAME = "timm"

#: The weight file names timm 1.0 looks for in a Hugging Face repo, safetensors first.
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")

#: Relative tolerance of the check that ``h @ W.T + b`` reproduces the model's logits.
HEAD_CHECK_RTOL = 1e-4

#: The data-config keys recorded in provenance.
DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def timm_layer_names(model: torch.nn.Module) -> list[str]:
    """Return the names of a timm model's feature stages.

    ``model.feature_info`` (the modules timm exposes as multi-scale features) is used when present;
    otherwise the children of a top-level ``blocks``, ``stages`` or ``layers`` container. Only names of
    existing submodules are returned.
    """
    modules = dict(model.named_modules())
    names: list[str] = []
    info = getattr(model, "feature_info", None)
    if isinstance(info, list):
        names = [entry["module"] for entry in info if isinstance(entry, dict) and "module" in entry]
    elif info is not None and hasattr(info, "module_name"):
        names = list(info.module_name())
    if not names:
        for container in ("blocks", "stages", "layers"):
            children = getattr(model, container, None)
            if isinstance(children, (torch.nn.Sequential, torch.nn.ModuleList)):
                names = [f"{container}.{index}" for index in range(len(children))]
                break
    return [name for name in names if name in modules]


def check_model_name(name: str) -> None:
    """Raise :class:`RobsigError` with close matches unless ``name`` (``arch`` or ``arch.tag``) is a timm model."""
    if not isinstance(name, str) or not name.strip():
        raise RobsigError(
            f"Invalid timm model spec: expected timm:NAME or timm:NAME:/path/to/weights, got name {name!r}. "
            "`timm.list_models()` lists the architectures."
        )
    architecture, _, tag = name.partition(".")
    if not timm.is_model(architecture):
        known = timm.list_models()
        matches = difflib.get_close_matches(architecture, known, n=5, cutoff=0.6)
        hint = f" Close matches: {', '.join(matches)}." if matches else ""
        raise RobsigError(
            f"Unknown timm model {name!r}.{hint} `timm.list_models()` lists all {len(known)} architectures; "
            "open_clip models are given as ARCH:TAG without the timm: prefix."
        )
    if tag:
        try:
            timm.models.get_pretrained_cfg(name)
        except RuntimeError as error:
            tags = timm.list_pretrained(f"{architecture}.*")
            raise RobsigError(
                f"Unknown pretrained tag {tag!r} for timm model {architecture}: {error} "
                f"Known: {', '.join(tags) if tags else 'none'}."
            ) from error


def _hub_candidates(pretrained_cfg: Any) -> list[str]:
    filename = getattr(pretrained_cfg, "hf_hub_filename", None)
    if not filename:
        return list(HUB_FILENAMES)
    if filename.endswith(".bin"):
        # timm prefers a safetensors twin of a .bin file.
        safe = "model.safetensors" if filename == "pytorch_model.bin" else filename[: -len(".bin")] + ".safetensors"
        return [safe, filename]
    return [filename]


def resolve_timm_pretrained(name: str) -> tuple[Path, dict[str, Any], bool]:
    """Return the local weights file of timm's pretrained ``name``, its source, and whether it is timm-format.

    A Hugging Face location (``hf_hub_id``, optionally ``@revision``) is preferred, as timm does. A
    config with only a ``url`` uses torch hub's ``checkpoints`` folder, where timm downloads.

    Returns
    -------
    tuple
        The file, a provenance description, and True when the file is a timm state dict (Hub files are;
        URL files of configs with ``custom_load`` are in their original format).
    """
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    if pretrained_cfg is None:
        raise RobsigError(
            f"timm has no pretrained weights for {name!r}. Pass a state dict file: timm:{name}:/path/to/weights.safetensors."
        )
    description = f"timm weights for {name}"
    local_hint = f"timm:{name}:/path/to/{HUB_FILENAMES[0]}"
    source: dict[str, Any] = {"pretrained_tag": pretrained_cfg.tag}
    if pretrained_cfg.hf_hub_id:
        repo_id, _, revision = pretrained_cfg.hf_hub_id.partition("@")
        path = resolve_hub_file(
            repo_id, _hub_candidates(pretrained_cfg), revision=revision or None, description=description, local_hint=local_hint
        )
        source.update(hf_hub_repo=repo_id, hf_hub_file=path.name)
        return path, source, True
    if pretrained_cfg.url:
        download_dir = Path(torch.hub.get_dir()) / "checkpoints"
        path = resolve_url_file(pretrained_cfg.url, download_dir, description=description, local_hint=local_hint)
        source.update(url=pretrained_cfg.url)
        return path, source, not pretrained_cfg.custom_load
    raise RobsigError(
        f"timm's pretrained config of {name!r} gives no download location. Pass a state dict file: {local_hint}."
    )


def create_model_from_file(name: str, weights_path: Path) -> torch.nn.Module:
    """Build timm model ``name`` without pretrained weights and load a state dict file into it, strictly.

    When the file's classifier has another number of rows than the default head, the head is resized
    to it first, so fine-tuned checkpoints load.
    """
    state_dict = load_state_dict_file(weights_path)
    model = timm.create_model(name, pretrained=False)
    classifier = model.pretrained_cfg.get("classifier")
    if isinstance(classifier, str):
        weight = state_dict.get(f"{classifier}.weight")
        if weight is not None and weight.ndim == 2 and weight.shape[0] != getattr(model, "num_classes", weight.shape[0]):
            model.reset_classifier(int(weight.shape[0]))
    load_state_dict_strict(model, state_dict, source=str(weights_path))
    return model


def linear_classifier(model: torch.nn.Module, spec: str) -> torch.nn.Linear:
    """Return the model's classifier, or raise :class:`RobsigError` when it is not one ``nn.Linear``."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, torch.nn.Linear):
        raise RobsigError(
            f"Model {spec!r}: the classifier (get_classifier()) is {type(classifier).__name__}, not a torch.nn.Linear. "
            "robsig reads the head as logits = h @ W.T + b, so it needs one linear layer "
            "(models with num_classes=0, convolutional or distilled two-head classifiers are not supported)."
        )
    return classifier


class TimmAdapter(ModelAdapter):
    """A timm classifier: ``h`` is the pooled pre-logits features and ``(W, b)`` its ``nn.Linear`` classifier.

    Parameters
    ----------
    model:
        A timm model (anything with ``forward_features``, ``forward_head`` and ``get_classifier``) with
        its weights loaded; it is put in eval mode and never trained.
    spec:
        The model spec as the user wrote it, for provenance.
    weights_path:
        The file the weights were loaded from; its SHA-256 goes into provenance.
    adapter:
        The adapter name recorded in provenance (plugins pass their own).
    weights_sha256:
        The file's SHA-256 when already known.
    config:
        Extra provenance configuration (weights source, conversion applied).
    class_names:
        Names of the head's rows; ImageNet-1k names for a 1,000-row head, ``class_N`` otherwise.
    check_head:
        Run one random input through the model and check that ``h @ W.T + b`` equals its logits.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        spec: str,
        weights_path: str | Path,
        *,
        adapter: str = ADAPTER_NAME,
        weights_sha256: str | None = None,
        config: dict[str, Any] | None = None,
        class_names: list[str] | None = None,
        check_head: bool = True,
    ) -> None:
        for method in ("forward_features", "forward_head"):
            if not callable(getattr(model, method, None)):
                raise TypeError(f"model must be a timm model with {method}(), got {type(model).__name__}")
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.adapter_name = adapter
        self.weights_path = Path(weights_path)
        self.weights_sha256 = weights_sha256 or sha256_file(self.weights_path)
        self.classifier = linear_classifier(model, spec)
        rows = self.classifier.out_features
        self.class_names = list(class_names) if class_names is not None else class_names_for_head(rows)
        if len(self.class_names) != rows:
            raise ValueError(f"class_names has {len(self.class_names)} names but the classifier has {rows} rows")
        if rows != IMAGENET_CLASS_COUNT and class_names is None:
            logger.info("robsig: %s has %d classes, so its head rows are not ImageNet-1k classes", spec, rows)
        self.data_config = timm.data.resolve_data_config({}, model=model)
        self._preprocess = timm.data.create_transform(**self.data_config)
        self._config = dict(config or {})
        if check_head:
            self.check_head()

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        """Return timm's evaluation transform from the model's pretrained config (size, crop, mean/std)."""
        return self._preprocess

    def representation(self, images: torch.Tensor) -> torch.Tensor:
        """Return the pre-logits features ``(batch, num_features)``, float32, on the model's device.

        Parameters
        ----------
        images:
            Preprocessed images ``(batch, 3, height, width)``; they are moved to the model's device.
        """
        check_image_batch(images)
        with torch.no_grad():
            features = self.model.forward_features(images.to(self.device))
            return self.model.forward_head(features, pre_logits=True).float()

    def head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the classifier's weight ``(d_Y, d_H)`` and bias ``(d_Y,)`` (or None), float32 copies on the CPU."""
        weight = self.classifier.weight.detach().to("cpu", torch.float32).clone()
        bias = self.classifier.bias
        return weight, None if bias is None else bias.detach().to("cpu", torch.float32).clone()

    def check_head(self) -> None:
        """Check on one random input that ``representation(x) @ W.T + b`` equals ``model(x)``.

        Raises
        ------
        RobsigError
            When the logits differ (the model does something after the classifier, or the classifier is
            not applied to the pre-logits features), since the checks would then read a wrong head.
        """
        generator = torch.Generator().manual_seed(0)
        images = torch.randn((1, *self.data_config["input_size"]), generator=generator)
        with torch.no_grad():
            logits = self.model(images.to(self.device)).float().cpu()
        weight, bias = self.head()
        rebuilt = self.representation(images).cpu() @ weight.T
        if bias is not None:
            rebuilt = rebuilt + bias
        tolerance = HEAD_CHECK_RTOL * max(1.0, float(logits.abs().max()))
        difference = float((rebuilt - logits).abs().max()) if rebuilt.shape == logits.shape else float("inf")
        if difference > tolerance:
            raise RobsigError(
                f"Model {self.spec!r}: representation @ W.T + b differs from the model's logits by up to "
                f"{difference:.3g} (tolerance {tolerance:.3g}), so its classifier is not a single linear map of "
                "forward_head(pre_logits=True). robsig cannot read this model's head."
            )

    def provenance(self) -> Provenance:
        """Return the spec, weights file and SHA-256, and the preprocessing and source configuration."""
        config: dict[str, Any] = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in self.data_config.items()
            if key in DATA_CONFIG_KEYS
        }
        config["num_classes"] = len(self.class_names)
        config["timm_version"] = timm.__version__
        config.update(self._config)
        architecture = getattr(self.model, "pretrained_cfg", {}).get("architecture") or type(self.model).__name__
        return Provenance(
            spec=self.spec,
            adapter=self.adapter_name,
            architecture=architecture,
            weights=str(self.weights_path),
            weights_sha256=self.weights_sha256,
            config=config,
        )

    def layers(self) -> list[str]:
        """Return the names of the model's feature stages (from ``feature_info``, else its block container)."""
        return timm_layer_names(self.model)

    def to(self, device: str) -> "TimmAdapter":
        """Move the model to ``device`` and return self."""
        try:
            target = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise RobsigError(f"Invalid device {device!r}: {error}. Use e.g. 'cpu' or 'cuda:0'.") from error
        self.model.to(target)
        return self


def _create_pretrained(name: str, weights_path: Path, timm_format: bool, spec: str) -> torch.nn.Module:
    overlay: dict[str, Any] = {"file": str(weights_path)}
    if timm_format:
        # Hub files are already in timm's layout, and custom_load would pass them to a loader for the
        # original format (e.g. big_vision .npz).
        overlay["custom_load"] = False
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    # timm raises RuntimeError for key or shape mismatches and unreadable files, and
    # FileNotFoundError for a vanished file.
    except (RuntimeError, OSError, ValueError) as error:
        raise RobsigError(
            f"Could not load timm model {spec!r} from {weights_path}: {type(error).__name__}: {str(error)[:1500]}. "
            "Delete the cached file so that it is downloaded again, or pass a state dict file."
        ) from error


def create_timm_adapter(rest: str, spec: str) -> TimmAdapter:
    """Build the adapter for ``timm:NAME`` or ``timm:NAME:/path/to/weights``.

    Parameters
    ----------
    rest:
        The spec after ``timm:``: ``NAME`` or ``NAME:PATH`` (the path may contain colons).
    spec:
        The full model spec, for messages and provenance.

    Raises
    ------
    RobsigError
        For an unknown name or tag, missing weights (offline or after a failed download), a state dict
        whose keys or shapes do not match, or a classifier that is not one ``nn.Linear``.
    """
    if not isinstance(rest, str) or not isinstance(spec, str):
        raise TypeError(f"rest and spec must be str, got {type(rest).__name__} and {type(spec).__name__}")
    name, _, path_text = rest.strip().partition(":")
    name, path_text = name.strip(), path_text.strip()
    check_model_name(name)

    if path_text:
        weights_path = Path(path_text).expanduser()
        if not weights_path.is_file():
            raise RobsigError(
                f"Weights file {str(weights_path)!r} of model spec {spec!r} not found. "
                "Pass an existing .safetensors, .pt, .pth or .bin state dict."
            )
        model = create_model_from_file(name, weights_path)
        config: dict[str, Any] = {"pretrained_tag": None, "local_file": str(weights_path)}
    else:
        weights_path, config, timm_format = resolve_timm_pretrained(name)
        model = _create_pretrained(name, weights_path, timm_format, spec)

    logger.info("robsig: loaded timm %s from %s", spec, weights_path)
    return TimmAdapter(model, spec, weights_path, config=config)
