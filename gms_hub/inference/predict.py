"""Batch prediction: masks for images, DICOM files and NIfTI volumes, and a `predictions.csv` of areas.

Usage:
    python -m gms_hub.predict --model org/gms-busi --input "scans/*.png" --output_dir masks/
    python -m gms_hub.predict --input ct.nii.gz --output_dir out/ --window 40,400       # -> out/ct_mask.nii.gz
    python -m gms_hub.predict --input study/ --output_dir out/ --output_format dicom-seg  # -> out/<name>_seg.dcm

A folder (or glob) of single-frame DICOM files is grouped by series (`gms_hub.io.series`): each series is one
input, one volume in spatial order, written as one DICOM SEG (or NIfTI, or PNGs per slice) named `series<n>`.
Every volume (a series, a multi-frame DICOM, a 3D NIfTI) also gets a row in `volumes.csv` (mL, 3D components;
`gms_hub.inference.volumes`).

Frames and slices stream through the model in batches of `--batch_size` (a volume is never held as float); a
file that cannot be read or written, and a folder entry passed over (a dangling symbolic link, a folder named
`x.png`), is reported in the log and in `predictions.csv` and makes the exit code 1. Logs and the CSV name files
only, never a value from a DICOM header.

Your files are safe (`gms_hub.io.safety`): an `--output_dir` that is, contains or lies inside an input is refused
(exit code 2); output names follow one collision-free rule (`output_stems`); every file is written atomically;
a rerun replaces only what an earlier run wrote into that folder (recorded in `.gms_hub_outputs.json`) and never
any other file; CSV cells cannot run as spreadsheet formulas.
"""

from __future__ import annotations

import argparse
import functools
import glob
import json
import logging
import os
import queue
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data.context import context_input
from ..io.series import SeriesFiles, group_dicom_series, open_series
from ..io.mask_files import OUTPUT_FORMATS, MaskWriter, class_names
from ..io.medical import FrameSequence
from ..io.reading import InputFile, detect_format, read_input, scan_input_folder, skip_reason
from ..io.safety import (
    OutputManifest,
    UnsafeOutputError,
    atomic_path,
    check_output_dir,
    describe_error,
    output_stems,
    write_csv,
)
from ..models.resolver import ACCEPTED_FORMS, load_model
from . import sources, volumes
from .resume import RECORD_DIR, RunRecord, file_fingerprint, remove_stale_temporaries
from .sharding import Shard

logger = logging.getLogger(__name__)

CSV_COLUMNS = ["input", "frame", "mask_file", "area_px", "area_mm2", "status"]


TOOL = "gms_hub.predict"
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1


def find_inputs(pattern: str) -> Tuple[List[Path], List[Tuple[Path, str]]]:
    """A file, a folder (its image, DICOM and NIfTI files, sorted) or a glob pattern -> (files, entries passed
    over with the reason: dangling or looping symbolic links, folders named like images)."""
    path = Path(pattern)
    if path.is_file():
        return [path], []
    if path.is_dir():
        return scan_input_folder(path)
    reason = skip_reason(path) if os.path.lexists(path) else None
    if reason is not None:
        return [], [(path, reason)]
    entries = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
    files = [p for p in entries if p.is_file()]
    skipped = [(p, r) for p in entries if (r := skip_reason(p)) is not None]
    if not files and not skipped:
        raise FileNotFoundError(f"--input {pattern!r} matches no file (give a file, a folder or a glob like 'dir/*.png').")
    return files, skipped


def parse_seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed takes a whole number in 0..{MAX_SEED}, got {text!r}.") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"--seed takes a whole number in 0..{MAX_SEED} (2**64 - 1), got {text}.")
    return seed



def parse_window(text: Optional[str]) -> Optional[Tuple[float, float]]:
    if text is None:
        return None
    parts = text.split(",")
    try:
        center, width = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--window takes CENTER,WIDTH (e.g. 40,400), got {text!r}.") from None
    if not width > 0:
        raise argparse.ArgumentTypeError(f"--window width must be > 0, got {width:g}.")
    return center, width


