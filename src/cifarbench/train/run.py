"""One training run: config -> checks -> Lightning Trainer with the measurement callbacks -> run record."""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import replace
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException
from rich.console import Console

from ..callbacks.error_log import ErrorLog
from ..callbacks.progress import LogLineProgress, ThrottledRichProgressBar
from ..callbacks.requeue_signal import ReleaseRequeueSignal
from ..checks import check_config, slow_precision
from ..config import RunConfig
from ..data import DataEpoch, build_datamodule
from ..data.sources import prepare_source
from ..errors import error_line
from ..loggers import build_loggers, close_wandb_after_sigterm, finish_wandb
from ..tools.lr_find import lr_find
from ..measure import (DataWait, DivergenceGuard, EnvironmentInfo, HostSyncCount, PhaseTimer, ResourceUsage,
                       SteadyStateThroughput, TimeToTarget, TracingPhaseTimer, UntimedWarmup)
from ..measure.resources import cost
from ..measure.peak_flops import apply_math_mode
from ..models import count_parameters, flops_per_image
from ..cluster.requeue import (discard_hpc_checkpoints, earlier_attempts, finished_record, hpc_checkpoint, new_attempt,
                       requeued_by_slurm, resume_checkpoint)
from ..record import atomic_write_text, final_status, mark_abandoned, new_record, now, write_record
from ..cluster.watchdog import RankWatchdog
from .trainer import build_trainer
from ..tools.curves import write_training_curves
from .module import CifarClassifier

RUN_ID_VARIABLE = "CIFARBENCH_RUN_ID"  # inherited by the DDP worker processes Lightning launches
PER_STEP_OFF = {"disabled": "measure.per_step: false"}  # the record's data_wait and divergence then
RESUME_VARIABLE = "CIFARBENCH_RESUME_FROM"  # likewise: "" (new run) or <1 if Lightning finds it itself, else 0><path>
# The module's on_after_batch_transfer (channels_last) is meant to win over the datamodule's.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")
warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")  # Lightning 2.6 on torch 2.14: not ours to fix


