"""Every number that needs a GPU, in one short run that cannot lose its results: the install (an import smoke test),
peak FLOPs, every precision with and without channels_last, the three data paths in `fit` and profile-data's
verdict, DDP on NCCL, torch.compile's modes (compile time apart), the harness's own perturbation, the seed recipe
and airbench94 to 90% on real images, and the published `airbench` package on the same images as an anchor.

Writes gpu-check.json, gpu-check.md and runs.tar.gz (every run's record and log) into --out after every step,
inside one time budget (--budget, default 540 s, whose steps' estimates add up to at most that): a step whose
estimate no longer fits is skipped and named, never started and cut off. The numbers a team acts on come first
(time to target on real images, the airbench anchor), then the knobs; --extras adds the harness perturbation and
max-autotune (minutes of Triton autotuning where it goes wrong) after them. On a machine without CUDA the GPU-only items are skipped
with a reason and the rest runs at a tiny size, so the script itself is tested on CPU. The steps are in
bench/gpu_steps.py.

    scripts/gpu-check.sh OUT_DIR [BUDGET]   (installs the carried wheels first on the GPU machine)
"""

from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from cifarbench.measure.environment import collect_environment
from cifarbench.record import atomic_write_text

import gpu_steps as steps
from cli_runs import attempt
from gpu_steps import CUDA, SIZES, Context

BUDGET = 540  # seconds: the device call's 600 s less a minute for the start and the wheels
# name -> (step, seconds expected on the GPU, on this CPU), in the order they run: what matters most first.
STEPS: dict[str, tuple[Callable[[Context], dict[str, Any]], int, int]] = {
    "imports": (steps.check_imports, 15, 10),
    "peak_flops": (steps.check_peaks, 10, 10),
    "airbench94_to_target": (steps.check_airbench94, 45, 0),
    "airbench_anchor": (steps.check_airbench_anchor, 35, 15),
    "seed_recipe_to_target": (steps.check_seed_recipe, 120, 0),
    "precision": (steps.check_precision, 110, 75),
    "data_paths": (steps.check_data_paths, 60, 50),
    "ddp": (steps.check_ddp, 45, 20),
    "compile": (steps.check_compile, 90, 0),
}
assert sum(gpu for _, gpu, _ in STEPS.values()) <= BUDGET  # the default check fits its default budget
# Run after the steps, with --extras, while the budget lasts.
EXTRAS: dict[str, tuple[Callable[[Context], dict[str, Any]], int, int]] = {
    "perturbation": (steps.check_perturbation, 45, 25),
    "compile_max_autotune": (steps.check_max_autotune, 150, 0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10, a folder or .tar.gz (real-image steps)")
    parser.add_argument("--budget", type=float, default=BUDGET, help=f"seconds for the whole check (default {BUDGET})")
    parser.add_argument("--extras", default="", help=f"after the steps: 'all' or some of {','.join(EXTRAS)}")
    args = parser.parse_args()
    extras = list(EXTRAS) if args.extras == "all" else [e for e in args.extras.split(",") if e]
    if unknown := set(extras) - set(EXTRAS):
        parser.error(f"--extras={args.extras!r}: unknown {sorted(unknown)}; allowed: all, {', '.join(EXTRAS)}")
    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    # every run's record and log, packed into OUT/runs.tar.gz after each step: the GPU machine returns 8 files
    ctx = Context(runs=Path(tempfile.mkdtemp(prefix="gpu-check-runs-")), data=args.data)
    result: dict[str, Any] = {"cuda": CUDA, "budget_seconds": args.budget, "extras": extras, "finished": False,
                              "sizes": SIZES,
                              "environment": None, "steps": {}, "seconds": {}, "skipped": {}}
    for name, (step, *estimates) in [*STEPS.items(), *((e, EXTRAS[e]) for e in extras)]:
        left = args.budget - (time.perf_counter() - began)
        needed = estimates[0 if CUDA else 1]
        if needed > left:
            result["skipped"][name] = f"needs ~{needed} s, {left:.0f} s of the {args.budget:.0f} s budget left"
            print(f"{name}: skipped ({result['skipped'][name]})", flush=True)
            continue
        start = time.perf_counter()
        result["steps"][name] = attempt(lambda: step(ctx))
        result["seconds"][name] = round(time.perf_counter() - start, 1)
        if name == "imports":
            print(json.dumps(result["steps"]["imports"], indent=1), flush=True)
            result["environment"] = collect_environment()
        save(args.out, result, ctx.runs)  # after every step: a check cut off later keeps what it has
        print(f"{name}: done in {result['seconds'][name]} s", flush=True)
    result |= {"finished": True, "elapsed_seconds": round(time.perf_counter() - began, 1)}
    save(args.out, result, ctx.runs)
    print(markdown(result))


def save(out: Path, result: dict[str, Any], runs: Path) -> None:
    """The summary (JSON, Markdown) and the runs so far, each file replaced whole (a kill leaves the last ones)."""
    atomic_write_text(out / "gpu-check.json", json.dumps(result, indent=2, default=str) + "\n")
    atomic_write_text(out / "gpu-check.md", markdown(result))
    partial = out / ".runs.tar.gz.partial"
    bulky = (".png", ".ckpt", ".beton")  # plots, checkpoints and FFCV's files stay out: 16 MiB per file comes back
    with tarfile.open(partial, "w:gz") as tar:  # records, configs, metrics and logs
        tar.add(runs, arcname="runs", filter=lambda member: None if member.name.endswith(bulky) else member)
    os.replace(partial, out / "runs.tar.gz")


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"] or {"cpu": {"model": "?", "logical_cores": "?"}}
    gpu = (env.get("gpu") or {}).get("names", ["none"])[0]
    state = "finished" if result["finished"] else "partial: cut off before its end"
    lines = [f"# gpu-check on {gpu} ({env['cpu']['model']}, {env['cpu']['logical_cores']} cores)", "",
             f"CUDA: {result['cuda']}; sizes: {result['sizes']}; budget {result['budget_seconds']:.0f} s; {state}", "",
             "| step | item | result |", "|---|---|---|"]
    for step, items in result["steps"].items():
        took = f"{step} ({result['seconds'][step]:.0f} s)"
        lines += [f"| {took} | {item} | {_cell(value)} |" for item, value in items.items()]
    lines += [f"| {step} | skipped | {why} |" for step, why in result["skipped"].items()]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    """One result as ``key: value`` pairs; what is empty, and the peak's long provenance (in the JSON), left out."""
    if not isinstance(value, dict):
        return f"{value:,.4g}" if isinstance(value, float) else str(value)
    shown = {k: v for k, v in value.items() if k != "peak_flops_source" and v not in (None, {}, [])
             and not (isinstance(v, dict) and all(x is None for x in v.values()))}
    return ", ".join(f"{k}: {_cell(v) if isinstance(v, (float, dict)) else v}" for k, v in shown.items())


if __name__ == "__main__":
    main()
