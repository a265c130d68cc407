"""The predict CLI at scale: throughput, processes, memory and resume, each against a baseline of the same run.

Four sections (`--sections`, all by default), each a table with the baseline, the measured values and the ratio:

1. throughput: `gms_hub.inference.predict.main([...])` run in this process over a generated folder of mixed inputs
   (PNG, JPEG, a DICOM series, a multi-frame DICOM, a NIfTI volume), timed minus the model's load time (measured
   apart, in the same process), against the model alone on the same frames, decoded and preprocessed beforehand
   ((B, 3, S, S) tensors straight through the forward). Goal: end-to-end / model-only >= 0.9 (I/O hidden). Also
   `model.segment` on the decoded frames (preprocessing and resizing back, no file I/O), and, when the CLI takes
   `--num_workers`, the CLI with each of `--num_workers_list`.
2. processes: under `accelerate launch`, 1 process x T threads against 2 processes x T/2 threads, and a simulated
   2-machine launch over loopback (two launchers, `--num_machines 2 --machine_rank 0/1 --main_process_ip
   127.0.0.1`, one shared output folder), with every output file and `predictions.csv` hashed against a
   1-process run with T/2 threads (the thread count, not the process count, can move a rounding step); frames/s = frames / (wall time - start-up), start-up being the same launch over 2 small images
   (Python, Accelerate, the model load). Run only when the predict code shards (it uses
   Accelerate's `PartialState` or `split_between_processes`); otherwise a "not available" line says why (every
   process would run the whole job into the same folder; `--assume_sharding` runs it anyway). A loopback launcher
   whose partner failed is killed after 30 s; one whose own worker failed can sit in Torch's exit barrier (5 min).
3. memory: peak RSS of `python -m gms_hub.predict` (its own max RSS from `os.wait4`, and the sampled sum over its
   process tree, DataLoader workers included) for `--memory_inputs` small 2-D images (100 and 2,000); goal: the
   large run within 10% of the small one.
4. resume: a run as a subprocess, SIGKILLed once about half its outputs exist, then the same command again; the
   rerun's wall time against an uninterrupted run's, and whether every output and `predictions.csv` are
   byte-identical and no partial file is left. Without the resume feature (no `--overwrite` flag) it reports
   what the rerun does today.

Files under a name starting with "." (the output record `.gms_hub_outputs.json`, per-run records) are left out of
the identical-outputs checks. The model: `--model tiny` (default) is a random GMS around the tests' tiny VAE, 64x64
input: ~20 ms a frame on a CPU core, so file I/O weighs as much as it can against compute (the harsh case);
`--model demo` is the bundled demo model (128x128 input, several times the compute); or a model folder.

Usage:
    python benchmarks/predict_scale.py               # all sections, tiny model (~10 min on 2 idle cores)
    python benchmarks/predict_scale.py --quick       # smoke configuration (~2 min)
    python benchmarks/predict_scale.py --sections throughput --model demo --num_inputs 120
    python benchmarks/predict_scale.py --sections memory --memory_inputs 100,2000
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")  # the CLI's progress bar, in this process: set before tqdm is imported

from _speed_utils import machine_description, median_ratio, print_table  # noqa: E402
from volume_memory import save_tiny_model  # noqa: E402

SECTIONS = ("throughput", "processes", "memory", "resume")
THROUGHPUT_GOAL = 0.9  # end-to-end frames/s over model-only frames/s
MEMORY_GOAL = 1.10  # peak RSS of the large run over the small one
LAUNCHER_GRACE_S = 30  # after one launcher of a multi-machine run fails, the others get this long to end
SHARDING_MARKERS = ("PartialState", "split_between_processes")  # what predict code that shards uses


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"Comma-separated, from {', '.join(SECTIONS)}.")
    parser.add_argument("--quick", action="store_true", help="Smoke configuration: few inputs, one round.")
    parser.add_argument("--num_inputs", type=int, default=None,
                        help="Frames in the mixed folder of the throughput, processes and resume sections "
                             "(default 400; 20 with --quick).")
    parser.add_argument("--memory_inputs", default=None,
                        help="Small images in the two memory runs (default 100,2000; 10,50 with --quick).")
    parser.add_argument("--model", default="tiny", help="tiny (default), demo, or a saved model folder.")
    parser.add_argument("--image_side", type=int, default=None,
                        help="Side of the generated frames (default 128; 64 with --quick).")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads of the 1-process runs and the model-only baseline (default: all cores); "
                             "the 2-process runs get half each.")
    parser.add_argument("--num_workers_list", default="0,2",
                        help="--num_workers values to time, when the CLI takes the flag.")
    parser.add_argument("--repeats", type=int, default=None, help="Alternating rounds of the throughput section "
                        "(default 3; 1 with --quick).")
    parser.add_argument("--assume_sharding", action="store_true",
                        help="Run the processes section even when the source check finds no sharding (the outputs "
                             "check then shows what concurrent unsharded runs write).")
    parser.add_argument("--port", type=int, default=0, help="Main process port of the launches (default: a free one).")
    parser.add_argument("--timeout", type=float, default=1800, help="Seconds allowed to each subprocess.")
    parser.add_argument("--work_dir", default=None, help="Keep inputs and outputs here (default: a temporary folder).")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown --sections {unknown}; choose from {list(SECTIONS)}")
    args.num_inputs = args.num_inputs or (20 if args.quick else 400)
    args.memory_inputs = [int(n) for n in (args.memory_inputs or ("10,50" if args.quick else "100,2000")).split(",")]
    if len(args.memory_inputs) != 2:
        parser.error(f"--memory_inputs takes two counts, SMALL,LARGE; got {args.memory_inputs}")
    args.image_side = args.image_side or (64 if args.quick else 128)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.num_workers_list = [int(n) for n in args.num_workers_list.split(",") if n.strip()]
    if args.num_inputs < 10:
        parser.error(f"--num_inputs must be >= 10 (a few frames of every format), got {args.num_inputs}")
    return args


# ---------------------------------------------------------------------------------------------------- inputs
def _picture(side: int, seed: int, channels: int = 1):
    """A smooth random picture with a bright blob, uint8 (side, side) or (side, side, 3)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.25)
    base = 60 + 120 * ((x - cx) ** 2 + (y - cy) ** 2 < r**2) + rng.normal(0, 12, (side, side))
    picture = np.clip(base, 0, 255).astype(np.uint8)
    return np.repeat(picture[..., None], 3, axis=2) if channels == 3 else picture


