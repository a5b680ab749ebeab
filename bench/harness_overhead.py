"""Harness overhead: what `cifarbench fit` and its own measurement cost, against a minimal hand-written loop.

All three arms train the same model, from the same seed, on the same batches (the device-resident data path
over generated images, augmentation included) for the same steps, in one process, the order rotating
each round (a b c, b c a, c a b, ...):
  (a) a plain PyTorch loop, timed only at the window's ends (CUDA events there, no other wait);
  (b) `cifarbench fit` with every measurement on: throughput, time-to-target clocks, untimed warm-up, data
      wait (fetch/harness/device gap per step), divergence check, environment, with the LR monitor, the
      progress bar, CSV and W&B-offline logging and a validation pass per epoch;
  (c) the same `fit` with the per-step measurements off (``measure.per_step: false``: no data wait, no
      divergence check); the throughput's one stamp per step and the validation-boundary clocks stay, since
      they give the number compared.
Each arm's images/s is steady state: from the end of warm-up step ``warmup`` to the end of the last step,
validation excluded (for b and c the run record's number; for a the same window, measured here). b/a is
the whole harness's cost, c/a Lightning's and the loggers', and b/c what measuring adds.

    python bench/harness_overhead.py --out bench/results/cpu-2core [--accelerator cuda] [--reps 11] [--epochs 1]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from cifarbench.config import (DataConfig, MeasureConfig, ModelConfig, OutputConfig, RunConfig, TrainerConfig)
from cifarbench.data import build_datamodule
from cifarbench.measure.environment import collect_environment
from cifarbench.models.custom_resnet import CustomResNet
from cifarbench.record import atomic_write_text
from cifarbench.train.run import fit

VARIANTS = {"fp32": {"precision": "32-true", "channels_last": False},
            "bf16-mixed + channels_last": {"precision": "bf16-mixed", "channels_last": True}}


def base_config(out_dir: Path, epochs: int, accelerator: str, steps_per_epoch: int = 80,
                wandb: str = "offline") -> RunConfig:
    """~80 steps per epoch (a full CIFAR-10 epoch at batch 512 has 97): per-epoch costs weigh as in real runs.
    On CUDA the full-width network at batch 512 (a step of a few ms, where waits would show); on a CPU a
    quarter-width one at batch 128 (~50 ms a step). ``wandb: disabled`` where W&B is not installed (the GPU image)."""
    cuda = accelerator == "cuda"
    batch = 512 if cuda else 128
    return RunConfig(
        model=ModelConfig(width=64 if cuda else 16),
        data=DataConfig(source="synthetic", path="device", synthetic_train_size=steps_per_epoch * batch + 256,
                        synthetic_test_size=256, val_size=256, batch_size=batch, num_workers=0),
        trainer=TrainerConfig(accelerator=accelerator, epochs=epochs, checkpoint=False),
        measure=MeasureConfig(target_accuracy=1.0, warmup_steps=5),
        output=OutputConfig(dir=str(out_dir), wandb=wandb), test=False)


def hand_loop(cfg: RunConfig) -> float:
    """(a): steady-state images/s of a minimal loop over the same loader, model, optimizer and schedule."""
    L.seed_everything(cfg.trainer.seed, verbose=False)
    t = cfg.trainer
    device = torch.device("cuda" if t.accelerator == "cuda" else "cpu")
    model = CustomResNet(cfg.model.width).to(device)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    datamodule = build_datamodule(cfg.data, seed=t.seed)
    datamodule.standalone_device = device
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.max_lr, weight_decay=cfg.optim.resolved_weight_decay())
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.optim.max_lr, total_steps=len(loader) * t.epochs,
                                                   pct_start=cfg.optim.pct_start, div_factor=cfg.optim.div_factor)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.precision == "bf16-mixed")

    def now() -> object:  # a window end: an event on CUDA (read once at the end), the clock on a CPU
        if device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    step, images, start = 0, 0, None
    for epoch in range(t.epochs):
        loader.sampler.set_epoch(epoch)
        for x, y in loader:
            if t.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step == cfg.measure.warmup_steps:
                start = now()
            elif step > cfg.measure.warmup_steps:
                images += len(y)
    end = now()
    if device.type == "cuda":
        end.synchronize()
        return images / (start.elapsed_time(end) / 1e3)
    return images / (end - start)


def harness(cfg: RunConfig, run_id: str) -> float:
    """(b) or (c): the run record's steady-state images/s."""
    _, record = fit(replace(cfg, output=replace(cfg.output, run_id=run_id)))
    return record["throughput"]["images_per_sec"]


