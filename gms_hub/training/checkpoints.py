"""Training checkpoints shared by train/train.py and train/train_vae.py: `checkpoint-{step}` folders written by
`accelerator.save_state`, atomically.

Everything goes to `.checkpoint-{step}.tmp` first; the state file (JSON) is written last and the folder is then
renamed, so a crash mid-write never leaves a folder that `--resume_from_checkpoint latest` picks up.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.json"


def list_checkpoints(output_dir: Union[str, os.PathLike]) -> List[Path]:
    """Complete `checkpoint-{step}` folders in `output_dir`, oldest first (temporary folders are ignored)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and CHECKPOINT_PATTERN.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(CHECKPOINT_PATTERN.match(p.name).group(1)))


def save_checkpoint(
    accelerator,
    output_dir: Union[str, os.PathLike],
    state: Dict[str, Any],
    total_limit: Optional[int] = None,
    write_extra: Optional[Callable[[Path], None]] = None,
) -> Path:
    """Write `checkpoint-{state["global_step"]}` atomically; call on every process.

    Args:
        accelerator (`Accelerator`): saves models, optimizers, schedulers, registered objects and RNG states.
        output_dir (`str`): where the checkpoint folders live.
        state (`dict`): JSON-able training state, written to `STATE_FILE` (it marks the folder complete).
        total_limit (`int`, *optional*): keep only the newest `total_limit` complete checkpoints.
        write_extra (`callable`, *optional*): called with the temporary folder on the main process, before the
            state file, to add files of its own.
    """
    step = state["global_step"]
    final_dir = Path(output_dir) / f"checkpoint-{step}"
    temp_dir = Path(output_dir) / f".checkpoint-{step}.tmp"
    if accelerator.is_main_process and temp_dir.exists():
        shutil.rmtree(temp_dir)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temp_dir))  # model, optimizer, RNG states (each process writes its own)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if write_extra is not None:
            write_extra(temp_dir)
        (temp_dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")  # written last: marks completeness
        if final_dir.exists():
            shutil.rmtree(final_dir)
        os.replace(temp_dir, final_dir)
        if total_limit is not None:
            checkpoints = list_checkpoints(output_dir)
            for old in checkpoints[: max(len(checkpoints) - total_limit, 0)]:
                logger.info(f"Removing {old.name} (checkpoints total limit {total_limit})")
                shutil.rmtree(old)
        logger.info(f"Saved {final_dir}")
    accelerator.wait_for_everyone()
    return final_dir


def resolve_checkpoint(output_dir: Union[str, os.PathLike], resume_from: Optional[str]) -> Optional[Path]:
    """The folder `--resume_from_checkpoint` names: `None`, `"latest"` (None when there is none yet) or a path."""
    if resume_from is None:
        return None
    if resume_from == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {path} is not a complete checkpoint folder (no {STATE_FILE}); "
            f"pass 'latest' or one of {[p.name for p in list_checkpoints(output_dir)]}."
        )
    return path


def read_state(checkpoint: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The training state saved in a checkpoint folder."""
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())
