"""The inputs of `python -m gms_hub.predict` as jobs, and what they give the CSVs and the run record.

`find_inputs` lists the files of `--input` (a file, a folder or a glob). A `Job` is one input on its way through the model: a file, a DICOM series (`make_jobs` groups single-frame files
by series) or a `--dataset` row (`dataset_jobs`). Once its outputs are written, a job gives its rows of
`predictions.csv` and `volumes.csv` and its entry in the run record (`record_entry`); the main process writes the
CSVs from those entries (`csv_columns`, `write_volume_entries`).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from ..io.mask_files import MaskWriter
from ..io.reading import InputFile, scan_input_folder, skip_reason
from ..io.safety import OutputManifest, describe_error, output_stems, write_csv
from ..io.series import SeriesFiles, group_dicom_series
from . import sources, volumes
from .resume import file_fingerprint
from .sharding import Shard

TOOL = "gms_hub.predict"
"""The tool's name in the outputs manifest (`.gms_hub_outputs.json`) of the folders it writes."""

CSV_COLUMNS = ["input", "frame", "mask_file", "area_px", "area_mm2", "status"]


@dataclass
class Job:
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
    group: int = 0  # its batch group (`batch_groups`): the inputs whose frames may share a forward pass
    ends_group: bool = False  # the last input of its group: the pending frames are segmented after it

    @property
    def key(self) -> str:
        """The input's key in the run record: its path (or dataset split/id) and its output name."""
        return f"{'dataset:' if self.row is not None or self.image is not None else ''}{self.path}|{self.stem}"

    def fingerprint(self) -> Any:
        """Size and modification time of the input file(s): a changed input is redone on a rerun."""
        if self.row is not None or self.image is not None:
            return None  # a dataset row: the dataset, split and revision are part of the run's arguments
        return file_fingerprint(sorted(self.series.paths, key=str) if self.series is not None else [self.path])


def one_line(text: str) -> str:
    """A status cell on one line: a cell spanning lines breaks line-based readers of the CSV."""
    return " ".join(str(text).split())


def reading_error(job: Job, err: Exception) -> str:
    """The status of an input that could not be read: our readers' own message, else the error's kind only."""
    if isinstance(err, (ValueError, FileNotFoundError)):  # our readers' own wording: the file and the fix
        return str(err)
    # a third-party reader's text may quote a header value: the kind of error only
    return f"'{job.path.name}' could not be read ({describe_error(err)}); export it again."


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


def make_jobs(files: List[Path]) -> List[Job]:
    """One job per input: a DICOM series (its single-frame files, grouped, named `series<n>`) or any other file;
    the output names of all of them come from the one naming rule (`gms_hub.io.safety.output_stems`)."""
    series, singles = group_dicom_series(files)
    paths = list(singles)
    for item in series:
        folder = Path(os.path.commonpath([str(p.parent) for p in item.paths]))
        paths.append(folder / item.name)
    stems = output_stems(paths)
    jobs = [Job(path=path, stem=stem) for path, stem in zip(singles, stems)]
    jobs += [Job(path=path, stem=stem, series=item)
             for path, stem, item in zip(paths[len(singles):], stems[len(singles):], series)]
    return jobs


def batch_groups(jobs: Iterable[Job], size: int) -> Iterator[List[Job]]:
    """The sorted `jobs` in consecutive groups of `size` (`--batch_size`), numbered from 0 in `Job.group`.

    Frames of different inputs share a forward pass only within a group, and a group is the unit a sharded run
    deals out and a resumed run redoes: every batch of a run is then the same set of frames in the same order
    however many processes run it, and whether or not it was resumed. (A batch's arithmetic depends on its
    size, so a frame segmented beside other frames can come out a rounding step away from the same frame
    segmented alone; fixed groups make the outputs of such runs identical bytes.)
    """
    group: List[Job] = []
    number = 0
    for job in jobs:
        job.group, job.ends_group = number, False
        group.append(job)
        if len(group) == size:
            group[-1].ends_group = True
            yield group
            group, number = [], number + 1
    if group:
        group[-1].ends_group = True
        yield group


