"""Layer activations through forward hooks: class token, token mean, spatial mean, bad layer names."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from robsig_checks.adapters.base import pool_activation
from robsig_checks.adapters.timm import TimmAdapter
from robsig_checks.errors import RobsigError


def adapter_for(model: torch.nn.Module, tmp_path, name: str) -> TimmAdapter:
    path = tmp_path / f"{name}.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    # The random-input head check uses the pretrained config's 224-pixel size, not this 32-pixel ViT.
    return TimmAdapter(model.eval(), f"timm:{name}:{path}", path, check_head=False)


@pytest.fixture
def vit(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=3,
                              num_classes=10)
    return adapter_for(model, tmp_path, "vit_tiny_patch16_224")


def test_vit_blocks_give_class_token_and_mean(vit):
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    layers = vit.layers()
    assert layers == ["blocks.0", "blocks.1", "blocks.2"]

    h, cls = vit.forward_with_layers(images, layers, token="cls")
    _, mean = vit.forward_with_layers(images, layers, token="mean")
    with torch.no_grad():
        reference = vit.model.forward_intermediates(images, indices=3, return_prefix_tokens=True, norm=False,
                                                    output_fmt="NLC", intermediates_only=True)
    for name, (patches, prefix) in zip(layers, reference):
        assert torch.allclose(cls[name], prefix[:, 0], atol=1e-6)
        tokens = torch.cat([prefix, patches], dim=1)
        assert torch.allclose(mean[name], tokens.mean(dim=1), atol=1e-6)
    assert torch.allclose(h, vit.representation(images), atol=1e-6)


def test_resnet_stages_are_spatially_averaged(tmp_path):
    torch.manual_seed(0)
    adapter = adapter_for(timm.create_model("resnet10t", pretrained=False, num_classes=10), tmp_path, "resnet10t")
    images = torch.randn(2, 3, 64, 64)
    _, activations = adapter.forward_with_layers(images, ["layer1", "layer4"])
    with torch.no_grad():
        features = adapter.model.forward_intermediates(images, indices=[1, 4], intermediates_only=True)
    assert torch.allclose(activations["layer1"], features[0].mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(activations["layer4"], features[1].mean(dim=(2, 3)), atol=1e-5)


def test_unknown_layer_lists_available(vit):
    with pytest.raises(RobsigError, match=r"Layer\(s\) 'blocks.7' not found in TimmAdapter; available layers: "
                                          r"blocks.0, blocks.1, blocks.2"):
        vit.forward_with_layers(torch.randn(1, 3, 32, 32), ["blocks.7"])


def test_hook_that_never_fires_is_error(vit):
    # The classifier head is not used by the representation (pre-logits), so its hook never fires.
    with pytest.raises(RobsigError, match=r"forward hook of layer\(s\) 'head' never fired"):
        vit.forward_with_layers(torch.randn(1, 3, 32, 32), ["head"])


def test_sequence_first_output_is_transposed():
    output = torch.arange(24, dtype=torch.float32).reshape(3, 2, 4)  # (tokens, batch, width)
    pooled = pool_activation(output, batch=2, token="cls")
    assert torch.equal(pooled, output[0])
