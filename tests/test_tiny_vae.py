"""GMS around a diffusers AutoencoderTiny (TAESD layout): loading, the latent scale, saving, training."""

import json
import logging

import pytest
import torch
from diffusers import AutoencoderTiny

from gms_hub import GMS
from gms_hub.training.losses import gms_loss
from gms_hub.models.vae import autoencoder_class, load_vae
from conftest import TINY_GMS_KWARGS, make_tiny_taesd


@pytest.fixture
def tiny_taesd_gms(tiny_taesd_dir):
    torch.manual_seed(0)
    return GMS(vae=str(tiny_taesd_dir), vae_subfolder=None, **TINY_GMS_KWARGS).eval()


def pixel_values(batch=2, size=64, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_folder_class_is_read_from_config(tiny_taesd_dir, tiny_vae_dir):
    assert autoencoder_class(tiny_taesd_dir) is AutoencoderTiny
    vae = load_vae(str(tiny_taesd_dir), subfolder=None)  # failed before: loaded as AutoencoderKL (GroupNorm error)
    assert isinstance(vae, AutoencoderTiny) and not vae.training
    assert not any(p.requires_grad for p in vae.parameters())
    assert type(load_vae(str(tiny_vae_dir), subfolder=None)).__name__ == "AutoencoderKL"


def test_unsupported_autoencoder_class_is_a_clear_error(tiny_taesd_dir):
    config_path = tiny_taesd_dir / "config.json"
    config_path.write_text(json.dumps(dict(json.loads(config_path.read_text()), _class_name="VQModel")))
    with pytest.raises(ValueError, match="is a VQModel; GMS supports AutoencoderKL and AutoencoderTiny"):
        load_vae(str(tiny_taesd_dir), subfolder=None)


def test_config_records_class_and_unit_scaling(tiny_taesd_gms):
    assert tiny_taesd_gms.is_tiny
    assert tiny_taesd_gms.config["vae_class"] == "AutoencoderTiny"
    assert tiny_taesd_gms.config["scaling_factor"] == 1.0


def test_latents_are_taesd_latents_without_extra_scaling(tiny_taesd_gms):
    x = pixel_values()
    with torch.no_grad():
        expected = tiny_taesd_gms.vae.encode(x).latents  # (2, 4, 8, 8)
        latents = tiny_taesd_gms.encode(x)
    assert latents.shape == (2, 4, 8, 8)
    assert torch.equal(latents, expected)


def test_mask_probability_reads_the_decoder_in_minus_one_to_one(tiny_taesd_gms):
    # DecoderTiny's layers produce TAESD's [0, 1] images and diffusers maps them to [-1, 1]: a last layer that
    # outputs a constant c in [0, 1] must give probability c (not (c + 1) / 2).
    last = [m for m in tiny_taesd_gms.vae.decoder.layers if isinstance(m, torch.nn.Conv2d)][-1]
    for c in (0.0, 0.25, 1.0):
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(c)
            probs = tiny_taesd_gms.decode_mask(torch.randn(1, 4, 8, 8))  # (1, 1, 64, 64)
        assert probs.shape == (1, 1, 64, 64)
        assert torch.allclose(probs, torch.full_like(probs, c), atol=1e-6)


def test_sample_posterior_uses_the_latents_and_warns_once(tiny_taesd_gms, caplog):
    x = pixel_values()
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="gms_hub.models.gms"):
        first = tiny_taesd_gms.encode(x, sample_posterior=True, generator=torch.Generator().manual_seed(0))
        tiny_taesd_gms.encode(x, sample_posterior=True)
        deterministic = tiny_taesd_gms.encode(x)
    assert torch.equal(first, deterministic)
    assert sum("no posterior std" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ValueError, match="no posterior"):
        tiny_taesd_gms.encode_posterior(x)


def test_training_loss_backpropagates_to_the_lmm_only(tiny_taesd_gms):
    x = pixel_values()
    masks = (torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    tiny_taesd_gms.train()
    loss = gms_loss(tiny_taesd_gms, x, masks, sample_posterior=True).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_taesd_gms.lmm.parameters())
    assert all(p.grad is None for p in tiny_taesd_gms.vae.parameters())


def test_loaded_model_object_is_accepted_and_must_be_bundled(tmp_path):
    model = GMS(vae=make_tiny_taesd(), **TINY_GMS_KWARGS)
    with pytest.raises(ValueError, match="include_vae=True"):
        model.save_pretrained(tmp_path / "unbundled")


@pytest.mark.parametrize("include_vae", [False, True])
def test_save_and_load_round_trip(tiny_taesd_gms, tmp_path, include_vae):
    tiny_taesd_gms.save_pretrained(tmp_path / "gms", include_vae=include_vae)
    config = json.loads((tmp_path / "gms" / "config.json").read_text())
    assert config["vae_class"] == "AutoencoderTiny"
    if include_vae:
        assert json.loads((tmp_path / "gms" / "vae" / "config.json").read_text())["_class_name"] == "AutoencoderTiny"
    loaded = GMS.from_pretrained(tmp_path / "gms")
    assert loaded.is_tiny
    x = pixel_values()
    with torch.no_grad():
        assert torch.equal(loaded(x).mask_probs, tiny_taesd_gms(x).mask_probs)


def test_config_class_mismatch_is_a_clear_error(tiny_taesd_gms, tmp_path):
    tiny_taesd_gms.save_pretrained(tmp_path / "gms", include_vae=True)
    config_path = tmp_path / "gms" / "config.json"
    config_path.write_text(json.dumps(dict(json.loads(config_path.read_text()), vae_class="AutoencoderKL")))
    with pytest.raises(ValueError, match="expects the autoencoder class AutoencoderKL but .* is AutoencoderTiny"):
        GMS.from_pretrained(tmp_path / "gms")


def test_onnx_export_parity(tiny_taesd_gms, tmp_path):
    from gms_hub.inference.export import export_onnx
    from gms_hub.inference.onnx_runtime import ONNXGMS

    export_onnx(tiny_taesd_gms, tmp_path / "onnx")
    x = pixel_values(3)
    with torch.no_grad():
        expected = tiny_taesd_gms(x).mask_probs.numpy()
    assert abs(ONNXGMS.from_pretrained(tmp_path / "onnx")(x) - expected).max() <= 1e-4


def test_train_script_trains_on_a_tiny_vae_folder(tmp_path):
    from gms_hub.data import write_dataset_folder
    from gms_hub.data.synthetic import SYNTHETIC_CARD, make_synthetic_dataset
    from tests._training_utils import TRAIN_SCRIPT, accelerate_command, run_launch, subprocess_env

    dataset = make_synthetic_dataset(num_train=8, num_validation=4, num_test=4, seed=0, image_size=32)
    write_dataset_folder(dataset, tmp_path / "data", card=SYNTHETIC_CARD)
    make_tiny_taesd().save_pretrained(str(tmp_path / "taesd"))
    command = accelerate_command(1) + [
        str(TRAIN_SCRIPT), "--dataset", str(tmp_path / "data"), "--output_dir", str(tmp_path / "out"),
        "--vae", str(tmp_path / "taesd"), "--vae_subfolder", "none", "--image_size", "32",
        "--base_channels", "16", "--channel_mult", "1", "1", "1", "1", "--num_train_epochs", "1",
        "--train_batch_size", "4", "--latent_noise_prob", "1.0",
    ]
    result = run_launch(command, subprocess_env(), timeout=300)
    assert "no posterior std" in result.stdout + result.stderr
    model = GMS.from_pretrained(tmp_path / "out")
    assert model.is_tiny and model.config["vae_class"] == "AutoencoderTiny"