def _dicom(pixels, series_uid: str, study_uid: str, frame_uid: str, number: int):
    """A CT dataset without any patient value (anonymous placeholders), uncompressed; pixels (H, W) or (F, H, W)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.PatientName, ds.PatientID, ds.Modality = "Anonymous", "benchmark", "CT"
    ds.SeriesNumber, ds.InstanceNumber = 1, number
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 2.5 * number], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 2.5
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    ds.WindowCenter, ds.WindowWidth = 40, 400
    ds.set_pixel_data(pixels, "MONOCHROME2", 12)
    return ds


def write_mixed_inputs(folder: Path, num_frames: int, side: int) -> Dict[str, int]:
    """A folder of `num_frames` frames: 20% a NIfTI volume, 10% a DICOM series (one file a slice), 10% a
    multi-frame DICOM, the rest PNG (60%, a third of them RGB) and JPEG files. Returns the frames of each kind."""
    import nibabel as nib
    import numpy as np
    from PIL import Image
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    counts = {"nifti": max(2, num_frames // 5), "dicom_series": max(2, num_frames // 10),
              "dicom_multiframe": max(2, num_frames // 10)}
    images = num_frames - sum(counts.values())
    counts["png"] = round(images * 0.6)
    counts["jpeg"] = images - counts["png"]
    hu = lambda k: (_picture(side, k).astype(np.uint16) * 4 + 800)  # noqa: E731 - 12-bit, HU = value - 1024
    for k in range(counts["png"]):
        Image.fromarray(_picture(side, k, 3 if k % 3 == 0 else 1)).save(folder / f"image_{k:05d}.png")
    for k in range(counts["jpeg"]):
        Image.fromarray(_picture(side, 10_000 + k)).save(folder / f"photo_{k:05d}.jpg", quality=90)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(counts["dicom_series"]):  # beside the other files: the CLI groups them by series
        _dicom(hu(20_000 + k), series, study, frame, k + 1).save_as(folder / f"slice_{k:04d}.dcm",
                                                                     enforce_file_format=True)
    cine = np.stack([hu(30_000 + k) for k in range(counts["dicom_multiframe"])])  # (F, H, W)
    _dicom(cine, generate_uid(), study, generate_uid(), 1).save_as(folder / "cine.dcm", enforce_file_format=True)
    volume = np.stack([_picture(side, 40_000 + k).astype(np.int16) * 4 - 1000 for k in range(counts["nifti"])], -1)
    nib.save(nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.5, 1.0])), folder / "volume.nii.gz")  # (X, Y, Z)
    return counts


def write_small_images(folder: Path, count: int, side: int = 64) -> None:
    """`count` small 2-D images (two PNG for one JPEG): the many-files case of the memory section."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        suffix = "jpg" if k % 3 == 2 else "png"
        Image.fromarray(_picture(side, k)).save(folder / f"small_{k:05d}.{suffix}")


