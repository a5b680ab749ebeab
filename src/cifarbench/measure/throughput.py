"""Steady-state training throughput, FLOP/s and MFU."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L
import torch

from .clock import Stamp, elapsed_less, gather_rows, settle, stamp
from .peak_flops import PeakFlops, peak_flops
from .phases import PhaseTimer


class SteadyStateThroughput(L.Callback):
    """Images/s per device and for the whole job, measured after the first ``warmup_steps`` steps.

    Timed region: from the end of training step ``warmup_steps`` (with 0: the start of the first epoch) to
    the end of the last training step, less every validation and every checkpoint write in between. Data
    waits and epoch boundaries stay in, as in a real run. The ends are device stamps (CUDA events), read
    once at the end of training and when a checkpoint is written, so measuring adds no wait to any step.
    Checkpoint writes are known through the run's :class:`PhaseTimer` (``phases``); without one they stay
    inside the window and ``timed_region`` says so. The warm-up steps (cuDNN autotuning, worker start,
    compile when no untimed warm-up ran) are reported on their own.

    Job throughput is all ranks' steady images over the slowest rank's steady seconds (a job is as fast as
    its slowest rank); per-rank rates are diagnostics. After a preemption each attempt warms up again; the
    steady images and seconds saved with the checkpoint (``state_dict``) are added to the resumed attempt's.

    Lightning's ThroughputMonitor is not used: it synchronises the device every step, its sliding window
    includes compile steps unless tuned per run, it reports rank 0 only, and it has no dense H200 peak.
    """

    def __init__(self, warmup_steps: int = 5, train_flops_per_image: Optional[int] = None,
                 precision: Optional[str] = None, phases: Optional[PhaseTimer] = None):
        self.warmup_steps, self.train_flops_per_image, self.precision = warmup_steps, train_flops_per_image, precision
        self.phases = phases
        self.peak: Optional[PeakFlops] = None
        self.summary: dict[str, Any] = {}
        self._device = torch.device("cpu")
        self._steps = self._images = 0
        self._first: Optional[Stamp] = None  # start of this attempt's first step
        self._start: Optional[Stamp] = None  # the window's start
        self._last: Optional[Stamp] = None  # end of the newest step
        self._validations: list[tuple[Stamp, Stamp]] = []
        self._val_start: Optional[Stamp] = None
        self._carried = {"images": 0, "seconds": 0.0, "steady_steps": 0, "warmup_seconds": 0.0, "attempts": 0,
                         "checkpoint_seconds": 0.0, "checkpoints": 0}

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._device = trainer.strategy.root_device
        if self.phases is not None:
            self.phases.device = self._device
        if self.precision and self.peak is None:  # before any clock starts: a CPU probe may take ~0.5 s
            self.peak = peak_flops(self._device, self.precision)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._start is None and self.warmup_steps == 0:
            self._start = stamp(self._device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._first is None:
            self._first = stamp(self._device)
        if self._start is None and self.warmup_steps == 0:  # resumed mid-epoch: no on_train_epoch_start came
            self._start = self._first

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = stamp(self._device)
        self._steps += 1
        if self._steps == self.warmup_steps:
            self._start = now
        elif self._steps > self.warmup_steps:
            self._images += len(batch[1])
            self._last = now

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_start = stamp(self._device)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_start is not None:
            self._validations.append((self._val_start, stamp(self._device)))
            self._val_start = None

    def on_train_end(self, trainer, pl_module) -> None:
        totals = self.state_dict()
        rows = gather_rows(trainer, [totals["images"], totals["seconds"], totals["warmup_seconds"]])
        self.summary = self._summarise(rows, totals, trainer.world_size)

    def _excluded(self) -> list[tuple[Stamp, Stamp]]:
        checkpoints = self.phases.checkpoints if self.phases is not None else []
        return self._validations + checkpoints

    def state_dict(self) -> dict[str, Any]:
        """This and the earlier attempts' steady images, steady seconds and warm-up seconds so far (reads the
        stamps: called at the end of training and when a checkpoint is written, after validation)."""
        settle(self._last, *(end for _, end in self._excluded() if self._last and end.host <= self._last.host))
        steady_steps = max(self._steps - self.warmup_steps, 0)
        seconds = elapsed_less(self._start, self._last, self._excluded()) if steady_steps and self._last else 0.0
        warmup_s = (elapsed_less(self._first, self._start, self._excluded())
                    if self.warmup_steps and self._first is not None and self._start is not None else 0.0)
        c = self._carried
        return {"images": c["images"] + self._images, "seconds": c["seconds"] + seconds,
                "steady_steps": c["steady_steps"] + steady_steps, "warmup_seconds": c["warmup_seconds"] + warmup_s,
                "attempts": c["attempts"] + 1,
                "checkpoint_seconds": c["checkpoint_seconds"] + (self.phases.checkpoint_seconds() if self.phases else 0.0),
                "checkpoints": c["checkpoints"] + (len(self.phases.checkpoints) if self.phases else 0)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._carried = {**self._carried, **state}

    def _summarise(self, rows: list[list[float]], totals: dict[str, Any], world_size: int) -> dict[str, Any]:
        steady_steps = totals["steady_steps"]
        region = ("from the end of warm-up step (the first epoch's start with 0 warm-up steps) to the end of the last "
                  "training step, device-timed; validation " + ("and checkpoint writes " if self.phases else "")
                  + "excluded" + ("" if self.phases else "; checkpoint writes included"))
        out: dict[str, Any] = {"warmup_steps": self.warmup_steps, "steady_steps": steady_steps,
                               "attempts": totals["attempts"], "world_size": world_size, "timed_region": region,
                               "checkpoint_seconds": totals["checkpoint_seconds"] if self.phases else None,
                               "checkpoints": totals["checkpoints"] if self.phases else None}
        if steady_steps == 0 or min(r[1] for r in rows) <= 0:
            return out | {"images_per_sec": None,
                          "note": f"no steady-state window: the run had {self._steps} training steps and "
                                  f"measure.warmup_steps is {self.warmup_steps}; run longer or lower it"}
        slowest = max(r[1] for r in rows)
        images = int(sum(r[0] for r in rows))
        total = images / slowest
        warmup_s = max(r[2] for r in rows)
        out |= {
            "images_per_sec": total,
            "images_per_sec_per_device": total / world_size,
            "per_rank_images_per_sec": [r[0] / r[1] for r in rows],
            "per_rank_steady_seconds": [r[1] for r in rows],
            "steady_seconds": slowest,
            "steady_images": images,
            "warmup_seconds": warmup_s,
            "warmup_overhead_seconds": max(warmup_s - totals["attempts"] * self.warmup_steps * slowest / steady_steps, 0.0),
        }
        if self.train_flops_per_image:
            per_device = self.train_flops_per_image * total / world_size
            out |= {"train_flops_per_image": self.train_flops_per_image, "flops_per_sec_per_device": per_device}
            if self.peak is not None:
                out |= {"peak_flops_per_device": self.peak.flops, "peak_flops_source": self.peak.source,
                        "mfu": per_device / self.peak.flops if self.peak.flops else None}
        return out
