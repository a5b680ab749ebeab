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
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment

from ..record import RECORD_NAME, RESULT_STATUSES, read_record

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
