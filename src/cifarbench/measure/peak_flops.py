"""Peak FLOP/s of one device, the denominator of MFU, and where the figure came from.

Lightning's ``get_available_flops`` returns None for "NVIDIA H200" and lists sparse (2x) tensor figures
for the H200/H100 NVL variants, so dense figures for those chips come from our own table first. An fp32
run's peak follows the math mode it really runs in: cuDNN convolutions use TF32 whenever
``torch.backends.cudnn.allow_tf32`` is on, whatever the matmul precision says (cifarbench sets both from
``trainer.matmul_precision``, :func:`apply_math_mode`), and an MFU against the FP32 peak would then pass 1.

A CPU has no datasheet figure worth trusting: it is measured by a matmul probe in the run's compute dtype,
once per host, thread count, dtype and torch version, and cached on disk (re-measuring at every run on a
shared machine would make MFU move with the neighbours' load); the source says it was measured and when.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch
from lightning.fabric.utilities.throughput import get_available_flops

from ..record import atomic_write_text

# Dense tensor-core (or fp32 CUDA-core) peaks from NVIDIA datasheets, in FLOP/s.
DENSE_PEAKS: dict[str, dict[str, float]] = {
    "h200 nvl": {"fp32": 60e12, "tf32": 417e12, "bf16": 835e12, "fp16": 835e12},
    "h200": {"fp32": 67e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},  # SXM
    "h100 nvl": {"fp32": 60e12, "tf32": 417e12, "bf16": 835e12, "fp16": 835e12},
    "h100 pcie": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12},
    "h100": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},  # SXM / HBM3
}
COMPUTE_DTYPE = {"32-true": torch.float32, "16-mixed": torch.float16, "16-true": torch.float16,
                 "bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16}


@dataclass(frozen=True)
class PeakFlops:
    flops: Optional[float]  # per device; None when unknown
    source: str


def peak_flops(device: torch.device, precision: str) -> PeakFlops:
    dtype = COMPUTE_DTYPE[precision]
    if device.type == "cpu":
        return cpu_matmul_probe(dtype, torch.get_num_threads())
    if device.type != "cuda":
        return PeakFlops(None, f"no peak known for {device.type}")
    name = torch.cuda.get_device_name(device)
    key = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
    if key == "fp32" and (torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32):
        key = "tf32"
    for chip, peaks in DENSE_PEAKS.items():
        if all(word in name.lower() for word in chip.split()):
            return PeakFlops(peaks[key], f"cifarbench dense table: {chip} {key}")
    found = get_available_flops(device, dtype)
    return PeakFlops(float(found) if found else None, f"lightning table: {name} {dtype}" if found else f"unknown: {name}")


def apply_math_mode(matmul_precision: str) -> None:
    """``trainer.matmul_precision`` for both TF32 switches: matmuls and cuDNN convolutions ("highest": strict
    FP32 for both; "high"/"medium": TF32 for both)."""
    torch.set_float32_matmul_precision(matmul_precision)
    torch.backends.cudnn.allow_tf32 = matmul_precision != "highest"


def precision_flags() -> dict[str, object]:
    """The switches that decide an fp32 run's speed and its peak, as they are now."""
    return {"matmul_precision": torch.get_float32_matmul_precision(),
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark}


def cache_dir() -> Path:
    """``$CIFARBENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/cifarbench``, else ``~/.cache/cifarbench``."""
    if os.environ.get("CIFARBENCH_CACHE_DIR"):
        return Path(os.environ["CIFARBENCH_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifarbench"


def cpu_matmul_probe(dtype: torch.dtype, threads: int) -> PeakFlops:
    """The cached probe for this host, thread count, dtype and torch version, measured on first use."""
    path = cache_dir() / "cpu-peak-flops.json"
    key = f"{socket.gethostname()}|{threads} threads|{dtype}|torch {torch.__version__}"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key not in cached:
        flops, how = measure_cpu_matmul(dtype, threads)
        cached[key] = {"flops": flops, "how": how, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        try:
            atomic_write_text(path, json.dumps(cached, indent=1) + "\n")
        except OSError:  # a read-only home: measured again next time, still right
            pass
    entry = cached[key]
    return PeakFlops(entry["flops"], f"cpu matmul probe: {entry['how']}, measured {entry['measured_at']} "
                                     f"(cached in {path})")


def measure_cpu_matmul(dtype: torch.dtype, threads: int, size: int = 1024, repeats: int = 10,
                       budget_s: float = 2.0) -> tuple[float, str]:
    """Best achieved FLOP/s of a square matmul in ``dtype`` with the process's threads (~0.5 s): ``repeats`` timed
    products, fewer once ``budget_s`` is spent (an emulated dtype, bf16 without bf16 units, takes seconds each)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # first call pays for kernel selection
    best, done, began = float("inf"), 0, time.perf_counter()
    while done < repeats and (done < 2 or time.perf_counter() - began < budget_s):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
        done += 1
    return 2 * size**3 / best, f"{size}x{size} {dtype} with {threads} threads, best of {done}"
