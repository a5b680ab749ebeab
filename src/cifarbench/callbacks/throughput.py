"""Steady-state training throughput, FLOP/s and MFU."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L

from ..peak_flops import PeakFlops, peak_flops
from .sync import gather_rows, synced_now


class SteadyStateThroughput(L.Callback):
    """Images/s per device and for the whole job, measured after the first ``warmup_steps`` steps.

    Timed region: from the synchronised end of training step ``warmup_steps`` to the synchronised end of
    the last training step, minus validation (which it times separately). It includes data waits, epoch
    boundaries and checkpoint writes, as a real training run does. The warm-up steps (compile, cuDNN
    autotuning, worker start) are reported on their own, as seconds and as overhead over the steady rate.

    After a preemption each attempt warms up again; the steady images and seconds saved with the
    checkpoint (rank 0's, ``state_dict``) are added to the resumed attempt's, and so are the warm-ups.

    Lightning's ThroughputMonitor is not used because its sliding window includes compile steps unless
    the window is tuned per run, it reports rank 0 only, and it has no dense peak for the H200.
    """

    def __init__(self, warmup_steps: int = 5, train_flops_per_image: Optional[int] = None,
                 precision: Optional[str] = None):
        self.warmup_steps, self.train_flops_per_image, self.precision = warmup_steps, train_flops_per_image, precision
        self.peak: Optional[PeakFlops] = None
        self.summary: dict[str, Any] = {}
        self._steps = self._images = 0
        self._first_start: Optional[float] = None
        self._t0 = self._t_last = 0.0
        self._val_s = self._val_at_t0 = self._val_at_last = 0.0
        self._val_start: Optional[float] = None
        self._carried = {"images": 0, "seconds": 0.0, "steady_steps": 0, "warmup_seconds": 0.0, "attempts": 0}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.precision and self.peak is None:  # before the clocks start: the CPU probe takes ~0.5 s
            self.peak = peak_flops(trainer.strategy.root_device, self.precision)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._first_start is None:
            self._first_start = synced_now(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = synced_now(pl_module.device)
        self._steps += 1
        if self._steps == self.warmup_steps:
            self._t0, self._val_at_t0 = now, self._val_s
        elif self._steps > self.warmup_steps:
            self._images += len(batch[1])
            self._t_last, self._val_at_last = now, self._val_s

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_start = synced_now(pl_module.device)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_start is not None:
            self._val_s += synced_now(pl_module.device) - self._val_start
            self._val_start = None

    def on_train_end(self, trainer, pl_module) -> None:
        totals = self.state_dict()
        rows = gather_rows(trainer, [totals["images"], totals["seconds"], totals["warmup_seconds"]])
        self.summary = self._summarise(rows, totals["steady_steps"], totals["attempts"], trainer.world_size)

    def state_dict(self) -> dict[str, Any]:
        """This and the earlier attempts' steady images, steady seconds and warm-up seconds so far."""
        steady_steps = max(self._steps - self.warmup_steps, 0)
        seconds = (self._t_last - self._t0) - (self._val_at_last - self._val_at_t0) if steady_steps else 0.0
        warmup_s = (self._t0 - (self._first_start or 0.0)) - self._val_at_t0 if self._steps >= self.warmup_steps else 0.0
        c = self._carried
        return {"images": c["images"] + self._images, "seconds": c["seconds"] + seconds,
                "steady_steps": c["steady_steps"] + steady_steps, "warmup_seconds": c["warmup_seconds"] + warmup_s,
                "attempts": c["attempts"] + 1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._carried = dict(state)

    def _summarise(self, rows: list[list[float]], steady_steps: int, attempts: int, world_size: int) -> dict[str, Any]:
        out: dict[str, Any] = {"warmup_steps": self.warmup_steps, "steady_steps": steady_steps, "attempts": attempts,
                               "world_size": world_size, "timed_region": "end of warm-up step to end of last "
                               "training step, device-synchronised, validation excluded"}
        if steady_steps == 0 or min(r[1] for r in rows) <= 0:
            return out | {"images_per_sec": None,
                          "note": f"no steady-state steps: the run had {self._steps} steps, warm-up is {self.warmup_steps}"}
        per_rank = [images / seconds for images, seconds, _ in rows]
        steady_step_s = max(r[1] for r in rows) / steady_steps
        warmup_s = max(r[2] for r in rows)
        total = sum(per_rank)
        out |= {
            "images_per_sec": total,
            "images_per_sec_per_device": total / world_size,
            "per_rank_images_per_sec": per_rank,
            "steady_seconds": max(r[1] for r in rows),
            "steady_images": int(sum(r[0] for r in rows)),
            "warmup_seconds": warmup_s,
            "warmup_overhead_seconds": max(warmup_s - attempts * self.warmup_steps * steady_step_s, 0.0),
        }
        if self.train_flops_per_image:
            per_device = self.train_flops_per_image * total / world_size
            out |= {"train_flops_per_image": self.train_flops_per_image, "flops_per_sec_per_device": per_device}
            if self.peak is not None:
                out |= {"peak_flops_per_device": self.peak.flops, "peak_flops_source": self.peak.source,
                        "mfu": per_device / self.peak.flops if self.peak.flops else None}
        return out
