"""Host synchronisations per steady training step: what makes the host wait for the device.

Every such wait turns host time (Lightning's bookkeeping, callbacks, loggers) into device idle time, so a
step that waits reads slow on a GPU and no CPU run shows it. Two ways to count them, one callback:

- on CUDA, the device itself: each steady step runs under ``torch.cuda.set_sync_debug_mode("warn")``, which
  makes every synchronising CUDA call warn; the warnings are counted and their Python call sites kept;
- on any device, the *sentinel* (``measure.sync_sentinel``): a ``TorchFunctionMode`` that records every call that
  would block the host were the training device a GPU (:data:`READS`, host-to-device copies from pageable memory,
  collectives, explicit synchronisation), with its call site. Slow (every torch call passes through Python): for
  tests and debugging, never for a timed run.

A steady step's count runs from its ``on_train_batch_start`` to the next one (its own hooks, Lightning's logging
and LR step, the next fetch) and stops at validation; the first ``warmup_steps`` steps of the run are left out.
Steps on which the loggers write (``log_every_n_steps``) and the last step of an epoch (the divergence check's
collective) wait by design, once per interval: they are *interval steps*, counted apart. A wait that Lightning or
torch make by themselves, with no cifarbench frame on the stack, is named in :data:`FRAMEWORK` and reported as
``framework_syncs_per_step``; everything else is cifarbench's own (``host_syncs_per_step``, which should be 0).
"""

from __future__ import annotations

import traceback
import warnings
from collections import Counter
from typing import Any, Callable, Literal, Optional

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from ..loggers import loggers_write_this_step

# Tensor methods that copy a device tensor's value to the host (each waits for the device on CUDA).
READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
         torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__}
COPIES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_}  # host-to-device when their source is host memory
FACTORIES = {torch.tensor, torch.as_tensor}  # Python or NumPy data onto the device: a pageable copy
COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast",
               "broadcast_object_list", "barrier", "reduce", "reduce_scatter", "reduce_scatter_tensor", "gather",
               "scatter", "all_to_all", "monitored_barrier")

# Waits that the framework makes by itself (no cifarbench frame on the stack): (file part, function) -> why.
FRAMEWORK = {
    ("training_epoch_loop.py", "_broadcast_sigterm_tensor"):
        "Lightning 2.6 broadcasts a SIGTERM flag from rank 0 and reads it with .item() every step under DDP "
        "with more than one rank (lightning/pytorch/loops/training_epoch_loop.py)",
    ("grad_scaler.py", "_maybe_opt_step"):
        "torch's GradScaler reads found_inf every step for 16-mixed with a non-fused optimizer (cifarbench uses the "
        "fused one there: train.module.fused_kernels)",
}
# Calls that do not wait on CUDA although they would be counted on a CPU, by (file part, function) of a frame
# near the call: torch.optim keeps its step counters on the host (not capturable, not fused), the DataLoader's
# samplers shuffle host tensors, FFCV allocates its host buffers at each epoch's start, and Lightning's batch
# transfer passes non_blocking=True on CUDA (from the loaders' pinned memory: cifarbench pins it there).
NOT_WAITING = (("/torch/optim/", None), ("/torch/utils/data/", None), ("/ffcv/pipeline/allocation_query.py", None),
               ("/fabric/utilities/apply_func.py", "batch_to"))
# Frames that are the machinery, not the caller: the site is the first frame outside them.
MACHINERY = ("/torch/overrides.py", "/torch/_tensor.py", "/torch/utils/_device.py", "/torch/distributed/",
             "/torch/cuda/", "/warnings.py", __file__)


def call_site(stack: list[traceback.FrameSummary]) -> tuple[str, Optional[str], Optional[tuple[str, str]]]:
    """(the innermost caller outside torch's machinery, the innermost cifarbench frame, and the entry of
    :data:`FRAMEWORK` that made the call when no cifarbench code runs inside it)."""
    frames = [f for f in stack if not any(part in f.filename for part in MACHINERY)]
    site = _where(frames[-1]) if frames else "?"
    ours = max((i for i, f in enumerate(frames) if "/cifarbench/" in f.filename), default=-1)
    framework = next(((i, key) for i, f in reversed(list(enumerate(frames))) for key in FRAMEWORK
                      if f.filename.endswith(key[0]) and f.name == key[1]), None)
    if framework is not None and framework[0] > ours:
        return site, None, framework[1]
    return site, _where(frames[ours]) if ours >= 0 else None, None


