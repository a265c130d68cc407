"""Which process does which input when `python -m gms_hub.predict` runs under `accelerate launch`.

Without a launcher (no `WORLD_SIZE` above 1 in the environment) there is one process, no Accelerate state is
created, and prediction runs exactly as it always did. Under `accelerate launch --num_processes N` (on one or
many machines) each process gets `PartialState`'s rank and device, and takes the batch groups `rank, rank + N, ...` of
the sorted job list (`jobs.batch_groups`: `--batch_size` consecutive inputs; round-robin, so a folder of mixed
sizes spreads evenly; a volume or a DICOM series is one job, so it stays whole on one process).

On a machine without CUDA the processes need a CPU state: `PartialState(cpu=True)` is what this module asks for
(plain `PartialState()` there reports one process of one, and every process would do the whole job).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch

logger = logging.getLogger(__name__)

__all__ = ["Shard"]


@dataclass
class Shard:
    """This process's place in the job: `rank` of `world_size`, and the device Accelerate gave it (or `None`)."""

    rank: int = 0
    world_size: int = 1
    device: Optional[torch.device] = None
    state: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, device: str = "auto") -> "Shard":
        """One process of one unless a launcher started several (`WORLD_SIZE` > 1)."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
        except ValueError:
            world_size = 1
        if world_size <= 1:
            return cls()
        from accelerate import PartialState

        cpu = device == "cpu" or not torch.cuda.is_available()
        state = PartialState(cpu=cpu)
        if state.num_processes <= 1:
            return cls()
        return cls(rank=state.process_index, world_size=state.num_processes, device=state.device, state=state)

    def take(self, items: Sequence[Any]) -> List[Any]:
        """This process's share of `items` (sorted by the caller): every `world_size`-th, from `rank`."""
        return list(items[self.rank::self.world_size])

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()
