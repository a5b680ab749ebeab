"""The checks that need a GPU, in one short run: precisions, channels_last, compile, data paths, MFU and a
time-to-accuracy run. Writes gpu-check.json and gpu-check.md into --out.

On a machine without CUDA every GPU-only step is skipped with a note saying so, and the rest runs at a
tiny size, so the script itself is tested on CPU. Each step runs on its own: one that fails is recorded
with its error and the next one runs. Training steps are real `cifarbench fit` runs (their records say
exactly what was measured); the data-path step times each path's loader alone (profile-data's (a)).

    scripts/gpu-check.sh OUT_DIR        (installs carried wheels first on the GPU machine)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
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
    "bf16-mixed + channels_last + compile max-autotune": (
        ["--trainer.precision", "bf16-mixed", "--trainer.channels_last", "true", "--trainer.compile", "max-autotune"],
        True),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 as a folder or .tar.gz (time-to-accuracy)")
    args = parser.parse_args()
    env = collect_environment()
    result: dict[str, Any] = {"cuda": CUDA, "sizes": {"width": WIDTH, "batch": BATCH, "train_images": TRAIN_IMAGES,
                                                      "epochs": EPOCHS}, "environment": env, "steps": {}}
    steps: dict[str, Callable[[Path], dict[str, Any]]] = {
        "peak_flops": check_peaks, "knobs": check_knobs, "data_paths": check_data_paths,
        "time_to_accuracy": lambda runs: check_time_to_accuracy(runs, args.data)}
    with tempfile.TemporaryDirectory() as runs:
        for name, step in steps.items():
            start = time.perf_counter()
            try:
                result["steps"][name] = step(Path(runs))
            except Exception as err:
                result["steps"][name] = {"error": f"{type(err).__name__}: {err}"}
            result["steps"][name + "_seconds"] = round(time.perf_counter() - start, 1)
            print(f"{name}: done in {result['steps'][name + '_seconds']} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "gpu-check.json", json.dumps(result, indent=2, default=str) + "\n")
    atomic_write_text(args.out / "gpu-check.md", markdown(result))
    print(markdown(result))


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    gpu = (env.get("gpu") or {}).get("names", ["none"])[0]
    lines = [f"# gpu-check on {gpu} ({env['cpu']['model']}, {env['cpu']['logical_cores']} cores)", "",
             f"CUDA: {result['cuda']}; sizes: {result['sizes']}", "", "| step | item | result |", "|---|---|---|"]
    for step in ("peak_flops", "knobs", "data_paths"):
        for item, value in result["steps"].get(step, {}).items():
            lines.append(f"| {step} | {item} | {_cell(value)} |")
    lines.append(f"| time_to_accuracy | run | {_cell(result['steps'].get('time_to_accuracy', {}))} |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if not isinstance(value, dict):
        return str(value)
    return ", ".join(f"{k}: {v:,.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in value.items() if v is not None)


if __name__ == "__main__":
    main()
