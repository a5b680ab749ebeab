"""Energy counters read at window ends: NVML's total-energy counter per GPU, the kernel's RAPL counters per CPU.

Both are cumulative counters the hardware keeps, so a window's energy is the difference of two reads and needs
no sampling thread; neither read touches a CUDA stream, so reading one never makes the host wait for the device.
Where no counter can be read, :func:`energy_meter` says why instead of estimating a figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

POWERCAP = Path("/sys/class/powercap")  # the kernel's RAPL interface (Intel, and AMD since Linux 5.8)


class RaplMeter:
    """The CPU packages' energy in joules since this meter was made, from ``intel-rapl:N/energy_uj``.

    The counters are microjoules that wrap at ``max_energy_range_uj`` (minutes at full power): each read adds the
    step since the previous read, so a window is right while reads come more often than one wrap (the resource
    callback reads at every validation too). They count the whole package: every process on it, the loader
    workers included, and other jobs' work on a shared node."""

    def __init__(self, domains: list[Path]):
        self.domains = domains
        self.source = "rapl: " + ", ".join(f"{d.name} ({(d / 'name').read_text().strip()})" for d in domains)
        self._ranges = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        self._last = self._raw()
        self._joules = 0.0

    def _raw(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def read(self) -> float:
        now = self._raw()
        for before, after, wrap in zip(self._last, now, self._ranges):
            self._joules += ((after - before) if after >= before else (after + wrap - before)) / 1e6
        self._last = now
        return self._joules


class NvmlMeter:
    """One GPU's energy in joules since the driver loaded (``nvmlDeviceGetTotalEnergyConsumption``, Volta and
    newer): the GPU board only, not the host."""

    def __init__(self, handle, name: str):
        import pynvml

        self._pynvml, self.handle = pynvml, handle
        self.source = f"nvml: {name}, total energy counter"
        self.read()  # unsupported boards fail here, not at the first window end

    def read(self) -> float:
        return self._pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1e3


Meter = Union[RaplMeter, NvmlMeter]


def energy_meter(device: torch.device, powercap: Path = POWERCAP) -> tuple[Optional[Meter], str]:
    """(meter, its source) for ``device``, or (None, why none) where no counter can be read."""
    if device.type == "cuda":
        handle, why = nvml_handle(device)
        if handle is None:
            return None, why
        try:
            meter = NvmlMeter(handle, torch.cuda.get_device_name(device))
            return meter, meter.source
        except Exception as err:  # noqa: BLE001 - NVML's errors are many classes; the reason is the record's
            return None, f"none: NVML has no energy counter for this GPU ({type(err).__name__}: {err})"
    if device.type != "cpu":
        return None, f"none: no energy counter is read for {device.type} devices"
    return rapl_meter(powercap)


def rapl_meter(powercap: Path = POWERCAP) -> tuple[Optional[RaplMeter], str]:
    packages = sorted(d for d in powercap.glob("intel-rapl:*") if d.name.count(":") == 1
                      and (d / "name").is_file() and (d / "name").read_text().startswith("package"))
    if not packages:
        return None, (f"none: no RAPL package counters under {powercap} (a VM or container often hides them; "
                      "a non-Intel/AMD CPU has none)")
    try:
        meter = RaplMeter(packages)
    except PermissionError:
        return None, (f"none: the RAPL counters under {powercap} are readable by root only (Linux 5.10 and newer); "
                      "an administrator can allow it with chmod o+r .../intel-rapl:*/energy_uj")
    except (OSError, ValueError) as err:
        return None, f"none: the RAPL counters could not be read ({type(err).__name__}: {err})"
    return meter, meter.source


def nvml_handle(device: torch.device):
    """(NVML handle of the CUDA device, "") or (None, why): found by UUID, since NVML numbers every GPU of the
    machine while CUDA numbers only the visible ones."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as err:  # noqa: BLE001 - no nvidia-ml-py or no driver library
        return None, f"none: NVML is not available ({type(err).__name__})"
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(index).uuid}"), ""
    except Exception:  # noqa: BLE001 - an old driver or torch without UUIDs: CUDA's order, as without masking
        return pynvml.nvmlDeviceGetHandleByIndex(index), ""
