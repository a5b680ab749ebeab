"""scripts/gpu-check.sh on this CPU: the GPU-only parts are skipped with a note, the rest really runs."""

import json
import subprocess

from conftest import REPO


def test_gpu_check_runs_on_cpu_and_says_what_it_skipped(tmp_path):
    done = subprocess.run(["bash", str(REPO / "scripts/gpu-check.sh"), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads((tmp_path / "gpu-check.json").read_text())
    steps = result["steps"]
    assert result["cuda"] is False and result["environment"]["cpu"]["logical_cores"] >= 1
    knobs = steps["knobs"]
    assert "needs a CUDA GPU" in knobs["16-mixed"]["skipped"]
    assert "needs a CUDA GPU" in knobs["bf16-mixed + channels_last + compile max-autotune"]["skipped"]
    for name in ("32-true", "bf16-mixed", "bf16-mixed + channels_last"):
        assert knobs[name]["images_per_sec"] > 0 and knobs[name]["status"] in ("completed", "not-reached"), knobs[name]
        assert knobs[name]["mfu"] > 0 and knobs[name]["peak_flops_source"].startswith("cpu matmul probe")
    for name, measured in steps["data_paths"].items():
        assert measured.get("images_per_sec", 0) > 0 or "skipped" in measured, (name, measured)
    assert steps["data_paths"]["device"]["images_per_sec"] > 0
    assert "needs a GPU" in steps["time_to_accuracy"]["skipped"]
    assert steps["peak_flops"]["bf16-mixed"]["flops"] > 0
    summary = (tmp_path / "gpu-check.md").read_text()
    assert summary.startswith("# gpu-check on none") and "16-mixed | skipped: needs a CUDA GPU" in summary
