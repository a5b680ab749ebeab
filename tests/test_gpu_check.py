"""scripts/gpu-check.sh on this CPU: the GPU-only parts are skipped with a note, the rest really runs; a check
killed half-way keeps a valid summary of the steps it finished; the budget skips, and names, what would not fit."""

import json
import os
import signal
import subprocess
import tarfile

from conftest import REPO, wait_until


def test_gpu_check_runs_on_cpu_and_says_what_it_skipped(tmp_path):
    done = subprocess.run(["bash", str(REPO / "scripts/gpu-check.sh"), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads((tmp_path / "gpu-check.json").read_text())
    steps = result["steps"]
    assert result["cuda"] is False and result["finished"] and result["environment"]["cpu"]["logical_cores"] >= 1
    assert set(steps["imports"].values()) == {"ok"} and done.stdout.lstrip().startswith("{")  # printed first
    assert (REPO / "scripts/gpu-wheels.lock").read_text().count("==") >= 10  # what the GPU machine gets, pinned
    knobs = steps["knobs"]
    assert "needs a CUDA GPU" in knobs["16-mixed"]["skipped"]
    for name in ("32-true", "bf16-mixed", "bf16-mixed + channels_last"):
        assert knobs[name]["images_per_sec"] > 0 and knobs[name]["status"] in ("completed", "not-reached"), knobs[name]
        assert knobs[name]["mfu"] > 0 and knobs[name]["peak_flops_source"].startswith("cpu matmul probe")
    for name, measured in steps["data_paths"].items():
        assert measured.get("images_per_sec", 0) > 0 or "skipped" in measured, (name, measured)
    assert steps["data_paths"]["device"]["images_per_sec"] > 0
    assert "needs a GPU" in steps["time_to_accuracy"]["skipped"]
    assert "needs a CUDA GPU" in steps["compile_max_autotune"]["skipped"]
    assert steps["peak_flops"]["bf16-mixed"]["flops"] > 0
    assert result["elapsed_seconds"] <= result["budget_seconds"] and result["skipped"] == {}
    summary = (tmp_path / "gpu-check.md").read_text()
    assert summary.startswith("# gpu-check on none") and "16-mixed | skipped: needs a CUDA GPU" in summary
    with tarfile.open(tmp_path / "runs.tar.gz") as tar:  # every fit's record and log came back with the summary
        names = tar.getnames()
    assert sum(n.endswith("/record.json") for n in names) == 3 and sum(n.endswith("/fit.log") for n in names) == 3
    assert len(list(tmp_path.iterdir())) <= 8  # what the GPU machine hands back: 8 files at most


def test_a_check_killed_half_way_keeps_a_valid_summary_and_a_small_budget_names_what_it_skipped(tmp_path):
    """SIGKILL (nothing can clean up) once its first step is written: the JSON and Markdown hold the steps done so
    far. Then a budget too small for the training steps: they are skipped and named, not started."""
    check = subprocess.Popen(["bash", str(REPO / "scripts/gpu-check.sh"), str(tmp_path / "killed")], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    summary = tmp_path / "killed/gpu-check.json"
    wait_until(lambda: summary.exists() or check.poll() is not None, 300, "no summary after the first step")
    os.killpg(check.pid, signal.SIGKILL)  # the script execs python: the whole check dies at once
    check.wait(timeout=30)
    partial = json.loads(summary.read_text())
    assert partial["finished"] is False and "imports" in partial["steps"], partial
    assert "partial: cut off before its end" in (tmp_path / "killed/gpu-check.md").read_text()

    small = subprocess.run(["bash", str(REPO / "scripts/gpu-check.sh"), str(tmp_path / "small"), "30"],
                           capture_output=True, text=True, timeout=300, cwd=REPO)
    assert small.returncode == 0, (small.stdout + small.stderr)[-2000:]
    result = json.loads((tmp_path / "small/gpu-check.json").read_text())
    assert result["finished"] and "knobs" not in result["steps"]
    assert result["skipped"]["knobs"].startswith("needs ~60 s") and "of the 30 s budget left" in result["skipped"]["knobs"]
    assert "| knobs | skipped | needs ~60 s" in (tmp_path / "small/gpu-check.md").read_text()
