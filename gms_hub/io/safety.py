"""The rules that keep a user's files safe, in one place for every front door (the predict CLI, `prepare`, the
evaluation report and the Space).

- **Outputs never touch inputs** (`check_output_dir`): an output folder that is, contains or lies inside an input
  is refused before anything is written.
- **One naming rule** (`output_stems`): every input gets an output name that no other input's outputs can
  collide with, the same for a given set of inputs in the CLI and in the Space's batch zip.
- **Atomic writes** (`atomic_path`, `write_text_atomic`): a file is written under a temporary name in its own
  folder and renamed, so a crash or a kill leaves no half-written file under a real name.
- **A record of what a tool wrote** (`OutputManifest`): a rerun replaces only the files an earlier run of the
  same tool wrote into that folder; any other file is left alone (and never overwritten).
- **Spreadsheet-safe CSVs** (`write_csv`): a cell starting with ``= + - @``, tab or carriage return is escaped
  with a leading ``'`` (OWASP's rule for CSV injection).
- **Our own wording** (`describe_error`): a third-party exception text may quote a header value (a patient's
  birth date, a name); messages name the file and the kind of error only.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import re
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Union

from .images import IMAGE_EXTENSIONS
from .medical import DICOM_SUFFIXES, NIFTI_SUFFIXES

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "OutputManifest",
    "UnsafeOutputError",
    "atomic_path",
    "check_output_dir",
    "describe_error",
    "muted_loggers",
    "output_stems",
    "safe_cell",
    "write_csv",
    "write_text_atomic",
]

PathLike = Union[str, os.PathLike]

MANIFEST_NAME = ".gms_hub_outputs.json"
"""The record a tool keeps, in its output folder, of the files it wrote there (`OutputManifest`)."""

# The suffixes of every format we read, longest first (`.nii.gz` before `.nii`), from the readers' own tables.
_FORMAT_SUFFIXES = tuple(sorted({*NIFTI_SUFFIXES, *DICOM_SUFFIXES, *IMAGE_EXTENSIONS}, key=lambda s: (-len(s), s)))

# What a tool appends to an input's output name: an optional frame/slice part, then an optional kind of output
# (`cine_frame3_prob.png`, `ct_mask.nii.gz`, `us_overlay.png`). Two names collide when one is the other plus such
# a tail, so that rule (`_collides`) is the whole collision check.
_TAIL = re.compile(r"(_(frame|slice)\d+)?(_(mask|prob|uncertainty|overlay|seg|preview(_\d+)?))?")

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class UnsafeOutputError(ValueError):
    """An output location that would put a user's input at risk; the message names the argument and the fix."""


