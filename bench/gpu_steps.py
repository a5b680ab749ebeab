"""The steps of bench/gpu_check.py. Each takes the check's :class:`Context` and returns what it measured, one entry
per item. An item that cannot run here says why (``{"skipped": ...}``), one that fails says how (``{"error": ...}``),
and the next item still runs. Training items are real `cifarbench fit` (or `profile-data`) runs, each in its own
process so that a CUDA fault in one cannot poison the next; each keeps its record and log in ``Context.runs``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import torch

from cifarbench.measure.peak_flops import apply_math_mode, peak_flops

from cli_runs import attempt, cli_run  # beside this file

CUDA = torch.cuda.is_available()
# The synthetic runs' size: on the GPU, seconds of a full-width network per run; on a CPU, enough to prove the path.
SIZES = ({"width": 64, "batch": 512, "train_images": 25_600, "epochs": 2} if CUDA else
         {"width": 8, "batch": 100, "train_images": 1_000, "epochs": 1})
WORKERS = 8 if CUDA else 1  # loader processes of the albumentations and FFCV paths
TARGET = 0.90  # both shipped recipes reach it on the JPEG copy (make reproduce); 93% / 94% on the original images
NO_GPU = "needs a CUDA GPU"
CPU_RECIPES = ("on this CPU the seed recipe took 129 min and airbench94 ~20 min a run (bench/results/cpu-2core/"
               "reproduce, made by make reproduce)")
CPU_COMPILE = ("torch.compile of a whole run costs minutes of this 2-core machine's test suite; tests/test_knobs.py "
               "compiles on a CPU, and reduce-overhead and max-autotune are CUDA-graph and Triton modes")


@dataclass
class Context:
    runs: Path  # every run's directory, packed into runs.tar.gz after each step
    data: Optional[Path]  # CIFAR-10 as a .tar.gz or folder, for the real-image steps


def fit_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What a row of the summary shows of a fit record (the whole record is in runs.tar.gz)."""
    tp, tt = record["throughput"], record["time_to_target"]
    return {"status": record["status"], "images_per_sec": tp.get("images_per_sec"), "mfu": tp.get("mfu"),
            "peak_flops_source": tp.get("peak_flops_source"),
            "untimed_warmup_seconds": record.get("warmup", {}).get("seconds"),
            "warmup_overhead_seconds": tp.get("warmup_overhead_seconds"),
            "fetch_fraction": (record.get("data_wait") or {}).get("fetch_fraction"),
            "time_to_target_seconds": {name: c["seconds"] for name, c in (tt.get("clocks") or {}).items()},
            "best_val_acc": record["accuracy"].get("best_val"),
            "host_syncs_per_step": (record.get("measure") or {}).get("host_syncs_per_step"),
            "framework_syncs_per_step": (record.get("measure") or {}).get("framework_syncs_per_step"),
            **resources_summary(record.get("resources") or {})}


def resources_summary(resources: dict[str, Any]) -> dict[str, Any]:
    """Memory and energy per step: the device's peak (the host's on a CPU), joules per steady step and what the
    energy came from (or why none), and whether the GPU was throttled."""
    energy = resources.get("energy") or {}
    return {"peak_device_memory_reserved_bytes": resources.get("peak_device_memory_reserved_bytes"),
            "peak_host_rss_bytes": resources.get("peak_host_rss_bytes"),
            "joules_per_step": energy.get("joules_per_step"), "images_per_joule": energy.get("images_per_joule"),
            "energy_source": energy.get("source"), "gpu_throttled": (resources.get("gpu") or {}).get("throttled")}


def host_sync_check(record: dict[str, Any]) -> str:
    """The check's verdict on a run's steady steps: 0 waits from cifarbench's side (CUDA's sync debug mode)."""
    syncs = record.get("measure") or {}
    count = syncs.get("host_syncs_per_step")
    if count is None:
        return "not counted (no CUDA here)"
    if count == 0:
        return "ok: 0 host syncs per steady step"
    return f"FAILED: {count} host syncs per steady step at {list(syncs.get('sites', {}))[:5]}"


def synthetic_args() -> list[str]:
    """A short fit on generated images, device path, at :data:`SIZES` (later flags override these)."""
    return ["--model.width", str(SIZES["width"]), "--data.source", "synthetic", "--data.path", "device",
            "--data.batch_size", str(SIZES["batch"]), "--data.synthetic_train_size", str(SIZES["train_images"] + 1000),
            "--data.synthetic_test_size", "1000", "--data.val_size", "1000", "--data.num_workers", "0",
            "--trainer.accelerator", "cuda" if CUDA else "cpu", "--trainer.epochs", str(SIZES["epochs"]),
            "--trainer.checkpoint", "false", "--test", "false", "--measure.warmup_steps", "10" if CUDA else "2",
            "--measure.target_accuracy", "1.0"]


