"""What the numbers were measured on: hardware, clocks and modes, drivers, library versions, code revision,
scheduler ids and the environment variables that change speed; and the callback that records it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
import torch._dynamo  # its config says whether DDPOptimizer splits compiled graphs (the record keeps it)
import torch.distributed as dist

from .peak_flops import precision_flags

LIBRARIES = ("torch", "torchvision", "lightning", "torchmetrics", "albumentations", "wandb", "numpy", "ffcv", "cifarbench")
SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                   "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_JOB_PARTITION", "SLURM_CLUSTER_NAME")
# A copied tree (the GPU machine gets no .git) carries its revision in this file: scripts/write-revision.sh
REVISION_FILE = Path(__file__).resolve().parents[3] / "REVISION.json"


def collect_environment() -> dict[str, Any]:
    return {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "executable": sys.executable,  # which environment ran it (a cluster's venv, conda env or module)
        "cpu": {"model": cpu_model(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                # two CPUs of one model name can differ ~100x in bf16 speed: the vector units torch uses say which
                "capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_native_bf16()},
        "gpu": gpu_info(),
        "versions": {name: _version(name) for name in LIBRARIES},
        "git": git_revision(),
        "slurm": {k: os.environ[k] for k in SLURM_VARIABLES if k in os.environ} or None,
        "variables": {k: v for k, v in sorted(os.environ.items())
                      if k.startswith("NCCL_") or k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "VIRTUAL_ENV",
                                                         "CONDA_PREFIX", "CONDA_DEFAULT_ENV")},
        "precision_flags": precision_flags(),
    }


def cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def cpu_native_bf16() -> bool:
    """Whether the CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX, Arm's BF16): without it torch emulates
    bf16 matrix products, several to ~100 times slower than fp32."""
    try:
        flags = {flag for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith(("flags", "Features")) for flag in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


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
        "devices": nvml_devices(),
    }


def nvml_devices() -> Optional[list[dict[str, Any]]]:
    """Per visible GPU (nvidia-ml-py): the clocks, power limit and modes that decide its speed; None without NVML.

    A GPU at a lowered application clock or power cap, in a MIG slice, or with ECC toggled is a different
    device for benchmarking purposes: records say which one the numbers came from."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no nvidia-ml-py, no driver: not an error for a record
        return None
    devices = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            devices.append({
                "name": _nvml(pynvml.nvmlDeviceGetName, handle),
                "sm_clock_mhz": _nvml(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
                "sm_clock_max_mhz": _nvml(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM),
                "memory_clock_mhz": _nvml(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM),
                "power_limit_w": _scaled(_nvml(pynvml.nvmlDeviceGetEnforcedPowerLimit, handle), 1e-3),
                "persistence_mode": _nvml(pynvml.nvmlDeviceGetPersistenceMode, handle),
                "mig_mode": _first(_nvml(pynvml.nvmlDeviceGetMigMode, handle)),
                "ecc_mode": _first(_nvml(pynvml.nvmlDeviceGetEccMode, handle)),
            })
    finally:
        pynvml.nvmlShutdown()
    return devices


def _nvml(query, *args):
    """One NVML query; None where the device or driver does not support it."""
    try:
        return query(*args)
    except Exception:
        return None


def _first(pair):
    """NVML's (current, pending) mode pairs: the current one."""
    return pair[0] if isinstance(pair, (list, tuple)) else pair


def _scaled(value, factor: float):
    return None if value is None else value * factor


def git_revision() -> dict[str, Any]:
    """Commit and dirty flag of the checkout cifarbench runs from; in a copied tree without ``.git``, those
    that scripts/write-revision.sh wrote into REVISION.json before the copy; else None."""
    here = str(Path(__file__).resolve().parent)
    commit = _run(["git", "-C", here, "rev-parse", "HEAD"])
    if commit is not None:
        status = _run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"])
        return {"commit": commit, "dirty": bool(status), "source": "git"}
    try:
        written = json.loads(REVISION_FILE.read_text())
        return {"commit": written["commit"], "dirty": written["dirty"], "source": REVISION_FILE.name}
    except (OSError, ValueError, KeyError):
        return {"commit": None, "dirty": None, "source": None}


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


class EnvironmentInfo(L.Callback):
    """Collects the environment at ``setup`` (after the process group exists, and after the Trainer set
    cuDNN's benchmark switch), with the hostnames of every rank."""

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = config
        self.summary: dict[str, Any] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.summary:
            return
        env = collect_environment()
        ranks = [{"rank": 0, "host": env["hostname"], "address": host_address(env["hostname"])}]
        backend = None
        if dist.is_available() and dist.is_initialized():  # once, before training: which rank ran where
            backend = dist.get_backend()  # nccl on CUDA, gloo on CPUs: what the collectives really ran on
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, {"rank": dist.get_rank(), "host": env["hostname"],
                                           "address": host_address(env["hostname"])})
        env |= {"world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
                "devices_per_node": trainer.num_devices, "accelerator": type(trainer.accelerator).__name__,
                "strategy": lightning_class_name(trainer.strategy), "process_group_backend": backend,
                "hostnames": sorted({r["host"] for r in ranks}), "ranks": ranks, "config": self.config,
                # compile under DDP: dynamo's DDPOptimizer splits the graph at DDP's buckets when this is on
                "compile_optimize_ddp": torch._dynamo.config.optimize_ddp}
        self.summary = env


def host_address(hostname: str) -> Optional[str]:
    """The address ``hostname`` resolves to on its own node: the one its peers reach it at (gloo and NCCL bind to
    it), so a peer's error that names only an address can be traced to a rank and a node."""
    try:
        return socket.gethostbyname(hostname)
    except OSError:
        return None


def lightning_class_name(obj: object) -> str:
    """The Lightning class ``obj`` is or extends (WatchedDDPStrategy reports as the DDPStrategy it runs)."""
    return next(c.__name__ for c in type(obj).__mro__ if c.__module__.startswith("lightning."))
