"""The Space forgets: uploads and results live in folders of its own, deleted after `RETENTION_S` and when the app
stops (SIGTERM or Ctrl-C).

- `gradio_temp_dir()` gives gradio a cache folder of its own (`gms-app-gradio-<pid>` inside `GRADIO_TEMP_DIR` or
  the system temp folder): gradio's `delete_cache` removes the uploads it tracks but leaves staging files and hash
  folders, so the whole folder goes at exit. It must run before gradio is imported (gradio reads the variable
  at import).
- `prune_stale()` deletes `gms-app-*` folders older than `RETENTION_S`, left by a run that was killed (SIGKILL
  leaves no chance to clean up).
- `remove_at_exit()` deletes the given folders at interpreter exit, after Ctrl-C, and on SIGTERM.

Imports no gradio, so `app.py` can use it first.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Iterable, List, Optional

logger = logging.getLogger(__name__)

__all__ = ["PREFIX", "RETENTION_S", "gradio_temp_dir", "prune_stale", "remove_at_exit"]

PREFIX = "gms-app-"
RETENTION_S = int(os.environ.get("GMS_RETENTION_S", 3600))
"""Seconds an upload or a result is kept (default one hour): the results folder is pruned, gradio's cache is
emptied (`delete_cache`), and a killed run's folders are deleted at the next start, after this age."""


def prune_stale(folder: Optional[os.PathLike] = None, max_age_s: float = RETENTION_S) -> List[Path]:
    """Delete the `gms-app-*` folders in `folder` (default: the system temp folder) not modified for `max_age_s`
    seconds; returns the folders deleted."""
    folder = Path(folder or tempfile.gettempdir())
    now, removed = time.time(), []
    for path in sorted(folder.glob(f"{PREFIX}*")):
        try:
            if path.is_dir() and not path.is_symlink() and now - path.stat().st_mtime > max_age_s:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        except OSError:
            continue
    if removed:
        logger.info("Deleted %d folder(s) of earlier runs older than %d s", len(removed), max_age_s)
    return removed


def gradio_temp_dir() -> Path:
    """Point `GRADIO_TEMP_DIR` at a fresh folder of this process's own (inside the one configured, if any)."""
    base = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    prune_stale(base)
    own = base / f"{PREFIX}gradio-{os.getpid()}"
    shutil.rmtree(own, ignore_errors=True)  # a folder of an earlier run with the same pid: not ours to keep
    own.mkdir()
    os.environ["GRADIO_TEMP_DIR"] = str(own)
    return own


def _remove(folders: Iterable[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def remove_at_exit(*folders: os.PathLike) -> None:
    """Delete `folders` at exit: a normal end, Ctrl-C (KeyboardInterrupt ends the interpreter normally) and
    SIGTERM (turned into a normal exit, so that the same clean-up runs)."""
    paths = [Path(folder) for folder in folders]
    atexit.register(_remove, paths)

    def on_sigterm(signum, frame):
        _remove(paths)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
