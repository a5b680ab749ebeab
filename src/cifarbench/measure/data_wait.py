"""How long training waits for its data, kept apart from the harness's own time between steps."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from .clock import Stamp, elapsed, gather_rows, settle, stamp
from .phases import PhaseTimer

# per step, in this order: host cycle, fetch, step, device cycle, device gap (seconds)
CYCLE, FETCH, STEP, DEVICE_CYCLE, DEVICE_GAP = range(5)


class DataWait(L.Callback):
    """Per training step, three host-side shares of its cycle and, on CUDA, the stall the device really saw.

    A step's cycle runs from the end of the previous step (or the start of the epoch, after validation and
    checkpointing) to the end of this one. On the host it splits into
      - fetch: the next batch's fetch plus its transfer to the device (Lightning's ``train_dataloader_next``
        and ``batch_to_device`` actions, read by :class:`PhaseTimer`): the data wait;
      - step: ``run_training_batch`` (on CUDA the host only launches the work);
      - harness: the rest: hooks, callbacks, loggers, progress bar, LR scheduler. Never counted as data wait.
    On CUDA the step's start and end are device events; the device's gap between the end of one step and
    the start of the next is the time it sat idle or copying, i.e. the stall the GPU saw. Events are read
    at epoch ends only. ``stall_fraction`` is that device gap on CUDA, and the fetch share on a CPU (where
    the host is the device, so a fetch is a stall).

    Steady values leave out each attempt's first ``warmup_steps`` steps (worker start-up, FFCV's JIT);
    ``*_all_steps`` keep them. Across ranks the job's fractions are those of the rank that waited most,
    and ``fetch_fraction_per_step_max`` adds up, step by step, the longest fetch of any rank.

    Use with ``Trainer(profiler=data_wait.profiler)`` (or the PhaseTimer passed in), which times the fetch.
    """

    def __init__(self, warmup_steps: int = 0, profiler: Optional[PhaseTimer] = None):
        self.warmup_steps = warmup_steps
        self.profiler = profiler or PhaseTimer()
        self.steps: list[list[float]] = []  # resolved, one row per step (CYCLE .. DEVICE_GAP)
        self.summary: dict[str, Any] = {}
        self._pending: list[tuple[Stamp, Stamp, Stamp, float, float]] = []  # (ref, start, end, fetch, step)
        self._ref: Optional[Stamp] = None
        self._start: Optional[Stamp] = None
        self._attempt_starts: list[int] = []  # index of each attempt's first step
        self._device = torch.device("cpu")

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.profiler is not self.profiler:
            raise MisconfigurationException("DataWait times the fetch through its profiler: pass "
                                            "Trainer(profiler=data_wait.profiler)")
        self._device = self.profiler.device = trainer.strategy.root_device

    def on_fit_start(self, trainer, pl_module) -> None:
        self._attempt_starts.append(len(self.steps))

    def state_dict(self) -> dict[str, Any]:
        self._resolve()
        return {"steps": self.steps, "attempt_starts": self._attempt_starts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self._attempt_starts = [list(s) for s in state["steps"]], list(state["attempt_starts"])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._ref = stamp(self._device)
        self.profiler.take()  # nothing before the epoch's first fetch belongs to a step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = stamp(self._device)
        if self._ref is None:  # an attempt resumed mid-epoch gets no on_train_epoch_start: its cycle starts here
            self._ref = self._start

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        end = stamp(self._device)
        fetch, step = self.profiler.take()
        self._pending.append((self._ref, self._start, end, fetch, step))
        self._ref = end

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._resolve()  # after validation: the device has passed these stamps, reading them does not wait

    def _resolve(self) -> None:
        if not self._pending:
            return
        settle(self._pending[-1][2])
        for ref, start, end, fetch, step in self._pending:
            self.steps.append([end.host - ref.host, fetch, step, elapsed(ref, end), elapsed(ref, start)])
        self._pending = []

    def on_train_end(self, trainer, pl_module) -> None:
        self._resolve()
        warmup = {i for start in self._attempt_starts for i in range(start, start + self.warmup_steps)}
        steady = np.array([s for i, s in enumerate(self.steps) if i not in warmup]).reshape(-1, 5)
        every = np.array(self.steps).reshape(-1, 5)
        totals = [*steady.sum(axis=0), *every.sum(axis=0), len(steady)]
        gathered = gather_rows(trainer, totals + list(steady[:, FETCH]))  # one collective: ranks run equal steps
        rows, per_step_fetch = [g[:len(totals)] for g in gathered], [g[len(totals):] for g in gathered]
        on_device = self._device.type == "cuda"

        def share(row: list[float], part: int, whole: int = CYCLE) -> float:
            return row[part] / row[whole] if row[whole] > 0 else 0.0

        harness = [r[CYCLE] - r[FETCH] - r[STEP] for r in rows]
        worst = max(range(len(rows)), key=lambda r: share(rows[r], FETCH))  # the rank that waited most
        fetch = [share(r, FETCH) for r in rows]
        gap = [share(r, DEVICE_GAP, DEVICE_CYCLE) for r in rows] if on_device else None
        slowest_cycle = max(r[CYCLE] for r in rows)
        self.summary = {
            "timed_region": "steady steps, each from the end of the previous step (or the epoch's start) to its "
                            "end; validation and checkpoint writes lie outside every step",
            "steps": len(self.steps), "steady_steps": len(steady), "warmup_steps": self.warmup_steps,
            "attempts": len(self._attempt_starts),
            "fetch_fraction": fetch[worst] if len(steady) else None,
            "harness_fraction": harness[worst] / rows[worst][CYCLE] if len(steady) and rows[worst][CYCLE] else None,
            "step_fraction": share(rows[worst], STEP) if len(steady) else None,
            "per_rank_fetch_fraction": fetch,
            "fetch_fraction_per_step_max": (float(np.max(per_step_fetch, axis=0).sum()) / slowest_cycle
                                            if len(steady) and slowest_cycle > 0 else None),
            "device_gap_fraction": max(gap) if gap and len(steady) else None,
            "per_rank_device_gap_fraction": gap,
            "stall_fraction": (max(gap) if on_device else fetch[worst]) if len(steady) else None,
            "stall_measure": ("device idle time between consecutive step events" if on_device else
                              "host fetch + transfer time (on a CPU the host is the device)"),
            "fetch_fraction_all_steps": max(share(r[5:], FETCH) for r in rows),
            "fetch_seconds": rows[worst][FETCH], "harness_seconds": harness[worst], "step_seconds": rows[worst][STEP],
            "cycle_seconds": rows[worst][CYCLE],
            "fetch_ms_p50": _ms(steady[:, FETCH], 50), "fetch_ms_p95": _ms(steady[:, FETCH], 95),
            "fetch_ms_max": _ms(steady[:, FETCH], 100), "step_ms_p50": _ms(steady[:, STEP], 50),
            "harness_ms_p50": _ms(steady[:, CYCLE] - steady[:, FETCH] - steady[:, STEP], 50),
            "device_gap_ms_p50": _ms(steady[:, DEVICE_GAP], 50) if on_device else None,
            "first_fetch_seconds": self.steps[0][FETCH] if self.steps else None,
        }


def _ms(values: np.ndarray, percentile: float) -> Optional[float]:
    return float(np.percentile(values, percentile) * 1e3) if len(values) else None