# ---------------------------------------------------------------------------------------------------- helpers
def cli_flags() -> set:
    """The flags `python -m gms_hub.predict --help` lists (how features are detected)."""
    from gms_hub.inference import predict

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        predict.main(["--help"])
    return set(re.findall(r"--[a-z_]+", text.getvalue()))


def sharding_support() -> Tuple[bool, str]:
    """Whether the predict code splits inputs over processes: its sources name Accelerate's splitting API."""
    sources = [ROOT / "gms_hub" / "predict.py", *sorted((ROOT / "gms_hub" / "inference").glob("*.py"))]
    for source in sources:
        text = source.read_text(errors="replace")
        if any(marker in text for marker in SHARDING_MARKERS):
            return True, f"{source.relative_to(ROOT)} uses {' / '.join(m for m in SHARDING_MARKERS if m in text)}"
    return False, (f"no predict source ({', '.join(str(s.relative_to(ROOT)) for s in sources[:2])}, ...) uses "
                   f"{' or '.join(SHARDING_MARKERS)}: every launched process would run the whole job into the "
                   "same folder")


def output_hashes(folder: Path) -> Dict[str, str]:
    """sha256 of every output file (relative name -> digest), records (names starting with '.') left out."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            hashes[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def compare_outputs(reference: Dict[str, str], other: Dict[str, str]) -> str:
    """'identical (N files)' or what differs: missing, extra and changed names (a few of each)."""
    missing = sorted(set(reference) - set(other))
    extra = sorted(set(other) - set(reference))
    changed = sorted(name for name in set(reference) & set(other) if reference[name] != other[name])
    if not (missing or extra or changed):
        return f"identical ({len(reference)} files)"
    parts = [f"{label} {len(names)}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
             for label, names in (("missing", missing), ("extra", extra), ("differ", changed)) if names]
    return "NOT identical: " + "; ".join(parts)


def count_outputs(folder: Path) -> int:
    """Finished output files (no record, no partial file, no CSV): what a killed run has completed."""
    if not folder.exists():
        return 0
    return sum(1 for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix != ".csv")


def partial_files(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial-" in p.name) if folder.exists() else []


def ok_rows(csv_path: Path) -> Optional[int]:
    """Rows of `predictions.csv` with status ok (None when there is no CSV)."""
    import csv

    if not csv_path.exists():
        return None
    with open(csv_path, newline="") as handle:
        return sum(1 for row in csv.DictReader(handle) if row.get("status") == "ok")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def subprocess_env(threads: int) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", TQDM_DISABLE="1",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def predict_argv(args, model_spec: str, inputs: Path, output_dir: Path, threads: int, extra=()) -> List[str]:
    return ["--model", model_spec, "--input", str(inputs), "--output_dir", str(output_dir), "--batch_size",
            str(args.batch_size), "--device", "cpu", "--num_threads", str(threads), *extra]


class Run:
    """A subprocess in its own process group: wall time, exit code, its own max RSS (`os.wait4`), the sampled
    peak RSS of its whole tree (psutil, when installed), and what it printed."""

    def __init__(self, command: List[str], env: dict):
        self.command = command
        self.log = tempfile.TemporaryFile(mode="w+")
        self.start = time.perf_counter()
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.tree_peak_bytes = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self.seconds = self.returncode = self.max_rss_bytes = None

    def _sample(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self.process.pid)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
                self.tree_peak_bytes = max(self.tree_peak_bytes, total)
            except psutil.Error:
                pass
            time.sleep(0.02)

    def poll(self) -> bool:
        """True once the process has ended (then reaped, with its rusage)."""
        if self.returncode is not None:
            return True
        pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
        if pid == 0:
            return False
        self._reaped(status, usage)
        return True

    def wait(self, timeout: float) -> "Run":
        deadline = time.perf_counter() + timeout
        while not self.poll():
            if time.perf_counter() > deadline:
                self.kill()
                raise TimeoutError(f"{' '.join(self.command)} ran past {timeout:.0f} s:\n{self.output()[-3000:]}")
            time.sleep(0.02)
        return self

    def kill(self) -> None:
        """SIGKILL the process group this run started (the CLI and any worker it forked)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.returncode is None:
            _, status, usage = os.wait4(self.process.pid, 0)
            self._reaped(status, usage)

    def _reaped(self, status, usage) -> None:
        self.seconds = time.perf_counter() - self.start
        self.returncode = os.waitstatus_to_exitcode(status)
        self.process.returncode = self.returncode  # reaped here: keep Popen from waiting on it again
        self.max_rss_bytes = usage.ru_maxrss * 1024  # KiB on Linux
        self._stop.set()
        self._sampler.join()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def last_line(self) -> str:
        """The last error line it printed (a launcher's banner and tracebacks end with other lines), else its last."""
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        errors = [line for line in lines if re.match(r"(ERROR|\w*Error\b)", line)]
        return (errors or lines or [""])[-1][:240]


