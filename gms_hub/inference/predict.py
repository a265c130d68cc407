"""Batch prediction: masks for images, DICOM files and NIfTI volumes, and a `predictions.csv` of areas.

Usage:
    python -m gms_hub.predict --model org/gms-busi --input "scans/*.png" --output_dir masks/
    python -m gms_hub.predict --input ct.nii.gz --output_dir out/ --window 40,400       # -> out/ct_mask.nii.gz
    python -m gms_hub.predict --input study/ --output_dir out/ --output_format dicom-seg  # -> out/<name>_seg.dcm

Frames and slices stream through the model in batches of `--batch_size` (a volume is never held as float); a
file that cannot be read or written is reported in the log and in `predictions.csv`, skipped, and makes the
exit code 1. Logs and the CSV name files only, never a value from a DICOM header.
"""

from __future__ import annotations

import argparse
import csv
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

from ..io.reading import IMAGE_EXTENSIONS, InputFile, list_input_files, read_input
from ..io.mask_files import OUTPUT_FORMATS, MaskWriter, class_names
from ..io.medical import strip_suffix
from ..models.resolver import ACCEPTED_FORMS, load_model

logger = logging.getLogger(__name__)

CSV_COLUMNS = ["input", "frame", "mask_file", "area_px", "area_mm2", "status"]


def find_inputs(pattern: str) -> List[Path]:
    """A file, a folder (its image, DICOM and NIfTI files, sorted) or a glob pattern -> list of files."""
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        return list_input_files(path)
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    if not matches:
        raise FileNotFoundError(f"--input {pattern!r} matches no file (give a file, a folder or a glob like 'dir/*.png').")
    return matches


def output_stems(files: List[Path]) -> List[str]:
    """`<name>` per input (`ct.nii.gz` -> `ct`); inputs sharing a name (a.png, a.jpg) get their extension appended."""
    names = [strip_suffix(f.name) if not f.name.lower().endswith(IMAGE_EXTENSIONS) else f.stem for f in files]
    suffixes = [f.name[len(n):].lstrip(".").lower().replace(".", "_") for f, n in zip(files, names)]
    return [f"{n}_{s}" if names.count(n) > 1 and s else n for n, s in zip(names, suffixes)]



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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Segment images, DICOM files and NIfTI volumes (a file, a folder or a glob) with a GMS model."
    )
    parser.add_argument("--model", default="demo", help=f"The model (default: demo): {ACCEPTED_FORMS}.")
    parser.add_argument("--input", required=True,
                        help="A file, a folder, or a glob pattern (quote it): PNG/JPEG/BMP/TIFF, DICOM, NIfTI.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--output_format", choices=OUTPUT_FORMATS, default="auto",
                        help="auto (default): PNG for images and DICOM, NIfTI for NIfTI inputs; png; nifti "
                             "(<name>_mask.nii.gz, NIfTI inputs only); dicom-seg (<name>_seg.dcm, DICOM inputs only).")
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
    parser.add_argument("--seed", type=int, default=None, help="Seed of the posterior samples (same seed, same maps).")
    parser.add_argument("--save_overlay", action="store_true",
                        help="Also write <name>_overlay.png: the mask over the image, one colour per class.")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}.")
    if args.num_samples < 0:
        parser.error(f"--num_samples must be >= 0, got {args.num_samples}.")
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


def foreground_labels(model) -> List[str]:
    """Names of the model's foreground classes, in label order (binary: id2label[1] or 'foreground')."""
    return class_names(int(getattr(model, "num_classes", 1)), getattr(model, "id2label", None))


def _png16(values: np.ndarray, path: Path) -> None:
    Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 65535).astype(np.uint16)).save(path)


class Predictor:
    """Streams the frames of many files through one model and writes every output as its frames come back."""

    def __init__(self, model, args: argparse.Namespace, output_dir: Path):
        self.model, self.args, self.output_dir = model, args, output_dir
        self.num_classes = int(getattr(model, "num_classes", 1))
        self.labels = foreground_labels(model)
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
        out = self.output_dir
        row = job.writer.add(index, labels)  # writes the PNG now, or holds the frame for the file's NIfTI / SEG
        if prob is not None:
            foreground = prob if prob.ndim == 2 else 1.0 - prob[0]  # (H, W); multi-class: 1 - background
            _png16(foreground, out / f"{stem}_prob.png")
        if uncertainty is not None:
            _png16(uncertainty, out / f"{stem}_uncertainty.png")
        if self.args.save_overlay:
            from ..models.processing import to_float_rgb
            from ..io.visualize import label_colors, overlay_labels

            display = np.rint(to_float_rgb(frame, job.opened.value_range) * 255).astype(np.uint8)  # (H, W, 3)
            overlay = overlay_labels(display, labels, colors=label_colors(self.num_classes))
            Image.fromarray(overlay).save(out / f"{stem}_overlay.png")
        job.rows.append({"input": str(job.path), **row, "status": "ok"})

    def finish(self, job: _Job) -> None:
        """Write the file-level output (NIfTI mask or DICOM SEG) once every frame of the file is segmented."""
        if job.error is not None or job.writer is None:
            return
        try:
            job.writer.close()
        except (OSError, ValueError) as err:
            job.error = str(err)

    # ---------------------------------------------------------------- one file
    def run(self, job: _Job) -> None:
        args = self.args
        try:
            job.opened = read_input(job.path, window=args.window, slice_axis=args.slice_axis)
            job.writer = MaskWriter(job.opened, self.output_dir, job.stem, output_format=args.output_format,
                                    num_classes=self.num_classes, names=self.labels, model_id=str(args.model))
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
        except (ValueError, FileNotFoundError) as err:
            job.error = job.error or str(err)
            return
        if job.opened.kind != "image":
            self.flush()  # a volume's frames are all segmented before its file is written
            self.finish(job)


def write_csv(jobs: List[_Job], path: Path, labels: List[str], num_classes: int) -> None:
    columns = list(CSV_COLUMNS)
    if num_classes > 1:
        columns[5:5] = [f"{unit}_{label}" for label in labels for unit in ("area_px", "area_mm2")]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        for job in jobs:
            if job.error is not None:  # one line: a cell spanning lines breaks line-based readers of the CSV
                writer.writerow({"input": str(job.path), "status": " ".join(job.error.split())})
            else:
                writer.writerows(job.rows)


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
    files = find_inputs(args.input)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, device=device)
    if args.fast:
        from .fast import optimize

        optimize(model)
    predictor = Predictor(model, args, output_dir)
    jobs = [_Job(path=path, stem=stem) for path, stem in zip(files, output_stems(files))]
    with tqdm(total=0, desc="Segmenting", unit="frame") as progress:  # counts frames done, not files opened
        predictor.progress = progress
        for job in jobs:
            predictor.run(job)
        predictor.flush()
    write_csv(jobs, output_dir / "predictions.csv", predictor.labels, predictor.num_classes)
    failures = [job for job in jobs if job.error is not None]
    logger.info("Wrote masks for %d file(s) to %s; %d file(s) failed.", len(jobs) - len(failures), output_dir,
                len(failures))
    for job in failures:
        logger.error("Skipped %s: %s", job.path, job.error)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
