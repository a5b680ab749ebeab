"""Peak memory, energy and the GPU's clock state of a run, per rank and for the job; and its cost."""

from __future__ import annotations

import math
import os
import resource
import warnings
from typing import Any, Optional

import lightning as L
import torch

from .clock import gather_rows
from .energy import energy_meter, nvml_handle

# NVML clock-event bits that mean the GPU ran below its clocks for power or heat: its speed is not the board's
THROTTLES = {0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
             0x80: "hw_power_brake_slowdown"}
ROW = ("peak_host_rss_bytes", "peak_device_memory_allocated_bytes", "peak_device_memory_reserved_bytes",
       "allocator_retries", "out_of_memory_errors", "steady_joules", "steady_images", "steady_steps",
       "to_target_joules", "fit_joules", "counted", "sm_clock_mhz_at_start", "sm_clock_mhz_at_end",
       "throttle_bits_at_start", "throttle_bits_at_end", "other_processes_on_gpu")
ENERGY_REGION = ("steady: from the end of warm-up step to the end of training, less every validation (checkpoint "
                 "writes included); to_target: from fit start to the end of the validation that first reached the "
                 "target; fit: from fit start to the end of training. Counters are read when the hooks run, without "
                 "waiting for the device: at the window's start the device may still be running a few queued "
                 "warm-up steps, whose energy then counts as steady")


class ResourceUsage(L.Callback):
    """What a run used besides time: peak host memory (``getrusage``: this process; loader workers are processes of
    their own), peak device memory (torch's caching allocator: allocated, reserved, retries after freeing its cache,
    out-of-memory errors), and energy from the counters of :mod:`.energy`, read at the ends of the windows the
    clocks use and at every validation, never per step. On GPUs also the SM clock and NVML's throttle reasons at
    the steady window's ends (a power- or heat-capped GPU is not measuring the configuration), and a warning when
    another process holds this rank's GPU at the start.

    Job figures: memory is the largest rank's; energy the sum of the ranks' counters, each package counted once
    (RAPL counts a whole CPU, shared by the ranks on a node: local rank 0 reads it for all); images per joule are
    all ranks' steady images over that energy. Across a preemption the steady figures of earlier attempts carry
    over (``state_dict``), as the throughput's do.
    """

    def __init__(self, warmup_steps: int = 5, target: Optional[float] = None, monitor: str = "val/acc"):
        self.warmup_steps, self.target, self.monitor = warmup_steps, target, monitor
        self.summary: dict[str, Any] = {}
        self.meter, self.source, self.handle = None, "", None
        self._steps = self._images = 0
        self._fit_start = self._start = self._val_start = None
        self._validation_joules, self._to_target = 0.0, math.nan
        self._gpu_start: tuple[float, float] = (math.nan, math.nan)
        self._others = math.nan
        self._carried = {"steady_joules": 0.0, "steady_images": 0, "steady_steps": 0, "fit_joules": 0.0}

    def setup(self, trainer, pl_module, stage: str) -> None:
        device = trainer.strategy.root_device
        if self.meter is None and not self.source:
            self.meter, self.source = energy_meter(device)
        if device.type == "cuda" and self.handle is None:
            self.handle = nvml_handle(device)[0]
            self._others = float(len(other_processes(self.handle)))
            if self._others:
                warnings.warn(f"rank {trainer.global_rank}: {int(self._others)} other process(es) hold GPU "
                              f"{device} at the start: they share its time and memory, so this run's numbers "
                              "are not the configuration's alone")

    def _read(self) -> float:
        return self.meter.read() if self.meter is not None else math.nan

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = self._read()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self._start is None and self.warmup_steps == 0:
            self._open_window()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._steps += 1
        if self._steps == self.warmup_steps:
            self._open_window()
        elif self._steps > self.warmup_steps:
            self._images += len(batch[1])

    def _open_window(self) -> None:
        self._start = self._read()
        self._gpu_start = gpu_state(self.handle)

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._val_start = self._read()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._val_start is None:
            return
        now = self._read()
        if self._start is not None:  # the window was open when this validation began
            self._validation_joules += now - self._val_start
        self._val_start = None
        accuracy = trainer.callback_metrics.get(self.monitor)  # read on the host already: validation has ended
        if self.target is not None and math.isnan(self._to_target) and accuracy is not None \
                and float(accuracy) >= self.target:
            self._to_target = self._carried["fit_joules"] + now - self._fit_start

    def state_dict(self) -> dict[str, Any]:
        """This and the earlier attempts' steady energy, images and steps, and energy since fit start."""
        now, c = self._read(), self._carried
        steady = (now - self._start - self._validation_joules) if self._start is not None else 0.0
        return {"steady_joules": c["steady_joules"] + steady, "steady_images": c["steady_images"] + self._images,
                "steady_steps": c["steady_steps"] + max(self._steps - self.warmup_steps, 0),
                "fit_joules": c["fit_joules"] + now - self._fit_start if self._fit_start is not None else math.nan}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._carried = {**self._carried, **state}

    def on_train_end(self, trainer, pl_module) -> None:
        totals, device = self.state_dict(), trainer.strategy.root_device
        memory = device_memory(device)
        counted = 1.0 if self.meter is not None and (device.type == "cuda" or trainer.local_rank == 0) else 0.0
        row = [peak_host_rss_bytes(), *memory, totals["steady_joules"], totals["steady_images"],
               totals["steady_steps"], self._to_target, totals["fit_joules"], counted, *self._gpu_start,
               *gpu_state(self.handle), self._others]
        ranks = [dict(zip(ROW, values), rank=rank) for rank, values in enumerate(gather_rows(trainer, row))]
        self.summary = summarise(ranks, self.source, device.type == "cuda")


