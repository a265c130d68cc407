"""Shared fixtures: tiny VAEs and GMS models, offline Hub settings."""

import os

# Offline by default: no test may wait on the network. Set before diffusers/huggingface_hub are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

TINY_VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4,  # four blocks: 8x downsampling, as in SD
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=1,
    norm_num_groups=4,
    sample_size=64,
)
TINY_GMS_KWARGS = dict(image_size=64, base_channels=16, channel_mult=(1, 1, 1, 1))


def make_tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(**TINY_VAE_CONFIG).eval()


@pytest.fixture
def tiny_vae():
    return make_tiny_vae()


@pytest.fixture
def tiny_vae_dir(tmp_path):
    """A tiny random AutoencoderKL saved as a diffusers folder (the folder is the VAE itself)."""
    path = tmp_path / "tiny_vae"
    make_tiny_vae().save_pretrained(str(path))
    return path


@pytest.fixture
def tiny_gms(tiny_vae_dir):
    """A GMS with a tiny random VAE (loaded from a local folder) and a small LMM, 64x64 input."""
    from gms_hub import GMS

    torch.manual_seed(0)
    return GMS(vae=str(tiny_vae_dir), vae_subfolder=None, **TINY_GMS_KWARGS).eval()


# A random AutoencoderTiny (TAESD layout: four encoder/decoder stages, 8x down/upsampling) with narrow channels.
TINY_TAESD_CONFIG = dict(
    encoder_block_out_channels=(8, 8, 8, 8),
    decoder_block_out_channels=(8, 8, 8, 8),
    num_encoder_blocks=(1, 1, 1, 1),
    num_decoder_blocks=(1, 1, 1, 1),
    latent_channels=4,
)


def make_tiny_taesd(seed: int = 0):
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    return AutoencoderTiny(**TINY_TAESD_CONFIG).eval()


@pytest.fixture
def tiny_taesd_dir(tmp_path):
    """A tiny random AutoencoderTiny saved as a diffusers folder (as madebyollin/taesd: the folder is the VAE)."""
    path = tmp_path / "tiny_taesd"
    make_tiny_taesd().save_pretrained(str(path))
    return path
