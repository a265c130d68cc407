import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from gms_hub import GMS
from conftest import TINY_GMS_KWARGS, make_tiny_vae


def _pixels(n=2, size=64, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_forward_output_shapes_and_range(tiny_gms):
    out = tiny_gms(_pixels())
    assert out.mask_probs.shape == (2, 1, 64, 64)
    assert out.mask_latents.shape == out.image_latents.shape == (2, 4, 8, 8)
    assert out.mask_probs.min() >= 0 and out.mask_probs.max() <= 1


def test_forward_is_deterministic_in_train_mode(tiny_gms):
    tiny_gms.train()
    assert not tiny_gms.vae.training  # the frozen VAE stays in eval mode
    x = _pixels()
    assert torch.equal(tiny_gms(x).mask_probs, tiny_gms(x).mask_probs)


def test_latents_use_scaled_posterior_mean(tiny_gms):
    x = _pixels()
    mean = tiny_gms.vae.encode(x).latent_dist.mean
    assert torch.allclose(tiny_gms(x).image_latents, mean * tiny_gms.vae.config.scaling_factor)


def test_sample_posterior_adds_unscaled_std_noise(tiny_gms):
    x = _pixels()
    posterior = tiny_gms.encode_posterior(x)
    noisy = tiny_gms.encode(x, sample_posterior=True, generator=torch.Generator().manual_seed(3))
    eps = torch.randn(noisy.shape, generator=torch.Generator().manual_seed(3))
    expected = posterior.mean * tiny_gms.scaling_factor + posterior.std * eps
    assert torch.allclose(noisy, expected, atol=1e-6)


def test_vae_is_frozen_and_only_lmm_trains(tiny_gms):
    assert not any(p.requires_grad for p in tiny_gms.vae.parameters())
    assert all(p.requires_grad for p in tiny_gms.lmm.parameters())


def test_save_load_gives_identical_outputs(tiny_gms, tmp_path):
    x = _pixels()
    expected = tiny_gms(x).mask_probs
    tiny_gms.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["README.md", "config.json", "model.safetensors"]
    # Only the LMM is stored.
    assert set(load_file(str(tmp_path / "m" / "model.safetensors"))) == set(tiny_gms.lmm.state_dict())
    loaded = GMS.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded(x).mask_probs, expected)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "gms" and config["base_channels"] == 16 and config["image_size"] == 64


def test_model_card_metadata(tiny_gms, tmp_path):
    tiny_gms.save_pretrained(
        tmp_path / "m",
        model_card_kwargs={"datasets": ["org/busi"], "metrics": {"test": {"dsc_mean": 0.8, "dsc_std": 0.1, "iou_mean": 0.7, "iou_std": 0.1, "n": 3}}, "selection_split": "validation"},
    )
    card = (tmp_path / "m" / "README.md").read_text()
    header = card.split("---")[1]
    for field in ("library_name: gms_hub", "pipeline_tag: image-segmentation", "license:", "org/busi", "metrics:"):
        assert field in header
    assert "80.00 ± 10.00" in card and "Generative Medical Segmentation" in card and "@inproceedings{huo2025gms" in card
    assert "validation split" in card


