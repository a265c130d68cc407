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
import glob
import logging
import os
import sys
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
from ..io.reading import InputFile, read_input, scan_input_folder, skip_reason
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
from . import volumes

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

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = _OneLineParser(
        description="Segment images, DICOM files and NIfTI volumes (a file, a folder or a glob) with a GMS model."
    )
    parser.add_argument("--model", default="demo", help=f"The model (default: demo): {ACCEPTED_FORMS}.")
    parser.add_argument("--input", required=True,
                        help="A file, a folder, or a glob pattern (quote it): PNG/JPEG/BMP/TIFF, DICOM, NIfTI.")
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
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}.")
    if args.num_samples < 0:
        parser.error(f"--num_samples must be >= 0, got {args.num_samples}.")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:  # NaN fails both comparisons
        parser.error(f"--threshold must be a probability in 0..1, got {args.threshold}.")
    try:
        args.files, args.skipped = find_inputs(args.input)
        check_output_dir(args.output_dir, [args.input] if Path(args.input).is_dir() else args.files)
    except (FileNotFoundError, UnsafeOutputError) as err:
        parser.error(str(err))
    if args.num_threads < 0:
        parser.error(f"--num_threads must be >= 0 (0: torch's default), got {args.num_threads}.")
    return args


@dataclass
class _Job:
    """One input file on its way through the model."""

    path: Path
    stem: str
    opened: Optional[InputFile] = None
    writer: Optional[MaskWriter] = None  # PNGs per frame, or the NIfTI / DICOM SEG written when the file ends
    rows: List[Dict[str, Any]] = field(default_factory=list)
    error: Optional[str] = None
    series: Optional[SeriesFiles] = None  # the files of a DICOM series, read as one volume
    volume: Optional[np.ndarray] = None  # (F, H, W) uint8 labels of a volume, for volumes.csv and postprocessing
    volume_row: Optional[Dict[str, Any]] = None


def foreground_labels(model) -> List[str]:
    """Names of the model's foreground classes, in label order (binary: id2label[1] or 'foreground')."""
    return class_names(int(getattr(model, "num_classes", 1)), getattr(model, "id2label", None))


def _png16(values: np.ndarray, path: Path) -> None:
    with atomic_path(path) as temporary:
        Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 65535).astype(np.uint16)).save(temporary, format="PNG")


class Predictor:
    """Streams the frames of many files through one model and writes every output as its frames come back."""

    def __init__(self, model, args: argparse.Namespace, output_dir: Path, manifest: Optional[OutputManifest] = None):
        self.model, self.args, self.output_dir = model, args, output_dir
        self.manifest = manifest if manifest is not None else OutputManifest(output_dir, TOOL)
        self.num_classes = int(getattr(model, "num_classes", 1))
        self.labels = foreground_labels(model)
        self.context = int(getattr(model, "context_slices", 0))  # 2.5D models see a volume's neighbouring slices
        self.generator = None
        if args.seed is not None:
            self.generator = torch.Generator(device=model.device).manual_seed(args.seed)
        self.pending: List[Tuple[_Job, int, Any]] = []  # (job, frame index, frame)
        self.pending_range = None
        self.progress = None  # a tqdm bar of frames: its total grows as files are opened, it moves as frames are done

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
        for (job, index, frame), output in zip(batch, outputs):
            if output is None or job.error is not None:
                continue
            try:
                self.write_frame(job, index, frame, *output)
            except (OSError, ValueError) as err:
                job.error = f"writing its outputs failed: {err}"
                logger.error("Writing the outputs of %s failed: %s", job.path.name, err)
        if self.progress is not None:
            self.progress.update(len(batch))

    def add(self, job: _Job, index: int, frame: Any) -> None:
        value_range = job.opened.value_range
        if self.pending and value_range != self.pending_range:
            self.flush()  # a batch shares one intensity rule
        self.pending_range = value_range
        self.pending.append((job, index, frame))
        if len(self.pending) >= self.args.batch_size:
            self.flush()

    # ---------------------------------------------------------------- writing
    def write_frame(self, job: _Job, index: int, frame: Any, mask, prob, uncertainty) -> None:
        labels = np.asarray(mask).astype(np.uint8)  # (H, W): 0/1 binary, 0..K multi-class
        stem = job.writer.frame_stem(index)
        claim = self.manifest.claim
        if prob is not None:
            foreground = prob if prob.ndim == 2 else 1.0 - prob[0]  # (H, W); multi-class: 1 - background
            _png16(foreground, claim(f"{stem}_prob.png"))
        if uncertainty is not None:
            _png16(uncertainty, claim(f"{stem}_uncertainty.png"))
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
        claim = self.manifest.claim
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
            with atomic_path(claim(f"{stem}_overlay.png")) as temporary:
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

    # ---------------------------------------------------------------- one file
    def run(self, job: _Job) -> None:
        args = self.args
        try:
            if job.series is not None:
                job.opened = open_series(job.series.order(), window=args.window)
            else:
                job.opened = read_input(job.path, window=args.window, slice_axis=args.slice_axis)
            job.opened = context_input(job.opened, self.context)
            job.writer = MaskWriter(job.opened, self.output_dir, job.stem, output_format=args.output_format,
                                    num_classes=self.num_classes, names=self.labels, model_id=str(args.model),
                                    claim=self.manifest.claim)
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
        except (ValueError, FileNotFoundError) as err:  # our readers' own wording: the file and the fix
            job.error = job.error or str(err)
            return
        except Exception as err:  # a third-party reader's text may quote a header value: the kind of error only
            job.error = job.error or f"'{job.path.name}' could not be read ({describe_error(err)}); export it again."
            return
        if job.opened.kind != "image":
            self.flush()  # a volume's frames are all segmented before its file is written
            self.finish(job)


