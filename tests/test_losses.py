"""gms_loss on crafted inputs: the paper's definitions, where the gradients go, and the latent-noise switch."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gms_hub.training.losses import LOSS_HEADS, gms_loss, mask_latents, soft_dice_loss
from tests._training_utils import make_tiny_gms


class _FixedHeads(nn.Module):
    """A stand-in LMM: records its input and returns the same given latents for every head."""

    def __init__(self, latents: torch.Tensor):
        super().__init__()
        self.latents = latents
        self.inputs = []

    def forward(self, z):
        self.inputs.append(z.detach().clone())
        return {name: self.latents.clone() for name in ("level3", "level2", "level1", "out")}


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    pixel_values = torch.rand(2, 3, 32, 32) * 2 - 1
    masks = torch.zeros(2, 1, 32, 32)
    masks[0, :, 8:20, 10:26] = 1
    masks[1, :, 2:9, 3:30] = 1
    return pixel_values, masks


def test_soft_dice_hand_values():
    target = torch.zeros(2, 1, 2, 2)
    target[0, 0, 0] = 1  # 2 foreground pixels
    probs = torch.full((2, 1, 2, 2), 0.5)
    smooth = 1e-5
    # sample 0: sum(pg) = 1, sum(p) = 2, sum(g) = 2; sample 1: sum(pg) = 0, sum(p) = 2, sum(g) = 0
    expected = ((1 - (2 + smooth) / (4 + smooth)) + (1 - smooth / (2 + smooth))) / 2
    assert soft_dice_loss(probs, target).item() == pytest.approx(expected, rel=1e-6)
    assert soft_dice_loss(target, target).item() == pytest.approx(0.0, abs=1e-7)  # perfect prediction


def test_perfect_latents_give_zero_latent_mse_and_loss_is_the_sum(batch):
    pixel_values, masks = batch
    model = make_tiny_gms()
    target = mask_latents(model, masks)
    out = gms_loss(model, pixel_values, masks, lmm=_FixedHeads(target))
    assert out.latent_mse.item() == pytest.approx(0.0, abs=1e-12)
    # the Dice part is the soft Dice of the decoded target latents, once per loss head
    expected_dice = 3 * soft_dice_loss(model.decode_mask(target), masks)
    assert out.dice.item() == pytest.approx(expected_dice.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.latent_mse.item() + out.dice.item())


def test_loss_matches_per_head_reference_computation(batch):
    pixel_values, masks = batch
    model = make_tiny_gms()
    out = gms_loss(model, pixel_values, masks)
    with torch.no_grad():
        z_mask = model.vae.encode((masks * 2 - 1).repeat(1, 3, 1, 1)).latent_dist.mean * model.scaling_factor
        heads = model.lmm(model.encode(pixel_values))
        mse = sum(F.mse_loss(heads[h], z_mask) for h in LOSS_HEADS)
        dice = sum(soft_dice_loss(model.decode_mask(heads[h]), masks) for h in LOSS_HEADS)  # one decode per head
        with_level3 = mse + F.mse_loss(heads["level3"], z_mask)
    assert out.latent_mse.item() == pytest.approx(mse.item(), rel=1e-5)
    assert out.dice.item() == pytest.approx(dice.item(), rel=1e-5)
    assert out.latent_mse.item() != pytest.approx(with_level3.item(), rel=1e-5)


def test_gradients_reach_the_lmm_and_not_the_vae(batch):
    pixel_values, masks = batch
    model = make_tiny_gms()
    model.train()
    # Only the Dice term goes through the decoder: check it alone carries gradient into the LMM.
    gms_loss(model, pixel_values, masks).dice.backward()
    assert all(p.grad is None for p in model.vae.parameters())
    assert not any(p.requires_grad for p in model.vae.parameters())
    out_head = model.lmm.heads["out"][-1].weight.grad
    assert out_head is not None and out_head.abs().sum() > 0
    level3 = model.lmm.heads["level3"][-1].weight.grad
    assert level3 is None or level3.abs().sum() == 0  # level3 is not in the loss
    assert model.lmm.conv_in.weight.grad.abs().sum() > 0


def test_sample_posterior_changes_the_input_only(batch):
    pixel_values, masks = batch
    model = make_tiny_gms()
    heads = _FixedHeads(torch.zeros(2, 4, 4, 4))
    mean_out = gms_loss(model, pixel_values, masks, lmm=heads)
    sampled_out = gms_loss(model, pixel_values, masks, sample_posterior=True, generator=torch.Generator().manual_seed(3), lmm=heads)
    mean_input, sampled_input = heads.inputs
    with torch.no_grad():
        posterior = model.encode_posterior(pixel_values)
        noise = torch.randn(mean_input.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(mean_input, posterior.mean * model.scaling_factor)
    # the reference's noise: std is NOT rescaled by the scaling factor
    torch.testing.assert_close(sampled_input, posterior.mean * model.scaling_factor + posterior.std * noise)
    assert not torch.allclose(mean_input, sampled_input)
    # the targets (mask latents) are the posterior mean in both cases: same heads -> same losses
    assert sampled_out.loss.item() == pytest.approx(mean_out.loss.item(), rel=1e-6)


def test_gms_loss_rejects_mismatched_masks(batch):
    pixel_values, _ = batch
    model = make_tiny_gms()
    with pytest.raises(ValueError, match=r"\(B, 1, S, S\)"):
        gms_loss(model, pixel_values, torch.zeros(2, 3, 32, 32))