def synthetic_fit(ctx: Context, run_id: str, flags: list[str], timeout: float = 240) -> dict[str, Any]:
    """A synthetic run's summary row."""
    return fit_summary(cli_run("fit", [*synthetic_args(), *flags], ctx.runs, run_id, timeout))


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


def check_imports(_: Context) -> dict[str, Any]:
    """Every module cifarbench loads, imported in a fresh process: an install problem shows here, first."""
    modules = ["cifarbench.train.run", "cifarbench.data.albumentations_path", "cifarbench.data.device_path",
               "cifarbench.data.ffcv_path", "cifarbench.tools.profile_data", "cifarbench.cli", "albumentations",
               "jsonargparse", "lightning", "torchmetrics", "airbench", "wandb"]
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *modules], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1][-400:])
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if found["wandb"] != "ok":  # imported only when a run logs to W&B; every run here has output.wandb=disabled
        found["wandb"] = f"optional, not importable ({found['wandb']}): the check's runs do not log to W&B"
    return found


def check_peaks(_: Context) -> dict[str, Any]:
    """Each precision's peak; 32-true under both math modes, each set as a `fit` with that matmul_precision sets it
    (the process's own TF32 flags would otherwise decide which peak "32-true" gets)."""
    device = torch.device("cuda" if CUDA else "cpu")
    out = {}
    for name, precision, math in (("bf16-mixed", "bf16-mixed", "highest"), ("16-mixed", "16-mixed", "highest"),
                                  ("32-true strict", "32-true", "highest"), ("32-true TF32", "32-true", "high")):
        apply_math_mode(math)
        peak = peak_flops(device, precision)
        out[name] = {"flops": peak.flops, "source": peak.source}
    apply_math_mode("highest")
    return out


PRECISIONS = {  # name -> fit flags; each also runs with channels_last
    "fp32 strict": ["--trainer.precision", "32-true", "--trainer.matmul_precision", "highest"],
    "fp32 TF32": ["--trainer.precision", "32-true", "--trainer.matmul_precision", "high"],
    "bf16-mixed": ["--trainer.precision", "bf16-mixed"],
    "bf16-true": ["--trainer.precision", "bf16-true"],
    "16-mixed": ["--trainer.precision", "16-mixed"],
}


def check_precision(ctx: Context) -> dict[str, Any]:
    """Every precision, eager, with and without channels_last (16-mixed is refused on a CPU by the CLI itself)."""
    out = {}
    for i, (name, flags) in enumerate(PRECISIONS.items()):
        for channels_last in (False, True):
            item = name + (" + channels_last" if channels_last else "")
            if name == "fp32 TF32" and not CUDA:
                out[item] = {"skipped": f"{NO_GPU}: TF32 is a tensor-core math mode (Ampere and later)"}
                continue
            layout = ["--trainer.channels_last", str(channels_last).lower()]
            out[item] = attempt(lambda: synthetic_fit(ctx, f"precision{i}{'-cl' * channels_last}", flags + layout))
    return out


def check_data_paths(ctx: Context) -> dict[str, Any]:
    """Each data path feeding a real `fit`, then profile-data's three rates and verdict on the albumentations path."""
    out = {}
    for path, workers in (("device", 0), ("albumentations", WORKERS), ("ffcv", WORKERS)):
        item = f"fit, {path}" + (f" ({workers} workers)" if workers else "")
        if path == "ffcv" and importlib.util.find_spec("ffcv") is None:
            out[item] = {"skipped": "ffcv is not installed here (it builds from source against apt's OpenCV and "
                                    "libjpeg-turbo, which the GPU image lacks and cannot fetch)"}
            continue
        flags = ["--data.path", path, "--data.num_workers", str(workers), "--data.ffcv.dir", str(ctx.runs / "betons")]
        out[item] = attempt(lambda: synthetic_fit(ctx, f"path-{path}", flags))

    def profile() -> dict[str, Any]:
        flags = [*synthetic_args(), "--data.path", "albumentations", "--data.num_workers", str(WORKERS),
                 "--steps", "30" if CUDA else "5", "--warmup", "5" if CUDA else "2"]
        row = cli_run("profile-data", flags, ctx.runs, "profile-data")["rows"][0]
        shown = ("loader_images_per_sec", "model_images_per_sec", "train_images_per_sec", "train_fetch_fraction",
                 "verdict")
        return {key: row[key] for key in shown}

    out[f"profile-data, albumentations ({WORKERS} workers)"] = attempt(profile)
    return out