def _where(frame: traceback.FrameSummary) -> str:
    parts = frame.filename.split("/site-packages/")[-1].split("/src/")[-1]
    return f"{parts}:{frame.lineno} ({frame.name})"


class SyncSentinel(TorchFunctionMode):
    """Records every call that would block the host if ``device`` were a GPU, while ``active``.

    On a CPU the training device is the host, so "device memory" cannot be told from host memory by looking: a
    copy *onto* the device (``torch.tensor(data, device=...)``, ``.to(device)``) counts unless it is
    ``non_blocking`` (from pinned memory on CUDA: cifarbench pins every loader's memory there) or leaves the tensor
    where it is with no device named. Reads count unless the tensor is plainly host memory (:meth:`_in_host_memory`)
    or the read is one of :data:`NOT_WAITING`.
    """

    def __init__(self, device: torch.device, record: Callable[[str, list[traceback.FrameSummary]], None]):
        super().__init__()
        self.device, self.record, self.active = device, record, False
        self._patched: list[tuple[Any, str, Any]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.active and self._blocks(func, args, kwargs):
            stack = traceback.extract_stack()[:-1]
            if not any(part in f.filename and name in (None, f.name) for f in stack[-3:] for part, name in NOT_WAITING):
                self.record(getattr(func, "__name__", str(func)), stack)
        return func(*args, **kwargs)

    def _blocks(self, func, args, kwargs) -> bool:
        if func in READS:
            return not self._in_host_memory(args[0])
        if func in FACTORIES:
            target = kwargs.get("device")
            return target is not None and torch.device(target).type == self.device.type and not (
                args and isinstance(args[0], torch.Tensor) and args[0].device.type == self.device.type
                and func is torch.as_tensor)
        if func not in COPIES or kwargs.get("non_blocking") or any(a is True for a in args[1:]):
            return False
        if func is torch.Tensor.copy_:  # into a tensor on another device than the source's
            return len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].device != args[0].device
        target = "cuda" if func is torch.Tensor.cuda else kwargs.get(
            "device", next((a for a in args[1:] if isinstance(a, (str, torch.device))), None))
        return target is not None and torch.device(target).type == self.device.type

    def _in_host_memory(self, tensor: torch.Tensor) -> bool:
        """A tensor off the training device, or, on a CPU standing in for one, in shared or pinned host memory (a
        GPU tensor never is: e.g. the epoch that DataLoader workers read): reading it waits for nothing."""
        if tensor.device.type != self.device.type:
            return True
        return self.device.type == "cpu" and (tensor.is_shared() or tensor.is_pinned())

    def __enter__(self):
        for name in COLLECTIVES:  # module functions, not tensor methods: wrapped while the sentinel is on
            if hasattr(dist, name):
                self._wrap(dist, name)
        if torch.cuda.is_available():
            self._wrap(torch.cuda, "synchronize")
            self._wrap(torch.cuda.Event, "synchronize")
            self._wrap(torch.cuda.Stream, "synchronize")
        return super().__enter__()

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._patched):
            setattr(owner, name, original)
        self._patched.clear()
        return super().__exit__(*exc)

    def _wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def waiting(*args, **kwargs):
            if self.active:
                self.record(name, traceback.extract_stack()[:-1])
            return original(*args, **kwargs)

        self._patched.append((owner, name, original))
        setattr(owner, name, waiting)


