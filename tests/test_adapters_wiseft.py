"""WiSE-FT interpolation: endpoints reproduce both models, the midpoint mixes weights and heads."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file

from robsig_checks.adapters.wiseft import interpolate_state_dicts, parse_alpha, split_specs
from robsig_checks.errors import RobsigError
from robsig_checks.registry import build_registry


def save_resnet(path, seed: int) -> None:
    torch.manual_seed(seed)
    model = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    # Distinct batch-norm statistics, so that buffers take part in the interpolation.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(seed + 10)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wiseft")
    base, finetuned = folder / "base.safetensors", folder / "finetuned.safetensors"
    save_resnet(base, seed=0)
    save_resnet(finetuned, seed=1)
    return base, finetuned


@pytest.fixture(scope="module")
def registry():
    return build_registry(load_entry_points=False)


def specs(weights) -> tuple[str, str]:
    base, finetuned = weights
    return f"timm:resnet10t:{base}", f"timm:resnet10t:{finetuned}"


def test_endpoints_reproduce_both_models(weights, registry):
    base_spec, finetuned_spec = specs(weights)
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    for alpha, reference_spec in ((0, base_spec), (1, finetuned_spec)):
        mixed = registry.create_model(f"wiseft:{alpha}:{base_spec}:{finetuned_spec}")
        reference = registry.create_model(reference_spec)
        with torch.no_grad():
            assert torch.equal(mixed.representation(images), reference.representation(images))
        assert torch.equal(mixed.head()[0], reference.head()[0])
        assert torch.equal(mixed.head()[1], reference.head()[1])


def test_midpoint_mixes_floats_and_keeps_integer_buffers(weights, registry):
    base_spec, finetuned_spec = specs(weights)
    mixed = registry.create_model(f"wiseft:0.25:{base_spec}:{finetuned_spec}")
    base = registry.create_model(base_spec).torch_module().state_dict()
    finetuned = registry.create_model(finetuned_spec).torch_module().state_dict()
    state = mixed.torch_module().state_dict()
    assert torch.allclose(state["conv1.0.weight"], 0.75 * base["conv1.0.weight"] + 0.25 * finetuned["conv1.0.weight"])
    assert torch.allclose(state["bn1.running_mean"], 0.75 * base["bn1.running_mean"] + 0.25 * finetuned["bn1.running_mean"])
    assert torch.equal(state["bn1.num_batches_tracked"], finetuned["bn1.num_batches_tracked"])
    assert mixed.provenance().config["alpha"] == 0.25


def test_differing_keys_listed_unless_policy():
    base = {"a": torch.ones(2), "only_base": torch.ones(1)}
    finetuned = {"a": torch.zeros(2), "only_finetuned": torch.ones(1)}
    with pytest.raises(RobsigError, match=r"1 only in the base model \(only_base\), 1 only in the finetuned model "
                                          r"\(only_finetuned\)"):
        interpolate_state_dicts(base, finetuned, 0.5)
    mixed = interpolate_state_dicts(base, finetuned, 0.5, policy="finetuned")
    assert torch.equal(mixed["a"], torch.full((2,), 0.5))
    assert set(mixed) == {"a", "only_finetuned"}


def test_spec_split_and_alpha_errors():
    prefixes, architectures = {"timm", "efficientnet-lite0"}, {"ViT-B-16"}
    assert split_specs("ViT-B-16:openai:ViT-B-16:/m/ft.pt", prefixes, architectures) == ("ViT-B-16:openai",
                                                                                          "ViT-B-16:/m/ft.pt")
    assert split_specs("efficientnet-lite0:timm:x:/w.pt", prefixes, architectures) == ("efficientnet-lite0", "timm:x:/w.pt")
    with pytest.raises(RobsigError, match="expected BASE_SPEC:FINETUNED_SPEC"):
        split_specs("nothing-here", prefixes, architectures)
    assert parse_alpha("0.3,keys=finetuned") == (0.3, "finetuned")
    with pytest.raises(RobsigError, match=r"Invalid WiSE-FT alpha 1.5: it must lie in \[0, 1\]"):
        parse_alpha("1.5")
    with pytest.raises(RobsigError, match="the only option is keys=POLICY"):
        parse_alpha("0.5,mode=fast")
