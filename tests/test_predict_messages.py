"""What `python -m gms_hub.predict` tells its user: one line per problem in our words, no third-party tracebacks, no
DICOM UID in the log, a progress bar of frames done, a thread count that holds."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from _app_utils import ROOT
from gms_hub.inference import predict


@pytest.fixture
def binary(tiny_gms, monkeypatch):
    monkeypatch.setattr(predict, "load_model", lambda spec, device: tiny_gms)
    return tiny_gms


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_missing_input_is_one_line_and_exit_2(tmp_path):
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "gms_hub.predict", "--input", str(tmp_path / "nope.nii.gz"), "--output_dir",
         str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "nope.nii.gz" in line and "matches no file" in line
    # The positional form some users try is an argparse usage error (exit 2), not a traceback.
    result = subprocess.run([sys.executable, "-m", "gms_hub.predict", "scan.png"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 2 and "--input" in result.stderr and "Traceback" not in result.stderr


def test_12_bit_jpeg_dicom_names_the_decoder_and_no_plugin_traceback(binary, tmp_path, caplog):
    source = get_testdata_file("JPEG-lossy.dcm")  # JPEG Extended, 12-bit: pylibjpeg and Pillow cannot decode it
    out = tmp_path / "out"
    with caplog.at_level(logging.DEBUG):
        assert predict.main(["--input", source, "--output_dir", str(out)]) == 1
    assert not [r for r in caplog.records if r.exc_info], "a third-party traceback reached the log"
    (row,) = _rows(out / "predictions.csv")
    status = row["status"]
    assert "\n" not in status and "12-bit" in status and "JPEG Extended" in status and "dcmdjpeg" in status
    assert "truncated or corrupt" not in status


def test_dicom_seg_logs_no_uid(binary, tmp_path, caplog):
    source = get_testdata_file("CT_small.dcm")
    source_ds = pydicom.dcmread(source, stop_before_pixels=True)
    with caplog.at_level(logging.DEBUG):
        assert predict.main(["--input", source, "--output_dir", str(tmp_path / "out"), "--output_format",
                             "dicom-seg"]) == 0
    for uid in (source_ds.SOPInstanceUID, source_ds.StudyInstanceUID, source_ds.SeriesInstanceUID):
        assert str(uid) not in caplog.text
    assert (tmp_path / "out" / "CT_small_seg.dcm").is_file()


def test_progress_counts_frames_done_and_threads_hold(binary, tmp_path, monkeypatch):
    volume = np.random.default_rng(0).integers(0, 1000, (40, 48, 5)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(tmp_path / "ct.nii.gz"))
    out = tmp_path / "out"
    seen = []

    class Bar:  # records, at every update, how many frames the bar claims and how many masks exist
        def __init__(self, total=None, **kwargs):
            self.total, self.n = total, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def refresh(self):
            pass

        def update(self, n):
            self.n += n
            seen.append((self.n, len(list(out.glob("ct_slice*.png"))), self.total))

    monkeypatch.setattr(predict, "tqdm", Bar)
    threads = torch.get_num_threads()
    try:
        assert predict.main(["--input", str(tmp_path / "ct.nii.gz"), "--output_dir", str(out), "--output_format",
                             "png", "--batch_size", "2", "--num_threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert [n for n, _, _ in seen] == [2, 4, 5] and all(n == written for n, written, _ in seen), seen
    assert seen[-1][2] == 5


def test_a_failed_inputs_status_is_one_line(tmp_path):
    job = predict._Job(path=tmp_path / "x.dcm", stem="x", error="first line\n  second line")
    predict.write_predictions_csv([job], tmp_path / "p.csv", ["foreground"], 1)
    (row,) = _rows(tmp_path / "p.csv")
    assert row["status"] == "first line second line"
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 2
