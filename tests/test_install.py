"""cifarbench where its users are: a non-root user, an environment that already holds its own torch, a machine
without FFCV's system libraries. Run as a real non-root user (made here when the suite runs as root)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from importlib.metadata import version as installed_version
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, copy_tree, run_cli

USER = "cifarbench-user"
OTHER_TORCH = "2.13.0+cpu"  # pip serves this wheel from the machine's disk: a second torch, not the one make test uses


@pytest.fixture(scope="module")
def home():
    """A directory the non-root user owns (pytest's are root's, mode 0700), with the tree as git has it."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", USER], check=True)
    work = Path(tempfile.mkdtemp(prefix="cifarbench-user-", dir="/tmp"))
    copy_tree(work / "checkout")
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", USER, str(work)], check=True)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def as_user(home: Path, command: str, cwd: Path, timeout: float, path_first: str = "") -> subprocess.CompletedProcess:
    """``command`` in bash as the non-root user (as this user where that is not root), with this environment less
    any activated venv and the project's .venv, and one pip cache in ``home`` for both tests."""
    venv = str(REPO / ".venv")
    path = os.pathsep.join([p for p in [path_first, *os.environ["PATH"].split(os.pathsep)] if p and venv not in p])
    # nothing of this process's venv, W&B service or make (under `make test` a child make is make[1], which prints
    # "Leaving directory" after the demo's last line; the user's shell has no outer make)
    outer = ("VIRTUAL_ENV", "PYTHONPATH", "MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    env = {k: v for k, v in os.environ.items() if k not in outer and not k.startswith("WANDB_")}
    env |= {"PATH": path, "WANDB_MODE": "offline", "NO_ALBUMENTATIONS_UPDATE": "1", "PIP_CACHE_DIR": str(home / "pip")}
    prefix = ["runuser", "-u", USER, "--"] if os.geteuid() == 0 else []
    if prefix:
        env["HOME"] = pwd.getpwnam(USER).pw_dir
    return subprocess.run([*prefix, "bash", "-c", command], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


@pytest.mark.slow
def test_pip_install_into_an_environment_with_its_own_torch_keeps_it_and_runs_there(home):
    """`pip install <checkout>` (not editable) into the user's venv that holds torch 2.13.0+cpu: torch is left as it
    was, and a smoke fit, a 2-process DDP fit and the report all run on it; the report keeps the smoke runs of
    the two torch releases apart."""
    venv = home / "torch-2.13"
    done = as_user(home, f"python3 -m venv {venv} && {venv}/bin/pip install -q torch=={OTHER_TORCH} && "
                   f"{venv}/bin/pip install -q ./checkout", home, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:]
    version = as_user(home, f"{venv}/bin/python -c 'import torch; print(torch.__version__)'", home, timeout=120)
    assert version.stdout.strip().splitlines()[-1] == OTHER_TORCH, version.stdout[-2000:]

    out, cli = home / "runs", f"{venv}/bin/cifarbench"
    smoke = as_user(home, f"{cli} fit -c bench/configs/smoke.yaml --output.dir {out} --output.run_id smoke",
                    home / "checkout", timeout=600)
    assert smoke.returncode == 0, smoke.stdout[-3000:]
    ddp = as_user(home, f"{cli} fit -c bench/configs/smoke.yaml --output.dir {out} --output.run_id ddp --trainer.epochs 1 "
                  "--trainer.strategy ddp --trainer.devices 2", home / "checkout", timeout=600)
    assert ddp.returncode == 0, ddp.stdout[-3000:]
    for run_id, world in (("smoke", 1), ("ddp", 2)):
        record = json.loads((out / run_id / "record.json").read_text())
        assert record["status"] in ("completed", "not-reached"), record["error"]
        assert record["environment"]["versions"]["torch"].startswith(OTHER_TORCH.split("+")[0])
        assert Path(record["environment"]["executable"]).parent == venv / "bin"
        assert record["environment"]["world_size"] == world
    # the same smoke configuration under this project's torch: the report keeps the two torch releases apart
    here = run_cli("fit", "-c", "bench/configs/smoke.yaml", "--output.dir", str(out), "--output.run_id", "smoke-here",
                   timeout=600)
    assert here.returncode == 0, here.stdout[-3000:]
    report = as_user(home, f"{cli} report {out}", home / "checkout", timeout=600)
    assert report.returncode == 0 and report.stdout.strip().splitlines()[-1].endswith("report.html"), report.stdout[-3000:]
    assert "the records differ in torch" in report.stdout
    summary = pd.read_csv(out / "report/summary.csv")
    smoke = sorted(summary.loc[summary["gpus"] == 1, "label"])
    assert len(smoke) == 2 and sorted(f"torch={OTHER_TORCH}" in label for label in smoke) == [False, True], smoke
    assert any(f"torch={installed_version('torch')}" in label for label in smoke), smoke  # as the record names it


@pytest.mark.slow
def test_make_demo_without_root_or_ffcvs_libraries_skips_ffcv_with_one_line_and_completes(home):
    """The setup's branch for a machine without FFCV's libraries: pkg-config finds none (a stand-in that knows no
    package is first on PATH) and the user is not root, so apt-get is not tried; FFCV is skipped with one line and
    everything else installs; `make demo` ends with the report path, and data.path=ffcv is refused in one line."""
    hidden = home / "no-ffcv-libraries"
    hidden.mkdir(exist_ok=True)
    (hidden / "pkg-config").write_text("#!/bin/sh\nexit 1\n")
    (hidden / "apt-get").write_text("#!/bin/sh\necho apt-get was called >&2\nexit 100\n")
    for tool in hidden.iterdir():
        tool.chmod(0o755)
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", USER, str(hidden)], check=True)
    demo = as_user(home, "make demo", home / "checkout", timeout=1200, path_first=str(hidden))
    lines = demo.stdout.strip().splitlines()
    assert demo.returncode == 0 and lines[-1].endswith("demo-results/tiny-cpu/report/report.html"), demo.stdout[-3000:]
    skipped = [line for line in lines if line.startswith("FFCV skipped:")]
    assert len(skipped) == 1 and "conda install" in skipped[0] and "apt-get was called" not in demo.stdout
    refused = as_user(home, ".venv/bin/cifarbench fit -c bench/configs/smoke.yaml --data.path ffcv",
                      home / "checkout", timeout=300)
    lines = refused.stdout.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "the ffcv package is not installed" in lines[0], lines