def dataset_jobs(args, shard: Shard):
    """(the dataset, its jobs: a sorted list, or for --streaming an iterator over this process's rows)."""
    dataset = sources.open_dataset(args.dataset, args.split, args.revision, args.streaming)
    id_column = sources.dataset_id_column(dataset.column_names, args.id_column, args.image_column)

    def job(row_id: str, **where) -> Job:
        return Job(path=Path(args.split) / row_id, stem=sources.dataset_stem(row_id), **where)

    if not args.streaming:
        ids = dataset[id_column] if id_column is not None else [None] * len(dataset)
        jobs = [job(sources.row_id(value, index), row=index, order=index) for index, value in enumerate(ids)]
        return dataset, sorted(jobs, key=lambda item: str(item.path))
    if id_column is None:
        dataset = dataset.map(lambda example, index: {"__row_index": index}, with_indices=True)
    if shard.sharded:
        from datasets.distributed import split_dataset_by_node

        dataset = split_dataset_by_node(dataset, rank=shard.rank, world_size=shard.world_size)

    def stream():
        for position, example in enumerate(dataset):
            index = example["__row_index"] if id_column is None else position
            value = None if id_column is None else example[id_column]
            yield job(sources.row_id(value, index), image=example[args.image_column], order=index)

    return dataset, stream()


# ------------------------------------------------------------------------------ rows of the CSVs
def _csv_rows(job: Job) -> List[Dict[str, Any]]:
    if job.error is None:
        return list(job.rows)
    if job.series is not None:  # a series that is not one volume: every file of it has its row and the reason
        return [{"input": str(file), "status": one_line(f"{job.series.name}: {job.error}")}
                for file in sorted(job.series.paths, key=str)]
    return [{"input": str(job.path), "status": one_line(job.error)}]


def _volume_rows(job: Job) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """(the `volumes.csv` row of a volume segmented, the row of a volume or series that failed)."""
    if job.volume_row is not None and job.error is None:
        return {"input": str(job.path), **job.volume_row, "status": "ok"}, None
    if job.error is not None and (job.series is not None or job.volume_row is not None):
        return None, {"input": str(job.path), "status": one_line(job.error)}
    return None, None


def record_entry(job: Job) -> Dict[str, Any]:
    """What the run record keeps of a finished input: enough to write its CSV rows without redoing it."""
    volume_ok, volume_failed = _volume_rows(job)
    return {"key": job.key, "input": str(job.path), "order": job.order, "fingerprint": job.fingerprint(),
            "done": job.error is None, "error": job.error, "rows": _csv_rows(job), "volume_row": volume_ok,
            "volume_error": volume_failed, "files": list(job.files)}


def csv_columns(labels: List[str], num_classes: int) -> List[str]:
    """The columns of `predictions.csv`: areas per class after the totals for a multi-class model."""
    columns = list(CSV_COLUMNS)
    if num_classes > 1:
        columns[5:5] = [f"{unit}_{label}" for label in labels for unit in ("area_px", "area_mm2")]
    return columns


def write_predictions_csv(jobs: List[Job], path: Path, labels: List[str], num_classes: int) -> None:
    """`predictions.csv`: one row per frame, one per failed or skipped input with the reason (`safety.write_csv`);
    a DICOM series that failed gives a row for each of its files."""
    write_csv(path, [row for job in jobs for row in _csv_rows(job)], csv_columns(labels, num_classes))


def write_volumes(jobs: List[Job], output_dir: Path, labels: List[str], manifest: OutputManifest) -> None:
    """`volumes.csv`: a row per volume segmented, and per series that failed; nothing when no input is a volume."""
    write_volume_entries([record_entry(job) for job in jobs], labels, manifest)


def write_volume_entries(entries: List[Dict[str, Any]], labels: List[str], manifest: OutputManifest) -> None:
    """`volumes.csv` from run-record entries (`record_entry`): volumes segmented first, then those that failed."""
    rows = [entry["volume_row"] for entry in entries if entry.get("volume_row")]
    rows += [entry["volume_error"] for entry in entries if entry.get("volume_error")]
    if rows:
        volumes.write_volumes_csv(rows, manifest.claim("volumes.csv"), labels)
