"""The checks that need a GPU, in one short run: precisions, channels_last, compile, data paths, MFU and a
time-to-accuracy run. Writes gpu-check.json, gpu-check.md and runs.tar.gz (every run's record and log) into --out
after every step, inside one time budget (--budget, default 480 s): a step that would not fit is skipped and named.

On a machine without CUDA every GPU-only step is skipped with a note saying so, and the rest runs at a
tiny size, so the script itself is tested on CPU. Each step runs on its own: one that fails is recorded
with its error and the next one runs. Training steps are real `cifarbench fit` runs (their records say
exactly what was measured); the data-path step times each path's loader alone (profile-data's (a)).

    scripts/gpu-check.sh OUT_DIR        (installs carried wheels first on the GPU machine)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from cifarbench.config import DataConfig
from cifarbench.data import build_datamodule
from cifarbench.measure.environment import collect_environment
from cifarbench.measure.peak_flops import peak_flops
from cifarbench.tools.profile_data import loader_rate
from cifarbench.record import atomic_write_text, read_record

CUDA = torch.cuda.is_available()
# (GPU size, CPU size): the GPU sizes fill an H200 for seconds per run; the CPU sizes only prove the script.
WIDTH, BATCH, TRAIN_IMAGES, EPOCHS = (64, 512, 25_600, 2) if CUDA else (8, 100, 1_000, 1)
TTA_TARGET = 0.85  # the JPEG copy of CIFAR-10 loses 3-4 points against published numbers (data README)


def fit_flags(run_dir: Path, run_id: str) -> list[str]:
    return ["--model.width", str(WIDTH), "--data.source", "synthetic", "--data.path", "device",
            "--data.batch_size", str(BATCH), "--data.synthetic_train_size", str(TRAIN_IMAGES + 1000),
            "--data.synthetic_test_size", "1000", "--data.val_size", "1000", "--data.num_workers", "0",
            "--trainer.accelerator", "cuda" if CUDA else "cpu", "--trainer.epochs", str(EPOCHS),
            "--trainer.checkpoint", "false", "--test", "false", "--measure.warmup_steps", "10" if CUDA else "2",
            "--measure.target_accuracy", "1.0", "--output.wandb", "disabled", "--output.dir", str(run_dir),
            "--output.run_id", run_id]


def run_fit(flags: list[str], run_dir: Path, run_id: str, timeout: float) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "cifarbench", "fit", *flags], capture_output=True, text=True,
                          timeout=timeout)
    (run_dir / run_id).mkdir(parents=True, exist_ok=True)  # its output beside its record (runs.tar.gz)
    (run_dir / run_id / "fit.log").write_text(done.stdout + done.stderr)
    record_path = run_dir / run_id / "record.json"
    if not record_path.exists():
        raise RuntimeError((done.stdout + done.stderr).strip().splitlines()[-1][-400:])
    record = read_record(record_path)
    if record["status"] == "failed":
        raise RuntimeError(record["error"])
    tp, tt = record["throughput"], record["time_to_target"]
    return {"status": record["status"], "images_per_sec": tp.get("images_per_sec"), "mfu": tp.get("mfu"),
            "peak_flops_source": tp.get("peak_flops_source"), "warmup_seconds": tp.get("warmup_seconds"),
            "time_to_target_seconds": {name: c["seconds"] for name, c in (tt.get("clocks") or {}).items()},
            "best_val_acc": record["accuracy"].get("best_val")}


KNOBS = {  # name -> (extra fit flags, needs CUDA)
    "32-true": ([], False),
    "16-mixed": (["--trainer.precision", "16-mixed"], True),
    "bf16-mixed": (["--trainer.precision", "bf16-mixed"], False),
    "bf16-mixed + channels_last": (["--trainer.precision", "bf16-mixed", "--trainer.channels_last", "true"], False),
}


def check_knobs(runs: Path) -> dict[str, Any]:
    out = {}
    for i, (name, (flags, needs_cuda)) in enumerate(KNOBS.items()):
        if needs_cuda and not CUDA:
            out[name] = {"skipped": "needs a CUDA GPU (refused on CPU before any work)"}
            continue
        try:
            out[name] = run_fit(fit_flags(runs, f"knob{i}") + flags, runs, f"knob{i}", timeout=240)
        except Exception as err:  # recorded; the next knob still runs
            out[name] = {"error": f"{type(err).__name__}: {err}"}
    return out


def check_data_paths(_: Path) -> dict[str, Any]:
    device = torch.device("cuda" if CUDA else "cpu")
    out = {}
    for path, workers in (("device", 0), ("albumentations", 8 if CUDA else 1), ("ffcv", 8 if CUDA else 1)):
        name = f"{path} ({workers} workers)" if path != "device" else "device"
        if path == "ffcv":
            try:
                import ffcv  # noqa: F401
            except ImportError:
                out[name] = {"skipped": "ffcv is not installed here (it builds from source against apt's OpenCV "
                                        "and libjpeg-turbo, which this machine cannot fetch)"}
                continue
        try:
            cfg = DataConfig(source="synthetic", path=path, num_workers=workers, batch_size=BATCH,
                             synthetic_train_size=TRAIN_IMAGES, synthetic_test_size=BATCH, val_size=BATCH)
            if path == "ffcv":
                from cifarbench.data.ffcv_path import write_betons

                cfg.ffcv.dir = tempfile.mkdtemp(prefix="gpu-check-ffcv-")
                write_betons(cfg, workers=workers)
            rate = loader_rate(build_datamodule(cfg, seed=0), device, steps=30 if CUDA else 5, warmup=5 if CUDA else 2)
            out[name] = {"images_per_sec": rate}
        except Exception as err:
            out[name] = {"error": f"{type(err).__name__}: {err}"}
    return out


def check_peaks(_: Path) -> dict[str, Any]:
    device = torch.device("cuda" if CUDA else "cpu")
    return {precision: {"flops": p.flops, "source": p.source}
            for precision in ("bf16-mixed", "16-mixed", "32-true") if (p := peak_flops(device, precision))}


def check_time_to_accuracy(runs: Path, data: Path | None) -> dict[str, Any]:
    """The seed's recipe (device path, bf16-mixed, channels_last) on the real images when carried."""
    if not CUDA:
        return {"skipped": "a real time-to-accuracy run needs a GPU (the seed model trains at ~180 img/s on "
                           "this CPU); a tiny synthetic one ran in the knob step instead"}
    if data is None or not data.exists():
        return {"skipped": f"no CIFAR-10 copy given (--data; looked for {data})"}
    flags = ["--data.source", "folder", "--data.root", str(data), "--data.path", "device", "--data.num_workers", "0",
             "--trainer.accelerator", "cuda", "--trainer.precision", "bf16-mixed", "--trainer.channels_last", "true",
             "--measure.target_accuracy", str(TTA_TARGET), "--trainer.checkpoint", "false",
             "--output.wandb", "disabled", "--output.dir", str(runs), "--output.run_id", "time-to-accuracy"]
    return {"target": TTA_TARGET, **run_fit(flags, runs, "time-to-accuracy", timeout=300)}


