"""scripts/gpu-check.sh on this CPU. The GPU machine's way in: a clean venv standing in for its image, the carried
wheels of scripts/gpu-wheels.lock and cifarbench from the tree, no .venv; there every step runs, the GPU-only items
skipped with their reason. A check killed half-way keeps a valid summary of the steps it finished; a small budget
skips, and names, what would not fit."""

import json
import os
import signal
import subprocess
import sys
import tarfile

from conftest import REPO, copy_tree

CIFAR10 = REPO.parent / "shared/data/cifar10-jpeg.tar.gz"


def carried_tree(tmp_path):
    """What travels to the GPU machine: the working tree's files that git does not ignore (no .venv), with the
    locked wheels for this machine's Python and the CIFAR-10 copy added by scripts/gpu-wheels.sh."""
    tree = copy_tree(tmp_path / "tree")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    done = subprocess.run(["bash", "scripts/gpu-wheels.sh"], cwd=tree, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "GPU_PYTHON": version, "CIFAR10": str(CIFAR10)})
    assert done.returncode == 0, done.stderr[-2000:]
    locked = [line for line in (REPO / "scripts/gpu-wheels.lock").read_text().splitlines() if "==" in line]
    assert len(list((tree / ".whl").glob("*.whl"))) == len(locked) >= 12
    return tree


def image_venv(tmp_path):
    """A clean venv holding what the GPU image holds (tests/gpu-image.txt), nothing of cifarbench's own."""
    venv = tmp_path / "image"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "-r",
                           str(REPO / "tests/gpu-image.txt")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return venv


