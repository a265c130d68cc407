import pytest
import torch

from gms_hub import LatentMappingModel
from _reference_lmm import reference_key_shapes



def test_heads_have_latent_shape():
    lmm = LatentMappingModel()
    heads = lmm(torch.randn(2, 4, 28, 28))
    assert list(heads) == ["level3", "level2", "level1", "out"]
    for tensor in heads.values():
        assert tensor.shape == (2, 4, 28, 28)


def test_paper_configuration_parameter_count():
    assert sum(p.numel() for p in LatentMappingModel().parameters()) == 1_564_976


def test_state_dict_matches_reference_key_count():
    # The reference lists 196 entries, 16 of which are the second registration of a shared PReLU.
    shapes = reference_key_shapes()
    duplicates = [k for k in shapes if ".conv1.1." in k or ".conv2.1." in k]
    assert len(LatentMappingModel().state_dict()) == len(shapes) - len(duplicates)


def test_init_is_kaiming_fan_out_with_zero_bias():
    torch.manual_seed(0)
    conv = LatentMappingModel().encoder[1].res.conv1  # 32 -> 64, 3x3
    fan_out = conv.out_channels * 9
    expected_std = (2.0 / (1 + 0.01**2)) ** 0.5 / fan_out**0.5  # leaky_relu gain with default slope
    assert torch.all(conv.bias == 0)
    assert abs(conv.weight.std().item() - expected_std) / expected_std < 0.05


def test_gradient_checkpointing_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    lmm = LatentMappingModel(base_channels=16, channel_mult=(1, 1, 1, 1)).train()
    z = torch.randn(2, 4, 8, 8)
    ref = torch.stack(list(lmm(z).values()))
    ref.sum().backward()
    grads = [p.grad.clone() for p in lmm.parameters()]
    lmm.zero_grad()
    lmm.gradient_checkpointing = True
    out = torch.stack(list(lmm(z).values()))
    out.sum().backward()
    assert torch.allclose(out, ref)
    assert all(torch.allclose(p.grad, g, atol=1e-6) for p, g in zip(lmm.parameters(), grads))


def test_bad_widths_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible by norm_num_groups"):
        LatentMappingModel(base_channels=8)
    with pytest.raises(ValueError, match="4 entries"):
        LatentMappingModel(channel_mult=(1, 2))
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        LatentMappingModel(base_channels=16, channel_mult=(1, 1, 1, 1))(torch.randn(1, 3, 8, 8))
