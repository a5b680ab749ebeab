"""The measurement callbacks of one run, built from its config, in the order their hooks must run, and what each
puts into the record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..config import RunConfig
from ..measure import (DataWait, DivergenceGuard, EnvironmentInfo, HostSyncCount, PhaseTimer, ResourceUsage,
                       SteadyStateThroughput, TimeToTarget, TracingPhaseTimer, UntimedWarmup)
from ..measure.resources import cost
from ..models import flops_per_image

PER_STEP_OFF = {"disabled": "measure.per_step: false"}  # the record's data_wait and divergence then


@dataclass
class Measurements:
    phases: PhaseTimer
    warmup: UntimedWarmup
    host_syncs: HostSyncCount
    time_to_target: TimeToTarget
    throughput: SteadyStateThroughput
    resources: ResourceUsage
    data_wait: Optional[DataWait]
    divergence: Optional[DivergenceGuard]
    environment: EnvironmentInfo

    def callbacks(self) -> list:
        """Warm-up first; a step's sync count starts before any other callback's hook (its epoch companion, which
        goes last, after their epoch starts)."""
        return [c for c in (self.warmup, self.host_syncs, self.time_to_target, self.throughput, self.resources,
                            self.data_wait, self.divergence, self.environment) if c]

    @property
    def diverged(self) -> bool:
        return bool(self.divergence and self.divergence.step is not None)

    def record_parts(self, cfg: RunConfig, devices: int) -> dict[str, Any]:
        """Each measurement's section of the record."""
        tta, throughput = self.time_to_target, self.throughput
        price = cost(cfg.measure.cost_per_gpu_hour, devices, throughput.summary.get("images_per_sec"),
                     tta.summary["clocks"]["mlperf"]["seconds"])
        return {"divergence": self.divergence.summary if self.divergence else PER_STEP_OFF,
                "environment": self.environment.summary, "warmup": self.warmup.summary,
                "throughput": throughput.summary, "time_to_target": tta.summary, "measure": self.host_syncs.summary,
                "resources": self.resources.summary | {"cost": price},
                "data_wait": self.data_wait.summary if self.data_wait else PER_STEP_OFF}


def build_measurements(cfg: RunConfig, trained: RunConfig, run_id: str, run_dir: Path, origin: float,
                       previous_clock: Optional[float], log_every: int) -> Measurements:
    """The callbacks for ``cfg`` (``trained``: the per-device config it trains with); ``origin`` starts the mlperf
    clock, ``previous_clock`` is where a resumed run's clocks go on from."""
    m = cfg.measure
    phases = build_profiler(cfg, run_id, run_dir)
    return Measurements(
        phases=phases,
        warmup=UntimedWarmup(m.untimed_warmup_steps, trained.data.batch_size, eval_batch_sizes(trained),
                             cfg.model.num_classes),
        host_syncs=HostSyncCount(m.warmup_steps, counter="sentinel" if m.sync_sentinel else "auto"),
        time_to_target=TimeToTarget(m.target_accuracy, prior_seconds=previous_clock, stop_at_target=m.stop_at_target,
                                    origin=origin, phases=phases, untimed_warmup=m.untimed_warmup_steps > 0),
        throughput=SteadyStateThroughput(m.warmup_steps, flops_per_image(cfg.model, training=True),
                                         precision=cfg.trainer.precision, phases=phases),
        resources=ResourceUsage(m.warmup_steps, target=m.target_accuracy),
        data_wait=DataWait(m.warmup_steps, profiler=phases) if m.per_step else None,
        divergence=DivergenceGuard(m.divergence_check_every or log_every) if m.per_step else None,
        environment=EnvironmentInfo())  # the config sits at the record's top level


def build_profiler(cfg: RunConfig, run_id: str, run_dir: Path) -> PhaseTimer:
    """The run's profiler: always the PhaseTimer the measurements read (fetch, step, checkpoint writes); with
    ``profiler.enabled`` it is also Lightning's PyTorchProfiler on a wait/warmup/active schedule, whose chrome
    traces (one file per rank, ``<run dir>/profiler/<run id>/*.pt.trace.json``) open in TensorBoard's profiler
    plugin and in Perfetto. The profiled steps are slower, so a profiled run's record says so
    (``config.profiler.enabled``)."""
    p = cfg.profiler
    if not p.enabled:
        return PhaseTimer()
    return TracingPhaseTimer(dirpath=run_dir / "profiler" / run_id, filename="trace", export_to_chrome=True,
                             schedule=torch.profiler.schedule(wait=p.wait, warmup=p.warmup, active=p.active, repeat=1))


def eval_batch_sizes(cfg: RunConfig) -> list[int]:
    """Batch sizes a rank's validation runs: full batches and the last, shorter one (shapes torch.compile sees)."""
    world = cfg.trainer.world_size()
    per_rank = max(-(-cfg.data.val_images() // world), 1)
    return [min(cfg.data.batch_size, per_rank), per_rank % cfg.data.batch_size or cfg.data.batch_size]
