"""One training run, as its recipe: refuse or return a finished record; prepare; build the module, the data, the
measurements and the Trainer; train; say how it ended; write the record."""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from rich.console import Console

from ..callbacks.error_log import ErrorLog
from ..callbacks.progress import LogLineProgress, ThrottledRichProgressBar
from ..callbacks.requeue_signal import ReleaseRequeueSignal
from ..checks import check_config, slow_precision
from ..cluster.requeue import (Attempt, begin_attempt, discard_hpc_checkpoints, finished_record, resolve_run_id,
                               sigterm_outcome)
from ..cluster.signals import UserInterrupt
from ..cluster.watchdog import RankWatchdog
from ..config import RunConfig
from ..data import DataEpoch, build_datamodule
from ..data.sources import prepare_source
from ..loggers import build_loggers, close_wandb_after_sigterm, finish_wandb
from ..measure.peak_flops import apply_math_mode
from ..record import write_record
from ..tools.curves import write_training_curves
from ..tools.lr_find import lr_find
from .failures import attribute_failure
from .measurements import Measurements, build_measurements
from .module import CifarClassifier
from .outcome import Outcome, accuracies, fit_record
from .trainer import build_trainer

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
    cfg, found_lr = prepare(cfg, run_dir)
    attempt = begin_attempt(cfg, run_id, run_dir)

    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    apply_math_mode(cfg.trainer.matmul_precision)
    trained, scaling = at_scale(cfg)
    module = CifarClassifier(cfg.model, trained.optim, cfg.trainer.channels_last, cfg.trainer.compile)
    datamodule = build_datamodule(trained.data, seed=cfg.trainer.seed)
    log_every = cfg.trainer.log_every_n_steps or min(50, train_steps_per_epoch(trained))
    measurements = build_measurements(cfg, trained, run_id, run_dir, origin, attempt.previous_clock, log_every)
    loggers = build_loggers(cfg, run_id, run_dir, restart=attempt.restarts)
    error_log = ErrorLog(run_dir)
    trainer = build_trainer(cfg.trainer, run_dir, run_callbacks(cfg, measurements, error_log), loggers,
                            watchdog=RankWatchdog(dead_rank_recorder(cfg, attempt)), log_every_n_steps=log_every,
                            profiler=measurements.phases)

    outcome = train(cfg, trainer, module, datamodule, attempt, measurements, error_log, loggers)
    record = fit_record(cfg, attempt, outcome, measurements, module.net, scaling, found_lr, trainer.world_size)
    if trainer.is_global_zero:
        write_record(run_dir, record)
        if not outcome.requeued:  # a requeued run's W&B run goes on in the next attempt
            finish_wandb(loggers, record, write_training_curves(run_dir, Console()))
    return run_dir / "record.json", record


def prepare(cfg: RunConfig, run_dir: Path) -> tuple[RunConfig, Optional[dict[str, Any]]]:
    """Refuses what cannot run, warns about what runs slowly, makes the data set ready and, with
    ``lr_find.enabled`` (1-device runs only: checked), runs the range test: the returned config trains at its
    suggestion."""
    check_config(cfg)
    if (slow := slow_precision(cfg.trainer)) is not None:
        rank_zero_warn(slow)
    prepare_source(cfg.data)
    if not cfg.lr_find.enabled:
        return cfg, None
    found = lr_find(cfg, run_dir / "lr_find")
    return replace(cfg, optim=replace(cfg.optim, max_lr=found["suggestion"]),
                   lr_find=replace(cfg.lr_find, enabled=False)), found


def run_callbacks(cfg: RunConfig, measurements: Measurements, error_log: ErrorLog) -> list:
    """The measurements first, then logging, progress and failure bookkeeping; the sync count's epoch companion
    last (an epoch's first step is counted from after every other callback's epoch start)."""
    return [*measurements.callbacks(), LearningRateMonitor(logging_interval="step"),
            ThrottledRichProgressBar() if sys.stdout.isatty() else LogLineProgress(), error_log,
            ReleaseRequeueSignal(), *([DataEpoch()] if cfg.data.alternating_flip else []),
            measurements.host_syncs.epoch_start()]


def dead_rank_recorder(cfg: RunConfig, attempt: Attempt):
    """What the RankWatchdog calls, from its thread, when a rank died: the record says failed, and why."""
    def record_dead_rank(rank: int, how: str) -> None:
        logged = ErrorLog.read(attempt.run_dir).get(rank)  # a rank that raised logged its exception before it exited
        error = f"{f'rank {rank}: {logged}' if logged else how}; the job was stopped"
        attempt.end("failed", error)
        write_record(attempt.run_dir, attempt.record(cfg, "failed", error=error, failed_rank=rank))
    return record_dead_rank


def train(cfg: RunConfig, trainer: L.Trainer, module: CifarClassifier, datamodule, attempt: Attempt,
          measurements: Measurements, error_log: ErrorLog, loggers: list) -> Outcome:
    """Fits, writes the final checkpoint, tests; Ctrl-C ends the run as interrupted (its newest checkpoint kept: the
    same run id resumes from it), a SIGTERM becomes a requeue, a preemption or an error, any other exception the
    error of the rank that caused it."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=None if attempt.lightning_finds_it else attempt.resumed_from)
        discard_hpc_checkpoints(trainer, attempt.run_dir)
        if cfg.trainer.checkpoint and trainer.current_epoch % cfg.trainer.checkpoint_every_n_epochs:
            trainer.save_checkpoint(attempt.run_dir / "checkpoints" / "last.ckpt")  # the final weights, off every clock
        outcome = Outcome(accuracy=accuracies(measurements.time_to_target.curve, trainer))
        if trainer.interrupted:
            outcome.error = "interrupted (KeyboardInterrupt or SIGTERM) before the last epoch"
        elif cfg.data.protocol == "published":  # its validations were on the test set, the last with the final weights
            outcome.accuracy["test"] = outcome.accuracy["final_val"]
        elif cfg.test:
            outcome.accuracy["test"] = trainer.test(module, datamodule=datamodule, verbose=False)[0]["test/acc"]
        return outcome
    except SIGTERMException:  # Slurm requeued the job (after Lightning's SIGUSR1 checkpoint or not), cancelled it or timed out
        close_wandb_after_sigterm(loggers)  # SIGTERM reached W&B's service process too
        how, error = sigterm_outcome(attempt.run_dir, attempt.resumed_from)
        return Outcome(error=error, attempt=how)
    # after SIGTERMException (a SystemExit too); Ctrl-C: Lightning turns it into SystemExit(1), DDP workers killed
    except (KeyboardInterrupt, SystemExit) as err:
        if isinstance(err, SystemExit) and not UserInterrupt.seen:
            raise
        return Outcome(error=f"interrupted at epoch {trainer.current_epoch + 1}, step {trainer.global_step}",
                       attempt="interrupted")
    except Exception as err:  # the record says what failed; the CLI turns it into one line and exit 1
        error_log.write(trainer.global_rank, err)  # unless its on_exception already did (inside trainer.fit)
        failed = attribute_failure(attempt.run_dir, trainer.global_rank, trainer.world_size, err,
                                   measurements.environment.summary.get("ranks", []))
        return Outcome(failed_rank=failed[0], failed_node=failed[1], error=failed[2])


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