def write_predictions_csv(jobs: List[_Job], path: Path, labels: List[str], num_classes: int) -> None:
    """`predictions.csv`: one row per frame, one per failed or skipped input with the reason (`safety.write_csv`);
    a DICOM series that failed gives a row for each of its files."""
    columns = list(CSV_COLUMNS)
    if num_classes > 1:
        columns[5:5] = [f"{unit}_{label}" for label in labels for unit in ("area_px", "area_mm2")]
    rows = []
    for job in jobs:
        if job.error is None:
            rows.extend(job.rows)
        elif job.series is not None:  # a series that is not one volume: every file of it has its row and the reason
            rows.extend({"input": str(file), "status": one_line(f"{job.series.name}: {job.error}")}
                        for file in sorted(job.series.paths, key=str))
        else:
            rows.append({"input": str(job.path), "status": one_line(job.error)})
    write_csv(path, rows, columns)


def write_volumes(jobs: List[_Job], output_dir: Path, labels: List[str], manifest: OutputManifest) -> None:
    """`volumes.csv`: a row per volume segmented, and per series that failed; nothing when no input is a volume."""
    rows = [{"input": str(job.path), **job.volume_row, "status": "ok"} for job in jobs
            if job.volume_row is not None and job.error is None]
    rows += [{"input": str(job.path), "status": one_line(job.error)} for job in jobs
             if job.error is not None and (job.series is not None or job.volume_row is not None)]
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


def run(args: argparse.Namespace) -> int:
    """Segment every input of parsed `args`; returns the exit code (1 when some input failed)."""
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    manifest = OutputManifest(output_dir, TOOL)
    try:
        csv_path = manifest.claim("predictions.csv")  # an unrelated predictions.csv stops the run before any work
    except FileExistsError as err:
        logger.error("--output_dir %s: %s", output_dir, err)
        return 2
    model = load_model(args.model, device=device)
    if args.fast:
        from .fast import optimize

        optimize(model)
    predictor = Predictor(model, args, output_dir, manifest)
    jobs = make_jobs(args.files)
    skipped = [_Job(path=path, stem="", error=f"skipped: {reason}") for path, reason in args.skipped]
    try:
        with tqdm(total=0, desc="Segmenting", unit="frame") as progress:  # counts frames done, not files opened
            predictor.progress = progress
            for job in jobs:
                predictor.run(job)
            predictor.flush()
    finally:  # what was written is recorded even when the run stops early
        manifest.save()
    jobs = sorted(jobs + skipped, key=lambda job: str(job.path))
    write_predictions_csv(jobs, csv_path, predictor.labels, predictor.num_classes)
    write_volumes(jobs, output_dir, predictor.labels, manifest)
    manifest.save()
    failures = [job for job in jobs if job.error is not None]
    logger.info("Wrote masks for %d file(s) to %s; %d file(s) failed.", len(jobs) - len(failures), output_dir,
                len(failures))
    for job in failures:
        logger.error("Skipped %s: %s", job.path, job.error)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
