"""Notices, on rank 0, when another rank's process of a local DDP job dies, and writes that down before the job ends."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any, Callable

from lightning.pytorch.strategies import DDPStrategy

from ..record import exit_description
from .signals import UserInterrupt

try:  # private in Lightning (2.6 here and on the GPU machine): without them, DDP runs with Lightning's own observer
    from lightning.fabric.utilities.distributed import _set_num_threads_if_needed
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
except ImportError:  # pragma: no cover - another Lightning release
    _SubprocessScriptLauncher = None


class RankWatchdog:
    """Polls the DDP worker processes every ``interval`` s; when one exits with an error it calls
    ``on_failure(rank, description)`` once and then SIGKILLs the workers and this process. After a Ctrl-C it
    stands down: Lightning then ends the workers itself.

    It takes the place of Lightning's ``_ChildProcessObserver``, which ends the job the same way but within
    5 s and with no hook before its SIGKILL: whether rank 0 had written down which rank died was a race
    (lost in CI, where the record then said only that rank 0 was killed). Here the record comes first.
    Under srun there are no worker processes here: Slurm ends the step, and a peer's death fails the next
    collective.
    """

    def __init__(self, on_failure: Callable[[int, str], None], interval: float = 0.5):
        self.on_failure, self.interval = on_failure, interval

    def watch(self, procs: list[subprocess.Popen]) -> None:
        threading.Thread(target=self._watch, args=(list(procs),), daemon=True, name="cifarbench-rank-watchdog").start()

    def _watch(self, procs: list[subprocess.Popen]) -> None:
        while True:
            codes = [proc.poll() for proc in procs]
            if all(code == 0 for code in codes) or UserInterrupt.seen:  # after Ctrl-C the workers end by design
                return
            for rank, (proc, code) in enumerate(zip(procs, codes), start=1):  # Lightning launches ranks 1.. in order
                if code:
                    try:
                        self.on_failure(rank, f"rank {rank} (pid {proc.pid}) {exit_description(code)}")
                    finally:  # what Lightning's observer does: a rank stuck in a collective ignores SIGTERM
                        for other in procs:
                            other.send_signal(signal.SIGKILL)
                        os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(self.interval)


def watchdog_supported() -> bool:
    """Whether this Lightning has the launcher the watchdog extends (``build_strategy`` falls back if not)."""
    return _SubprocessScriptLauncher is not None and hasattr(_SubprocessScriptLauncher, "_call_children_scripts")


class WatchedLauncher(_SubprocessScriptLauncher or object):
    """Lightning's launcher for ``strategy="ddp"`` on one machine, with a RankWatchdog in place of its observer."""

    def __init__(self, watchdog: RankWatchdog, *args: Any):
        super().__init__(*args)
        self.watchdog = watchdog

    def launch(self, function: Callable, *args: Any, trainer=None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(num_devices=self.num_processes, num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            self.watchdog.watch(self.procs)
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)


class WatchedDDPStrategy(DDPStrategy):
    """DDPStrategy whose script launcher (``start_method="popen"``) is a WatchedLauncher."""

    def __init__(self, watchdog: RankWatchdog, **kwargs: Any):
        super().__init__(**kwargs)
        self.watchdog = watchdog

    def _configure_launcher(self) -> None:
        super()._configure_launcher()
        if type(self._launcher) is _SubprocessScriptLauncher:
            self._launcher = WatchedLauncher(self.watchdog, self.cluster_environment, self.num_processes,
                                             self.num_nodes)