# ------------------------------------------------------------------------------------------ outputs vs inputs
def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_dir(
    output_dir: PathLike, inputs: Iterable[PathLike], *, flag: str = "--output_dir", input_flag: str = "--input"
) -> Path:
    """Refuse an output folder that is, contains or lies inside an input, or that names a file.

    Inputs may be files or folders. For a folder input, the output folder may be neither the folder itself, nor
    inside it, nor above it; for a file input, the output folder may not contain it (at any depth). Paths are
    compared once symbolic links are resolved.

    Args:
        output_dir (`str` or `os.PathLike`): the folder a tool is about to write into (it need not exist yet).
        inputs (iterable of `str` or `os.PathLike`): the files and folders it reads.
        flag (`str`, defaults to `"--output_dir"`): the output argument's name, for the message.
        input_flag (`str`, defaults to `"--input"`): the input argument's name, for the message.

    Returns:
        `Path`: `output_dir`.

    Raises:
        `UnsafeOutputError`: with one line naming the argument and what to pass instead.

    Example:
        >>> check_output_dir("scans/masks", ["scans/a.png"])
        PosixPath('scans/masks')
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UnsafeOutputError(f"{flag} {str(output_dir)!r} is a file, not a folder; pass a folder to write into.")
    out = output_dir.resolve()
    for item in inputs:
        source = Path(item).resolve()
        if source.is_dir():
            if _within(out, source) or _within(source, out):
                where = "is" if out == source else ("lies inside" if _within(out, source) else "contains")
                raise UnsafeOutputError(
                    f"{flag} {str(output_dir)!r} {where} the input folder {str(item)!r} ({input_flag}); outputs are "
                    "never written among inputs. Pass a separate folder, e.g. a sibling of the input folder."
                )
        elif _within(source, out):
            raise UnsafeOutputError(
                f"{flag} {str(output_dir)!r} contains the input file {Path(item).name!r} ({input_flag}); outputs are "
                "never written among inputs. Pass a separate folder."
            )
    return output_dir


# ------------------------------------------------------------------------------------------ naming
def format_stem(name: str) -> str:
    """A file name without its format suffix (`ct.nii.gz` -> `ct`, `us.png` -> `us`; `IM0001` unchanged)."""
    lower = name.lower()
    for suffix in _FORMAT_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if "." in name.strip(".") else name


def _collides(a: str, b: str) -> bool:
    """True if an output of the input named `a` can have the name of an output of the input named `b`.

    Compared case-insensitively (macOS and Windows file systems are), `a` and `b` collide when they are equal or
    when one is the other plus a tail a tool appends (`_frame<k>`, `_slice<k>`, `_mask`, `_prob`, ...).
    """
    a, b = a.lower(), b.lower()
    short, long = sorted((a, b), key=len)
    return long.startswith(short) and _TAIL.fullmatch(long[len(short):]) is not None


def output_stems(names: Sequence[PathLike], *, max_length: Optional[int] = None) -> List[str]:
    """The output name of each input: unique, collision-free and deterministic for a given set of inputs.

    The rule, applied in this order:

    1. the file name without its format suffix (`ct.nii.gz` -> `ct`, `us.png` -> `us`), cut to `max_length`;
    2. inputs sharing that name (compared case-insensitively: `a.png`, `a.jpg`) add their extension (`a_png`,
       `a_jpg`);
    3. in sorted order of the file names, a name whose outputs could still collide with an earlier input's
       (equal, or the other's name plus a tool's tail such as `_frame1`, `_slice0`, `_mask`, `_prob`: `cine.dcm`
       with 2 frames writes `cine_frame1.png`, as does `cine_frame1.png`) takes the first free `-2`, `-3`, ...

    Args:
        names (sequence of `str` or `os.PathLike`): the input files (only their names are used).
        max_length (`int`, *optional*): cut names to this many characters before the rule applies.

    Returns:
        `list[str]`: one name per input, in the inputs' order.

    Example:
        >>> output_stems(["a.png", "a.jpg", "a_png.png", "cine.dcm", "cine_frame1.png"])
        ['a_png', 'a_jpg', 'a_png-2', 'cine', 'cine_frame1-2']
    """
    files = [Path(str(name)).name for name in names]
    bases = [format_stem(name) or "input" for name in files]
    if max_length is not None:
        bases = [base[:max_length] for base in bases]
    counts = Counter(base.lower() for base in bases)
    first = []
    for name, base in zip(files, bases):
        extension = name[len(base):].lstrip(".").lower().replace(".", "_")
        first.append(f"{base}_{extension}" if counts[base.lower()] > 1 and extension else base)
    stems: List[Optional[str]] = [None] * len(files)
    taken: List[str] = []
    for index in sorted(range(len(files)), key=lambda i: (files[i], str(names[i]), i)):
        candidate, number = first[index], 1
        while any(_collides(candidate, other) for other in taken):
            number += 1
            candidate = f"{first[index]}-{number}"
        stems[index] = candidate
        taken.append(candidate)
    return [str(stem) for stem in stems]


# ------------------------------------------------------------------------------------------ atomic writes
@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on any error it is removed.

    The temporary name ends with `path`'s own name, so writers that pick the format by extension (PIL,
    nibabel's `.nii.gz`) behave the same. `os.replace` within one folder is atomic: a reader sees the old file
    or the complete new one, never a part.

    Example:
        >>> with atomic_path("out/a.png") as tmp:
        ...     image.save(tmp)
    """
    path = Path(path)
    temporary = path.with_name(f".{uuid.uuid4().hex[:12]}.partial-{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (`atomic_path`); returns the path."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding=encoding)
    return Path(path)


# ------------------------------------------------------------------------------------------ CSV
def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string starting with `= + - @`, tab or CR gets a leading `'`.

    Numbers pass unchanged (a negative number is a number, not a formula).

    Example:
        >>> safe_cell("=1+2.png"), safe_cell(-3), safe_cell("a.png")
        ("'=1+2.png", -3, 'a.png')
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def write_csv(path: PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write `rows` under `columns` as a UTF-8 CSV, atomically, every cell made safe by `safe_cell`.

    Args:
        path (`str` or `os.PathLike`): the CSV file.
        rows (iterable of `dict`): one dict per row; missing keys are empty cells, keys outside `columns` ignored.
        columns (sequence of `str`): the header, in order.

    Returns:
        `Path`: the path written.

    Example:
        >>> write_csv("out/predictions.csv", [{"input": "=1+2.png", "area_px": 3}], ["input", "area_px"])
        PosixPath('out/predictions.csv')
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: safe_cell(row.get(key, "")) for key in columns})
    with atomic_path(path) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            handle.write(buffer.getvalue())
    return Path(path)