def fit(cfg: RunConfig) -> tuple[Path, dict[str, Any]]:
    """Trains one configuration and returns the path of its run record (written by global rank 0).

    A run whose record already holds a result is not trained again: its record is returned as it is."""
    origin = time.perf_counter()  # the mlperf clock's start: before the data set is first touched (its check)
    run_id = resolve_run_id(cfg)
    run_dir = Path(cfg.output.dir).expanduser() / run_id
    if (finished := finished_record(run_dir, run_id)) is not None:
        rank_zero_info(f"cifarbench: run {run_id} already finished ({finished['status']}): not run again; "
                       f"its record is {run_dir / 'record.json'}")
        return run_dir / "record.json", finished
    check_config(cfg)
    if (slow := slow_precision(cfg.trainer)) is not None:
        rank_zero_warn(slow)
    prepare_source(cfg.data)
    found_lr = None
    if cfg.lr_find.enabled:  # 1-device runs only (checked): the resolved config trains at the suggestion
        found_lr = lr_find(cfg, run_dir / "lr_find")
        cfg = replace(cfg, optim=replace(cfg.optim, max_lr=found_lr["suggestion"]),
                      lr_find=replace(cfg.lr_find, enabled=False))
    is_zero = rank_zero_only.rank == 0
    resumed_from, lightning_finds_it = resolve_resume(run_dir, run_id)
    first_started, attempts = earlier_attempts(run_dir, run_id, resumed_from is not None) if is_zero else (None, [])
    started = first_started or now()
    attempts.append(new_attempt(now(), resumed_from))
    if is_zero:
        for stale in run_dir.glob("error-rank*.log"):  # an earlier attempt's
            stale.unlink()
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        write_record(run_dir, new_record(cfg, run_id, "running", started_at=started, restarts=len(attempts) - 1,
                                         attempts=attempts))

    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    apply_math_mode(cfg.trainer.matmul_precision)
    trained, scaling = at_scale(cfg)
    module = CifarClassifier(cfg.model, trained.optim, cfg.trainer.channels_last, cfg.trainer.compile)
    datamodule = build_datamodule(trained.data, seed=cfg.trainer.seed)
    m, log_every = cfg.measure, cfg.trainer.log_every_n_steps or min(50, train_steps_per_epoch(trained))
    phases = build_profiler(cfg, run_id, run_dir)
    warmup = UntimedWarmup(m.untimed_warmup_steps, trained.data.batch_size, eval_batch_sizes(trained),
                           cfg.model.num_classes)
    throughput = SteadyStateThroughput(m.warmup_steps, flops_per_image(cfg.model, training=True),
                                       precision=cfg.trainer.precision, phases=phases)
    previous_clock = attempts[-2]["clock_at_end"] if len(attempts) > 1 else None  # None: a new run, or unknown
    tta = TimeToTarget(m.target_accuracy, prior_seconds=previous_clock, stop_at_target=m.stop_at_target, origin=origin,
                       phases=phases, untimed_warmup=m.untimed_warmup_steps > 0)
    data_wait = DataWait(m.warmup_steps, profiler=phases) if m.per_step else None
    divergence = DivergenceGuard(m.divergence_check_every or log_every) if m.per_step else None
    host_syncs = HostSyncCount(m.warmup_steps, counter="sentinel" if m.sync_sentinel else "auto")
    resources = ResourceUsage(m.warmup_steps, target=m.target_accuracy)
    env = EnvironmentInfo()  # the config sits at the record's top level
    loggers = build_loggers(cfg, run_id, run_dir, restart=len(attempts) - 1)

    def record_dead_rank(rank: int, how: str) -> None:  # from the watchdog's thread, before it ends the job
        logged = ErrorLog.read(run_dir).get(rank)  # a rank that raised logged its exception before it exited
        error = f"{f'rank {rank}: {logged}' if logged else how}; the job was stopped"
        attempts[-1] |= {"ended_at": now(), "outcome": "failed", "error": error}
        write_record(run_dir, new_record(cfg, run_id, "failed", started_at=started, error=error,
                                         failed_rank=rank, restarts=len(attempts) - 1, attempts=attempts))

    watchdog, error_log = RankWatchdog(record_dead_rank), ErrorLog(run_dir)
    # warm-up first; a step's sync count starts before any other callback's hook, an epoch's after their epoch starts
    measurements = [c for c in (warmup, host_syncs, tta, throughput, resources, data_wait, divergence, env) if c]
    callbacks = [*measurements, LearningRateMonitor(logging_interval="step"),
                 ThrottledRichProgressBar() if sys.stdout.isatty() else LogLineProgress(), error_log,
                 ReleaseRequeueSignal(), *([DataEpoch()] if cfg.data.alternating_flip else []), host_syncs.epoch_start()]
    trainer = build_trainer(cfg.trainer, run_dir, callbacks, loggers, watchdog=watchdog, log_every_n_steps=log_every,
                            profiler=phases)

    error, failed_rank, failed_node, accuracy, requeued, outcome = None, None, None, {}, False, None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=None if lightning_finds_it else resumed_from)
        discard_hpc_checkpoints(trainer, run_dir)
        if cfg.trainer.checkpoint and trainer.current_epoch % cfg.trainer.checkpoint_every_n_epochs:
            trainer.save_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # the final weights, off every clock
        accuracy = _accuracies(tta.curve, trainer)
        if trainer.interrupted:
            error = "interrupted (KeyboardInterrupt or SIGTERM) before the last epoch"
        elif cfg.data.protocol == "published":  # its validations were on the test set, the last one with the final weights
            accuracy["test"] = accuracy["final_val"]
        elif cfg.test:
            accuracy["test"] = trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/acc"]
    except SIGTERMException:  # Slurm requeued the job (after Lightning's SIGUSR1 checkpoint or not), cancelled it or timed out
        close_wandb_after_sigterm(loggers)  # SIGTERM reached W&B's service process too
        if hpc_checkpoint(run_dir) not in (None, resumed_from):
            requeued, outcome = True, "requeued"
        elif requeued_by_slurm():
            requeued, outcome = True, "preempted"
            rank_zero_info(f"cifarbench: attempt preempted: Slurm requeued job {os.environ['SLURM_JOB_ID']}; the next "
                           "attempt resumes from the newest checkpoint")
        else:
            error = "SIGTERM (cancelled, or out of time) with no new checkpoint to resume from"
    except Exception as err:  # the record says what failed; the CLI turns it into one line and exit 1
        error_log.write(trainer.global_rank, err)  # unless its on_exception already did (inside trainer.fit)
        failed_rank, failed_node, error = root_cause(run_dir, trainer.global_rank, trainer.world_size, err,
                                                     env.summary.get("ranks", []))
        if failed_rank == 0 and trainer.global_rank == first_survivor(env.summary.get("ranks", []), failed_node):
            mark_abandoned(run_dir, error, failed_rank=0, failed_node=failed_node)  # rank 0 cannot write it

    status = "requeued" if requeued else final_status(error, bool(divergence and divergence.step is not None),
                                                                 tta.reached is not None)
    attempts[-1] |= {"ended_at": now(), "outcome": outcome or status, "error": error, "clock_at_end": tta.clock()}
    record = new_record(cfg, run_id, status, started_at=started, error=error, failed_rank=failed_rank,
                        failed_node=failed_node, restarts=len(attempts) - 1, attempts=attempts, scaling=scaling,
                        divergence=divergence.summary if divergence else PER_STEP_OFF,
                        environment=env.summary, warmup=warmup.summary,
                        throughput=throughput.summary, time_to_target=tta.summary, measure=host_syncs.summary,
                        resources=resources.summary | {"cost": cost(m.cost_per_gpu_hour, trainer.world_size,
                                                                    throughput.summary.get("images_per_sec"),
                                                                    tta.summary["clocks"]["mlperf"]["seconds"])},
                        data_wait=data_wait.summary if data_wait else PER_STEP_OFF,
                        accuracy=accuracy, curve=tta.curve,
                        lr_find=found_lr and {k: v for k, v in found_lr.items() if k not in ("lr", "loss")},
                        model={"parameters": count_parameters(module.net),
                               "forward_flops_per_image": flops_per_image(cfg.model),
                               "train_flops_per_image": throughput.train_flops_per_image})
    path = run_dir / "record.json"
    if trainer.is_global_zero:
        write_record(run_dir, record)
        if not requeued:  # a requeued run's W&B run goes on in the next attempt
            finish_wandb(loggers, record, write_training_curves(run_dir, Console()))
    return path, record


