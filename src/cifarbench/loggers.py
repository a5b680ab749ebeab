"""Where a run's metrics go: a CSV file in the run directory always, and W&B (offline or online) unless disabled."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Optional

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from .config import RunConfig, configuration_identity, flatten


def loggers_write_this_step(trainer) -> bool:
    """Lightning's rule for the step about to run reaching the loggers (``log_every_n_steps``, or the last step):
    the module logs its step metrics only then, and the host-sync count treats those steps apart, since the
    loggers read the metrics on the host there."""
    every = trainer.log_every_n_steps
    return every > 0 and ((trainer.global_step + 1) % every == 0 or trainer.should_stop)


class PreemptibleWandbLogger(WandbLogger):
    """Lightning's WandbLogger, closing its run cleanly when Lightning checkpoints for a Slurm requeue.

    On SIGUSR1 Lightning calls ``finalize("finished")`` (only then), saves the checkpoint and runs
    ``scontrol requeue``, upon which Slurm sends SIGTERM to every process of the job, W&B's service
    process included. A W&B call after that fails ("Connection lost") and would fail the attempt. So the
    run is finished here, while the service still runs, and the steps between the checkpoint and the
    SIGTERM (lost work, redone by the next attempt) are not logged. The next attempt resumes the run by id.

    A SIGTERM with no warning (Slurm's own requeue, ``scancel``) ends the service process at once: a logging call
    then finds it gone, and the run goes on without W&B (the CSV log and the record keep every number).
    """

    _closed_for_requeue = False

    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "finished" and self._experiment is not None:
            import wandb

            self._experiment.finish()
            wandb.teardown()  # stops the service now, so the exit after SIGTERM has nothing left to reach
            self._closed_for_requeue = True
            rank_zero_warn("W&B run closed for the Slurm requeue; nothing more is logged to it in this attempt")

    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        if self._closed_for_requeue:
            return
        try:
            super().log_metrics(metrics, step)
        except ConnectionError:
            self._closed_for_requeue = True
            rank_zero_warn("W&B's service process is gone (a SIGTERM reached the job?): nothing more is logged to "
                           "W&B in this attempt; metrics.csv and the run record go on")


def build_loggers(cfg: RunConfig, run_id: str, run_dir: Path, restart: int = 0) -> list[Logger]:
    """CSV metrics in ``<run dir>/logs/metrics.csv`` (``logs-restart<n>/`` for a resumed attempt: Lightning's
    CSVLogger deletes an existing metrics.csv) and, unless disabled, the W&B run whose id is the run id,
    continued by a resumed attempt."""
    version = f"logs-restart{restart}" if restart else "logs"
    loggers: list[Logger] = [CSVLogger(run_dir, name="", version=version)]
    if cfg.output.wandb != "disabled":
        loggers.append(PreemptibleWandbLogger(name=run_id, id=run_id, resume="allow", project=cfg.output.wandb_project,
                                              entity=cfg.output.wandb_entity, save_dir=str(run_dir),
                                              offline=cfg.output.wandb == "offline", job_type="train",
                                              config=cfg.to_dict(), **wandb_grouping(cfg)))
    return loggers


def wandb_grouping(cfg: RunConfig) -> dict[str, Any]:
    """The W&B run's group, one per configuration of a matrix as the report's rows are (the seeds of one
    configuration together: ``<output.name>/<configuration hash>``), and tags for the knobs to filter by."""
    identity = hashlib.sha1(configuration_identity(flatten(cfg.to_dict())).encode()).hexdigest()[:10]
    t = cfg.trainer
    tags = [f"model={cfg.model.name}", f"path={cfg.data.path}", f"precision={t.precision}", f"compile={t.compile}",
            f"devices={t.world_size()}", f"strategy={t.strategy}", f"optimizer={cfg.optim.optimizer}"]
    return {"group": f"{cfg.output.name}/{identity}", "tags": tags + ["channels_last"] * t.channels_last}


def close_wandb_after_sigterm(loggers: list[Logger]) -> None:
    """Lets go of W&B after a SIGTERM, which reached its service process too: no more calls to it, and its exit
    hook, which would print a connection traceback on the way out, is run now and quietly. What the service
    wrote before stays in the offline run directory; the next attempt continues the run by id."""
    for logger in loggers:
        if isinstance(logger, PreemptibleWandbLogger) and logger._experiment is not None:
            import wandb

            logger._closed_for_requeue = True
            try:
                wandb.teardown()
            except Exception:  # noqa: BLE001 - the service is gone: nothing to tear down, nothing to report
                pass


def finish_wandb(loggers: list[Logger], record: dict[str, Any], images: Optional[dict[str, Path]] = None) -> None:
    """The training plots and headline numbers into the W&B run, then close it so its files are complete."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and not getattr(logger, "_closed_for_requeue", False):
            import wandb

            if images:
                logger.experiment.log({f"plots/{name}": wandb.Image(str(path)) for name, path in images.items()})
            clocks = record["time_to_target"].get("clocks") or {}
            logger.experiment.summary.update({
                "status": record["status"],
                **{f"time_to_target/{name}": clock["seconds"] for name, clock in clocks.items()},
                "images_per_sec": record["throughput"].get("images_per_sec"),
                "best_val_acc": record["accuracy"].get("best_val"),
                "test_acc": record["accuracy"].get("test"),
                "data_stall_fraction": record["data_wait"].get("stall_fraction"),
                "data_fetch_fraction": record["data_wait"].get("fetch_fraction"),
                "mfu": record["throughput"].get("mfu"),
            })
            logger.experiment.finish()


