"""The per-run record that makes `python -m gms_hub.predict` resumable and lets many processes share one folder.

Everything lives in one hidden folder of the output folder, `.gms_hub_predict/` (`RECORD_DIR`):

- `run.json`: the arguments that change outputs (model, threshold, output format, flags, the model folder's file
  sizes and times) and the id of the current run. A rerun with the same arguments resumes; different arguments
  or `--overwrite` drop the per-input records and redo everything (replacing only files an earlier run wrote).
- `inputs/<sha1>.json`: one record per finished input, written atomically once all its outputs are written: its
  key (input path + output name), a fingerprint of the input file(s) (size and modification time), the rows it
  gives `predictions.csv` and `volumes.csv`, and every file it wrote with its size and time. An input is done when
  its record says so, the fingerprints match and every file is still there, unchanged, and recorded as ours.
- `claims/<host>-<pid>.txt`: the names each process is about to write, appended before each write, so files of an
  input that was cut off by a kill still count as ours on the rerun (and may be replaced). Merged into
  `.gms_hub_outputs.json` and removed when a run ends.
- `finished/<run id>-<rank>.json`: written by each process when its share is done (sharded runs), with the keys
  of its inputs; the main process waits for all of them, then writes the one `predictions.csv`.

A kill leaves temporary files named by `gms_hub.io.safety.atomic_path` (`.<12 hex>.partial-<name>`); the next
run removes those, and only those, from the output folder and from this record (`remove_stale_temporaries`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set

from ..io.safety import write_text_atomic

logger = logging.getLogger(__name__)

__all__ = ["RECORD_DIR", "RunRecord", "file_fingerprint", "remove_stale_temporaries"]

RECORD_DIR = ".gms_hub_predict"
"""The hidden folder, inside `--output_dir`, holding the run record."""

_TEMPORARY = re.compile(r"^\.[0-9a-f]{12}\.partial-.+$")  # atomic_path's temporary names, and nothing else


def remove_stale_temporaries(folder: Path) -> int:
    """Remove the temporary files a killed run left (`atomic_path`'s `.<12 hex>.partial-<name>`) from `folder` and
    from its run record; no other file is touched. Returns how many were removed."""
    removed = 0
    folders = [folder] + [path for path in (folder / RECORD_DIR).rglob("*") if path.is_dir()]
    if (folder / RECORD_DIR).is_dir():
        folders.append(folder / RECORD_DIR)
    for where in folders:
        try:
            entries = list(where.iterdir())
        except OSError:
            continue
        for path in entries:
            if _TEMPORARY.match(path.name) and path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def file_fingerprint(paths: Iterable[Path]) -> List[List[Any]]:
    """`[[path, size, mtime_ns], ...]` of input files: a changed or replaced input is redone."""
    fingerprint = []
    for path in paths:
        try:
            stat = os.stat(path)
            fingerprint.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            fingerprint.append([str(path), None, None])
    return fingerprint


OUTPUT_ARGUMENTS = ("model", "input", "dataset", "split", "image_column", "id_column", "revision", "output_format",
                    "window", "slice_axis", "threshold", "batch_size", "fast", "save_probabilities", "num_samples",
                    "tta", "save_uncertainty", "seed", "save_overlay", "postprocess")
"""The arguments that change what a run writes: a rerun resumes only when all of them are the same."""


def run_arguments(args) -> Dict[str, Any]:
    """The predict CLI's parsed arguments of `OUTPUT_ARGUMENTS` (and the model folder's file sizes and times), as the record keeps them."""
    arguments = {name: getattr(args, name, None) for name in OUTPUT_ARGUMENTS}
    model = Path(str(args.model))
    if model.is_dir():
        arguments["model_files"] = [[str(p.relative_to(model)), *stat[1:]]
                                    for p, stat in zip(sorted(model.rglob("*")), file_fingerprint(sorted(model.rglob("*"))))
                                    if p.is_file()]
    return json.loads(json.dumps(arguments, default=str))


def _stat(path: Path) -> Optional[List[int]]:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


class RunRecord:
    """The record of one output folder (see the module docstring).

    Args:
        output_dir (`Path`): the output folder.
    """

    def __init__(self, output_dir: Path):
        self.output_dir = Path(output_dir)
        self.root = self.output_dir / RECORD_DIR
        self.run_id: Optional[str] = None
        self._journal = None

    # ------------------------------------------------------------------ the run
    def start(self, arguments: Dict[str, Any], overwrite: bool) -> bool:
        """Main process only, before the others read the record: keep the per-input records when `arguments` are
        those of the recorded run (returns `True`: a resume), else drop them. Starts a new run id."""
        run_file = self.root / "run.json"
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = None
        same = isinstance(previous, dict) and previous.get("arguments") == arguments and not overwrite
        if not same:
            shutil.rmtree(self.root / "inputs", ignore_errors=True)
        shutil.rmtree(self.root / "finished", ignore_errors=True)
        for name in ("inputs", "claims", "finished"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.run_id = uuid.uuid4().hex
        record = {"tool": "gms_hub.predict", "run_id": self.run_id, "arguments": arguments}
        write_text_atomic(run_file, json.dumps(record, indent=1, sort_keys=True) + "\n")
        return same

    def join(self) -> None:
        """Other processes: read the run id the main process wrote (`start`)."""
        record = json.loads((self.root / "run.json").read_text(encoding="utf-8"))
        self.run_id = record["run_id"]

    # ------------------------------------------------------------------ files this tool wrote
    def claim(self, name: str) -> None:
        """Note that this process is about to write `name` (before the write, so a kill mid-write leaves it ours)."""
        if self._journal is None:
            path = self.root / "claims" / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = open(path, "a", encoding="utf-8")
        self._journal.write(json.dumps(name) + "\n")
        self._journal.flush()

    def claimed(self) -> Set[str]:
        """Every name a process of an earlier or this run noted before writing it."""
        names: Set[str] = set()
        for path in sorted((self.root / "claims").glob("*.txt")):
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    name = json.loads(line)
                except ValueError:  # a line cut off by a kill
                    continue
                if isinstance(name, str):
                    names.add(name)
        return names

    def close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def clear_claims(self) -> None:
        """Once the output manifest holds every claimed name: drop the journals."""
        self.close_journal()
        for path in (self.root / "claims").glob("*.txt"):
            path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ inputs
    def _input_path(self, key: str) -> Path:
        return self.root / "inputs" / f"{hashlib.sha1(key.encode('utf-8')).hexdigest()}.json"

    def save(self, entry: Dict[str, Any]) -> None:
        """Record a finished input (`entry["key"]`), with the size and time of each file it wrote."""
        entry = dict(entry)
        entry["files"] = {name: _stat(self.output_dir / name) for name in entry.get("files", [])}
        write_text_atomic(self._input_path(entry["key"]), json.dumps(entry, sort_keys=True) + "\n")

    def load(self, key: str) -> Optional[Dict[str, Any]]:
        try:
            entry = json.loads(self._input_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) and entry.get("key") == key else None

    def done(self, key: str, fingerprint: Any, ours: Set[str]) -> Optional[Dict[str, Any]]:
        """The record of `key` when that input is done: same fingerprint, every output still there, unchanged and
        ours (in `ours`, the output manifest's names). `None` means: do it (again)."""
        entry = self.load(key)
        if entry is None or not entry.get("done") or entry.get("fingerprint") != fingerprint:
            return None
        for name, stat in (entry.get("files") or {}).items():
            if name not in ours or stat is None or _stat(self.output_dir / name) != stat:
                return None
        return entry

    # ------------------------------------------------------------------ processes
    def finish(self, rank: int, ok: bool, keys: List[str]) -> None:
        """Say this process's share is over (`ok`: it ran to the end), with the keys of its inputs."""
        record = {"rank": rank, "ok": ok, "keys": keys}
        write_text_atomic(self.root / "finished" / f"{self.run_id}-{rank}.json", json.dumps(record) + "\n")

    def wait_for(self, ranks: Iterable[int], poll: float = 0.2, on_poll=None) -> List[Dict[str, Any]]:
        """Main process: wait until every other process of this run said it is over; their records, by rank.
        No timeout: the launcher ends every process when one dies."""
        pending, records = set(ranks), {}
        while pending:
            for rank in sorted(pending):
                path = self.root / "finished" / f"{self.run_id}-{rank}.json"
                try:
                    records[rank] = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                pending.discard(rank)
            if pending:
                if on_poll is not None:
                    on_poll()
                time.sleep(poll)
        return [records[rank] for rank in sorted(records)]

    def count_inputs(self) -> int:
        """How many per-input records there are (for the main process's progress bar in a sharded run)."""
        try:
            return sum(1 for _ in os.scandir(self.root / "inputs"))
        except OSError:
            return 0
