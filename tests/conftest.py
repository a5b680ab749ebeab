"""Shared fixtures: a tiny config, the real CIFAR-10 tarball beside the repo, and the installed CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

if os.environ.get("LOCAL_RANK", "0") != "0":
    # Lightning's DDP launcher starts ranks > 0 by re-running the command line: here, pytest's, which would run a
    # second whole suite beside this one. A DDP fit in a test goes through the CLI (run_cli) instead.
    pytest.exit("a DDP worker re-ran pytest: run DDP fits in tests through run_cli", returncode=3)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_SILENT", "true")

from cifarbench.config import DataConfig, MeasureConfig, ModelConfig, OutputConfig, RunConfig, TrainerConfig

REPO = Path(__file__).resolve().parents[1]
CIFAR_TARBALL = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLI = str(Path(sys.executable).parent / "cifarbench")


def copy_tree(dest: Path) -> Path:
    """The working tree's files that git does not ignore (no .venv, no results), copied into ``dest``: what a fresh
    clone, or the GPU machine, gets."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def tiny_config(out_dir: Path, **sections) -> RunConfig:
    """A config that trains for seconds on CPU: 8-wide CustomResNet on 1,200 generated images."""
    cfg = RunConfig(
        model=ModelConfig(width=8),
        data=DataConfig(source="synthetic", synthetic_train_size=1200, synthetic_test_size=200, val_size=200,
                        batch_size=100, num_workers=0),
        trainer=TrainerConfig(accelerator="cpu", epochs=2, checkpoint=False),
        measure=MeasureConfig(target_accuracy=0.3, warmup_steps=2),
        output=OutputConfig(dir=str(out_dir), wandb="disabled"),
    )
    for name, changes in sections.items():
        cfg = replace(cfg, **{name: replace(getattr(cfg, name), **changes)}) if isinstance(changes, dict) else replace(cfg, **{name: changes})
    return cfg


@pytest.fixture(autouse=True)
def no_wandb_service_for_child_processes():
    """A W&B run made in this process leaves its service's address in the environment (WANDB_SERVICE), which every
    later child process inherits: a CLI run, a Slurm job in another network namespace, another user's process would
    all try to reach that service. Each test's children start their own."""
    yield
    os.environ.pop("WANDB_SERVICE", None)


@pytest.fixture
def cifar_tarball() -> Path:
    if not CIFAR_TARBALL.exists():
        pytest.fail(f"the real CIFAR-10 tarball is missing at {CIFAR_TARBALL} (../shared/data beside the repo)")
    return CIFAR_TARBALL


def run_cli(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs the installed console script; ``.stdout`` holds stdout and stderr interleaved as a user sees them."""
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          cwd=REPO, env=full_env)


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stdout.strip().splitlines()[-1]


# ---- the local Slurm cluster (scripts/slurm-start.sh)

@pytest.fixture(scope="session")
def slurm_cluster():
    """The local cluster of two nodes: the one `make test` started (SLURM_CONF set), else one started here and
    stopped after."""
    if os.environ.get("SLURM_CONF") and subprocess.run(["sinfo"], capture_output=True).returncode == 0:
        yield os.environ["SLURM_CONF"]
        return
    state = Path(tempfile.mkdtemp(prefix="cifarbench-slurm-", dir="/tmp"))  # munged must reach it: not under pytest's 0700 dirs
    started = subprocess.run(["bash", str(REPO / "scripts/slurm-start.sh"), "--nodes", "2", str(state)],
                             capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")
    yield os.environ["SLURM_CONF"]
    subprocess.run(["bash", str(REPO / "scripts/slurm-stop.sh"), str(state)], check=False)
    del os.environ["SLURM_CONF"]


def wait_for_jobs(job_ids: list[str], timeout: float) -> dict[str, str]:
    """Each job's final state, polled with scontrol (sbatch --wait backs off up to 10 s between polls)."""
    deadline, states = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        states = {}
        for job in job_ids:
            out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
            states[job] = next((w.split("=")[1] for w in out.split() if w.startswith("JobState=")), "UNKNOWN")
        if all(s in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL") for s in states.values()):
            return states
        time.sleep(2)
    raise AssertionError(f"jobs still not done after {timeout}s: {states}")


def job_field(job: str, name: str) -> str:
    """One field of `scontrol show job` (JobState, Restarts, NodeList, Reason, ...); '' when absent."""
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith(f"{name}=")), "")


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def checkpointed_epochs(run_dir: Path) -> int:
    """Epochs of the run's newest checkpoint (Lightning's checkpoint holds its epoch count)."""
    import torch

    try:
        return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["epoch"]
    except (OSError, RuntimeError, EOFError, KeyError):
        return 0


def requeue_after_epoch(job: str, run_dir: Path, epoch: int) -> None:
    """`scontrol requeue` of a running job once its run has checkpointed ``epoch``; returns when Slurm holds it
    pending for its first restart (the caller releases it: Slurm 22.05 would hold it ~2 minutes)."""
    wait_until(lambda: checkpointed_epochs(run_dir) >= epoch, 240,
               f"no checkpoint of epoch {epoch}: {job_field(job, 'JobState')}")
    subprocess.run(["scontrol", "requeue", job], check=True)
    wait_until(lambda: job_field(job, "JobState") == "PENDING" and job_field(job, "Restarts") == "1", 120,
               f"not requeued: {job_field(job, 'JobState')}")
