"""benchmarks/predict_scale.py runs against the current predict CLI and prints its throughput table."""

from __future__ import annotations

import subprocess
import sys

from tests._training_utils import REPO_ROOT, subprocess_env


def test_predict_scale_throughput_prints_table_with_ratio(tmp_path):
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "predict_scale.py"), "--sections", "throughput",
               "--num_inputs", "10", "--image_side", "32", "--threads", "1", "--repeats", "1",
               "--work_dir", str(tmp_path)]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    lines = result.stdout.splitlines()
    baseline = next(line for line in lines if line.startswith("model forward (baseline)"))
    cli = next(line for line in lines if line.startswith("predict CLI (default flags)"))
    assert baseline.split("|")[1].strip() == cli.split("|")[1].strip() == "10"  # the same frames, every one predicted
    assert baseline.split("|")[4].strip() == "1.000"
    assert float(cli.split("|")[4]) > 0
    assert any(line.startswith("inputs: 10 frames") and "nifti" in line and "dicom_series" in line for line in lines)
