"""Prediction beyond one process: sharded under `accelerate launch` (one machine and a simulated two), resumed after
a SIGKILL, datasets as input (with and without streaming), DataLoader workers; every output equal, byte for byte,
to a plain one-process run."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from _series_utils import write_series
from _training_utils import REPO_ROOT, make_tiny_gms, subprocess_env
from gms_hub.inference import predict
from gms_hub.inference.resume import RECORD_DIR

TIMEOUT = 120


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread in this process, as in the subprocesses (`subprocess_env`): the in-process runs compute as
    the launched ones do, and on a few shared cores threads spinning against each other make a run many times
    slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    make_tiny_gms(image_size=32).save_pretrained(path, include_vae=True)
    return path


@pytest.fixture
def tiny(monkeypatch):
    model = make_tiny_gms(image_size=32).eval()
    monkeypatch.setattr(predict, "load_model", lambda spec, device: model)
    return model


def pngs(folder: Path, count: int, size=(40, 48), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for k in range(count):
        shape = (size[0] + k % 3, size[1]) + ((3,) if k % 2 else ())
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"img{k:02d}.png")
    return folder


def mixed_inputs(folder: Path) -> Path:
    """3 PNGs, a DICOM series (3 slices) and a NIfTI volume (4 slices). With `--batch_size 2`, a run that dealt
    out single inputs instead of batch groups would segment some PNG alone in one run and beside another in the
    other: its probability map would differ by a rounding step."""
    pngs(folder, 3)
    write_series(folder / "series", num=3)
    volume = np.random.default_rng(1).integers(0, 1000, (40, 36, 4)).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.diag([0.8, 0.8, 2.0, 1.0])), str(folder / "ct.nii.gz"))
    return folder


def snapshot(out: Path) -> dict:
    """Every file but our hidden record, by relative path, with its bytes."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(out).parts)}


def leftovers(out: Path) -> list:
    return [str(p) for p in out.rglob("*") if ".partial-" in p.name]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def predict_args(model_dir, inputs, out, *extra):
    return ["--model", str(model_dir), "--input", str(inputs), "--output_dir", str(out), "--batch_size", "2", *extra]


def predict_command(model_dir, inputs, out, *extra):
    return ["-m", "gms_hub.predict", *predict_args(model_dir, inputs, out, *extra)]


# 16-bit probability maps show a rounding step that a thresholded mask hides: a frame batched with other frames
# than in the reference run would differ there. Batches are fixed groups of inputs (`jobs.batch_groups`), so a
# sharded run's maps equal the reference's bytes.
LAUNCH_FLAGS = ("--save_overlay", "--save_probabilities")


@pytest.fixture(scope="module")
def reference(model_dir, tmp_path_factory):
    """Mixed inputs and what one plain process (this one, the saved model loaded as the CLI loads it) writes for
    them: the outputs every launch is compared with."""
    root = tmp_path_factory.mktemp("reference")
    inputs = mixed_inputs(root / "in")
    assert predict.main(predict_args(model_dir, inputs, root / "one", *LAUNCH_FLAGS)) == 0
    one = snapshot(root / "one")
    assert {"predictions.csv", "volumes.csv", "ct_mask.nii.gz", "img00.png", "img00_overlay.png",
            "img00_prob.png"} <= set(one), sorted(one)
    return inputs, one


