"""Notices, on rank 0, when another rank's process of a local DDP job dies."""

from __future__ import annotations

import signal
import threading
from typing import Callable, Optional

import lightning as L


class RankWatchdog(L.Callback):
    """Polls the DDP worker processes Lightning launched (strategy ddp, one machine) every ``interval`` s
    and calls ``on_failure(rank, description)`` once, from its thread, when one exits with an error.

    Lightning's own observer then SIGKILLs the whole job within 5 s, rank 0 included, so ``on_failure``
    is the last chance to write down which rank died and how (the run record, in ``fit``). Under srun
    there are no worker processes here: Slurm ends the step, and a peer's death fails the next collective.
    """

    def __init__(self, on_failure: Callable[[int, str], None], interval: float = 0.5):
        self.on_failure, self.interval = on_failure, interval
        self.failure: Optional[tuple[int, str]] = None
        self._stop = threading.Event()

    def setup(self, trainer, pl_module, stage: str) -> None:
        procs = getattr(trainer.strategy.launcher, "procs", None)
        if trainer.is_global_zero and procs:
            threading.Thread(target=self._watch, args=(list(procs),), daemon=True, name="cifarbench-rank-watchdog").start()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._stop.set()

    def _watch(self, procs) -> None:
        while not self._stop.wait(self.interval):
            for rank, proc in enumerate(procs, start=1):  # Lightning launches ranks 1.. in order
                code = proc.poll()
                if code:
                    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
                    self.failure = (rank, f"rank {rank} (pid {proc.pid}) {how}")
                    self.on_failure(*self.failure)
                    return
