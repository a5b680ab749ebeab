"""Harness overhead: `cifarbench fit` with every measurement callback against a minimal hand-written loop.

Both train the same model, from the same seed, on the same in-memory batches (the device-resident data
path over generated images, augmentation included) for the same steps, alternating a, b, a, b in one
process. (a) is a plain PyTorch loop; (b) is `fit` with the Trainer, the measurement callbacks
(throughput, time-to-accuracy, data wait, divergence guard, environment), the LR monitor, the progress
bar, CSV and W&B-offline logging and a validation pass per epoch. Each arm's images/s is steady state:
from the end of warm-up step ``warmup`` to the end of the last step, validation excluded (for (b) this is
the run record's number; for (a) the same clock, measured here). The ratio b/a is the harness's cost.

    python bench/harness_overhead.py --out bench/results/cpu [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from cifarbench.config import (DataConfig, MeasureConfig, ModelConfig, OutputConfig, RunConfig, TrainerConfig)
from cifarbench.data import build_datamodule
from cifarbench.measure.environment import collect_environment
from cifarbench.model import CustomResNet
from cifarbench.record import atomic_write_text
from cifarbench.run import fit

VARIANTS = {"fp32": {"precision": "32-true", "channels_last": False},
            "bf16-mixed + channels_last": {"precision": "bf16-mixed", "channels_last": True}}


def base_config(out_dir: Path, epochs: int) -> RunConfig:
    return RunConfig(
        model=ModelConfig(width=16),
        # 80 steps per epoch (a full CIFAR-10 epoch at batch 512 has 97): per-epoch costs weigh as in real runs
        data=DataConfig(source="synthetic", path="device", synthetic_train_size=10_240 + 256, synthetic_test_size=256,
                        val_size=256, batch_size=128, num_workers=0),
        trainer=TrainerConfig(accelerator="cpu", epochs=epochs, checkpoint=False),
        measure=MeasureConfig(target_accuracy=1.0, warmup_steps=5),
        output=OutputConfig(dir=str(out_dir), wandb="offline"), test=False)


def hand_loop(cfg: RunConfig) -> float:
    """(a): steady-state images/s of a minimal loop over the same loader, model, optimizer and schedule."""
    L.seed_everything(cfg.trainer.seed, verbose=False)
    t = cfg.trainer
    model = CustomResNet(cfg.model.width)
    if t.channels_last:
        model = model.to(memory_format=torch.channels_last)
    datamodule = build_datamodule(cfg.data, seed=t.seed)
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.max_lr, weight_decay=cfg.optim.resolved_weight_decay())
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.optim.max_lr, total_steps=len(loader) * t.epochs,
                                                   pct_start=cfg.optim.pct_start, div_factor=cfg.optim.div_factor)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=t.precision == "bf16-mixed")
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
                start = time.perf_counter()  # CPU: nothing queued to synchronise
            elif step > cfg.measure.warmup_steps:
                images += len(y)
    return images / (time.perf_counter() - start)


def harness(cfg: RunConfig, run_id: str) -> float:
    """(b): the run record's steady-state images/s."""
    _, record = fit(replace(cfg, output=replace(cfg.output, run_id=run_id)))
    return record["throughput"]["images_per_sec"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as runs:
        for name, knobs in VARIANTS.items():
            cfg = base_config(Path(runs), args.epochs)
            cfg = replace(cfg, trainer=replace(cfg.trainer, **knobs))
            pairs = []
            for rep in range(args.reps):
                a = hand_loop(cfg)
                b = harness(cfg, f"{name.replace(' ', '').replace('+', '-')}-{rep}")
                pairs.append({"hand_loop": a, "cifarbench_fit": b, "ratio": b / a})
                print(f"{name} rep {rep}: hand loop {a:,.0f} img/s, fit {b:,.0f} img/s, b/a {b / a:.3f}", flush=True)
            results[name] = {"pairs": pairs, "median_ratio": statistics.median(p["ratio"] for p in pairs),
                             "hand_loop_median": statistics.median(p["hand_loop"] for p in pairs),
                             "fit_median": statistics.median(p["cifarbench_fit"] for p in pairs)}
    cfg = base_config(Path("."), args.epochs)
    out = {"benchmark": "harness_overhead", "goal": "b/a >= 0.97", "reps": args.reps, "epochs": args.epochs,
           "model_width": cfg.model.width, "batch_size": cfg.data.batch_size,
           "steps_per_epoch": (cfg.data.synthetic_train_size - cfg.data.val_size) // cfg.data.batch_size,
           "warmup_steps": cfg.measure.warmup_steps, "machine": collect_environment(), "variants": results}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "harness_overhead.json", json.dumps(out, indent=2, default=str) + "\n")
    lines = ["| variant | hand loop img/s (median) | cifarbench fit img/s (median) | b/a (median of pairs) | b/a per pair |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        ratios = ", ".join(f"{p['ratio']:.3f}" for p in r["pairs"])
        lines.append(f"| {name} | {r['hand_loop_median']:,.0f} | {r['fit_median']:,.0f} | {r['median_ratio']:.3f} | {ratios} |")
    atomic_write_text(args.out / "harness_overhead.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
