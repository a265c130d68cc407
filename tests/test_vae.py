import re

import pytest
import torch
from safetensors.torch import save_file

from gms_hub import GMS
from gms_hub.models.vae import load_vae, sd2_vae_config
from conftest import TINY_GMS_KWARGS, make_tiny_vae


def to_ldm_layout(vae) -> dict:
    """Rename a diffusers AutoencoderKL state dict to the original ldm layout (as in SD .ckpt files)."""
    n = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        k = key
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", k)
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.block.", k)
        k = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up.{n - 1 - int(m.group(1))}.upsample.", k)
        k = re.sub(r"mid_block\.resnets\.(\d+)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", k)
        k = k.replace("mid_block.attentions.0.", "mid.attn_1.").replace("conv_shortcut", "nin_shortcut")
        k = k.replace("conv_norm_out", "norm_out").replace("attn_1.group_norm", "attn_1.norm")
        k = k.replace("attn_1.to_q", "attn_1.q").replace("attn_1.to_k", "attn_1.k").replace("attn_1.to_v", "attn_1.v")
        k = k.replace("attn_1.to_out.0", "attn_1.proj_out")
        if "attn_1." in k and k.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # ldm attention uses 1x1 convolutions
        out[k] = value.clone()
    return out


def _tiny_vae_32_groups():
    # Single files carry no norm_num_groups: the packaged SD2 config's 32 groups apply.
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    return AutoencoderKL(
        block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=32, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    ).eval()


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_ldm_checkpoint_loads_offline(tmp_path, suffix):
    vae = _tiny_vae_32_groups()
    ldm = {f"first_stage_model.{k}": v for k, v in to_ldm_layout(vae).items()}
    path = tmp_path / f"vae{suffix}"
    if suffix == ".safetensors":
        save_file(ldm, str(path))
    else:
        torch.save({"state_dict": ldm}, str(path))
    loaded = load_vae(str(path))
    assert list(loaded.config.block_out_channels) == [32, 32, 32, 32] and loaded.config.layers_per_block == 1
    assert loaded.config.scaling_factor == sd2_vae_config()["scaling_factor"] == 0.18215
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded.encode(x).latent_dist.mean, vae.encode(x).latent_dist.mean, atol=1e-6)
        z = torch.randn(1, 4, 4, 4)
        assert torch.allclose(loaded.decode(z).sample, vae.decode(z).sample, atol=1e-6)


def test_gms_accepts_single_file_vae(tmp_path):
    path = tmp_path / "first-stage.safetensors"
    save_file(to_ldm_layout(_tiny_vae_32_groups()), str(path))
    model = GMS(vae=str(path), image_size=32, base_channels=16, channel_mult=(1, 1, 1, 1))
    assert model.config["vae"] == str(path) and model.config["vae_subfolder"] is None
    assert model(torch.zeros(1, 3, 32, 32)).mask_probs.shape == (1, 1, 32, 32)


def test_packaged_sd2_config_describes_the_sd2_vae():
    config = sd2_vae_config()
    assert config["block_out_channels"] == [128, 256, 512, 512] and config["latent_channels"] == 4
    assert config["layers_per_block"] == 2 and config["norm_num_groups"] == 32


def test_non_vae_single_file_is_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not an ldm-format KL VAE"):
        load_vae(str(path))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "obj": object()}, str(path))
    with pytest.raises(ValueError, match="weights_only=True"):
        load_vae(str(path))


def test_folder_without_vae_subfolder_suggests_none(tiny_vae_dir):
    with pytest.raises(FileNotFoundError, match="vae_subfolder=None"):
        GMS(vae=str(tiny_vae_dir), vae_subfolder="vae", **TINY_GMS_KWARGS)


def test_hub_id_offline_fails_fast():
    # HF_HUB_OFFLINE=1 (conftest): an uncached Hub id fails at once instead of retrying.
    with pytest.raises(Exception) as err:
        load_vae("org/not-cached-anywhere", subfolder="vae")
    assert "offline" in str(err.value).lower() or "cache" in str(err.value).lower()
