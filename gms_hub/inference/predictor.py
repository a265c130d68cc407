"""The `Predictor` of `python -m gms_hub.predict`: frames of many inputs batched through one model, every output
written as its frames come back (in a writer thread when DataLoader workers decode ahead), and `decode_job`,
what a DataLoader worker makes of one input.
"""

from __future__ import annotations

import argparse
import logging
import queue
import threading
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from ..data.context import context_input
from ..io.mask_files import MaskWriter, class_names
from ..io.medical import FrameSequence
from ..io.reading import InputFile, detect_format, read_input
from ..io.safety import OutputManifest, atomic_path
from ..io.series import open_series
from . import sources, volumes
from .jobs import TOOL, Job, reading_error
from .resume import RunRecord

logger = logging.getLogger(__name__)


def foreground_labels(model) -> List[str]:
    """Names of the model's foreground classes, in label order (binary: id2label[1] or 'foreground')."""
    return class_names(int(getattr(model, "num_classes", 1)), getattr(model, "id2label", None))


def _png16(values: np.ndarray, path: Path) -> None:
    with atomic_path(path) as temporary:
        Image.fromarray(np.round(np.clip(values, 0.0, 1.0) * 65535).astype(np.uint16)).save(temporary, format="PNG")


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
        self._seeded_group = 0
        self.pending: List[Tuple[Job, int, Any]] = []  # (job, frame index, frame)
        self.pending_range = None
        self.progress = None  # a tqdm bar of frames: its total grows as files are opened, it moves as frames are done
        self.open_jobs: List[Job] = []
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

    def claim(self, job: Job, name: str) -> Path:
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

    def add(self, job: Job, index: int, frame: Any) -> None:
        value_range = job.opened.value_range
        if self.pending and value_range != self.pending_range:
            self.flush()  # a batch shares one intensity rule
        self.pending_range = value_range
        job.queued += 1
        self.pending.append((job, index, frame))
        if len(self.pending) >= self.args.batch_size:
            self.flush()

    # ---------------------------------------------------------------- writing
    def write_frame(self, job: Job, index: int, frame: Any, mask, prob, uncertainty) -> None:
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

    def _holds_volume(self, job: Job) -> bool:
        return job.opened.medical is not None and job.opened.medical.is_volume

    def write_labels(self, job: Job, index: int, labels: np.ndarray, frame: Any) -> None:
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

    def finish(self, job: Job) -> None:
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

    def _close(self, job: Job) -> None:
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
    def _open(self, job: Job, decoded) -> InputFile:
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

    def run(self, job: Job, decoded=None) -> None:
        """Segment one input: `decoded` is what a DataLoader worker made of it (`sources.prefetch`), if any.

        Frames wait to fill a batch across inputs until the last input of a batch group (`Job.ends_group`,
        `jobs.batch_groups`); with `--seed`, group g draws its posterior samples from seed + g, so a group's
        outputs do not depend on which process ran it or on what ran before it."""
        if self.generator is not None and job.group != self._seeded_group:
            self.flush()
            self.generator.manual_seed(self.args.seed + job.group)
            self._seeded_group = job.group
        self.submit(self.open_jobs.append, job)
        try:
            self._run(job, decoded)
        finally:
            self.submit(self._close, job)
        if job.ends_group:
            self.flush()

    def _run(self, job: Job, decoded) -> None:
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
            job.error = job.error or reading_error(job, err)
            return
        if job.opened.kind != "image":
            self.flush()  # a volume's frames are all segmented before its file is written
            self.submit(self.finish, job)


class _DecodeError(Exception):
    """A DataLoader worker's message on an input it could not read (already in our words)."""


def decode_job(job: Job, args: argparse.Namespace, dataset=None) -> Tuple[str, Any]:
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
        return "error", reading_error(job, err)