def launch(processes: list, timeout: float = TIMEOUT) -> list:
    """Start every command at once (each in its own session), wait for all; kill them all on a timeout."""
    env = {**subprocess_env(), "ACCELERATE_USE_CPU": "1"}
    running = [subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True) for command in processes]
    results = []
    try:
        deadline = time.monotonic() + timeout
        for process in running:
            stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((process.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        for process in running:
            os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("an accelerate launch ran past its timeout")
    for code, _, stderr in results:
        assert code == 0, stderr[-4000:]
    return results


def accelerate(*flags):
    return [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--multi_gpu", *flags]


def ranks_that_finished(out: Path) -> set:
    return {json.loads(p.read_text())["rank"] for p in (out / RECORD_DIR / "finished").glob("*.json")}


def test_two_processes_under_accelerate_launch_equal_one(model_dir, reference, tmp_path):
    inputs, one = reference
    port = free_port()
    launch([accelerate("--num_machines", "1", "--num_processes", "2", "--main_process_port", str(port),
                       *predict_command(model_dir, inputs, tmp_path / "two", *LAUNCH_FLAGS))])
    assert ranks_that_finished(tmp_path / "two") == {1}  # the second process really ran (and said so)
    two = snapshot(tmp_path / "two")
    assert sorted(one) == sorted(two) and all(one[name] == two[name] for name in one)
    manifest = json.loads((tmp_path / "two" / ".gms_hub_outputs.json").read_text())
    assert set(manifest["files"]) == set(two)  # one record, every process's files in it
    assert not leftovers(tmp_path / "two")


def test_simulated_two_machine_launch_over_loopback_equals_one_process(model_dir, reference, tmp_path):
    inputs, one = reference
    port, out = free_port(), tmp_path / "two-machines"
    commands = [accelerate("--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                           "--main_process_port", str(port), "--num_processes", "2",
                           *predict_command(model_dir, inputs, out, *LAUNCH_FLAGS)) for rank in (0, 1)]
    launch(commands)
    assert ranks_that_finished(out) == {1}
    two = snapshot(out)
    assert sorted(one) == sorted(two) and all(one[name] == two[name] for name in one)


KILLED_RUN_INPUTS = 64  # tiny images: the kill lands long before the last one
KILLED_RUN_BATCH = ("--batch_size", "3", "--save_probabilities")  # groups of 3: a half-done group is redone whole


def test_a_killed_run_resumes_to_the_same_outputs_and_says_how_many_it_skipped(model_dir, tmp_path, caplog):
    count = KILLED_RUN_INPUTS
    inputs = pngs(tmp_path / "in", count, size=(32, 32))
    assert predict.main(predict_args(model_dir, inputs, tmp_path / "whole", *KILLED_RUN_BATCH)) == 0
    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *predict_command(model_dir, inputs, out, *KILLED_RUN_BATCH,
                                                                 "--num_workers", "0")],
                               cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    records = out / RECORD_DIR / "inputs"
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if records.is_dir() and len(list(records.glob("*.json"))) >= 4:
                break
            time.sleep(0.005)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = len(list(records.glob("*.json")))
    assert 4 <= done < count and not (out / "predictions.csv").exists()
    # a temporary file of our own pattern, as a kill mid-write leaves it, and a user's file that looks alike
    (out / f".0123456789ab.partial-img{count - 1}.png").write_bytes(b"half")
    (out / ".notes.partial-keep.txt").write_bytes(b"the user's")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert predict.main(predict_args(model_dir, inputs, out, *KILLED_RUN_BATCH)) == 0
    skipped = int(caplog.text.split("Skipped ")[1].split(" input(s) already done")[0])
    # whole groups of 3 are skipped; a group the kill cut is redone whole (its batch as in the uninterrupted run)
    assert skipped % 3 == 0 and done - 3 < skipped <= done and skipped >= 3, (skipped, done)
    assert snapshot(out) == snapshot(tmp_path / "whole")
    assert leftovers(out) == [str(out / ".notes.partial-keep.txt")]
    assert json.loads((out / ".gms_hub_outputs.json").read_text())["files"] and \
        set(json.loads((out / ".gms_hub_outputs.json").read_text())["files"]) == set(snapshot(out))


def _files(out: Path) -> dict:
    return {name: data for name, data in snapshot(out).items() if name != "predictions.csv"}


def test_overwrite_redoes_and_a_rerun_skips(tiny, tmp_path, caplog):
    inputs = pngs(tmp_path / "in", 4)
    out = tmp_path / "out"
    assert predict.main(["--input", str(inputs), "--output_dir", str(out)]) == 0
    first = snapshot(out)
    times = {p.name: p.stat().st_mtime_ns for p in out.glob("img*.png")}
    with caplog.at_level(logging.INFO):
        assert predict.main(["--input", str(inputs), "--output_dir", str(out)]) == 0
    assert "Skipped 4 input(s) already done" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("img*.png")} == times and snapshot(out) == first
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert predict.main(["--input", str(inputs), "--output_dir", str(out), "--overwrite"]) == 0
    assert "already done" not in caplog.text
    assert all(p.stat().st_mtime_ns != times[p.name] for p in out.glob("img*.png")) and snapshot(out) == first
    # another command in the same folder redoes everything too (the earlier run's outputs are replaced)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert predict.main(["--input", str(inputs), "--output_dir", str(out), "--threshold", "0.4"]) == 0
    assert "already done" not in caplog.text


def test_workers_give_the_same_bytes_as_one_thread(tiny, tmp_path):
    inputs = mixed_inputs(tmp_path / "in")
    Image.fromarray(np.random.default_rng(3).integers(0, 65535, (33, 35), dtype=np.uint16)).save(inputs / "deep.tif")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    outputs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        assert predict.main(["--input", str(inputs), "--output_dir", str(out), "--num_workers", workers,
                             "--batch_size", "3", "--save_probabilities", "--save_overlay"]) == 1
        outputs[workers] = snapshot(out)
    assert sorted(outputs["0"]) == sorted(outputs["2"])
    assert all(outputs["0"][name] == outputs["2"][name] for name in outputs["0"])
    assert b"broken.png" in outputs["2"]["predictions.csv"]


def make_dataset_folder(folder: Path, images: Path) -> list:
    """A dataset folder (parquet under data/, split test) with the PNGs of `images`, named by file stem."""
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    files = sorted(images.glob("*.png"))
    names = [p.stem for p in files]
    features = Features({"image": ImageFeature(), "name": Value("string")})
    data = Dataset.from_dict({"image": [str(p) for p in files], "name": names}, features=features)
    (folder / "data").mkdir(parents=True)
    data.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))
    return names