def test_the_gpu_machine_install_runs_every_step_from_a_clean_venv(tmp_path):
    tree, venv, out = carried_tree(tmp_path), image_venv(tmp_path), tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"  # its python3 is "the image's"
    # a budget for this CPU (~2 min quiet; several times that beside other work), not the GPU's default 540 s;
    # the optional extras too
    done = subprocess.run(["bash", "scripts/gpu-check.sh", str(out), "900", "all"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads((out / "gpu-check.json").read_text())
    steps = result["steps"]
    assert result["cuda"] is False and result["finished"] and result["skipped"] == {}
    assert result["elapsed_seconds"] <= result["budget_seconds"]

    imports = steps["imports"]  # printed before anything else; only wandb (not on the image) may be missing
    assert done.stdout.lstrip().startswith("{") and imports.pop("wandb").startswith("optional, not importable")
    assert set(imports.values()) == {"ok"}, imports
    assert steps["peak_flops"]["bf16-mixed"]["flops"] > 0 and steps["peak_flops"]["32-true TF32"]["flops"] > 0

    precision = steps["precision"]
    assert "fp16 autocast needs a CUDA GPU" in precision["16-mixed"]["skipped"]  # the CLI's own refusal
    assert "needs a CUDA GPU" in precision["fp32 TF32 + channels_last"]["skipped"]
    for name in ("fp32 strict", "bf16-mixed", "bf16-true"):
        for item in (name, name + " + channels_last"):
            run = precision[item]
            assert run["status"] == "not-reached" and run["images_per_sec"] > 0 and run["mfu"] > 0, (item, run)
            assert run["untimed_warmup_seconds"] > 0 and run["peak_flops_source"].startswith("cpu matmul probe")
            assert run["peak_host_rss_bytes"] > 0 and run["energy_source"].startswith(("rapl", "none: "))

    paths = steps["data_paths"]
    assert paths["fit, device"]["images_per_sec"] > 0 and paths["fit, albumentations (1 workers)"]["images_per_sec"] > 0
    assert "ffcv is not installed" in paths["fit, ffcv (1 workers)"]["skipped"]  # not on the image either
    profile = paths["profile-data, albumentations (1 workers)"]
    assert profile["loader_images_per_sec"] > 0 and profile["verdict"].startswith(("compute-bound", "data-bound"))

    ddp = steps["ddp"]["ddp, devices 1"]
    assert ddp["strategy"] == "DDPStrategy" and ddp["backend"] == "gloo" and ddp["world_size"] == 1, ddp
    assert "torch.compile" in steps["compile"]["compile reduce-overhead"]["skipped"]
    assert "needs a CUDA GPU" in steps["seed_recipe_to_target"]["seed-recipe-to-target"]["skipped"]
    assert "needs a CUDA GPU" in steps["airbench94_to_target"]["airbench94-to-target"]["skipped"]
    anchor = steps["airbench_anchor"]["airbench 0.1.8 (PyPI), train94"]["skipped"]
    assert "its loader read the converted images here: batches of (100, 3, 32, 32), 1000 images" in anchor
    perturbation = steps["perturbation"]["bf16-mixed + channels_last"]
    assert perturbation["hand_loop_median"] > 0 and perturbation["b_over_a_median"] > 0
    assert "torch.compile" in steps["compile_max_autotune"]["compile max-autotune"]["skipped"]

    summary = (out / "gpu-check.md").read_text()
    assert summary.startswith("# gpu-check on none") and "| 16-mixed | skipped: trainer.precision='16-mixed'" in summary
    with tarfile.open(out / "runs.tar.gz") as tar:  # every run's record and log came back with the summary
        names = tar.getnames()
    # fits: 6 precision, 2 data paths, 1 DDP, 2 of the perturbation's arms; and profile-data's record
    assert sum(n.endswith("/record.json") for n in names) == 12 and sum(n.endswith("/fit.log") for n in names) >= 10
    assert len(list(out.iterdir())) <= 8  # what the GPU machine hands back: 8 files at most


def test_a_check_killed_after_60_s_keeps_a_valid_summary_and_a_small_budget_names_what_it_skipped(tmp_path):
    """SIGKILL (nothing can clean up) 60 s in, half-way through the training steps: the JSON and Markdown hold the
    steps done so far. Then a budget too small for the training steps: they are skipped and named, not started."""
    check = subprocess.Popen(["bash", str(REPO / "scripts/gpu-check.sh"), str(tmp_path / "killed")], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        check.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(check.pid, signal.SIGKILL)  # the script execs python: the whole check dies at once
    check.wait(timeout=30)
    partial = json.loads((tmp_path / "killed/gpu-check.json").read_text())
    assert partial["finished"] is False and {"imports", "peak_flops"} <= set(partial["steps"]), partial
    assert "perturbation" not in partial["steps"]  # cut off half-way, not at the end
    summary = (tmp_path / "killed/gpu-check.md").read_text()
    assert "partial: cut off before its end" in summary and "| peak_flops (" in summary
    with tarfile.open(tmp_path / "killed/runs.tar.gz") as tar:  # a whole archive, of the runs done so far
        tar.getnames()

    small = subprocess.run(["bash", str(REPO / "scripts/gpu-check.sh"), str(tmp_path / "small"), "30"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert small.returncode == 0, (small.stdout + small.stderr)[-2000:]
    result = json.loads((tmp_path / "small/gpu-check.json").read_text())
    assert result["finished"] and "precision" not in result["steps"] and "imports" in result["steps"]
    skipped = result["skipped"]["precision"]
    assert skipped.startswith("needs ~75 s") and "of the 30 s budget left" in skipped
    assert "| precision | skipped | needs ~75 s" in (tmp_path / "small/gpu-check.md").read_text()
    assert set(result["skipped"]) >= {"data_paths"} and "perturbation" not in result["skipped"]  # an extra: not asked


def test_a_bad_budget_is_one_line_before_anything_is_made(tmp_path):
    for bad in ("abc", "0", "-5", "1.5"):
        done = subprocess.run(["bash", str(REPO / "scripts/gpu-check.sh"), str(tmp_path / "out"), bad],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 2 and done.stdout == "", done
        assert done.stderr == f"gpu-check: BUDGET='{bad}': allowed: whole seconds, at least 1 (default 540)\n"
        assert not (tmp_path / "out").exists()


def test_the_default_steps_fit_the_default_budget_with_the_time_to_target_steps_first(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))  # undone after: bench/conftest.py must not shadow tests'
    import gpu_check

    names = list(gpu_check.STEPS)
    assert sum(gpu for _, gpu, _ in gpu_check.STEPS.values()) <= gpu_check.BUDGET == 540
    first_knob = names.index("precision")
    assert {"airbench94_to_target", "airbench_anchor", "seed_recipe_to_target"} <= set(names[:first_knob])
    assert set(gpu_check.EXTRAS) == {"perturbation", "compile_max_autotune"} and not set(gpu_check.EXTRAS) & set(names)


def test_a_failed_wheel_install_still_writes_a_json_naming_it(tmp_path):
    """On the GPU machine (no .venv) a broken carried wheel: OUT/gpu-check.json says so; nothing else ran."""
    tree = tmp_path / "tree"
    for name in ("scripts/gpu-check.sh", "bench/gpu_check.py"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes((REPO / name).read_bytes())
    (tree / ".whl").mkdir()
    (tree / ".whl/broken-1.0-py3-none-any.whl").write_bytes(b"not a zip")
    done = subprocess.run(["bash", "scripts/gpu-check.sh", str(tmp_path / "out")], cwd=tree, capture_output=True,
                          text=True, timeout=120)
    result = json.loads((tmp_path / "out/gpu-check.json").read_text())
    assert done.returncode == 1 and result["finished"] is False and result["steps"] == {}
    assert result["error"].startswith("wheel install failed: ") and "broken" in result["error"], result


def test_a_step_that_times_out_keeps_its_partial_log(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from cli_runs import attempt, cli_run

    flags = ["-c", str(REPO / "bench/configs/smoke.yaml"), "--trainer.epochs", "500", "--model.width", "8",
             "--data.synthetic_train_size", "2000", "--trainer.checkpoint", "false"]  # epochs of a second or so
    row = attempt(lambda: cli_run("fit", flags, tmp_path, "slow", timeout=30))
    assert row == {"error": "RuntimeError: timed out after 30 s; its output so far is in fit.log"}
    assert "epoch" in (tmp_path / "slow/fit.log").read_text()  # it had trained and said so before it was stopped
