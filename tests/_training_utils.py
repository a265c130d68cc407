"""Helpers shared by the training and evaluation tests: tiny VAEs, tiny GMS models and a tiny synthetic dataset."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO_ROOT / "train" / "train.py"
EVALUATE_SCRIPT = REPO_ROOT / "train" / "evaluate.py"


def make_tiny_vae(seed: int = 0):
    """A random SD-layout AutoencoderKL (4 latent channels, 8x downsampling) small enough for CPU tests."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=32,
    ).eval()


def make_tiny_gms(image_size: int = 32, seed: int = 0):
    """A GMS around `make_tiny_vae` with a 16-channel LMM."""
    from gms_hub import GMS

    vae = make_tiny_vae(seed)
    torch.manual_seed(seed + 1)
    return GMS(vae=vae, image_size=image_size, base_channels=16, channel_mult=(1, 1, 1, 1))


def subprocess_env() -> dict:
    """Environment for script subprocesses: offline, repo importable, one thread per process (2 shared cores)."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
        PYTHONPATH=str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def accelerate_command(num_processes: int = 1) -> list:
    """`accelerate launch` on CPU with `num_processes` processes (several need --multi_gpu with ACCELERATE_USE_CPU=1)."""
    base = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no"]
    if num_processes > 1:
        return base + ["--multi_gpu", "--num_processes", str(num_processes)]
    return base + ["--cpu", "--num_processes", "1"]


def run_launch(command: list, env: dict, timeout: float):
    """Run an `accelerate launch` command; on timeout kill its whole process group (the launcher's workers too,
    which `subprocess.run` would leave running) and fail with what the workers printed."""
    import signal
    import subprocess

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"{' '.join(command)} ran past {timeout} s:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    assert process.returncode == 0, f"{' '.join(command)} failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
