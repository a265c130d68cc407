"""What the page's upload boxes hand over, as files: the value of a box (one path, a list, or nothing) as a list of
paths, and a DICOM series uploaded as one zip unpacked safely into the result's own folder (counted and sized
before anything is written, names flattened, nothing written outside the folder)."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import List

from .results import InputError

__all__ = ["MAX_ZIP_BYTES", "MAX_ZIP_MEMBERS", "extract_series_zip", "upload_paths"]

MAX_ZIP_MEMBERS = 5000
"""Most files in an uploaded zip of a DICOM series."""
MAX_ZIP_BYTES = 2_000_000_000
"""Most bytes a zip of a DICOM series may expand to (its members' declared sizes, checked before extracting)."""


def upload_paths(value) -> List[str]:
    """The page's upload box value (one path, a list of paths, or nothing) as a list of paths."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v]
    return [str(value)]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80] or "file"


def extract_series_zip(path, folder: Path) -> List[Path]:
    """Extract the files of an uploaded zip into `folder` (flat: folder names inside the zip are dropped).

    Members are counted and their sizes summed before anything is written (`MAX_ZIP_MEMBERS`, `MAX_ZIP_BYTES`);
    names are reduced to safe file names, so nothing is written outside `folder`.

    Raises:
        `InputError`: not a zip, too many files, too large, or no file inside.
    """
    name = Path(str(path)).name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise InputError(f"'{name}' is not a readable zip file. Zip the DICOM files of one series again, or "
                         "upload them together (select them all).") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")
                   and not Path(m.filename).name.startswith(".")]
        if not members:
            raise InputError(f"'{name}' holds no file. Zip the DICOM files of one series.")
        if len(members) > MAX_ZIP_MEMBERS:
            raise InputError(f"'{name}' holds {len(members)} files; the limit here is {MAX_ZIP_MEMBERS}. Use "
                             "`python -m gms_hub.predict --input FOLDER --output_dir OUT` for larger series.")
        total = sum(m.file_size for m in members)
        if total > MAX_ZIP_BYTES:
            raise InputError(f"'{name}' expands to {total / 1e9:.1f} GB; the limit here is {MAX_ZIP_BYTES / 1e9:g} GB. "
                             "Use `python -m gms_hub.predict` on your machine for larger series.")
        folder.mkdir(parents=True, exist_ok=True)
        written, used = [], set()
        for index, member in enumerate(members):
            target_name = _safe_name(Path(member.filename).name)
            if target_name in used:
                target_name = f"{index:05d}_{target_name}"
            used.add(target_name)
            target = folder / target_name
            with archive.open(member) as source, open(target, "wb") as out:
                remaining = member.file_size + 1  # a member longer than it declared is cut, not trusted
                while remaining > 0:
                    chunk = source.read(min(1 << 20, remaining))
                    if not chunk:
                        break
                    out.write(chunk)
                    remaining -= len(chunk)
            written.append(target)
    return written