# Seconds each step is expected to take (on the GPU, on this CPU): a step that would not fit in what is left of
# the budget is skipped and named, never started and cut off. The riskiest (max-autotune) runs last.
ESTIMATES = {"imports": (10, 10), "peak_flops": (10, 10), "knobs": (150, 60), "data_paths": (60, 40),
             "time_to_accuracy": (200, 0), "compile_max_autotune": (120, 0)}


IMPORT_PROBE = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        out[name] = "ok"
    except Exception as err:  # an install problem: named, and the next module is still tried
        out[name] = f"{type(err).__name__}: {err}"[:300]
print(json.dumps(out))
"""


def check_imports(_: Path) -> dict[str, Any]:
    """Every module cifarbench loads, imported in a fresh process: an install problem shows here, first."""
    modules = ["cifarbench.train.run", "cifarbench.data.albumentations_path", "cifarbench.data.device_path",
               "cifarbench.data.ffcv_path", "cifarbench.cli", "albumentations", "jsonargparse", "wandb", "lightning",
               "torchmetrics"]
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *modules], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1][-400:])
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if found["wandb"] != "ok":  # imported only when a run logs to W&B; every run here has output.wandb=disabled
        found["wandb"] = f"optional, not importable ({found['wandb']}): the check's runs do not log to W&B"
    return found


def check_max_autotune(runs: Path) -> dict[str, Any]:
    if not CUDA:
        return {"skipped": "needs a CUDA GPU (refused on CPU before any work)"}
    flags = ["--trainer.precision", "bf16-mixed", "--trainer.channels_last", "true", "--trainer.compile", "max-autotune"]
    return run_fit(fit_flags(runs, "max-autotune") + flags, runs, "max-autotune", timeout=ESTIMATES["compile_max_autotune"][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 as a folder or .tar.gz (time-to-accuracy)")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole check (default 480)")
    args = parser.parse_args()
    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    # every run's record and log, packed into OUT/runs.tar.gz after each step: the GPU machine returns 8 files
    runs = Path(tempfile.mkdtemp(prefix="gpu-check-runs-"))
    result: dict[str, Any] = {"cuda": CUDA, "budget_seconds": args.budget, "finished": False,
                              "sizes": {"width": WIDTH, "batch": BATCH, "train_images": TRAIN_IMAGES, "epochs": EPOCHS},
                              "environment": None, "steps": {}, "skipped": {}}
    steps: dict[str, Callable[[Path], dict[str, Any]]] = {
        "imports": check_imports, "peak_flops": check_peaks, "knobs": check_knobs, "data_paths": check_data_paths,
        "time_to_accuracy": lambda out: check_time_to_accuracy(out, args.data),
        "compile_max_autotune": check_max_autotune}
    for name, step in steps.items():
        left = args.budget - (time.perf_counter() - began)
        needed = ESTIMATES[name][0 if CUDA else 1]
        if needed > left:
            result["skipped"][name] = f"needs ~{needed} s, {left:.0f} s of the {args.budget:.0f} s budget left"
            print(f"{name}: skipped ({result['skipped'][name]})", flush=True)
            continue
        start = time.perf_counter()
        try:
            result["steps"][name] = step(runs)
        except Exception as err:  # recorded; the next step still runs
            result["steps"][name] = {"error": f"{type(err).__name__}: {err}"}
        result["steps"][name + "_seconds"] = round(time.perf_counter() - start, 1)
        if name == "imports":
            print(json.dumps(result["steps"]["imports"], indent=1), flush=True)
            result["environment"] = collect_environment()
        save(args.out, result, runs)  # after every step: a check cut off later keeps what it has
        print(f"{name}: done in {result['steps'][name + '_seconds']} s", flush=True)
    result |= {"finished": True, "elapsed_seconds": round(time.perf_counter() - began, 1)}
    save(args.out, result, runs)
    print(markdown(result))


def save(out: Path, result: dict[str, Any], runs: Path) -> None:
    """The summary (JSON, Markdown) and the runs so far, each file replaced whole (a kill leaves the last ones)."""
    atomic_write_text(out / "gpu-check.json", json.dumps(result, indent=2, default=str) + "\n")
    atomic_write_text(out / "gpu-check.md", markdown(result))
    partial = out / ".runs.tar.gz.partial"
    with tarfile.open(partial, "w:gz") as tar:  # records, configs, metrics and logs; no plots or checkpoints
        tar.add(runs, arcname="runs", filter=lambda member: None if member.name.endswith((".png", ".ckpt")) else member)
    os.replace(partial, out / "runs.tar.gz")


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"] or {"cpu": {"model": "?", "logical_cores": "?"}}
    gpu = (env.get("gpu") or {}).get("names", ["none"])[0]
    state = "finished" if result["finished"] else "partial: cut off before its end"
    lines = [f"# gpu-check on {gpu} ({env['cpu']['model']}, {env['cpu']['logical_cores']} cores)", "",
             f"CUDA: {result['cuda']}; sizes: {result['sizes']}; budget {result['budget_seconds']:.0f} s; {state}", "",
             "| step | item | result |", "|---|---|---|"]
    for step in ("imports", "peak_flops", "knobs", "data_paths"):
        for item, value in result["steps"].get(step, {}).items():
            lines.append(f"| {step} | {item} | {_cell(value)} |")
    for step in ("time_to_accuracy", "compile_max_autotune"):
        if step in result["steps"]:
            lines.append(f"| {step} | run | {_cell(result['steps'][step])} |")
    lines += [f"| {step} | skipped | {why} |" for step, why in result["skipped"].items()]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    return ", ".join(f"{k}: {v:,.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in value.items() if v is not None)


if __name__ == "__main__":
    main()