def rotated(items: list, by: int) -> list:
    return items[by % len(items):] + items[:by % len(items)]


def settle_machine(seconds: float = 3.0) -> None:
    """Between arms: collect garbage and let the W&B service finish writing the previous run, which on a
    2-core machine would otherwise compete with whichever arm comes next."""
    gc.collect()
    time.sleep(seconds)


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def compare_arms(cfg: RunConfig, reps: int, slug: str, label: str, settle_seconds: float = 3.0) -> dict[str, Any]:
    """``reps`` rounds of (a), (b), (c) on ``cfg``, the order rotated each round; each ratio's median, min, max."""
    bare = replace(cfg, measure=replace(cfg.measure, per_step=False))
    arms = {"hand_loop": lambda rep: hand_loop(cfg),
            "fit_measured": lambda rep: harness(cfg, f"{slug}-measured-{rep}"),
            "fit_unmeasured": lambda rep: harness(bare, f"{slug}-bare-{rep}")}
    pairs = []
    for rep in range(reps):
        rate = {}
        for arm in rotated(list(arms), rep):  # each arm first, second and third in turn: no order bias
            settle_machine(settle_seconds)
            rate[arm] = arms[arm](rep)
        a, b, c = rate["hand_loop"], rate["fit_measured"], rate["fit_unmeasured"]
        pairs.append({**rate, "order": rotated(list(arms), rep), "b_over_a": b / a, "c_over_a": c / a, "b_over_c": b / c})
        print(f"{label} rep {rep}: (a) hand loop {a:,.0f} img/s, (b) fit {b:,.0f}, (c) fit without per-step "
              f"measurement {c:,.0f}; b/a {b / a:.3f}, c/a {c / a:.3f}, b/c {b / c:.3f}", flush=True)
    rates = [key for key in pairs[0] if key != "order"]
    return {"pairs": pairs, **{key: spread([p[key] for p in pairs]) for key in rates}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--accelerator", choices=("cpu", "cuda"), default="cpu")
    # Many short rounds rather than a few long ones: on the shared 2-core VM the same arm measured 788-965
    # images/s within minutes (and 1,595-2,268 in bf16), so a median needs many rounds to mean anything.
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    machine = collect_environment()  # at the start: the commit and tree that ran, not what they became meanwhile
    results = {}
    with tempfile.TemporaryDirectory() as runs:
        for name, knobs in VARIANTS.items():
            cfg = base_config(Path(runs), args.epochs, args.accelerator)
            cfg = replace(cfg, trainer=replace(cfg.trainer, **knobs))
            results[name] = compare_arms(cfg, args.reps, slug=name.replace(" ", "").replace("+", "-"), label=name)
    cfg = base_config(Path("."), args.epochs, args.accelerator)
    out = {"benchmark": "harness_overhead", "goal": "b/a >= 0.97 (median over rounds)", "reps": args.reps,
           "epochs": args.epochs, "accelerator": args.accelerator, "model_width": cfg.model.width,
           "batch_size": cfg.data.batch_size,
           "steps_per_epoch": (cfg.data.synthetic_train_size - cfg.data.val_size) // cfg.data.batch_size,
           "warmup_steps": cfg.measure.warmup_steps, "machine": machine, "variants": results}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "harness_overhead.json", json.dumps(out, indent=2, default=str) + "\n")
    lines = [f"Accelerator: {args.accelerator}; {args.reps} rounds of (a, b, c), order rotated each round; "
             "median [min-max] over rounds.",
             "", "| variant | (a) hand loop img/s | (b) fit img/s | (c) fit, per-step measurement off, img/s | b/a | c/a "
             "| b/c |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['hand_loop']['median']:,.0f} | {r['fit_measured']['median']:,.0f} | "
                     f"{r['fit_unmeasured']['median']:,.0f} | {_ratio(r['b_over_a'])} | {_ratio(r['c_over_a'])} | "
                     f"{_ratio(r['b_over_c'])} |")
    atomic_write_text(args.out / "harness_overhead.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def _ratio(s: dict[str, float]) -> str:
    return f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}]"


if __name__ == "__main__":
    main()