def test_include_vae_round_trip_needs_no_vae_source(tiny_gms, tmp_path):
    x = _pixels()
    expected = tiny_gms(x).mask_probs
    tiny_gms.save_pretrained(tmp_path / "bundle", include_vae=True)
    assert (tmp_path / "bundle" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    # Remove the original VAE folder: the bundled copy must be used.
    import shutil

    shutil.rmtree(tiny_gms.config["vae"])
    loaded = GMS.from_pretrained(tmp_path / "bundle")
    assert torch.equal(loaded(x).mask_probs, expected)


def test_fp16_storage_loads_as_fp32(tiny_gms, tmp_path):
    tiny_gms.save_pretrained(tmp_path / "half", include_vae=True, save_dtype=torch.float16)
    assert all(t.dtype == torch.float16 for t in load_file(str(tmp_path / "half" / "model.safetensors")).values())
    loaded = GMS.from_pretrained(tmp_path / "half")
    assert loaded.dtype == torch.float32 and next(loaded.vae.parameters()).dtype == torch.float32
    x = _pixels()
    assert torch.allclose(loaded(x).mask_probs, tiny_gms(x).mask_probs, atol=2e-2)


def test_local_vae_path_warns_on_save(tiny_gms, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="gms_hub.models.serialization"):
        tiny_gms.save_pretrained(tmp_path / "m")
    assert "include_vae=True" in caplog.text


def test_vae_object_requires_include_vae(tmp_path):
    model = GMS(vae=make_tiny_vae(), **TINY_GMS_KWARGS)
    with pytest.raises(ValueError, match="include_vae=True"):
        model.save_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m", include_vae=True)
    assert GMS.from_pretrained(tmp_path / "m").config["vae"] is None


def test_missing_unexpected_and_misshaped_keys_are_named(tiny_gms, tmp_path):
    tiny_gms.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(str(weights))
    state.pop("conv_in.bias")
    state["extra.weight"] = torch.zeros(1)
    state["heads.out.2.weight"] = torch.zeros(4, 16, 1, 1)
    save_file(state, str(weights))
    with pytest.raises(ValueError) as err:
        GMS.from_pretrained(tmp_path / "m")
    message = str(err.value)
    assert "conv_in.bias" in message and "extra.weight" in message
    assert "heads.out.2.weight: got (4, 16, 1, 1), expected (4, 16, 3, 3)" in message


def test_truncated_safetensors_is_a_clear_error(tiny_gms, tmp_path):
    tiny_gms.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        GMS.from_pretrained(tmp_path / "m")


def test_config_from_another_library_is_rejected(tiny_gms, tmp_path):
    tiny_gms.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", "in_channels": 4}))
    with pytest.raises(ValueError, match="not a GMS config.*UNet2DModel"):
        GMS.from_pretrained(tmp_path / "m")


def test_broken_config_json_names_the_file(tiny_gms, tmp_path):
    tiny_gms.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"model_type": "gms", ')
    with pytest.raises(ValueError, match=r"m/config.json is not valid JSON.*force_download=True"):
        GMS.from_pretrained(tmp_path / "m")


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        GMS.from_pretrained(tmp_path)


def test_vae_latent_channels_must_match(tmp_path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        latent_channels=8, block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    with pytest.raises(ValueError, match="8 latent channels but the latent mapping model expects 4"):
        GMS(vae=vae, **TINY_GMS_KWARGS)


def test_forward_rejects_wrong_shapes(tiny_gms):
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        tiny_gms(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="multiples of 8"):
        tiny_gms(torch.rand(1, 3, 60, 64))


def test_half_precision_model_runs(tiny_gms):
    # model.to(dtype) works; bf16 stands in for fp16 on CPU (fp16 conv is not implemented on every CPU build).
    tiny_gms.to(dtype=torch.bfloat16)
    import numpy as np

    mask = tiny_gms.segment(np.zeros((20, 24), dtype=np.uint8))
    assert mask.shape == (20, 24) and tiny_gms.dtype == torch.bfloat16


def test_config_is_the_init_signature_and_rebuilds_the_model(tiny_gms, tmp_path):
    import inspect

    from gms_hub.models.serialization import INFORMATIONAL_KEYS

    tiny_gms.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    arguments = set(inspect.signature(GMS.__init__).parameters) - {"self", "vae_kwargs"}
    assert set(saved) - set(INFORMATIONAL_KEYS) == arguments
    assert {"model_type", "gms_hub_version", "scaling_factor"} <= set(saved)
    rebuilt = GMS(**{k: v for k, v in saved.items() if k not in INFORMATIONAL_KEYS})
    rebuilt.load_lmm_state_dict(tiny_gms.lmm.state_dict())
    x = _pixels()
    assert torch.equal(rebuilt.eval()(x).mask_probs, tiny_gms(x).mask_probs)


def test_save_config_argument_overrides_entries(tiny_gms, tmp_path, caplog):
    from dataclasses import dataclass

    with caplog.at_level(logging.WARNING, logger="gms_hub.models.serialization"):
        tiny_gms.save_pretrained(tmp_path / "m", config={"vae": "org/tiny-sd", "model_type": "other", "note": "x"})
    assert "include_vae=True" not in caplog.text  # the reference is a Hub id now: portable
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["vae"] == "org/tiny-sd" and saved["model_type"] == "gms" and saved["note"] == "x"
    assert "`org/tiny-sd`" in (tmp_path / "m" / "README.md").read_text()  # the card describes the saved config

    @dataclass
    class Tuned:
        threshold: float = 0.3

    tiny_gms.save_pretrained(tmp_path / "t", config=Tuned())
    loaded = GMS.from_pretrained(tmp_path / "t")
    assert loaded.threshold == 0.3 and loaded.config["threshold"] == 0.3
    with pytest.raises(TypeError, match="config must be a dict or a dataclass"):
        tiny_gms.save_pretrained(tmp_path / "bad", config=[("threshold", 0.3)])


def test_resaving_rewrites_the_model_card(tiny_gms, tmp_path):
    metrics = {"test": {"dsc_mean": 0.8, "dsc_std": 0.1, "n": 3}}
    tiny_gms.save_pretrained(tmp_path / "m", model_card_kwargs={"metrics": metrics})
    assert "80.00" in (tmp_path / "m" / "README.md").read_text()
    metrics["test"]["dsc_mean"] = 0.9
    tiny_gms.save_pretrained(tmp_path / "m", model_card_kwargs={"metrics": metrics})
    card = (tmp_path / "m" / "README.md").read_text()
    assert "90.00" in card and "80.00" not in card


def test_from_pretrained_overrides_and_explicit_vae(tiny_gms, tiny_vae_dir, tmp_path):
    tiny_gms.save_pretrained(tmp_path / "bundle", include_vae=True)
    loaded = GMS.from_pretrained(tmp_path / "bundle", threshold=0.2, torch_dtype=torch.float64)
    assert loaded.threshold == 0.2 and loaded.dtype == torch.float64
    # An explicit VAE replaces the bundled one and does not inherit the saved subfolder / revision.
    other = tmp_path / "other_vae"
    make_tiny_vae(seed=5).save_pretrained(str(other / "vae"))
    explicit = GMS.from_pretrained(tmp_path / "bundle", vae=str(other))  # vae_subfolder defaults to "vae"
    assert explicit.config["vae"] == str(other) and explicit.config["vae_subfolder"] == "vae"
    x = _pixels()
    assert not torch.equal(explicit(x).mask_probs, tiny_gms(x).mask_probs)
    # The bundle's reference is a local path (this machine's, or another's): it is dropped on load, and re-saving
    # bundles the VAE again instead of writing the path.
    reloaded = GMS.from_pretrained(tmp_path / "bundle")
    assert reloaded.config["vae"] is None and reloaded.config["vae_subfolder"] is None
    reloaded.save_pretrained(tmp_path / "resaved")
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert resaved["vae"] is None and resaved["vae_bundled"] is True
    assert (tmp_path / "resaved" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