def check_ddp(ctx: Context) -> dict[str, Any]:
    """`strategy: ddp` on one device: the process group (NCCL on CUDA, gloo here), the ranks all_gather, the
    divergence check's collective, Lightning's barriers, and DDP with compile."""
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "1"]

    def run(run_id: str, flags: list[str], env: Optional[dict[str, str]] = None) -> dict[str, Any]:
        record = cli_run("fit", [*synthetic_args(), *ddp, *flags], ctx.runs, run_id, env=env)
        environment = record["environment"]
        return {**fit_summary(record), "strategy": environment.get("strategy"),
                "backend": environment.get("process_group_backend"), "world_size": environment.get("world_size"),
                "divergence_checked_every": record["divergence"].get("check_every"),
                "compile_optimize_ddp": environment.get("compile_optimize_ddp")}

    def compiled() -> dict[str, Any]:
        """DDP + compile: dynamo's DDPOptimizer must split the graph at DDP's buckets (else the gradient all-reduce
        waits for the whole backward); TORCH_LOGS=ddp_graphs prints each split, read from the run's log."""
        row = run("ddp-compile", ["--trainer.compile", "default"], env={"TORCH_LOGS": "ddp_graphs"})
        return row | ddp_graph_splits((ctx.runs / "ddp-compile" / "fit.log").read_text())

    return {"ddp, devices 1": attempt(lambda: run("ddp", [])),
            "ddp, devices 1 + compile default": attempt(compiled) if CUDA else {"skipped": CPU_COMPILE}}


def ddp_graph_splits(log: str) -> dict[str, Any]:
    """What dynamo's DDPOptimizer printed under TORCH_LOGS=ddp_graphs: how many graphs it split, into how many
    subgraphs in all."""
    splits = log.count("---split graph---")
    return {"ddp_graphs_split": splits, "ddp_subgraphs": len(re.findall(r"---submod_\d+ graph---", log)),
            "ddp_graph_split_check": "ok: DDPOptimizer split the compiled graph" if splits else
                                     "FAILED: no split graph in the log (TORCH_LOGS=ddp_graphs)"}


def check_compile(ctx: Context) -> dict[str, Any]:
    """torch.compile default and reduce-overhead (bf16-mixed + channels_last); the compile happens in the untimed
    warm-up, whose seconds are reported apart from the steady images/s."""
    if not CUDA:
        return {mode: {"skipped": CPU_COMPILE} for mode in ("compile default", "compile reduce-overhead")}
    knobs = ["--trainer.precision", "bf16-mixed", "--trainer.channels_last", "true", "--trainer.compile"]
    return {f"compile {mode}": attempt(lambda: synthetic_fit(ctx, f"compile-{mode}", knobs + [mode]))
            for mode in ("default", "reduce-overhead")}


def check_max_autotune(ctx: Context) -> dict[str, Any]:
    if not CUDA:
        return {"compile max-autotune": {"skipped": CPU_COMPILE}}
    knobs = ["--trainer.precision", "bf16-mixed", "--trainer.channels_last", "true", "--trainer.compile",
             "max-autotune"]
    return {"compile max-autotune": attempt(lambda: synthetic_fit(ctx, "compile-max-autotune", knobs, timeout=150))}


def recipe(ctx: Context, config: str, run_id: str) -> dict[str, Any]:
    """A shipped recipe on the real images to TARGET, stopping there (DAWNBench's rule), device path, bf16 +
    channels_last, every clock of its record."""
    if not CUDA:
        return {run_id: {"skipped": f"{NO_GPU}: {CPU_RECIPES}"}}
    if ctx.data is None or not ctx.data.exists():
        return {run_id: {"skipped": f"no CIFAR-10 copy given (--data; looked for {ctx.data})"}}
    flags = ["-c", config, "--data.source", "folder", "--data.root", str(ctx.data), "--data.path", "device",
             "--trainer.accelerator", "cuda", "--trainer.precision", "bf16-mixed", "--trainer.channels_last", "true",
             "--measure.target_accuracy", str(TARGET), "--measure.stop_at_target", "true",
             "--trainer.checkpoint", "false"]

    def run() -> dict[str, Any]:
        record = cli_run("fit", flags, ctx.runs, run_id, timeout=300)
        return {"target": TARGET, "reached_at_epoch": record["time_to_target"].get("epoch"), **fit_summary(record),
                "host_sync_check": host_sync_check(record)}

    return {run_id: attempt(run)}


def check_airbench94(ctx: Context) -> dict[str, Any]:
    return recipe(ctx, "bench/configs/airbench94.yaml", "airbench94-to-target")


def check_seed_recipe(ctx: Context) -> dict[str, Any]:
    return recipe(ctx, "bench/configs/seed.yaml", "seed-recipe-to-target")


