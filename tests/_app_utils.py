"""Helpers for the app tests: a tiny GMS folder, a running app server, and odd test files."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def imported_app(model_dir: Path, tmp_path: Path, monkeypatch):
    """app.py imported in this process (offline, the demo = the model at `model_dir`, no other model) without
    launching it; forgotten, with its output folder, on exit."""
    import importlib
    import shutil

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GMS_DEMO_MODEL", str(model_dir))
    monkeypatch.setenv("GMS_MODELS_FILE", str(tmp_path / "none.json"))
    monkeypatch.delenv("GMS_MODELS", raising=False)
    monkeypatch.syspath_prepend(str(ROOT))
    sys.modules.pop("app", None)
    module = importlib.import_module("app")
    try:
        yield module
    finally:
        sys.modules.pop("app", None)
        shutil.rmtree(module.OUTPUT_DIR, ignore_errors=True)


def make_tiny_model(path: Path, seed: int = 0, num_classes: int = 1, id2label: dict | None = None) -> Path:
    """Save a tiny random GMS (VAE bundled, 64 px; binary, or `num_classes` classes named by `id2label`) with
    `save_pretrained(include_vae=True)`."""
    import torch
    from diffusers import AutoencoderKL

    from gms_hub import GMS

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64,
    )
    model = GMS(vae=vae, num_classes=num_classes, id2label=id2label, image_size=64, base_channels=16,
                channel_mult=(1, 1, 1, 1))
    model.save_pretrained(path, include_vae=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    """`python app.py` in a subprocess on 127.0.0.1, offline, serving `demo_model` as the demo model."""

    def __init__(self, demo_model: Path, log_path: Path, extra_env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {k: v for k, v in os.environ.items() if k != "GMS_MODELS"}
        scratch = log_path.parent / "tmp"
        scratch.mkdir(exist_ok=True)
        env.update(
            TMPDIR=str(scratch),  # the app's results and gradio's cache stay inside the test's tmp_path
            GRADIO_TEMP_DIR=str(scratch / "gradio"),
            HF_HUB_OFFLINE="1",
            GMS_DEMO_MODEL=str(demo_model),
            GMS_MODELS_FILE=str(log_path.parent / "no_models.json"),
            GRADIO_SERVER_NAME="127.0.0.1",
            GRADIO_SERVER_PORT=str(self.port),
            GRADIO_ANALYTICS_ENABLED="False",
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
            OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
        )
        env.update(extra_env or {})
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout_s: float = 60.0) -> "AppServer":
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app.py exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "gradio_api/info", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"app.py did not answer on {self.url} within {timeout_s} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


def write_png_bomb(path: Path, side: int = 30000) -> Path:
    """A real decompression bomb: a 1-bit `side` x `side` PNG of zeros (~100 KB on disk, 900 MP decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path
