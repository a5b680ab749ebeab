"""Host time of the phases Lightning already profiles: batch fetch and transfer, the step, checkpoint writes.

Lightning wraps its own work in named profiler actions; a callback cannot see them, and time measured
between callback hooks mixes the fetch of the next batch with every hook, logger, progress bar and
checkpoint that runs between two steps. :class:`PhaseTimer` is a Lightning ``Profiler`` that reads just
these actions (a subclass, because the Trainer has one profiler slot and these actions reach only it):

- ``[_TrainingEpochLoop].train_dataloader_next`` + the ``[Strategy]<name>.batch_to_device`` that follows it:
  the fetch of a training batch and its transfer to the device (the device path's augmentation runs in
  the fetch; ``on_after_batch_transfer`` in the transfer);
- ``run_training_batch``: the step (forward, backward, optimizer), as the host sees it;
- ``save_checkpoint``: each checkpoint write, with device stamps around it so that device-timed windows
  can leave it out.

Every other action costs one string test. :class:`TracingPhaseTimer` is the same with Lightning's
``PyTorchProfiler`` underneath (``--profiler.enabled``), so traces and measurement work together.
"""

from __future__ import annotations

import time
from typing import Optional

import torch
from lightning.pytorch.profilers import Profiler, PyTorchProfiler

from .clock import Stamp, stamp

FETCH = "train_dataloader_next"
TRANSFER = ".batch_to_device"
STEP = "run_training_batch"
CHECKPOINT = "save_checkpoint"


class PhaseTimer(Profiler):
    """Accumulates fetch and step seconds until a callback takes them (:meth:`take`), and keeps every
    checkpoint write as ``(start, end)`` stamps plus its host seconds."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.device = torch.device("cpu")  # where checkpoint stamps go; set by the callbacks at setup
        self.checkpoints: list[tuple[Stamp, Stamp]] = []
        self._fetch = self._step = 0.0
        self._fetch_start: Optional[float] = None
        self._step_start: Optional[float] = None
        self._transfer_pending = False
        self._checkpoint_start: Optional[Stamp] = None

    def start(self, action_name: str) -> None:
        if action_name.endswith(FETCH):
            self._fetch_start = time.perf_counter()
        elif self._is_train_transfer(action_name):
            self._fetch_start = time.perf_counter()
        elif action_name == STEP:
            self._step_start = time.perf_counter()
        elif action_name == CHECKPOINT:
            self._checkpoint_start = stamp(self.device)
        super().start(action_name)

    def stop(self, action_name: str) -> None:
        super().stop(action_name)
        if action_name.endswith(FETCH) and self._fetch_start is not None:
            self._fetch += time.perf_counter() - self._fetch_start
            self._fetch_start, self._transfer_pending = None, True
        elif self._is_train_transfer(action_name):
            self._fetch += time.perf_counter() - self._fetch_start
            self._fetch_start, self._transfer_pending = None, False
        elif action_name == STEP and self._step_start is not None:
            self._step += time.perf_counter() - self._step_start
            self._step_start = None
        elif action_name == CHECKPOINT and self._checkpoint_start is not None:
            self.checkpoints.append((self._checkpoint_start, stamp(self.device)))
            self._checkpoint_start = None

    def _is_train_transfer(self, action_name: str) -> bool:
        """The strategy's batch_to_device right after a training fetch (evaluation batches move too)."""
        return self._transfer_pending and action_name.endswith(TRANSFER) and action_name.startswith("[Strategy]")

    def take(self) -> tuple[float, float]:
        """(fetch + transfer seconds, step seconds) since the last call, as the host saw them."""
        taken = self._fetch, self._step
        self._fetch = self._step = 0.0
        return taken

    def checkpoint_seconds(self) -> float:
        """Host seconds of every checkpoint write so far (the fsync'd write holds the whole process)."""
        return sum(end.host - start.host for start, end in self.checkpoints)


class TracingPhaseTimer(PhaseTimer, PyTorchProfiler):
    """PhaseTimer over Lightning's PyTorchProfiler: torch.profiler traces of a few steps, measurement as always."""