def summarise(ranks: list[dict[str, float]], source: str, cuda: bool) -> dict[str, Any]:
    """The record's ``resources``: the job's figures, then each rank's."""
    def job_max(key: str) -> Optional[int]:
        values = [r[key] for r in ranks if not math.isnan(r[key])]
        return int(max(values)) if values else None

    counted = [r for r in ranks if r["counted"]]
    joules = sum(r["steady_joules"] for r in counted) if counted else None
    images, steps = sum(r["steady_images"] for r in ranks), max(r["steady_steps"] for r in ranks)
    energy = {"source": source, "region": ENERGY_REGION, "steady_joules": joules, "steady_images": int(images),
              "images_per_joule": images / joules if joules else None,
              "joules_per_step": joules / steps if joules and steps else None,
              "to_target_joules": _sum_or_none(r["to_target_joules"] for r in counted) if counted else None,
              "fit_joules": _sum_or_none(r["fit_joules"] for r in counted) if counted else None}
    reasons = sorted({name for r in ranks for key in ("throttle_bits_at_start", "throttle_bits_at_end")
                      if not math.isnan(r[key]) for bit, name in THROTTLES.items() if int(r[key]) & bit})
    return {"peak_host_rss_bytes": job_max("peak_host_rss_bytes"),
            "peak_device_memory_allocated_bytes": job_max("peak_device_memory_allocated_bytes"),
            "peak_device_memory_reserved_bytes": job_max("peak_device_memory_reserved_bytes"),
            "allocator_retries": job_max("allocator_retries"), "out_of_memory_errors": job_max("out_of_memory_errors"),
            "energy": energy,
            "gpu": {"throttle_reasons": reasons, "throttled": bool(reasons),
                    "sm_clock_mhz_at_start": [r["sm_clock_mhz_at_start"] for r in ranks],
                    "sm_clock_mhz_at_end": [r["sm_clock_mhz_at_end"] for r in ranks],
                    "other_processes_at_start": job_max("other_processes_on_gpu")} if cuda else None,
            "ranks": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in ranks]}


def _sum_or_none(values) -> Optional[float]:
    values = list(values)
    return None if any(math.isnan(v) for v in values) else sum(values)


def peak_host_rss_bytes() -> float:
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux counts kilobytes


def device_memory(device: torch.device) -> list[float]:
    """[peak allocated, peak reserved, allocator retries, OOMs] of torch's caching allocator on ``device`` (host-side
    counters: no wait); NaN on devices without one."""
    if device.type != "cuda":
        return [math.nan] * 4
    stats = torch.cuda.memory_stats(device)
    return [float(stats.get("allocated_bytes.all.peak", 0)), float(stats.get("reserved_bytes.all.peak", 0)),
            float(stats.get("num_alloc_retries", 0)), float(stats.get("num_ooms", 0))]


def gpu_state(handle) -> tuple[float, float]:
    """(SM clock in MHz, NVML's clock-event reason bits) now; NaN without a GPU handle."""
    if handle is None:
        return math.nan, math.nan
    import pynvml

    try:
        return (float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
                float(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)))
    except pynvml.NVMLError:
        return math.nan, math.nan


def other_processes(handle) -> list[int]:
    """Process ids other than this one that hold a compute context on the GPU."""
    import pynvml

    try:
        return [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid != os.getpid()]
    except pynvml.NVMLError:
        return []


def cost(per_gpu_hour: Optional[float], devices: int, images_per_sec: Optional[float],
         seconds_to_target: Optional[float]) -> Optional[dict[str, Any]]:
    """What the run would cost at ``per_gpu_hour`` per device: to the target (on the mlperf clock, everything on
    it) and per million steady images; None when no price was given."""
    if per_gpu_hour is None:
        return None
    rate = per_gpu_hour * devices / 3600  # per second of the job
    return {"per_gpu_hour": per_gpu_hour, "devices": devices, "clock": "mlperf",
            "to_target": rate * seconds_to_target if seconds_to_target is not None else None,
            "per_million_images": rate * 1e6 / images_per_sec if images_per_sec else None}
