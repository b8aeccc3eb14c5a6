"""WiSE-FT: weight-space interpolation between a zero-shot model and its finetuned version.

``theta_alpha = (1 - alpha) * theta_base + alpha * theta_finetuned`` over every floating-point parameter
and buffer (batch-norm statistics too); integer buffers come from the finetuned model (Wortsman et al.
2022, "Robust fine-tuning of zero-shot models"). The linear head is interpolated the same way. Sweeping
alpha gives a family of models whose signatures and effective robustness move together.

Spec: ``wiseft:ALPHA[,keys=POLICY]:BASE_SPEC:FINETUNED_SPEC``, for example
``wiseft:0.5:ViT-B-16:openai:ViT-B-16:/models/finetuned.safetensors``. Both specs may contain colons;
the split is the one position where both halves are valid model specs.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Callable

import torch
from PIL import Image

from robsig_checks.adapters.base import ModelAdapter, Provenance
from robsig_checks.errors import RobsigError

#: Policies for parameter names present in only one of the two models.
KEY_POLICIES = {
    "strict": "differing names are an error that lists them",
    "finetuned": "names only in the finetuned model keep its values; names only in the base model are ignored",
}


def _looks_like_spec(text: str, model_prefixes: set[str], open_clip_architectures: set[str]) -> bool:
    prefix, _, rest = text.partition(":")
    if prefix in model_prefixes:
        return True
    return bool(rest) and prefix in open_clip_architectures


def split_specs(text: str, model_prefixes: set[str], open_clip_architectures: set[str]) -> tuple[str, str]:
    """Split ``BASE_SPEC:FINETUNED_SPEC`` at the one colon where both halves are model specs."""
    positions = [index for index, character in enumerate(text) if character == ":"]
    candidates = [
        (text[:index], text[index + 1 :])
        for index in positions
        if _looks_like_spec(text[:index], model_prefixes, open_clip_architectures)
        and _looks_like_spec(text[index + 1 :], model_prefixes, open_clip_architectures)
    ]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise RobsigError(
            f"Invalid WiSE-FT spec part {text!r}: expected BASE_SPEC:FINETUNED_SPEC, two model specs such as "
            "ViT-B-16:openai:ViT-B-16:/models/finetuned.safetensors."
        )
    choices = "; ".join(f"{left!r} and {right!r}" for left, right in candidates)
    raise RobsigError(f"Ambiguous WiSE-FT spec part {text!r}: it splits into two model specs in several ways "
                      f"({choices}). Rename a weights file so that it contains no colon.")


def parse_alpha(text: str) -> tuple[float, str]:
    """Parse ``ALPHA[,keys=POLICY]`` into alpha in [0, 1] and a key policy."""
    alpha_text, *options = [part.strip() for part in text.split(",")]
    try:
        alpha = float(alpha_text)
    except ValueError:
        raise RobsigError(f"Invalid WiSE-FT alpha {alpha_text!r}: expected a number in [0, 1], e.g. wiseft:0.5:...") from None
    if not 0.0 <= alpha <= 1.0:
        raise RobsigError(f"Invalid WiSE-FT alpha {alpha}: it must lie in [0, 1] (0 is the base model, 1 the finetuned).")
    policy = "strict"
    for option in options:
        key, _, value = option.partition("=")
        if key != "keys" or value not in KEY_POLICIES:
            raise RobsigError(f"Invalid WiSE-FT option {option!r}: the only option is keys=POLICY with POLICY one of "
                              f"{', '.join(KEY_POLICIES)}.")
        policy = value
    return alpha, policy


def interpolate_state_dicts(
    base: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float, policy: str = "strict"
) -> dict[str, torch.Tensor]:
    """Return ``(1 - alpha) base + alpha finetuned`` for floating tensors, the finetuned value for the others."""
    only_base = sorted(set(base) - set(finetuned))
    only_finetuned = sorted(set(finetuned) - set(base))
    if policy == "strict" and (only_base or only_finetuned):
        raise RobsigError(
            f"The two WiSE-FT models have different parameter names: {len(only_base)} only in the base model "
            f"({', '.join(only_base[:10])}{' ...' if len(only_base) > 10 else ''}), {len(only_finetuned)} only in "
            f"the finetuned model ({', '.join(only_finetuned[:10])}{' ...' if len(only_finetuned) > 10 else ''}). "
            "Use the same architecture for both, or add ,keys=finetuned after alpha to keep the finetuned values "
            "of names the base model lacks."
        )
    mixed = {}
    for name, value in finetuned.items():
        if name not in base or not value.is_floating_point():
            mixed[name] = value.clone()
            continue
        if base[name].shape != value.shape:
            raise RobsigError(f"WiSE-FT parameter {name!r} has shape {tuple(base[name].shape)} in the base model and "
                              f"{tuple(value.shape)} in the finetuned model; both models need the same architecture.")
        mixed[name] = (1.0 - alpha) * base[name].to(value.dtype) + alpha * value
    return mixed


class WiseFTAdapter(ModelAdapter):
    """The finetuned adapter's code path with interpolated weights and an interpolated head."""

    def __init__(self, spec: str, alpha: float, base: ModelAdapter, finetuned: ModelAdapter, policy: str = "strict") -> None:
        base_module, finetuned_module = base.torch_module(), finetuned.torch_module()
        if base_module is None or finetuned_module is None:
            raise RobsigError(f"WiSE-FT needs two adapters with torch modules; {spec!r} got "
                              f"{type(base).__name__} and {type(finetuned).__name__}.")
        self.spec = spec
        self.alpha = alpha
        self.policy = policy
        self.inner = copy.deepcopy(finetuned)
        mixed = interpolate_state_dicts(base_module.state_dict(), finetuned_module.state_dict(), alpha, policy)
        self.inner.torch_module().load_state_dict(mixed)
        self.class_names = list(finetuned.class_names)
        self._heads = (base.head(), finetuned.head())
        self._provenance = (base.provenance(), finetuned.provenance())

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        return self.inner.preprocess

    def representation(self, images: torch.Tensor) -> torch.Tensor:
        return self.inner.representation(images)

    def torch_module(self) -> torch.nn.Module | None:
        return self.inner.torch_module()

    def layers(self) -> list[str]:
        return self.inner.layers()

    def head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``(1 - alpha) W_base + alpha W_finetuned`` and the bias mixed alike (a missing bias is 0)."""
        (weight_base, bias_base), (weight_finetuned, bias_finetuned) = self._heads
        if weight_base.shape != weight_finetuned.shape:
            raise RobsigError(f"WiSE-FT heads differ in shape: {tuple(weight_base.shape)} and "
                              f"{tuple(weight_finetuned.shape)}; both models must classify the same classes.")
        weight = (1.0 - self.alpha) * weight_base.float() + self.alpha * weight_finetuned.float()
        if bias_base is None and bias_finetuned is None:
            return weight, None
        zeros = torch.zeros(weight.shape[0])
        bias_base = zeros if bias_base is None else bias_base.float()
        bias_finetuned = zeros if bias_finetuned is None else bias_finetuned.float()
        return weight, (1.0 - self.alpha) * bias_base + self.alpha * bias_finetuned

    def provenance(self) -> Provenance:
        base, finetuned = self._provenance
        digest = hashlib.sha256(f"{self.alpha!r}|{base.weights_sha256}|{finetuned.weights_sha256}".encode()).hexdigest()
        return Provenance(
            spec=self.spec,
            adapter="wiseft",
            architecture=finetuned.architecture,
            weights=f"{base.weights} + {finetuned.weights}",
            weights_sha256=digest,
            config={"alpha": self.alpha, "key_policy": self.policy, "base": base.to_dict(), "finetuned": finetuned.to_dict()},
        )

    def to(self, device: str) -> "WiseFTAdapter":
        self.inner.to(device)
        return self


def create_wiseft_adapter(rest: str, spec: str) -> WiseFTAdapter:
    """Build ``wiseft:ALPHA[,keys=POLICY]:BASE_SPEC:FINETUNED_SPEC`` from two adapters of the registry."""
    import open_clip

    from robsig_checks.registry import current_registry

    alpha_text, separator, specs = rest.partition(":")
    if not separator or not specs:
        raise RobsigError(f"Invalid WiSE-FT spec {spec!r}: expected wiseft:ALPHA:BASE_SPEC:FINETUNED_SPEC, e.g. "
                          "wiseft:0.5:ViT-B-16:openai:ViT-B-16:/models/finetuned.safetensors.")
    alpha, policy = parse_alpha(alpha_text)
    registry = current_registry()
    base_spec, finetuned_spec = split_specs(specs, set(registry.model_adapters), set(open_clip.list_models()))
    base = registry.create_model(base_spec)
    finetuned = registry.create_model(finetuned_spec)
    return WiseFTAdapter(spec, alpha, base, finetuned, policy)