def airbench_files(data: Path, work: Path, train_subset: Optional[int] = None,
                   test_subset: Optional[int] = None) -> Path:
    """The images as the `airbench` package reads them (WORK/cifar10/{train,test}.pt: uint8 NHWC images, labels,
    class names), from the same copy cifarbench trains on, so both see identical pixels."""
    from cifarbench.data.sources import image_folder

    train, test = image_folder(str(data), train_subset, test_subset)
    (work / "cifar10").mkdir(parents=True, exist_ok=True)
    for split, images in (("train", train), ("test", test)):
        torch.save({"images": torch.from_numpy(images.images), "labels": torch.from_numpy(images.labels),
                    "classes": list(images.classes)}, work / "cifar10" / f"{split}.pt")
    return work


def airbench_row(printed: str) -> dict[str, float]:
    """airbench's own final row (``| run | eval | ... | tta_val_acc | total_time_seconds |``): its accuracy and its
    clock (training and the final test-time-augmented evaluation; warm-up and per-epoch evaluations off it)."""
    row = [line for line in printed.splitlines() if "|" in line and "eval" in line][-1]
    cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
    return {"tta_accuracy": float(cells[5]), "seconds": float(cells[6])}


def check_airbench_anchor(ctx: Context) -> dict[str, Any]:
    """The published `airbench` package (PyPI 0.1.8), airbench94 on the same images and GPU: one warm-up run,
    then three timed runs, each as airbench itself times and prints it. On a CPU the images are converted and
    read back through airbench's own loader (its training needs CUDA). In its own process: importing airbench
    turns cudnn.benchmark on for everything after it."""
    item = "airbench 0.1.8 (PyPI), train94"
    if ctx.data is None or not ctx.data.exists():
        return {item: {"skipped": f"no CIFAR-10 copy given (--data; looked for {ctx.data})"}}

    def run() -> dict[str, Any]:
        done = subprocess.run([sys.executable, __file__, "airbench-anchor", str(ctx.data)], capture_output=True,
                              text=True, timeout=600)
        (ctx.runs / "airbench-anchor.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(((done.stderr or done.stdout).strip().splitlines() or ["(no output)"])[-1][-400:])
        return json.loads(done.stdout.strip().splitlines()[-1])

    return {item: attempt(run)}


def airbench_anchor(data: Path) -> dict[str, Any]:
    """The anchor's runs, in this (its own) process."""
    import airbench

    work = airbench_files(data, Path(tempfile.mkdtemp(prefix="gpu-check-airbench-")),
                          *((None, None) if CUDA else (1000, 500)))
    with contextlib.chdir(work):  # airbench reads ./cifar10/{train,test}.pt
        if not CUDA:
            loader = airbench.CifarLoader("cifar10", train=True, batch_size=100, gpu="cpu")
            images, labels = next(iter(loader))
            return {"skipped": f"{NO_GPU} (airbench times with CUDA events); its loader read the converted "
                               f"images here: batches of {tuple(images.shape)}, {len(loader.images)} images"}
        airbench.warmup94()
        runs = []
        for i in range(3):
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                airbench.train94(run=i)
            runs.append(airbench_row(printed.getvalue()))
    return {"runs": runs, "mean_seconds": sum(r["seconds"] for r in runs) / 3,
            "mean_tta_accuracy": sum(r["tta_accuracy"] for r in runs) / 3,
            "clock": "airbench's own: training and the final TTA evaluation; warm-up run and per-epoch "
                     "evaluations off it"}


def check_perturbation(ctx: Context) -> dict[str, Any]:
    """bench/harness_overhead.py's three arms on bf16-mixed + channels_last: (a) a hand-written loop, (b) `fit` with
    every measurement, (c) `fit` with per-step measurement off; W&B off (the GPU image has none)."""
    import harness_overhead  # beside this file

    variant = "bf16-mixed + channels_last"
    cfg = harness_overhead.base_config(ctx.runs / "perturbation", epochs=1, accelerator="cuda" if CUDA else "cpu",
                                       steps_per_epoch=80 if CUDA else 10, wandb="disabled")
    cfg = replace(cfg, trainer=replace(cfg.trainer, **harness_overhead.VARIANTS[variant]))
    reps = 3 if CUDA else 1
    arms = harness_overhead.compare_arms(cfg, reps, slug="perturbation", label=variant, settle_seconds=1.0)
    medians = {f"{key}_median": arms[key]["median"]
               for key in ("hand_loop", "fit_measured", "fit_unmeasured", "b_over_a", "c_over_a", "b_over_c")}
    return {variant: {"rounds": reps, **medians}}


if __name__ == "__main__":  # python bench/gpu_steps.py airbench-anchor DATA: the anchor in a process of its own
    print(json.dumps(airbench_anchor(Path(sys.argv[2]))))