class _OneLineParser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block): what was wrong, and where to look."""

    argv: List[str] = []

    def error(self, message: str):
        given = {item.split("=", 1)[0] for item in self.argv}
        if "arguments are required" in message and not given & {"--input", "--dataset"}:
            message = message.replace("required: ", "required: --input (or --dataset), ", 1)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = _OneLineParser(
        description="Segment images, DICOM files and NIfTI volumes (a file, a folder or a glob) with a GMS model."
    )
    parser.add_argument("--model", default="demo", help=f"The model (default: demo): {ACCEPTED_FORMS}.")
    parser.add_argument("--input",
                        help="A file, a folder, or a glob pattern (quote it): PNG/JPEG/BMP/TIFF, DICOM, NIfTI.")
    parser.add_argument("--dataset", default=None,
                        help="Instead of --input: a Hugging Face dataset (Hub id, or a local folder such as "
                             "`python -m gms_hub.data.prepare` writes); its images are never written to disk.")
    parser.add_argument("--split", default="test", help="The --dataset split to segment (default: test).")
    parser.add_argument("--image_column", default="image", help="The --dataset column of images (default: image).")
    parser.add_argument("--id_column", default=None,
                        help="The --dataset column naming each row's masks (default: `name` or `id` when present, "
                             "else the row index, zero-padded to 6 digits).")
    parser.add_argument("--revision", default=None, help="Branch, tag or commit of a Hub --dataset.")
    parser.add_argument("--streaming", action="store_true",
                        help="Stream the --dataset (it need not fit on the disk); shared across processes with "
                             "datasets.distributed.split_dataset_by_node.")
    parser.add_argument("--num_workers", type=int, default=None,
                        help="DataLoader processes decoding images ahead of the model, with writing in a background "
                             "thread (default: 2, or 0 for fewer than 32 inputs; 0: everything in one thread).")
    parser.add_argument("--overwrite", action="store_true",
                        help="Redo every input, even those an interrupted run of the same command finished (a rerun "
                             "without it resumes: inputs already done are skipped).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--output_format", choices=OUTPUT_FORMATS, default="auto",
                        help="auto (default): PNG for images and DICOM, NIfTI for NIfTI inputs; png; nifti "
                             "(<name>_mask.nii.gz, NIfTI inputs and DICOM series); dicom-seg (<name>_seg.dcm, DICOM "
                             "inputs only; one per series).")
    parser.add_argument("--window", type=parse_window, default=None,
                        help="CENTER,WIDTH intensity window for DICOM/NIfTI (e.g. 40,400 for soft tissue in HU), "
                             "overriding the file's own.")
    parser.add_argument("--slice_axis", type=int, default=-1, help="Axis a 3D NIfTI volume is sliced along (default: last).")
    parser.add_argument("--threshold", type=float, default=None, help="Probability threshold (default: the model's, 0.5).")
    parser.add_argument("--batch_size", type=int, default=8, help="Frames/slices per forward pass (bounds memory).")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--num_threads", type=int, default=0,
                        help="CPU threads for the model (torch.set_num_threads). Default 0: torch's default, one per "
                             "core; on a machine shared with other work pass fewer (e.g. 1 or 2) to avoid "
                             "oversubscription.")
    parser.add_argument("--fast", action="store_true",
                        help="Apply gms_hub.inference.fast.optimize (exact rewrites: probabilities equal to float rounding).")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="Also write <name>_prob.png: the foreground probability as a 16-bit PNG (value / 65535).")
    parser.add_argument("--num_samples", type=int, default=0,
                        help="Posterior samples of the image latent to average (0: the paper's single pass).")
    parser.add_argument("--tta", action="store_true", help="Also average over the 8 flips and quarter turns.")
    parser.add_argument("--save_uncertainty", action="store_true",
                        help="Also write <name>_uncertainty.png: normalised predictive entropy, 16-bit (value / 65535).")
    parser.add_argument("--seed", type=parse_seed, default=None, help="Seed of the posterior samples (same seed, same maps).")
    parser.add_argument("--save_overlay", action="store_true",
                        help="Also write <name>_overlay.png: the mask over the image, one colour per class.")
    parser.add_argument("--postprocess", choices=volumes.POSTPROCESS, default="none",
                        help="none (default); largest_component: per class, keep only the largest 3D connected "
                             "component of each volume (DICOM series, multi-frame DICOM, 3D NIfTI).")
    parser.argv = [str(item) for item in (sys.argv[1:] if argv is None else argv)]
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}.")
    if args.num_samples < 0:
        parser.error(f"--num_samples must be >= 0, got {args.num_samples}.")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:  # NaN fails both comparisons
        parser.error(f"--threshold must be a probability in 0..1, got {args.threshold}.")
    if (args.input is None) == (args.dataset is None):
        parser.error("pass one of --input (files, a folder or a glob) and --dataset (a Hugging Face dataset).")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num_workers must be >= 0 (0: decode in the main process), got {args.num_workers}.")
    args.files, args.skipped = [], []
    try:
        if args.input is not None:
            args.files, args.skipped = find_inputs(args.input)
            check_output_dir(args.output_dir, [args.input] if Path(args.input).is_dir() else args.files)
        elif Path(args.dataset).expanduser().is_dir():
            check_output_dir(args.output_dir, [Path(args.dataset).expanduser()], input_flag="--dataset")
    except (FileNotFoundError, UnsafeOutputError) as err:
        parser.error(str(err))
    if args.num_threads < 0:
        parser.error(f"--num_threads must be >= 0 (0: torch's default), got {args.num_threads}.")
    return args


@dataclass
class _Job:
    """One input (a file, a DICOM series or a --dataset row) on its way through the model."""

    path: Path
    stem: str
    opened: Optional[InputFile] = None
    writer: Optional[MaskWriter] = None  # PNGs per frame, or the NIfTI / DICOM SEG written when the file ends
    rows: List[Dict[str, Any]] = field(default_factory=list)
    error: Optional[str] = None
    series: Optional[SeriesFiles] = None  # the files of a DICOM series, read as one volume
    volume: Optional[np.ndarray] = None  # (F, H, W) uint8 labels of a volume, for volumes.csv and postprocessing
    volume_row: Optional[Dict[str, Any]] = None
    order: int = 0  # position among the sorted inputs (ties in the CSV order)
    row: Optional[int] = None  # a --dataset row (not streamed)
    image: Any = None  # a streamed --dataset row's image cell
    files: List[str] = field(default_factory=list)  # the outputs this input wrote, for the run record
    queued: int = 0  # frames handed to the model
    processed: int = 0  # frames whose outputs are written (or given up)
    closed: bool = False  # every frame queued (and a volume's file-level output written)

    @property
    def key(self) -> str:
        """The input's key in the run record: its path (or dataset split/id) and its output name."""
        return f"{'dataset:' if self.row is not None or self.image is not None else ''}{self.path}|{self.stem}"

    def fingerprint(self) -> Any:
        """Size and modification time of the input file(s): a changed input is redone on a rerun."""
        if self.row is not None or self.image is not None:
            return None  # a dataset row: the dataset, split and revision are part of the run's arguments
        return file_fingerprint(sorted(self.series.paths, key=str) if self.series is not None else [self.path])