# ------------------------------------------------------------------------------------------ our own wording
def describe_error(err: BaseException) -> str:
    """A third-party exception in our words: its type only, never its text (which may quote a header value).

    Example:
        >>> describe_error(ValueError("Unable to convert '1970-01-01' to 'DA' object"))
        'ValueError'
    """
    return type(err).__name__


@contextlib.contextmanager
def muted_loggers(names: Sequence[str] = ("highdicom",), level: int = logging.WARNING) -> Iterator[None]:
    """Raise the level of third-party loggers while a block runs (highdicom's INFO lines quote SOP Instance UIDs,
    which identify a patient's study); restored afterwards."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(max(level, item.level))
    try:
        yield
    finally:
        for item, old in zip(loggers, saved):
            item.setLevel(old)


# ------------------------------------------------------------------------------------------ the record
class OutputManifest:
    """The files a tool wrote into a folder, kept in `MANIFEST_NAME` there, so a rerun replaces its own outputs
    and nothing else.

    Args:
        folder (`str` or `os.PathLike`): the output folder.
        tool (`str`): the tool's name (`"gms_hub.predict"`); a record of another tool counts as no record.

    Example:
        >>> manifest = OutputManifest("out", "gms_hub.predict")
        >>> path = manifest.claim("a.png")  # raises if out/a.png exists and an earlier run did not write it
        >>> manifest.save()
    """

    def __init__(self, folder: PathLike, tool: str):
        self.folder, self.tool = Path(folder), tool
        self.previous: Set[str] = self.read(self.folder, tool)
        self.written: Dict[str, None] = {}

    @staticmethod
    def read(folder: PathLike, tool: str) -> Set[str]:
        """The relative paths a run of `tool` recorded in `folder` (empty when there is no record of it)."""
        path = Path(folder) / MANIFEST_NAME
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return set()
        if not isinstance(record, dict) or record.get("tool") != tool:
            return set()
        return {str(name) for name in record.get("files", []) if isinstance(name, str)}

    def claim(self, name: str) -> Path:
        """The path to write `name` (relative to the folder) to, once it is known to be safe.

        Raises:
            `FileExistsError`: the file exists and no earlier run of this tool wrote it, or this run already wrote
                a file of that name (two outputs with one name).
        """
        path = self.folder / name
        if name in self.written:
            raise FileExistsError(f"'{name}' was already written by this run; two outputs would share its name.")
        if (path.exists() or path.is_symlink()) and name not in self.previous:
            raise FileExistsError(f"'{name}' exists in {self.folder} and was not written by {self.tool}; it is left "
                                  "untouched. Move it or choose another output folder.")
        self.written[name] = None
        return path

    def record(self, name: str) -> None:
        """Record `name` as written by this run without the checks of `claim` (for a staging folder this run made)."""
        self.written[name] = None

    def save(self) -> Path:
        """Record this run's files (and the earlier run's that are still there), atomically."""
        kept = [name for name in sorted(self.previous) if (self.folder / name).exists() and name not in self.written]
        record = {"tool": self.tool, "files": kept + list(self.written)}
        return write_text_atomic(self.folder / MANIFEST_NAME, json.dumps(record, indent=1) + "\n")


def replace_recorded_folder(staging: Path, output_dir: Path, tool: str) -> None:
    """Move a finished staging folder's files into `output_dir`, which an earlier run of `tool` wrote: only the
    files that run recorded are removed; any other file is left alone, and a clash with one is an error raised
    before anything is removed.

    Raises:
        `FileExistsError`: `output_dir` holds no record of `tool`, or a new file would replace one it did not write.
    """
    previous = OutputManifest.read(output_dir, tool)
    if not previous:
        raise FileExistsError(
            f"--overwrite replaces only a folder that {tool} wrote (it keeps a record, {MANIFEST_NAME}); "
            f"{output_dir} has none, so nothing in it is deleted. Choose another --output_dir."
        )
    new = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
    clashes = [name for name in new if (output_dir / name).exists() and name not in previous and name != MANIFEST_NAME]
    if clashes:
        raise FileExistsError(f"{output_dir} holds files {clashes[:5]} that {tool} did not write; they are left "
                              "untouched. Move them or choose another --output_dir.")
    for name in sorted(previous):
        old = output_dir / name
        if old.is_file() or old.is_symlink():
            old.unlink()
    for name in new:
        target = output_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, target)
    for folder in sorted({(output_dir / name).parent for name in previous}, key=lambda p: -len(p.parts)):
        if folder != output_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    shutil.rmtree(staging, ignore_errors=True)
