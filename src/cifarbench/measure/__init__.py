"""Measurement: each number a small Lightning callback, usable alone, none of which waits for the device
inside a timed window.

- :mod:`.clock`: device stamps (CUDA events) read at window ends; cross-rank gathers.
- :mod:`.phases`: the profiler that times batch fetch, step and checkpoint writes from Lightning's actions.
- :mod:`.throughput`: steady-state images/s, FLOP/s, MFU; :mod:`.peak_flops`: the MFU denominator.
- :mod:`.time_to_target`: the mlperf, train_only and steady clocks; :mod:`.warmup`: the untimed warm-up.
- :mod:`.data_wait`: fetch, harness and device-gap shares of each step.
- :mod:`.host_syncs`: host synchronisations per steady step (CUDA's sync debug mode, or the CPU sentinel).
- :mod:`.divergence`: non-finite loss, checked on the device, read every N steps.
- :mod:`.resources`: peak host and device memory, energy (:mod:`.energy`'s counters), GPU throttling, cost.
- :mod:`.environment`: what the numbers were measured on.
"""

from .data_wait import DataWait
from .divergence import DivergenceGuard
from .environment import EnvironmentInfo
from .host_syncs import HostSyncCount
from .phases import PhaseTimer, TracingPhaseTimer
from .resources import ResourceUsage
from .throughput import SteadyStateThroughput
from .time_to_target import TimeToTarget
from .warmup import UntimedWarmup

__all__ = ["DataWait", "DivergenceGuard", "EnvironmentInfo", "HostSyncCount", "PhaseTimer", "ResourceUsage",
           "SteadyStateThroughput", "TimeToTarget", "TracingPhaseTimer", "UntimedWarmup"]