def cli_command(argv: List[str]) -> List[str]:
    return [sys.executable, "-m", "gms_hub.predict", *argv]


def launch_command(num_processes: int, port: int, argv: List[str], machine_rank: Optional[int] = None) -> List[str]:
    """`accelerate launch` on CPU: one process (`--cpu`), or several (`--multi_gpu` with ACCELERATE_USE_CPU=1),
    on one machine or, with `machine_rank`, as one of two machines meeting at 127.0.0.1:`port`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes == 1:
        command += ["--cpu", "--num_processes", "1", "--num_machines", "1"]
    elif machine_rank is None:
        command += ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
                    "--main_process_port", str(port)]
    else:  # --num_processes counts the processes of all machines
        command += ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "2", "--machine_rank",
                    str(machine_rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port)]
    return command + ["-m", "gms_hub.predict", *argv]


def show(title: str, rows: List[dict], columns: List[str], command: str) -> None:
    print(f"\n== {title}")
    print(f"command: {command}")
    print_table(rows, columns)


# ---------------------------------------------------------------------------------------------------- sections
def model_only_steps(model, inputs: Path, batch_size: int):
    """Decode every frame of `inputs` as the CLI opens them (the library's readers; a DICOM series as one volume),
    then return (frames, forward step, segment step): the model alone on preprocessed tensors, and
    `model.segment` on the decoded frames (preprocessing and resizing back included, no file I/O)."""
    import torch

    from gms_hub.io.reading import read_input, scan_input_folder
    from gms_hub.io.series import group_dicom_series, open_series
    from gms_hub.models.processing import preprocess

    files, _ = scan_input_folder(inputs)
    series, singles = group_dicom_series(files)
    opened = [read_input(path) for path in singles] + [open_series(item.order()) for item in series]
    groups: Dict[object, list] = {}  # frames by intensity rule, as the CLI batches them (across files)
    for item in opened:
        groups.setdefault(item.value_range, []).extend(frame for batch in item.batches(batch_size) for frame in batch)
    pixel_values = torch.cat([preprocess(frames, model.image_size, value_range=value_range)[0]
                              for value_range, frames in groups.items()])  # (N, 3, S, S)

    def forward():
        with torch.inference_mode():
            for chunk in pixel_values.split(batch_size):
                model(chunk)

    def segment():
        for value_range, frames in groups.items():
            model.segment(frames, value_range=value_range, batch_size=batch_size)

    return int(pixel_values.shape[0]), forward, segment


def run_throughput(args, model_spec: str, inputs: Path, work: Path, flags: set, written: int) -> None:
    import torch

    from gms_hub import load_model
    from gms_hub.inference import predict

    torch.set_num_threads(args.threads)
    load_times = []
    for _ in range(2):  # the second load is the warm one the CLI's own load compares with
        start = time.perf_counter()
        model = load_model(model_spec, device="cpu")
        load_times.append(time.perf_counter() - start)
    load_s = load_times[-1]
    frames, forward, segment = model_only_steps(model, inputs, args.batch_size)
    if frames != written:
        print(f"note: the readers found {frames} frames in the {written} written")
    variants = {"predict CLI (default flags)": []}
    if "--num_workers" in flags:
        variants.update({f"predict CLI --num_workers {n}": ["--num_workers", str(n)] for n in args.num_workers_list})
    else:
        print("note: the CLI has no --num_workers yet: only its default (decode, model and writing in turn) is timed")

    runs = [0]

    def cli_step(extra):
        def step():
            runs[0] += 1
            out = work / f"throughput_{runs[0]}"
            start = time.perf_counter()
            code = predict.main(predict_argv(args, model_spec, inputs, out, args.threads, extra))
            seconds = time.perf_counter() - start - load_s
            done = ok_rows(out / "predictions.csv")
            if code != 0 or done != frames:
                raise RuntimeError(f"predict exit {code}, {done} frames ok of {frames} (outputs kept in {out})")
            shutil.rmtree(out)
            return seconds
        return step

    steps = {"model forward (baseline)": forward, "model.segment, decoded frames": segment}
    steps.update({name: cli_step(extra) for name, extra in variants.items()})
    times: Dict[str, List[float]] = {name: [] for name in steps}
    forward()  # warm-up: first-call costs out of the rounds
    logging.disable(logging.INFO)  # the CLI's progress lines; errors still show
    try:
        for round_index in range(args.repeats):
            for name, step in steps.items():
                start = time.perf_counter()
                seconds = step()
                times[name].append(seconds if name in variants else time.perf_counter() - start)
            print(f"round {round_index + 1}/{args.repeats}: "
                  + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()))
    finally:
        logging.disable(logging.NOTSET)
    baseline = times["model forward (baseline)"]
    rows = []
    for name, seconds in times.items():
        ratio = median_ratio(baseline, seconds)
        rows.append({"path": name, "frames": frames, "seconds": f"{statistics.median(seconds):.2f}",
                     "frames/s": f"{frames / statistics.median(seconds):.1f}", "ratio": f"{ratio:.3f}",
                     "goal": "" if name.startswith("model") else f">= {THROUGHPUT_GOAL}"})
    show(f"throughput: end-to-end / model-only frames/s (median of {args.repeats} alternating rounds; CLI times "
         f"minus the model load, {load_s:.2f} s)", rows, ["path", "frames", "seconds", "frames/s", "ratio", "goal"],
         "gms_hub.inference.predict.main("
         f"{' '.join(predict_argv(args, model_spec, inputs, Path('OUT'), args.threads))})".replace(str(work), "WORK"))


def launch(args, model_spec: str, inputs: Path, out: Path, processes: int, threads: int, ranks) -> Tuple[float, list]:
    """One `accelerate launch` (or, with `ranks`, one launcher per simulated machine, all started at once);
    returns the wall time until every launcher ended, and the runs."""
    argv = predict_argv(args, model_spec, inputs, out, threads)
    env = subprocess_env(threads)
    if processes > 1:
        env["ACCELERATE_USE_CPU"] = "1"
    port = args.port or free_port()
    commands = [launch_command(processes, port, argv, rank) for rank in ranks] if ranks else \
        [launch_command(processes, port, argv)]
    start = time.perf_counter()
    runs = [Run(command, env) for command in commands]
    failed_at = None
    while not all(run.poll() for run in runs):
        now = time.perf_counter()
        if failed_at is None and any(run.returncode not in (None, 0) for run in runs):
            failed_at = now  # the other machine's launcher would wait for it at its exit barrier (minutes)
        if now - start > args.timeout or (failed_at is not None and now - failed_at > LAUNCHER_GRACE_S):
            for run in runs:
                run.kill()
        time.sleep(0.05)
    return time.perf_counter() - start, runs


def run_processes(args, model_spec: str, inputs: Path, work: Path, frames: int) -> None:
    available, reason = sharding_support()
    if not available and not args.assume_sharding:
        print(f"\n== processes\nnot available: {reason}")
        return
    print(f"\nsharding: {reason}" + ("" if available else " (run anyway: --assume_sharding)"))
    half = max(1, args.threads // 2)
    start_up_inputs = work / "start_up_inputs"  # one small image per process: start-up, model load, a frame
    write_small_images(start_up_inputs, 2)
    # Outputs are compared with a 1-process run whose process has the same threads as each of the 2: torch's CPU
    # kernels split their sums by thread, so the thread count (not the process count) can move a rounding step.
    configurations = [("1 process", 1, args.threads, None)]
    if half != args.threads:
        configurations.append(("1 process, threads of each of 2", 1, half, None))
    configurations += [("2 processes", 2, half, None), ("2 machines (loopback)", 2, half, (0, 1))]
    rows, reference = [], None
    for name, processes, threads, ranks in configurations:
        tag = f"{processes}x{threads}_{'machines' if ranks else 'local'}"
        start_up, _ = launch(args, model_spec, start_up_inputs, work / f"start_up_{tag}", processes, threads, ranks)
        out = work / f"processes_{tag}"
        seconds, runs = launch(args, model_spec, inputs, out, processes, threads, ranks)
        hashes = output_hashes(out)
        first = processes == 1 and threads == half  # the identity reference
        reference = hashes if first else reference
        rows.append({"run": name, "processes x threads": f"{processes} x {threads}",
                     "exit": ",".join(str(run.returncode) for run in runs),
                     "frames ok": f"{ok_rows(out / 'predictions.csv')}/{frames}", "wall s": f"{seconds:.1f}",
                     "start-up s": f"{start_up:.1f}",
                     "frames/s": f"{frames / (seconds - start_up):.1f}" if seconds > start_up else "n/a",
                     "outputs vs 1 process": "(reference)" if first else (
                         compare_outputs(reference, hashes) if processes > 1 else "(other threads)"),
                     "_seconds": seconds - start_up})
        failed = next((run for run in runs if run.returncode != 0), None)
        if failed is not None:
            print(f"{name}: exit {failed.returncode}: {failed.last_line()}")
    for row in rows:  # n/a where the start-up run took longer than the job (raise --num_inputs)
        usable = row["_seconds"] > 0 and rows[0]["_seconds"] > 0
        row["ratio"] = f"{rows[0]['_seconds'] / row['_seconds']:.3f}" if usable else "n/a"
    command = " ".join(launch_command(2, 29500, predict_argv(args, model_spec, inputs, Path("OUT"), half)))
    show(f"processes: frames/s against 1 process x {args.threads} threads; frames/s = frames / (wall - start-up), "
         f"start-up = the same launch on 2 small images; outputs against 1 process x {half} thread(s)", rows,
         ["run", "processes x threads", "exit", "frames ok", "wall s", "start-up s", "frames/s", "ratio",
          "outputs vs 1 process"], "ACCELERATE_USE_CPU=1 " + command.replace(str(work), "WORK"))


def run_memory(args, model_spec: str, work: Path) -> None:
    rows, command = [], None
    for count in args.memory_inputs:
        inputs = work / f"memory_inputs_{count}"
        write_small_images(inputs, count)
        out = work / f"memory_out_{count}"
        argv = predict_argv(args, model_spec, inputs, out, args.threads)
        command = command or " ".join(cli_command(argv))
        run = Run(cli_command(argv), subprocess_env(args.threads)).wait(args.timeout)
        if run.returncode != 0:
            print(f"memory, {count} inputs: exit {run.returncode}: {run.last_line()}")
        rows.append({"inputs": count, "exit": run.returncode, "frames ok": ok_rows(out / "predictions.csv"),
                     "seconds": f"{run.seconds:.1f}", "max RSS MiB": f"{run.max_rss_bytes / 2**20:.1f}",
                     "tree peak MiB": f"{run.tree_peak_bytes / 2**20:.1f}" if run.tree_peak_bytes else "n/a",
                     "_rss": run.max_rss_bytes, "_tree": run.tree_peak_bytes})
        shutil.rmtree(out)
        shutil.rmtree(inputs)
    small, large = rows
    large["ratio (max RSS)"] = f"{large['_rss'] / small['_rss']:.3f}"
    if small["_tree"] and large["_tree"]:
        large["ratio (tree)"] = f"{large['_tree'] / small['_tree']:.3f}"
    large["goal"] = f"<= {MEMORY_GOAL}"
    small["ratio (max RSS)"] = "(baseline)"
    show(f"memory: peak RSS for {args.memory_inputs[1]} against {args.memory_inputs[0]} small images (64x64; max RSS "
         "of the CLI process from wait4, tree = sampled sum with its children)", rows,
         ["inputs", "exit", "frames ok", "seconds", "max RSS MiB", "tree peak MiB", "ratio (max RSS)", "ratio (tree)",
          "goal"], command.replace(str(work), "WORK"))


def run_resume(args, model_spec: str, inputs: Path, work: Path, flags: set, frames: int) -> None:
    env = subprocess_env(args.threads)
    full_out, resumed_out = work / "resume_full", work / "resume_killed"
    full = Run(cli_command(predict_argv(args, model_spec, inputs, full_out, args.threads)), env).wait(args.timeout)
    expected = count_outputs(full_out)
    reference = output_hashes(full_out)
    command = cli_command(predict_argv(args, model_spec, inputs, resumed_out, args.threads))
    killed = Run(command, env)
    while not killed.poll() and count_outputs(resumed_out) < expected / 2:
        time.sleep(0.01)
    at_kill = count_outputs(resumed_out)
    finished_early = killed.returncode is not None
    if not finished_early:
        killed.kill()
    partial_after_kill = len(partial_files(resumed_out))
    rerun = Run(command, env).wait(args.timeout)
    left_partial = partial_files(resumed_out)
    if "--overwrite" not in flags:
        print("\n(resume: not available: the CLI has no --overwrite flag, so no resume yet; the table shows what a "
              "rerun after a kill does today)")
    if finished_early:
        print(f"note: the run ended before half its outputs existed ({at_kill}/{expected}); raise --num_inputs")
    rows = [
        {"run": "uninterrupted (baseline)", "exit": full.returncode,
         "frames ok": f"{ok_rows(full_out / 'predictions.csv')}/{frames}", "wall s": f"{full.seconds:.1f}",
         "ratio": "1.000", "outputs vs uninterrupted": f"(reference, {expected} outputs)"},
        {"run": f"killed (SIGKILL at {at_kill}/{expected} outputs)", "exit": killed.returncode,
         "wall s": f"{killed.seconds:.1f}", "ratio": f"{killed.seconds / full.seconds:.3f}",
         "outputs vs uninterrupted": f"{partial_after_kill} partial file(s) left by the kill"},
        {"run": "rerun, same command", "exit": rerun.returncode,
         "frames ok": f"{ok_rows(resumed_out / 'predictions.csv')}/{frames}", "wall s": f"{rerun.seconds:.1f}",
         "ratio": f"{rerun.seconds / full.seconds:.3f}",
         "outputs vs uninterrupted": compare_outputs(reference, output_hashes(resumed_out))
         + (f"; {len(left_partial)} partial file(s) left" if left_partial else "; no partial file left")},
    ]
    show("resume: rerun after a SIGKILL at about half the outputs, wall time against an uninterrupted run (start-up "
         "and model load included in both)", rows, ["run", "exit", "frames ok", "wall s", "ratio",
                                                    "outputs vs uninterrupted"],
         " ".join(command).replace(str(work), "WORK"))
    if rerun.returncode != 0:
        print(f"rerun's last line: {rerun.last_line()}")


# ---------------------------------------------------------------------------------------------------- main
def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    with contextlib.ExitStack() as stack:
        if args.work_dir:
            work = Path(args.work_dir)
            work.mkdir(parents=True, exist_ok=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="predict_scale_")))
        if args.model == "tiny":
            model_spec = str(work / "tiny_gms")
            if not Path(model_spec).exists():
                save_tiny_model(Path(model_spec))
            model_name = "tiny random GMS (the tests' tiny VAE, 64x64 input)"
        else:
            model_spec = args.model
            model_name = "the bundled demo model (128x128 input)" if args.model == "demo" else args.model
        print(f"machine: {machine_description('cpu')}")
        print(f"model: {model_name}; batch {args.batch_size}; {args.threads} thread(s); sections: "
              f"{', '.join(args.sections)}")
        flags = cli_flags()
        inputs = work / "inputs"
        counts = {}
        if set(args.sections) & {"throughput", "processes", "resume"}:
            if inputs.exists():
                shutil.rmtree(inputs)
            counts = write_mixed_inputs(inputs, args.num_inputs, args.image_side)
            print(f"inputs: {sum(counts.values())} frames of {args.image_side}x{args.image_side}: "
                  + ", ".join(f"{n} {kind}" for kind, n in counts.items()) + f"; features: num_workers "
                  f"{'yes' if '--num_workers' in flags else 'no'}, resume (--overwrite) "
                  f"{'yes' if '--overwrite' in flags else 'no'}, sharding {'yes' if sharding_support()[0] else 'no'}")
        frames = sum(counts.values())
        for section in args.sections:
            started = time.perf_counter()
            if section == "throughput":
                run_throughput(args, model_spec, inputs, work, flags, frames)
            elif section == "processes":
                run_processes(args, model_spec, inputs, work, frames)
            elif section == "memory":
                run_memory(args, model_spec, work)
            elif section == "resume":
                run_resume(args, model_spec, inputs, work, flags, frames)
            print(f"({section}: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