def foreground_labels(model) -> List[str]:
    """Names of the model's foreground classes, in label order (binary: id2label[1] or 'foreground')."""
    return class_names(int(getattr(model, "num_classes", 1)), getattr(model, "id2label", None))


def _png16(values: np.ndarray, path: Path) -> None:
    with atomic_path(path) as temporary:
        Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 65535).astype(np.uint16)).save(temporary, format="PNG")


def _reading_error(job: _Job, err: Exception) -> str:
    if isinstance(err, (ValueError, FileNotFoundError)):  # our readers' own wording: the file and the fix
        return str(err)
    # a third-party reader's text may quote a header value: the kind of error only
    return f"'{job.path.name}' could not be read ({describe_error(err)}); export it again."


class Predictor:
    """Streams the frames of many inputs through one model and writes every output as its frames come back.

    With `background=True` the writing (masks, maps, overlays, NIfTI, SEG) runs in one writer thread fed by a
    bounded queue, so the model never waits for the disk and memory stays flat; `on_complete(job)` is called (in
    the writer) once every output of an input is written.
    """

    def __init__(self, model, args: argparse.Namespace, output_dir: Path, manifest: Optional[OutputManifest] = None,
                 record: Optional[RunRecord] = None, decode=None, on_complete=None, background: bool = False):
        self.model, self.args, self.output_dir = model, args, output_dir
        self.manifest = manifest if manifest is not None else OutputManifest(output_dir, TOOL)
        self.record, self.decode, self.on_complete = record, decode, on_complete
        self.num_classes = int(getattr(model, "num_classes", 1))
        self.labels = foreground_labels(model)
        self.context = int(getattr(model, "context_slices", 0))  # 2.5D models see a volume's neighbouring slices
        self.generator = None
        if args.seed is not None:
            self.generator = torch.Generator(device=model.device).manual_seed(args.seed)
        self.pending: List[Tuple[_Job, int, Any]] = []  # (job, frame index, frame)
        self.pending_range = None
        self.progress = None  # a tqdm bar of frames: its total grows as files are opened, it moves as frames are done
        self.open_jobs: List[_Job] = []
        self._queue: Optional[queue.Queue] = None
        self._thread: Optional[threading.Thread] = None
        self._failure: Optional[BaseException] = None
        if background:
            self._queue = queue.Queue(maxsize=4)  # bounded: a full queue holds the model back, not the memory
            self._thread = threading.Thread(target=self._drain, name="gms-predict-writer", daemon=True)
            self._thread.start()

    # ---------------------------------------------------------------- the writer thread
    def _drain(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            if self._failure is None:
                try:
                    task[0](*task[1])
                except BaseException as err:  # raised again in the main thread (submit / close)
                    self._failure = err

    def submit(self, function, *arguments) -> None:
        """Run `function(*arguments)` now, or in the writer thread, in order."""
        if self._queue is None:
            function(*arguments)
            return
        if self._failure is not None:
            raise self._failure
        self._queue.put((function, arguments))

    def close(self) -> None:
        """Wait until everything submitted is written; raise what the writer thread raised."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread, self._queue = None, None
        if self._failure is not None:
            raise self._failure

    def claim(self, job: _Job, name: str) -> Path:
        """The path to write output `name` of `job` to (`OutputManifest.claim`), noted in the run record first."""
        path = self.manifest.claim(name)
        if self.record is not None:
            self.record.claim(name)
        job.files.append(name)
        return path

    # ---------------------------------------------------------------- the model
    def _segment(self, frames: List[Any], value_range):
        args = self.args
        result = self.model.segment(
            frames, threshold=args.threshold, return_probabilities=args.save_probabilities, value_range=value_range,
            batch_size=args.batch_size, num_samples=args.num_samples, tta=args.tta,
            return_uncertainty=args.save_uncertainty, generator=self.generator,
        )
        result = list(result) if isinstance(result, tuple) else [result]
        masks = result.pop(0)
        probs = result.pop(0) if args.save_probabilities else [None] * len(masks)
        uncertainty = result.pop(0) if args.save_uncertainty else [None] * len(masks)
        return list(zip(masks, probs, uncertainty))

    def flush(self) -> None:
        """Segment the pending frames (one call; one by one if the call fails, to isolate a bad frame)."""
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            outputs = self._segment([frame for _, _, frame in batch], self.pending_range)
        except (ValueError, TypeError):  # e.g. NaN pixels: retry one by one to find the bad file
            outputs = []
            for job, _, frame in batch:
                try:
                    outputs.append(self._segment([frame], self.pending_range)[0])
                except (ValueError, TypeError) as err:
                    job.error = job.error or str(err)
                    outputs.append(None)
        self.submit(self._write_batch, batch, outputs)

    def _write_batch(self, batch, outputs) -> None:
        for (job, index, frame), output in zip(batch, outputs):
            job.processed += 1
            if output is None or job.error is not None:
                continue
            try:
                self.write_frame(job, index, frame, *output)
            except (OSError, ValueError) as err:
                job.error = f"writing its outputs failed: {err}"
                logger.error("Writing the outputs of %s failed: %s", job.path.name, err)
        if self.progress is not None:
            self.progress.update(len(batch))
        self._complete_ready()

    def add(self, job: _Job, index: int, frame: Any) -> None:
        value_range = job.opened.value_range
        if self.pending and value_range != self.pending_range:
            self.flush()  # a batch shares one intensity rule
        self.pending_range = value_range
        job.queued += 1
        self.pending.append((job, index, frame))
        if len(self.pending) >= self.args.batch_size:
            self.flush()

    # ---------------------------------------------------------------- writing
    def write_frame(self, job: _Job, index: int, frame: Any, mask, prob, uncertainty) -> None:
        labels = np.asarray(mask).astype(np.uint8)  # (H, W): 0/1 binary, 0..K multi-class
        stem = job.writer.frame_stem(index)
        if prob is not None:
            foreground = prob if prob.ndim == 2 else 1.0 - prob[0]  # (H, W); multi-class: 1 - background
            _png16(foreground, self.claim(job, f"{stem}_prob.png"))
        if uncertainty is not None:
            _png16(uncertainty, self.claim(job, f"{stem}_uncertainty.png"))
        if self._holds_volume(job) and (job.writer.output == "png" or self.args.postprocess != "none"):
            # a NIfTI / SEG writer holds the label volume already; PNGs and postprocessing need their own copy
            if job.volume is None:
                job.volume = np.zeros((job.opened.num_frames, *labels.shape), dtype=np.uint8)  # (F, H, W)
            job.volume[index] = labels
            if self.args.postprocess != "none":
                return  # the masks are written once the whole volume is postprocessed (finish)
        self.write_labels(job, index, labels, frame)

    def _holds_volume(self, job: _Job) -> bool:
        return job.opened.medical is not None and job.opened.medical.is_volume

    def write_labels(self, job: _Job, index: int, labels: np.ndarray, frame: Any) -> None:
        """The mask of one frame (PNG now, or held for the file's NIfTI / SEG), its overlay and its CSV row."""
        row = job.writer.add(index, labels)
        if self.args.save_overlay:
            frame = job.opened.frames[index] if frame is None else frame
            if self.context and self._holds_volume(job):
                frame = np.asarray(frame)[..., self.context]  # the slice itself, not its neighbours
            stem = job.writer.frame_stem(index)
            from ..models.processing import to_float_rgb
            from ..io.visualize import label_colors, overlay_labels

            display = np.rint(to_float_rgb(frame, job.opened.value_range) * 255).astype(np.uint8)  # (H, W, 3)
            overlay = overlay_labels(display, labels, colors=label_colors(self.num_classes))
            with atomic_path(self.claim(job, f"{stem}_overlay.png")) as temporary:
                Image.fromarray(overlay).save(temporary, format="PNG")
        job.rows.append({"input": str(job.path), **row, "status": "ok"})

    def finish(self, job: _Job) -> None:
        """Postprocess and measure a volume, then write the file-level output (NIfTI mask or DICOM SEG), once every
        frame of the file is segmented."""
        if job.error is not None or job.writer is None:
            return
        try:
            if job.volume is not None and self.args.postprocess == "largest_component":
                job.volume = volumes.keep_largest_component(job.volume, self.num_classes)
                for index, labels in enumerate(job.volume):
                    self.write_labels(job, index, labels, None)
            volume = job.volume if job.volume is not None else job.writer.volume
            if self._holds_volume(job) and volume is not None:
                job.volume_row = volumes.volume_row(volume, self.labels, job.opened.medical.voxel_volume_mm3)
            job.volume = None
            job.writer.close()
        except (OSError, ValueError) as err:
            job.error = str(err)

    def _close(self, job: _Job) -> None:
        job.closed = True
        self._complete_ready()

    def _complete_ready(self) -> None:
        """Hand every input whose outputs are all written to `on_complete`, and let go of its frames."""
        for job in [job for job in self.open_jobs if job.closed and job.processed >= job.queued]:
            self.open_jobs.remove(job)
            if self.on_complete is not None:
                self.on_complete(job)
            job.opened, job.writer, job.volume = None, None, None

    # ---------------------------------------------------------------- one input
    def _open(self, job: _Job, decoded) -> InputFile:
        """The input opened: decoded by a DataLoader worker (an image), or read here (files, dataset rows)."""
        args = self.args
        if decoded is None or decoded[0] == "main":
            if job.row is None and job.image is None:
                if job.series is not None:
                    return open_series(job.series.order(), window=args.window)
                return read_input(job.path, window=args.window, slice_axis=args.slice_axis)
            decoded = self.decode(job)
        if decoded[0] == "error":
            raise _DecodeError(decoded[1])
        image = decoded[1]
        return InputFile(path=job.path, kind="image", frames=FrameSequence(1, lambda start, stop: [image]))

    def run(self, job: _Job, decoded=None) -> None:
        """Segment one input: `decoded` is what a DataLoader worker made of it (`sources.prefetch`), if any."""
        self.submit(self.open_jobs.append, job)
        try:
            self._run(job, decoded)
        finally:
            self.submit(self._close, job)

    def _run(self, job: _Job, decoded) -> None:
        args = self.args
        try:
            job.opened = self._open(job, decoded)
            job.opened = context_input(job.opened, self.context)
            job.writer = MaskWriter(job.opened, self.output_dir, job.stem, output_format=args.output_format,
                                    num_classes=self.num_classes, names=self.labels, model_id=str(args.model),
                                    claim=lambda name: self.claim(job, name))
            if job.opened.num_frames < 1:
                raise ValueError(f"'{job.path.name}' holds no frame. Export a file with at least one image.")
            if self.progress is not None:
                self.progress.total = (self.progress.total or 0) + job.opened.num_frames
                self.progress.refresh()
            index = 0
            for frames in job.opened.batches(args.batch_size):
                for frame in frames:
                    self.add(job, index, frame)
                    index += 1
                if job.error is not None:
                    return
        except _DecodeError as err:
            job.error = job.error or str(err)
            return
        except Exception as err:
            job.error = job.error or _reading_error(job, err)
            return
        if job.opened.kind != "image":
            self.flush()  # a volume's frames are all segmented before its file is written
            self.submit(self.finish, job)


class _DecodeError(Exception):
    """A DataLoader worker's message on an input it could not read (already in our words)."""


def decode_job(job: _Job, args: argparse.Namespace, dataset=None) -> Tuple[str, Any]:
    """What a DataLoader worker makes of one job: `("image", PIL image)` for an ordinary image or a dataset row,
    `("error", message)`, or `("main", None)` for DICOM/NIfTI (opened in the main process, frames streamed)."""
    try:
        if job.image is not None or job.row is not None:
            value = job.image if job.image is not None else dataset[job.row][args.image_column]
            return "image", sources.dataset_image(value, job.path.name)
        if job.series is not None or detect_format(job.path) != "image":
            return "main", None
        opened = read_input(job.path, window=args.window, slice_axis=args.slice_axis)
        return "image", opened.frames[0]
    except Exception as err:
        return "error", _reading_error(job, err)


# ------------------------------------------------------------------------------ rows of the CSVs
def _csv_rows(job: _Job) -> List[Dict[str, Any]]:
    if job.error is None:
        return list(job.rows)
    if job.series is not None:  # a series that is not one volume: every file of it has its row and the reason
        return [{"input": str(file), "status": one_line(f"{job.series.name}: {job.error}")}
                for file in sorted(job.series.paths, key=str)]
    return [{"input": str(job.path), "status": one_line(job.error)}]


def _volume_rows(job: _Job) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """(the `volumes.csv` row of a volume segmented, the row of a volume or series that failed)."""
    if job.volume_row is not None and job.error is None:
        return {"input": str(job.path), **job.volume_row, "status": "ok"}, None
    if job.error is not None and (job.series is not None or job.volume_row is not None):
        return None, {"input": str(job.path), "status": one_line(job.error)}
    return None, None


def _entry(job: _Job) -> Dict[str, Any]:
    """What the run record keeps of a finished input: enough to write its CSV rows without redoing it."""
    volume_ok, volume_failed = _volume_rows(job)
    return {"key": job.key, "input": str(job.path), "order": job.order, "fingerprint": job.fingerprint(),
            "done": job.error is None, "error": job.error, "rows": _csv_rows(job), "volume_row": volume_ok,
            "volume_error": volume_failed, "files": list(job.files)}


def _columns(labels: List[str], num_classes: int) -> List[str]:
    columns = list(CSV_COLUMNS)
    if num_classes > 1:
        columns[5:5] = [f"{unit}_{label}" for label in labels for unit in ("area_px", "area_mm2")]
    return columns


def write_predictions_csv(jobs: List[_Job], path: Path, labels: List[str], num_classes: int) -> None:
    """`predictions.csv`: one row per frame, one per failed or skipped input with the reason (`safety.write_csv`);
    a DICOM series that failed gives a row for each of its files."""
    write_csv(path, [row for job in jobs for row in _csv_rows(job)], _columns(labels, num_classes))


def write_volumes(jobs: List[_Job], output_dir: Path, labels: List[str], manifest: OutputManifest) -> None:
    """`volumes.csv`: a row per volume segmented, and per series that failed; nothing when no input is a volume."""
    _write_volumes([_entry(job) for job in jobs], labels, manifest)


def _write_volumes(entries: List[Dict[str, Any]], labels: List[str], manifest: OutputManifest) -> None:
    rows = [entry["volume_row"] for entry in entries if entry.get("volume_row")]
    rows += [entry["volume_error"] for entry in entries if entry.get("volume_error")]
    if rows:
        volumes.write_volumes_csv(rows, manifest.claim("volumes.csv"), labels)


def make_jobs(files: List[Path]) -> List[_Job]:
    """One job per input: a DICOM series (its single-frame files, grouped, named `series<n>`) or any other file;
    the output names of all of them come from the one naming rule (`gms_hub.io.safety.output_stems`)."""
    series, singles = group_dicom_series(files)
    paths = list(singles)
    for item in series:
        folder = Path(os.path.commonpath([str(p.parent) for p in item.paths]))
        paths.append(folder / item.name)
    stems = output_stems(paths)
    jobs = [_Job(path=path, stem=stem) for path, stem in zip(singles, stems)]
    jobs += [_Job(path=path, stem=stem, series=item)
             for path, stem, item in zip(paths[len(singles):], stems[len(singles):], series)]
    return jobs


def one_line(text: str) -> str:
    """A status cell on one line: a cell spanning lines breaks line-based readers of the CSV."""
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------ the run
OUTPUT_ARGUMENTS = ("model", "input", "dataset", "split", "image_column", "id_column", "revision", "output_format",
                    "window", "slice_axis", "threshold", "batch_size", "fast", "save_probabilities", "num_samples",
                    "tta", "save_uncertainty", "seed", "save_overlay", "postprocess")
"""The arguments that change what a run writes: a rerun resumes only when all of them are the same."""


def run_arguments(args: argparse.Namespace) -> Dict[str, Any]:
    """The arguments of `OUTPUT_ARGUMENTS` (and the model folder's file sizes and times), as the record keeps them."""
    arguments = {name: getattr(args, name, None) for name in OUTPUT_ARGUMENTS}
    model = Path(str(args.model))
    if model.is_dir():
        arguments["model_files"] = [[str(p.relative_to(model)), *stat[1:]]
                                    for p, stat in zip(sorted(model.rglob("*")), file_fingerprint(sorted(model.rglob("*"))))
                                    if p.is_file()]
    return json.loads(json.dumps(arguments, default=str))


def main(argv=None) -> int:
    """The CLI: exit 0 when every input was segmented, 1 when some failed (see `predictions.csv`), 2 when nothing
    could run (no input, no model, an unusable output folder): then the cause is one line, in our words."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError, RuntimeError) as err:  # third-party errors included: one line, no traceback
        logger.error("%s", " ".join(str(err).split()) or type(err).__name__)
        return 2


def _dataset_jobs(args, shard: Shard):
    """(the dataset, its jobs: a sorted list, or for --streaming an iterator over this process's rows)."""
    dataset = sources.open_dataset(args.dataset, args.split, args.revision, args.streaming)
    id_column = sources.dataset_id_column(dataset.column_names, args.id_column, args.image_column)

    def job(row_id: str, **where) -> _Job:
        return _Job(path=Path(args.split) / row_id, stem=sources.dataset_stem(row_id), **where)

    if not args.streaming:
        ids = dataset[id_column] if id_column is not None else [f"{i:06d}" for i in range(len(dataset))]
        jobs = [job(str(value), row=index, order=index) for index, value in enumerate(ids)]
        return dataset, sorted(jobs, key=lambda item: str(item.path))
    if id_column is None:
        dataset = dataset.map(lambda example, index: {"__row_index": index}, with_indices=True)
    if shard.sharded:
        from datasets.distributed import split_dataset_by_node

        dataset = split_dataset_by_node(dataset, rank=shard.rank, world_size=shard.world_size)

    def stream():
        for position, example in enumerate(dataset):
            index = example["__row_index"] if id_column is None else position
            row_id = f"{index:06d}" if id_column is None else str(example[id_column])
            yield job(row_id, image=example[args.image_column], order=index)

    return dataset, stream()


def run(args: argparse.Namespace) -> int:
    """Segment every input of parsed `args`; returns the exit code (1 when some input failed)."""
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    shard = Shard.from_environment(args.device)
    if shard.sharded and args.device == "auto":
        device = str(shard.device)
    else:
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = OutputManifest(output_dir, TOOL)
    try:
        csv_path = manifest.claim("predictions.csv")  # an unrelated predictions.csv stops the run before any work
    except FileExistsError as err:
        logger.error("--output_dir %s: %s", output_dir, err)
        return 2
    record = RunRecord(output_dir)
    if shard.is_main:  # before any process writes: clear what a killed run left, decide resume or redo
        removed = remove_stale_temporaries(output_dir)
        if removed:
            logger.info("Removed %d temporary file(s) a stopped run left in %s.", removed, output_dir)
        record.start(run_arguments(args), args.overwrite)
    shard.barrier()
    if not shard.is_main:
        record.join()
    manifest.previous |= record.claimed()  # files a stopped run began writing are ours too
    try:
        return _run_shard(args, shard, device, output_dir, manifest, record, csv_path)
    finally:
        record.close_journal()


def _run_shard(args, shard: Shard, device: str, output_dir: Path, manifest: OutputManifest, record: RunRecord,
               csv_path: Path) -> int:
    dataset, all_jobs = None, []
    if args.dataset is not None:
        dataset, all_jobs = _dataset_jobs(args, shard)
    else:
        all_jobs = sorted(make_jobs(args.files), key=lambda job: str(job.path))
        for order, job in enumerate(all_jobs):
            job.order = order
    streamed = not isinstance(all_jobs, list)
    mine = all_jobs if streamed else shard.take(all_jobs)
    entries: List[Dict[str, Any]] = []
    keys: List[str] = []
    skipped_done = 0

    def pending():
        nonlocal skipped_done
        for job in mine:
            keys.append(job.key)
            entry = record.done(job.key, job.fingerprint(), manifest.previous)
            if entry is not None:
                entries.append(entry)
                skipped_done += 1
            else:
                yield job

    todo = pending() if streamed else list(pending())
    if not streamed:
        _log_skipped(skipped_done, shard)
    model = load_model(args.model, device=device)
    if args.fast:
        from .fast import optimize

        optimize(model)
    workers = args.num_workers
    if workers is None:
        workers = 0 if streamed or len(todo) < 32 else min(2, os.cpu_count() or 1)
    progress_bar = tqdm(total=0 if not shard.sharded else (None if streamed else len(all_jobs)), desc="Segmenting",
                        unit="frame" if not shard.sharded else "input", disable=not shard.is_main)

    def on_complete(job: _Job) -> None:
        entry = _entry(job)
        record.save(entry)
        entries.append(entry)
        if shard.sharded and shard.is_main:
            progress_bar.n = record.count_inputs()
            progress_bar.refresh()

    predictor = Predictor(model, args, output_dir, manifest, record=record, on_complete=on_complete,
                          decode=functools.partial(decode_job, args=args, dataset=dataset), background=workers > 0)
    ok = False
    try:
        with progress_bar as progress:  # one process: counts frames done, not files opened; several: inputs
            predictor.progress = None if shard.sharded else progress
            if streamed:
                for job in todo:
                    predictor.run(job)
            else:
                for job, decoded in sources.prefetch(todo, predictor.decode, workers):
                    predictor.run(job, decoded)
            predictor.flush()
            predictor.close()
            ok = True
            if streamed:
                _log_skipped(skipped_done, shard)
            if shard.is_main and shard.sharded:
                others = record.wait_for(range(1, shard.world_size), on_poll=lambda: setattr(
                    progress, "n", record.count_inputs()) or progress.refresh())
    finally:  # what was written is recorded even when the run stops early
        if shard.sharded and not shard.is_main:
            record.finish(shard.rank, ok, keys)
        elif not shard.sharded:
            manifest.save()
    if not shard.is_main:
        return 1 if any(entry.get("error") for entry in entries) else 0
    if shard.sharded:
        failed = [item["rank"] for item in others if not item.get("ok")]
        if failed:
            raise RuntimeError(f"process(es) {failed} stopped before their inputs were done; rerun the same command "
                               "to finish what is missing.")
        for item in others:
            for key in item["keys"]:
                entry = record.load(key)
                if entry is None:
                    raise RuntimeError(f"no record of {key.split('|')[0]} from process {item['rank']}; rerun the same "
                                       "command to finish what is missing.")
                entries.append(entry)
    return _write_results(args, entries, predictor, output_dir, manifest, record, csv_path)


def _log_skipped(count: int, shard: Shard) -> None:
    if count:
        where = f" (process {shard.rank} of {shard.world_size})" if shard.sharded else ""
        logger.info("Skipped %d input(s) already done%s; pass --overwrite to redo them.", count, where)


def _write_results(args, entries, predictor: Predictor, output_dir: Path, manifest: OutputManifest,
                   record: RunRecord, csv_path: Path) -> int:
    """Main process: the one `predictions.csv` (and `volumes.csv`) in input order, and the output manifest."""
    for path, reason in args.skipped:
        entries.append({"input": str(path), "order": len(entries), "skipped": True, "error": f"skipped: {reason}",
                        "rows": [{"input": str(path), "status": one_line(f"skipped: {reason}")}]})
    entries.sort(key=lambda entry: (entry["input"], bool(entry.get("skipped")), entry.get("order", 0)))
    write_csv(csv_path, [row for entry in entries for row in entry["rows"]],
              _columns(predictor.labels, predictor.num_classes))
    _write_volumes(entries, predictor.labels, manifest)
    for name in sorted(record.claimed()):  # every process's outputs, this run's and a stopped run's
        if (output_dir / name).exists() and name not in manifest.written:
            manifest.record(name)
    manifest.save()
    record.clear_claims()
    failures = [entry for entry in entries if entry.get("error")]
    logger.info("Wrote masks for %d file(s) to %s; %d file(s) failed.", len(entries) - len(failures), output_dir,
                len(failures))
    for entry in failures:
        logger.error("Skipped %s: %s", entry["input"], entry["error"])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
