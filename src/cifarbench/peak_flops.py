"""Peak FLOP/s of one device, the denominator of MFU, and where the figure came from.

Lightning's ``get_available_flops`` returns None for "NVIDIA H200" and lists sparse (2x) tensor figures
for the H200/H100 NVL variants, so dense figures for those chips come from our own table first. A CPU
has no datasheet figure worth trusting: it is measured once per process by a matmul probe in the
run's compute dtype, and recorded as measured.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Optional

import torch
from lightning.fabric.utilities.throughput import get_available_flops

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
    if key == "fp32" and torch.get_float32_matmul_precision() != "highest":
        key = "tf32"
    for chip, peaks in DENSE_PEAKS.items():
        if all(word in name.lower() for word in chip.split()):
            return PeakFlops(peaks[key], f"cifarbench dense table: {chip} {key}")
    found = get_available_flops(device, dtype)
    return PeakFlops(float(found) if found else None, f"lightning table: {name} {dtype}" if found else f"unknown: {name}")


@functools.lru_cache(maxsize=None)
def cpu_matmul_probe(dtype: torch.dtype, threads: int, size: int = 1024, repeats: int = 10) -> PeakFlops:
    """Best achieved FLOP/s of a square matmul in ``dtype`` with the process's threads (~0.5 s)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)  # first call pays for kernel selection
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return PeakFlops(2 * size**3 / best, f"cpu matmul probe: {size}x{size} {dtype} with {threads} threads, best of {repeats}")