class HostSyncCount(L.Callback):
    """Counts host synchronisations in each steady training step (see the module's docstring) and summarises them
    for the record: ``host_syncs_per_step`` (cifarbench's, median over the steady steps that are not interval
    steps), ``framework_syncs_per_step`` (by source), the interval steps' counts, and every call site.

    ``counter``: "sentinel" counts with :class:`SyncSentinel` on whatever device (slow); "cuda" with CUDA's sync
    debug mode; "auto" with the latter on a GPU and not at all elsewhere (the summary says so).
    """

    def __init__(self, warmup_steps: int = 0, counter: Literal["auto", "sentinel", "cuda"] = "auto"):
        self.warmup_steps, self.counter = warmup_steps, counter
        self.summary: dict[str, Any] = {"host_syncs_per_step": None, "source": None}
        self.steps: list[dict[str, Any]] = []  # one per steady step: {"interval": bool, "calls": [...]}
        self._mode: Optional[SyncSentinel] = None
        self._warnings: Optional[warnings.catch_warnings] = None
        self._seen = 0  # training steps started
        self._opened_at_epoch_start = False
        self._source: Optional[str] = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        device = trainer.strategy.root_device
        if self.counter == "sentinel":
            self._source = "sentinel: calls that would block the host on a GPU, counted on " + device.type
            self._mode = SyncSentinel(device, self._record)
            self._mode.__enter__()
        elif self.counter == "cuda" or device.type == "cuda":
            self._source = "cuda: torch.cuda.set_sync_debug_mode('warn') over each steady step"

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._stop()
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None

    def _record(self, what: str, stack: list[traceback.FrameSummary]) -> None:
        if self.steps:
            site, via, framework = call_site(stack)
            self.steps[-1]["calls"].append({"call": what, "site": site, "via": via, "framework": framework})

    def epoch_start(self) -> L.Callback:
        """A callback to put after every other one: it opens each epoch's first step once their epoch-start hooks
        have run (the progress line reads the epoch's means there, after validation and the epoch's logging have
        already waited), before the loader's iterator is made (shuffling, the first fetch). Without it an epoch's
        first step opens at its ``on_train_batch_start``."""
        owner = self

        class OpenEpochsFirstStep(L.Callback):
            def on_train_epoch_start(self, trainer, pl_module) -> None:
                owner._open_step(trainer, 0)

        return OpenEpochsFirstStep()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not (batch_idx == 0 and self._opened_at_epoch_start):
            self._open_step(trainer, batch_idx)
        self._opened_at_epoch_start = False
        self._seen += 1

    def _open_step(self, trainer, batch_idx: int) -> None:
        self._stop()
        self._opened_at_epoch_start = batch_idx == 0
        if self._source is None or self._seen < self.warmup_steps:
            return
        last = batch_idx + 1 == trainer.num_training_batches
        self.steps.append({"step": trainer.global_step, "interval": last or loggers_write_this_step(trainer),
                           "calls": []})
        self._start()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._stop()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop()

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop()
        self.summary = self._summarise()

    def _start(self) -> None:
        if self._mode is not None:
            self._mode.active = True
        elif self._source is not None:
            self._warnings = warnings.catch_warnings()
            self._warnings.__enter__()
            warnings.simplefilter("always")  # every sync, not the first per line
            shown = warnings.showwarning

            def show(message, category, filename, lineno, *rest):  # called where the warning is raised
                if "synchronizing" in str(message):
                    self._record("cuda sync", traceback.extract_stack()[:-1])
                else:  # not ours to swallow
                    shown(message, category, filename, lineno, *rest)

            warnings.showwarning = show
            torch.cuda.set_sync_debug_mode("warn")

    def _stop(self) -> None:
        if self._mode is not None:
            self._mode.active = False
        if self._warnings is not None:
            torch.cuda.set_sync_debug_mode("default")
            self._warnings.__exit__(None, None, None)  # puts showwarning and the filters back
            self._warnings = None

    def _summarise(self) -> dict[str, Any]:
        if self._source is None:
            return {"host_syncs_per_step": None, "source": None,
                    "note": "counted on CUDA (sync debug mode) or with measure.sync_sentinel: true"}
        plain = [s for s in self.steps if not s["interval"]]
        ours = [sum(1 for c in s["calls"] if c["framework"] is None) for s in plain]
        per_step = [Counter(FRAMEWORK[c["framework"]] for c in s["calls"] if c["framework"]) for s in plain]
        framework = {why: float(np.median([n[why] for n in per_step])) for why in set().union(*per_step)}
        sites: Counter = Counter(f"{c['call']} at {c['site']}" + (f" via {c['via']}" if c["via"] and c["via"] != c["site"]
                                                                   else "") for s in self.steps for c in s["calls"])
        interval = [len(s["calls"]) for s in self.steps if s["interval"]]
        waited = [{"step": s["step"], "calls": [f"{c['call']} at {c['site']}" for c in s["calls"]]}
                  for s in plain if s["calls"]][:5]
        return {
            "source": self._source,
            "host_syncs_per_step": float(np.median(ours)) if ours else None,
            "host_syncs_max_per_step": max(ours, default=None),
            "framework_syncs_per_step": framework,  # median per step, by source
            "steady_steps": len(plain),
            "interval_steps": len(interval),
            "interval_syncs_per_step": float(np.median(interval)) if interval else None,
            "interval": "logging steps (every log_every_n_steps) and each epoch's last step: the loggers' writes "
                        "and the divergence check's collective wait there by design, once per interval",
            "sites": dict(sites.most_common()),
            "first_steps_that_waited": waited,  # outside the interval steps: what to fix first
        }
