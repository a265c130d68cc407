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

This module is the CLI (`parse_args`, `main`) and the run (`run`: the record, this process's share of the
inputs, the CSVs); the inputs as jobs and their CSV rows are `gms_hub.inference.jobs`, the model and the writing
of every output `gms_hub.inference.predictor`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from ..io.mask_files import OUTPUT_FORMATS
from ..io.safety import OutputManifest, UnsafeOutputError, check_output_dir, write_csv
from ..models.resolver import ACCEPTED_FORMS, load_model
from . import sources, volumes
from .jobs import (TOOL, Job, batch_groups, csv_columns, dataset_jobs, find_inputs, make_jobs, one_line, record_entry,
                   write_volume_entries)
from .predictor import Predictor, decode_job
from .resume import RunRecord, remove_stale_temporaries, run_arguments
from .sharding import Shard

# Names this module offered before the jobs and the Predictor had modules of their own; kept importable from here.
from .jobs import CSV_COLUMNS, write_predictions_csv, write_volumes  # noqa: E402, F401
from .predictor import foreground_labels  # noqa: E402, F401
from .resume import OUTPUT_ARGUMENTS, RECORD_DIR  # noqa: E402, F401

logger = logging.getLogger(__name__)

_Job = Job  # the job's name before it had a module of its own (`predict._Job`)

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1


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


def _build_parser(argv) -> _OneLineParser:
    """The CLI's flags (`argv`: the command line, for the one-line errors)."""
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
                             "thread (default: 2 with CUDA or 8+ CPU cores and 32+ inputs, else 0: everything in one thread).")
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
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The parsed command line, checked: numbers in range, one of --input / --dataset, the inputs found and the
    output folder safe (`check_output_dir`); any problem exits 2 with one line."""
    parser = _build_parser(argv)
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


CPU_CORES_FOR_WORKERS = 8
"""A CPU-only run starts decoding workers by default from this many cores: below it the model's threads use every
core, and workers only take turns with them (2 cores: 0.61 of the model-only throughput with 2 workers against 0.64
without, `benchmarks/predict_scale.py`)."""


# ------------------------------------------------------------------------------ the run
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


@dataclass
class _Share:
    """This process's share of the inputs: the jobs still to do, and what the run record holds of the share."""

    dataset: Any  # the --dataset, or None
    streamed: bool  # --streaming: `todo` is an iterator, consumed as the run goes
    total: Optional[int]  # inputs of every process (unknown when streamed)
    todo: Any = None  # the jobs not done yet: a list, or an iterator when streamed
    entries: List[Dict[str, Any]] = field(default_factory=list)  # record entries of the share's finished inputs
    keys: List[str] = field(default_factory=list)  # the key of every input of the share, in order
    skipped: int = 0  # inputs an earlier run of the same command finished


def _run_shard(args, shard: Shard, device: str, output_dir: Path, manifest: OutputManifest, record: RunRecord,
               csv_path: Path) -> int:
    """This process's share: its inputs not done yet segmented; then, on the main process, the CSVs of every
    process's inputs."""
    share = _take_share(args, shard, manifest, record)
    model = load_model(args.model, device=device)
    if args.fast:
        from .fast import optimize

        optimize(model)
    workers = args.num_workers
    if workers is None:  # workers pay where cores are spare: the model on a GPU, or a CPU with 8 cores or more
        spare_cores = str(device).startswith("cuda") or (os.cpu_count() or 1) >= CPU_CORES_FOR_WORKERS
        workers = 2 if spare_cores and not share.streamed and len(share.todo) >= 32 else 0
    progress_bar = tqdm(total=0 if not shard.sharded else share.total, desc="Segmenting",
                        unit="frame" if not shard.sharded else "input", disable=not shard.is_main)

    def on_complete(job: Job) -> None:
        entry = record_entry(job)
        record.save(entry)
        share.entries.append(entry)
        if shard.sharded and shard.is_main:
            progress_bar.n = record.count_inputs()
            progress_bar.refresh()

    predictor = Predictor(model, args, output_dir, manifest, record=record, on_complete=on_complete,
                          decode=functools.partial(decode_job, args=args, dataset=share.dataset), background=workers > 0)
    others = _segment_share(share, predictor, progress_bar, workers, shard, manifest, record)
    if not shard.is_main:
        return 1 if any(entry.get("error") for entry in share.entries) else 0
    if shard.sharded:
        _gather_entries(others, record, share.entries)
    return _write_results(args, share.entries, predictor, output_dir, manifest, record, csv_path)


def _take_share(args, shard: Shard, manifest: OutputManifest, record: RunRecord) -> _Share:
    """The inputs as jobs (files, or --dataset rows), this process's share of them, and which are not done yet."""
    dataset, all_jobs = None, []
    if args.dataset is not None:
        dataset, all_jobs = dataset_jobs(args, shard)
    else:
        all_jobs = sorted(make_jobs(args.files), key=lambda job: str(job.path))
        for order, job in enumerate(all_jobs):
            job.order = order
    streamed = not isinstance(all_jobs, list)
    share = _Share(dataset=dataset, streamed=streamed, total=None if streamed else len(all_jobs))
    groups = batch_groups(all_jobs, args.batch_size)  # the unit a process takes and a resumed run redoes
    pending = _pending(groups if streamed else shard.take(list(groups)), share, manifest, record)
    share.todo = pending if streamed else list(pending)
    if not streamed:
        _log_skipped(share.skipped, shard)
    return share


def _pending(groups, share: _Share, manifest: OutputManifest, record: RunRecord):
    """The jobs of the batch groups the run record does not hold as wholly done (a group an earlier run left
    half done is redone whole, so that its batches are those of an uninterrupted run); the keys of all, and the
    entries of the groups done, go to `share` as they pass."""
    for group in groups:
        share.keys.extend(job.key for job in group)
        entries = [record.done(job.key, job.fingerprint(), manifest.previous) for job in group]
        if all(entry is not None for entry in entries):
            share.entries.extend(entries)
            share.skipped += len(group)
        else:
            yield from group


def _segment_share(share: _Share, predictor: Predictor, progress_bar, workers: int, shard: Shard,
                   manifest: OutputManifest, record: RunRecord) -> List[Dict[str, Any]]:
    """Every job of the share through the predictor, all outputs written; returns (main process of a sharded run)
    what the other processes reported once they finished."""
    others: List[Dict[str, Any]] = []
    ok = False
    try:
        with progress_bar as progress:  # one process: counts frames done, not files opened; several: inputs
            predictor.progress = None if shard.sharded else progress
            if share.streamed:
                for job in share.todo:
                    predictor.run(job)
            else:
                for job, decoded in sources.prefetch(share.todo, predictor.decode, workers):
                    predictor.run(job, decoded)
            predictor.flush()
            predictor.close()
            ok = True
            if share.streamed:
                _log_skipped(share.skipped, shard)
            if shard.is_main and shard.sharded:
                others = record.wait_for(range(1, shard.world_size), on_poll=lambda: setattr(
                    progress, "n", record.count_inputs()) or progress.refresh())
    finally:  # what was written is recorded even when the run stops early
        if shard.sharded and not shard.is_main:
            record.finish(shard.rank, ok, share.keys)
        elif not shard.sharded:
            manifest.save()
    return others


def _gather_entries(others: List[Dict[str, Any]], record: RunRecord, entries: List[Dict[str, Any]]) -> None:
    """Main process of a sharded run: the record entries of the other processes' inputs, added to `entries`."""
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
              csv_columns(predictor.labels, predictor.num_classes))
    write_volume_entries(entries, predictor.labels, manifest)
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