def root_cause(run_dir: Path, rank: int, world_size: int, err: Exception,
               ranks: list[dict[str, Any]]) -> tuple[int, Optional[str], str]:
    """(rank, its node, error) of what made the job fail: another rank's logged exception, else a peer that this
    rank's failed collective names (a task killed, a node lost: nothing was left to log), else this rank's own
    error.

    A peer's death fails this rank's next collective within moments, so it waits up to 2 s for the peer's log;
    meanwhile, on one machine, the RankWatchdog sees a peer that died without one, records it and ends the job.
    """
    hosts = {r["rank"]: r["host"] for r in ranks}
    for _ in range(20):
        other = sorted((r, text) for r, text in ErrorLog.read(run_dir).items() if r != rank)
        if other:
            return other[0][0], hosts.get(other[0][0]), f"rank {other[0][0]}: {other[0][1]} (rank {rank} then: {type(err).__name__})"
        if world_size == 1:
            break
        time.sleep(0.1)
    lost = lost_peer(err, rank, ranks)
    if lost is not None:
        return lost["rank"], lost["host"], (f"rank {lost['rank']} on {lost['host']} was lost: rank {rank}'s "
                                            f"collective failed with {error_line(err)}")
    return rank, hosts.get(rank), error_line(err)


# how gloo names the peer of a connection that was closed or reset: "... [10.213.0.12]:41527"
PEER_ADDRESS = re.compile(r"\[([0-9a-fA-F.:]+)\]:\d+")


