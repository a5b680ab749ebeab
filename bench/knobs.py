"""Knob speed-ups on this machine: steady-state images/s of precision, channels_last and torch.compile
variants of one configuration, each a real `cifarbench fit` run in its own process, as ratios to fp32 eager.

Steady state excludes the first ``measure.warmup_steps`` steps; compilation happens in those steps and is
reported apart, as warm-up seconds (the run record's ``throughput.warmup_seconds``).

    python bench/knobs.py --out bench/results/cpu [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from cifarbench.measure.environment import collect_environment
from cifarbench.record import atomic_write_text

from cli_runs import attempt, cli_run  # beside this file

VARIANTS = {  # name -> fit flags; the first is the baseline
    "fp32 eager": [],
    "bf16-mixed": ["--trainer.precision", "bf16-mixed"],
    "bf16-true": ["--trainer.precision", "bf16-true"],
    "fp32 + channels_last": ["--trainer.channels_last", "true"],
    "bf16-mixed + channels_last": ["--trainer.precision", "bf16-mixed", "--trainer.channels_last", "true"],
    "bf16-true + channels_last": ["--trainer.precision", "bf16-true", "--trainer.channels_last", "true"],
    "bf16-mixed + channels_last + compile default": ["--trainer.precision", "bf16-mixed", "--trainer.channels_last",
                                                     "true", "--trainer.compile", "default"],
    "bf16-mixed + channels_last + compile max-autotune": ["--trainer.precision", "bf16-mixed",
                                                          "--trainer.channels_last", "true", "--trainer.compile",
                                                          "max-autotune"],
}
BASE = ["--model.width", "16", "--data.source", "synthetic", "--data.path", "device", "--data.batch_size", "128",
        "--data.synthetic_train_size", "3328", "--data.synthetic_test_size", "256", "--data.val_size", "256",
        "--data.num_workers", "0", "--measure.warmup_steps", "5", "--measure.target_accuracy", "1.0",
        "--trainer.checkpoint", "false", "--test", "false", "--output.wandb", "disabled"]


def steady_rate(record: dict) -> dict:
    tp = record["throughput"]
    return {key: tp[key] for key in ("images_per_sec", "warmup_seconds", "warmup_overhead_seconds", "steady_steps")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--accelerator", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as runs:
        for i, (name, flags) in enumerate(VARIANTS.items()):
            flags = [*BASE, "--trainer.accelerator", args.accelerator, "--trainer.epochs", str(args.epochs), *flags]
            rows[name] = attempt(lambda: steady_rate(cli_run("fit", flags, Path(runs), f"knob{i}", timeout=None)))
            r = rows[name]
            print(f"{name}: {r['images_per_sec']:,.0f} img/s, warm-up {r['warmup_seconds']:.1f} s"
                  if "images_per_sec" in r else f"{name}: {r}", flush=True)
    base = rows["fp32 eager"].get("images_per_sec")
    for row in rows.values():
        row["ratio_to_fp32_eager"] = row["images_per_sec"] / base if base and "images_per_sec" in row else None
    out = {"benchmark": "knobs", "accelerator": args.accelerator, "epochs": args.epochs, "base_flags": BASE,
           "machine": collect_environment(), "variants": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "knobs.json", json.dumps(out, indent=2, default=str) + "\n")
    lines = ["| variant | images/s (steady) | vs fp32 eager | warm-up s (compile included) |", "|---|---|---|---|"]
    for name, r in rows.items():
        if "images_per_sec" not in r:
            lines.append(f"| {name} | {'skipped: ' + r['skipped'] if 'skipped' in r else 'failed: ' + r['error']} | | |")
        else:
            lines.append(f"| {name} | {r['images_per_sec']:,.0f} | {r['ratio_to_fp32_eager']:.2f}x | {r['warmup_seconds']:.1f} |")
    atomic_write_text(args.out / "knobs.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
