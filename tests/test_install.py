"""The quick start installs the package, with its dependencies, and the README's library example then runs anywhere.

What a newcomer does (README, "Quick start") is checked without the network: the README's install commands are
read and must install the package (`pip install -e .` or `-e ".[app]"`) with torch from the CPU wheel index given
beside the GPU build; a wheel built from the repository's tracked files must declare the runtime dependencies,
the extras, the console commands and the package data (demo model, packaged VAE config); installed with
`--no-deps` into a fresh virtual environment (whose dependencies come from this machine's site-packages, as pip
would have installed them), it must run the README's library example and `gms-predict` from a folder outside the
repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from _app_utils import ROOT

README = (ROOT / "README.md").read_text()
CORE_IMPORTS = ("torch", "diffusers", "huggingface_hub", "safetensors", "accelerate", "datasets", "numpy", "PIL")


def _section(name: str) -> str:
    match = re.search(rf"<!-- section: {name} -->(.*?)<!-- /section: {name} -->", README, re.S)
    assert match, f"README.md has no {name} section"
    return match.group(1)


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def test_quick_start_installs_the_package_and_names_the_cpu_build():
    commands = "\n".join(_blocks(_section("quickstart"), "bash"))
    assert re.search(r"pip install -e (\.|\"\.\[app\]\"|'\.\[app\]')", commands), commands
    assert "--index-url https://download.pytorch.org/whl/cpu" in commands, "no CPU-only torch in the quick start"
    prose = _section("quickstart")
    assert "CUDA" in prose and "GPU" in prose, "the quick start must say when to pick the CUDA build"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "download.pytorch.org/whl/cpu" in ci, ".ci/run must install the CPU wheel from the CPU index"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from the repository's tracked files only (what a clone holds)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, tracked.split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
         str(source)],
        check=True, capture_output=True, text=True, timeout=300,
    )
    (built,) = (tmp / "dist").glob("gms_hub-*.whl")
    return built


def test_wheel_declares_dependencies_commands_and_package_data(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = archive.read(info).decode()
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    requirements = [Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = {r.name.lower() for r in requirements if r.marker is None}
    for name in ("torch", "diffusers", "huggingface-hub", "safetensors", "accelerate", "datasets", "numpy", "pillow",
                 "pydicom", "nibabel"):
        assert name in core, f"{name} is not a runtime dependency of the wheel: {sorted(core)}"
    extras = set(re.findall(r"^Provides-Extra: (\S+)", meta, re.M))
    assert {"app", "medical", "onnx", "dev"} <= extras, extras
    by_extra = {e: {r.name.lower() for r in requirements if r.marker and r.marker.evaluate({"extra": e})} for e in extras}
    assert "gradio" in by_extra["app"] and "highdicom" in by_extra["medical"] and "onnxruntime" in by_extra["onnx"]
    assert "pytest" in by_extra["dev"]
    for command in ("gms-predict", "gms-prepare", "gms-export", "gms-convert"):
        assert re.search(rf"^{command} = gms_hub\.", entry_points, re.M), f"no console command {command}"
    for data in ("gms_hub/demo_model/config.json", "gms_hub/demo_model/model.safetensors",
                 "gms_hub/demo_model/vae/config.json", "gms_hub/demo_model/vae/diffusion_pytorch_model.safetensors",
                 "gms_hub/models/configs/sd2_vae_config.json"):
        assert data in names, f"{data} is missing from the wheel"
    # Every core dependency is satisfied here, where the venv below takes them from: the declared names are real.
    for requirement in requirements:
        if requirement.marker is None:
            installed = metadata.version(requirement.name)
            assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)


def test_wheel_runs_the_readme_example_outside_the_repository(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    (example,) = [b for b in _blocks(_section("library"), "python") if "DEMO_MODEL_PATH" in b and "print(mask.shape" in b]
    code = "import gms_hub, sys; print('from', gms_hub.__file__)\n" + example
    result = subprocess.run([str(python), "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"from {venv}" in result.stdout, f"gms_hub did not come from the installed wheel: {result.stdout}"
    assert "(300, 400) bool" in result.stdout
    shutil.copy(ROOT / "examples" / "ultrasound.png", elsewhere / "scan.png")
    predicted = subprocess.run(
        [str(venv / "bin" / "gms-predict"), "--input", "scan.png", "--output_dir", "masks"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert (elsewhere / "masks" / "scan.png").is_file()