def lost_peer(err: Exception, rank: int, ranks: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The one other rank at an address ``err`` names, from the ranks table EnvironmentInfo gathered at setup;
    None where the error names no peer, or an address several ranks share (one node, several ranks)."""
    for address in PEER_ADDRESS.findall(str(err)):
        peers = [r for r in ranks if r["address"] == address and r["rank"] != rank]
        if len(peers) == 1:
            return peers[0]
    return None


def first_survivor(ranks: list[dict[str, Any]], lost_node: Optional[str]) -> Optional[int]:
    """The lowest rank on another node than the lost one: it writes the record rank 0 could not."""
    return min((r["rank"] for r in ranks if r["rank"] != 0 and r["host"] != lost_node), default=None)


def launched_by_rank_zero() -> bool:
    """A DDP worker that our rank 0 started (strategy ddp on one machine), and so inherited the decisions rank 0
    handed over in RUN_ID_VARIABLE and RESUME_VARIABLE. Not srun's tasks (started by Slurm, all at once), and
    not a rank-0 or lone process, which decide for themselves whatever a parent left in their environment."""
    return rank_zero_only.rank != 0 and not SLURMEnvironment.detect()


def resolve_resume(run_dir: Path, run_id: str) -> tuple[Optional[Path], bool]:
    """The checkpoint to resume from, decided once by the launching process and inherited by the DDP workers
    it starts (which see the record it has already rewritten)."""
    if launched_by_rank_zero() and RESUME_VARIABLE in os.environ:
        value = os.environ[RESUME_VARIABLE]
        return (Path(value[1:]), value[0] == "1") if value else (None, False)
    checkpoint, lightning_finds_it = resume_checkpoint(run_dir, run_id)
    os.environ[RESUME_VARIABLE] = f"{int(lightning_finds_it)}{checkpoint}" if checkpoint else ""
    return checkpoint, lightning_finds_it


def resolve_run_id(cfg: RunConfig) -> str:
    """The configured id, else the one the launching process chose (DDP workers), else a new one."""
    run_id = cfg.output.run_id or (os.environ.get(RUN_ID_VARIABLE) if launched_by_rank_zero() else None)
    if not run_id:
        run_id = f"{cfg.output.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.environ[RUN_ID_VARIABLE] = run_id
    return run_id


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


def at_scale(cfg: RunConfig) -> tuple[RunConfig, dict[str, Any]]:
    """(the config each process trains with, the record's ``scaling``): each device's batch from data.batch_size
    and data.batch_scaling, and max_lr for the job's global batch by optim.lr_scaling, so that runs over
    different device counts say, and compare, like with like. The record keeps the config as given."""
    world = cfg.trainer.world_size()
    device_batch = cfg.data.device_batch(world)
    multiplier = cfg.optim.lr_multiplier(device_batch * world, cfg.data.batch_size)
    trained = replace(cfg, data=replace(cfg.data, batch_size=device_batch, batch_scaling="weak"),
                      optim=replace(cfg.optim, max_lr=cfg.optim.max_lr * multiplier, lr_scaling="none"))
    return trained, {"batch_scaling": cfg.data.batch_scaling, "devices": world, "device_batch": device_batch,
                     "global_batch": device_batch * world, "lr_scaling": cfg.optim.lr_scaling,
                     "lr_multiplier": multiplier, "max_lr": trained.optim.max_lr}


def train_steps_per_epoch(cfg: RunConfig) -> int:
    world = cfg.trainer.world_size()
    return max(cfg.data.train_images() // world // cfg.data.batch_size, 1)


def eval_batch_sizes(cfg: RunConfig) -> list[int]:
    """Batch sizes a rank's validation runs: full batches and the last, shorter one (shapes torch.compile sees)."""
    world = cfg.trainer.world_size()
    per_rank = max(-(-cfg.data.val_images() // world), 1)
    return [min(cfg.data.batch_size, per_rank), per_rank % cfg.data.batch_size or cfg.data.batch_size]


def _accuracies(curve: list[dict], trainer: L.Trainer) -> dict[str, Optional[float]]:
    """Read right after fit: ``trainer.test`` replaces the callback metrics."""
    train_acc = trainer.callback_metrics.get("train/acc_epoch")
    return {"best_val": max((p["val_acc"] for p in curve), default=None),
            "final_val": curve[-1]["val_acc"] if curve else None,
            "final_val_no_tta": curve[-1].get("val_acc_no_tta") if curve else None,  # set when model.tta is on
            "final_train": float(train_acc) if train_acc is not None else None,
            "test": None, "epochs_completed": trainer.current_epoch, "steps_completed": trainer.global_step}
