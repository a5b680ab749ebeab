"""A run's attempts: a run that was preempted, requeued or crashed resumes as the same run.

Under Slurm Lightning does the mechanics: on SIGUSR1 (``#SBATCH --signal=SIGUSR1@90``) it saves
``<run dir>/hpc_ckpt_<n>.ckpt`` and runs ``scontrol requeue``, and the restarted job resumes from the
newest of those files by itself (that attempt's outcome: ``requeued``). Slurm's own requeue gives no warning
(``scontrol requeue``, preemption with PreemptMode=REQUEUE): SIGTERM reaches every process of the job, the
attempt ends as ``preempted`` at the next step, and the restarted job resumes from the newest good checkpoint
(``checkpoints/last.ckpt``). Elsewhere (a crash, a killed process, ``cifarbench run`` again), a run
whose record is unfinished or failed resumes from its newest checkpoint that loads. Either way the record
keeps its run id, first start time and a list of attempts, each with how it ended and the training clock
at its end, so time-to-accuracy goes on from there (queue time excluded, lost work included).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from ..record import (RECORD_NAME, RESULT_STATUSES, atomic_write_text, new_record, now, read_record, this_process,
                      write_record)

if TYPE_CHECKING:
    from ..config import RunConfig

RUN_ID_VARIABLE = "CIFARBENCH_RUN_ID"  # inherited by the DDP worker processes Lightning launches
RESUME_VARIABLE = "CIFARBENCH_RESUME_FROM"  # likewise: "" (new run) or <1 if Lightning finds it itself, else 0><path>

HPC_CHECKPOINT = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")  # Lightning's naming (CheckpointConnector.hpc_save_path)


def hpc_checkpoint(run_dir: Path) -> Optional[Path]:
    """The newest checkpoint Lightning saved on SIGUSR1, which a run under Slurm resumes from."""
    found = [(int(m.group(1)), p) for p in run_dir.glob("hpc_ckpt_*.ckpt") if (m := HPC_CHECKPOINT.match(p.name))]
    return max(found)[1] if found else None


def own_record(run_dir: Path, run_id: str) -> Optional[dict[str, Any]]:
    """The record of this run id in ``run_dir``, if there is one."""
    try:
        record = read_record(run_dir / RECORD_NAME)
    except (OSError, ValueError):
        return None
    return record if record.get("run_id") == run_id else None


def unfinished_record(run_dir: Path, run_id: str) -> Optional[dict[str, Any]]:
    """The record of this run id if it has no result yet (running, requeued or failed), else None."""
    record = own_record(run_dir, run_id)
    return record if record is not None and record.get("status") not in RESULT_STATUSES else None


def finished_record(run_dir: Path, run_id: str) -> Optional[dict[str, Any]]:
    """The record of this run id if it holds a result (completed, not-reached, diverged): never trained again
    nor overwritten, even by a restart of its own Slurm job (a node lost while W&B synced, an admin's requeue)."""
    record = own_record(run_dir, run_id)
    return record if record is not None and record.get("status") in RESULT_STATUSES else None


def requeued_by_slurm() -> bool:
    """Whether the SIGTERM this process got is Slurm requeueing its job (``scontrol requeue``, preemption with
    PreemptMode=REQUEUE, a node failure): Slurm counts the restart before it signals, so the job's ``Restarts``
    is already past this attempt's ``SLURM_RESTART_COUNT``. ``scancel`` and the time limit leave it as it was."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False
    try:
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    restarts = re.search(r"\bRestarts=(\d+)", shown)
    return bool(restarts) and int(restarts.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT", "0"))


def newest_good_checkpoint(run_dir: Path) -> Optional[Path]:
    """The most recently written checkpoint of the run that loads (a truncated or foreign file is passed over)."""
    candidates = sorted(run_dir.glob("checkpoints/*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            return path
        except Exception:  # noqa: BLE001 - any unreadable file is simply not a checkpoint to resume from
            continue
    return None


def resume_checkpoint(run_dir: Path, run_id: str) -> tuple[Optional[Path], bool]:
    """(checkpoint, Lightning finds it itself). Under Slurm, Lightning resumes from the newest hpc_ckpt on its
    own (its rule); otherwise an unfinished run resumes from its newest good checkpoint, passed to fit."""
    if SLURMEnvironment.detect() and (hpc := hpc_checkpoint(run_dir)) is not None:
        return hpc, True
    if unfinished_record(run_dir, run_id) is not None:
        return newest_good_checkpoint(run_dir), False
    return None, False


def earlier_attempts(run_dir: Path, run_id: str, resuming: bool) -> tuple[Optional[str], list[dict[str, Any]]]:
    """(first start time, attempts) of the unfinished run this process resumes; (None, []) for a new run.

    An attempt killed before it could write its end (SIGKILL, node failure) has no ``clock_at_end``:
    the resumed clock then starts from the checkpoint's, and the work lost after it is not counted.
    """
    record = unfinished_record(run_dir, run_id) if resuming else None
    if record is None:
        return None, []
    attempts = list(record.get("attempts") or [])
    if attempts and attempts[-1].get("outcome") == "running" and _restarted_job(attempts[-1]):
        # killed by Slurm's requeue before it could write its end (SIGKILL after the grace period)
        attempts[-1] |= {"outcome": "preempted", "error": "requeued by Slurm; the attempt could not write its end"}
    return record.get("started_at"), attempts


def _restarted_job(attempt: dict[str, Any]) -> bool:
    """The attempt was an earlier start of this very Slurm job (same id, lower restart count)."""
    return (attempt.get("slurm_job_id") is not None and attempt["slurm_job_id"] == os.environ.get("SLURM_JOB_ID")
            and attempt.get("slurm_restart_count", 0) < int(os.environ.get("SLURM_RESTART_COUNT", "0")))


def new_attempt(started_at: str, resumed_from: Optional[Path]) -> dict[str, Any]:
    return {"slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "started_at": started_at, "resumed_from": resumed_from.name if resumed_from else None,
            "ended_at": None, "outcome": "running", "error": None, "clock_at_end": None}


def discard_hpc_checkpoints(trainer, run_dir: Path) -> None:
    """Removes the preemption checkpoints of a run whose fit has finished, on every rank's say-so.

    They are stale then, and harmful: under Slurm, Lightning's ``trainer.test()`` with no ``ckpt_path``
    restores the newest ``hpc_ckpt_*`` (weights and callback state) instead of testing the trained model.
    """
    if trainer.is_global_zero:
        for path in run_dir.glob("hpc_ckpt_*.ckpt"):
            path.unlink(missing_ok=True)
    trainer.strategy.barrier("cifarbench-discard-hpc-checkpoints")


def launched_by_rank_zero() -> bool:
    """A DDP worker that our rank 0 started (strategy ddp on one machine), and so inherited the decisions rank 0
    handed over in RUN_ID_VARIABLE and RESUME_VARIABLE. Not srun's tasks (started by Slurm, all at once), and
    not a rank-0 or lone process, which decide for themselves whatever a parent left in their environment."""
    return rank_zero_only.rank != 0 and not SLURMEnvironment.detect()


def resolve_resume(run_dir: Path, run_id: str, resume: bool = True) -> tuple[Optional[Path], bool]:
    """The checkpoint to resume from (none without ``resume``: a fresh start), decided once by the launching
    process and inherited by the DDP workers it starts (which see the record it has already rewritten)."""
    if launched_by_rank_zero() and RESUME_VARIABLE in os.environ:
        value = os.environ[RESUME_VARIABLE]
        return (Path(value[1:]), value[0] == "1") if value else (None, False)
    checkpoint, lightning_finds_it = resume_checkpoint(run_dir, run_id) if resume else (None, False)
    os.environ[RESUME_VARIABLE] = f"{int(lightning_finds_it)}{checkpoint}" if checkpoint else ""
    return checkpoint, lightning_finds_it


def resolve_run_id(cfg: "RunConfig") -> str:
    """The configured id, else the one the launching process chose (DDP workers), else a new one."""
    run_id = cfg.output.run_id or (os.environ.get(RUN_ID_VARIABLE) if launched_by_rank_zero() else None)
    if not run_id:
        run_id = f"{cfg.output.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    os.environ[RUN_ID_VARIABLE] = run_id
    return run_id


@dataclass
class Attempt:
    """This process's attempt at a run: where it resumes from, and the run's attempts so far (rank 0 keeps them;
    the other ranks' list holds only their own)."""

    run_id: str
    run_dir: Path
    resumed_from: Optional[Path]
    lightning_finds_it: bool  # under Slurm Lightning resumes from its hpc checkpoint by itself
    started: str  # the run's first start
    attempts: list[dict[str, Any]]

    @property
    def restarts(self) -> int:
        return len(self.attempts) - 1

    @property
    def previous_clock(self) -> Optional[float]:
        """The mlperf clock at the end of the previous attempt; None for a new run, or where it is unknown."""
        return self.attempts[-2]["clock_at_end"] if len(self.attempts) > 1 else None

    def end(self, outcome: str, error: Optional[str], clock: Optional[float] = None) -> None:
        self.attempts[-1] |= {"ended_at": now(), "outcome": outcome, "error": error, "clock_at_end": clock}

    def record(self, cfg: "RunConfig", status: str, **parts: Any) -> dict[str, Any]:
        """The run's record with this attempt's bookkeeping (start, restarts, attempts) and ``parts``."""
        return new_record(cfg, self.run_id, status, started_at=self.started, restarts=self.restarts,
                          attempts=self.attempts, **parts)


def begin_attempt(cfg: "RunConfig", run_id: str, run_dir: Path) -> Attempt:
    """Decides what this attempt resumes, and (rank 0) writes the run's config and its record as running."""
    resumed_from, lightning_finds_it = resolve_resume(run_dir, run_id, cfg.output.resume)
    is_zero = rank_zero_only.rank == 0
    first_started, attempts = earlier_attempts(run_dir, run_id, resumed_from is not None) if is_zero else (None, [])
    attempts.append(new_attempt(now(), resumed_from))
    attempt = Attempt(run_id, run_dir, resumed_from, lightning_finds_it, first_started or now(), attempts)
    if is_zero:
        for stale in run_dir.glob("error-rank*.log"):  # an earlier attempt's
            stale.unlink()
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
        write_record(run_dir, attempt.record(cfg, "running", process=this_process()))
    return attempt


def sigterm_outcome(run_dir: Path, resumed_from: Optional[Path]) -> tuple[Optional[str], Optional[str]]:
    """(the attempt's outcome, the run's error) after a SIGTERM: requeued after Lightning's SIGUSR1 checkpoint,
    preempted by Slurm's own requeue, or cancelled / out of time with nothing to resume from."""
    if hpc_checkpoint(run_dir) not in (None, resumed_from):
        return "requeued", None
    if requeued_by_slurm():
        rank_zero_info(f"cifarbench: attempt preempted: Slurm requeued job {os.environ['SLURM_JOB_ID']}; the next "
                       "attempt resumes from the newest checkpoint")
        return "preempted", None
    return None, "SIGTERM (cancelled, or out of time) with no new checkpoint to resume from"
