"""Sharded batch runs: one dataset's outputs split across the processes of ``torchrun`` or ``accelerate launch``.

Every process runs the same command. ``Shard.current()`` reads the launcher's environment through accelerate's
``PartialState`` (a plain run is one process of rank 0). ``shard.take(items)`` keeps every ``world``-th item starting
at the process's rank, taken over the *full* list of outputs, so the split does not depend on what an earlier run
finished and every output belongs to exactly one process. Each process writes its own outputs (atomically) and skips
those already on disk. Nothing is exchanged while the processes work: the main process counts the finished outputs
on disk for its progress bar, and every process waits the same way for the others' outputs (``Shard.wait_for``)
before one final barrier, so uneven shards cannot time a collective out. On several nodes the output folder must be
shared.

Which items a process gets never changes an image: every image's randomness comes from its own seeded generator.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: ``rank`` of ``world`` processes, and the device its launcher gave it."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @classmethod
    def current(cls) -> Shard:
        """The shard of this process: from torchrun's / accelerate's environment, else the only one."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        state = process_state()  # joins the launcher's process group (gloo on CPUs, nccl on GPUs)
        return cls(state.process_index, state.num_processes, state.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, items: Sequence) -> list:
        """This process's share of ``items``: those at positions ``rank``, ``rank + world``, ... (balanced)."""
        return list(items[self.rank :: self.world])

    def device_for(self, requested: str) -> str:
        """The ``--device`` to load on: under a launcher, ``auto``/``cuda`` become this process's own GPU."""
        if self.world > 1 and self.device is not None and self.device.type == "cuda" and requested in ("auto", "cuda"):
            return str(self.device)
        return requested

    def wait_for(
        self, paths: Sequence[Path], progress: Callable[[int], None] | None = None, poll_s: float = 0.5
    ) -> None:
        """Block until every one of ``paths`` exists (reporting the count as it grows: the main process's bar), then
        meet the other processes once and leave the process group.

        Every process arrives within one poll of the last output, so the barrier never waits long; a process that
        fails takes the whole launch down (torchrun and accelerate stop the others), which also ends this wait.
        """
        done = count_done(paths)
        while True:
            if progress is not None:
                progress(done)
            if done == len(paths):
                break
            time.sleep(poll_s)
            done = count_done(paths)
        if self.world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def process_state():
    """accelerate's process state, on CPU when asked (``ACCELERATE_USE_CPU``, ``accelerate launch --cpu``) or when
    there is no GPU, so that ``accelerate launch --multi_gpu`` / ``torchrun`` on a CPU machine gives gloo processes."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def count_done(paths: Sequence[Path]) -> int:
    return sum(1 for path in paths if Path(path).is_file())