@pytest.mark.parametrize("streaming", [False, True])
def test_dataset_input_names_masks_by_id_and_equals_the_files(tiny, tmp_path, streaming):
    images = pngs(tmp_path / "images", 4)
    names = make_dataset_folder(tmp_path / "ds", images)
    assert predict.main(["--input", str(images), "--output_dir", str(tmp_path / "files")]) == 0
    out = tmp_path / "from-dataset"
    flags = ["--streaming"] if streaming else []
    assert predict.main(["--dataset", str(tmp_path / "ds"), "--split", "test", "--output_dir", str(out),
                         *flags]) == 0
    from_files, from_dataset = _files(tmp_path / "files"), _files(out)
    assert sorted(from_dataset) == [f"{name}.png" for name in names]
    assert from_files == from_dataset
    rows = (out / "predictions.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == [f"test/{name}" for name in names]
    assert not list((tmp_path / "ds").rglob("*.png"))  # no image of the dataset written to disk
    caplog_free_rerun = predict.main(["--dataset", str(tmp_path / "ds"), "--output_dir", str(out), *flags])
    assert caplog_free_rerun == 0 and _files(out) == from_dataset


def test_batch_groups_are_consecutive_numbered_and_end_where_a_batch_may_end():
    from gms_hub.inference.jobs import Job, batch_groups

    jobs = [Job(path=Path(f"in/img{k}.png"), stem=f"img{k}") for k in range(7)]
    groups = list(batch_groups(jobs, 3))
    assert [[job.stem for job in group] for group in groups] == [["img0", "img1", "img2"], ["img3", "img4", "img5"],
                                                                  ["img6"]]
    assert [job.group for job in jobs] == [0, 0, 0, 1, 1, 1, 2]
    assert [job.ends_group for job in jobs] == [False, False, True, False, False, True, True]
    assert list(batch_groups([], 3)) == []
