"""What the numbers were measured on: hardware, drivers, library versions, code revision, scheduler ids."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Optional

import torch

LIBRARIES = ("torch", "torchvision", "lightning", "torchmetrics", "albumentations", "wandb", "numpy", "ffcv", "cifarbench")
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                   "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_JOB_PARTITION", "SLURM_CLUSTER_NAME")


def collect_environment() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": {"model": cpu_model(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "gpu": gpu_info(),
        "versions": {name: _version(name) for name in LIBRARIES},
        "git": git_revision(),
        "slurm": {k: os.environ[k] for k in SLURM_VARIABLES if k in os.environ} or None,
    }


def cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_info() -> Optional[dict[str, Any]]:
    if not torch.cuda.is_available():
        return None
    return {
        "count": torch.cuda.device_count(),
        "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "driver": _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], first_line=True),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None,
    }


def git_revision() -> dict[str, Any]:
    """Commit and dirty flag of the checkout cifarbench runs from (None outside a git checkout)."""
    here = str(Path(__file__).resolve().parent)
    commit = _run(["git", "-C", here, "rev-parse", "HEAD"])
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(status)}


def _version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], first_line: bool = False) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if first_line and out else out
