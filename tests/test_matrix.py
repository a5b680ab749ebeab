"""Matrix files expand into runs with stable ids, bad ones are refused up front, and `run` resumes."""

from pathlib import Path

import pytest
import yaml

from cifarbench.errors import CifarbenchError
from cifarbench.cluster.matrix import load_matrix, validate_runs
from cifarbench.record import read_record
from conftest import REPO, last_line, run_cli


def write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_tiny_cpu_matrix_expands_with_stable_ids():
    matrix = load_matrix(REPO / "bench/matrices/tiny-cpu.yaml")
    ids = [r.run_id for r in matrix.runs]
    assert ids == ["tiny-cpu-pathalbumentations-devices1-seed1", "tiny-cpu-pathdevice-devices1-seed1",
                   "tiny-cpu-pathdevice-devices2-seed1"]
    assert [r.run_id for r in load_matrix(REPO / "bench/matrices/tiny-cpu.yaml").runs] == ids
    run = matrix.runs[2]
    assert run.config["trainer"]["devices"] == 2 and run.config["data"]["path"] == "device"
    assert run.config["model"]["width"] == 16  # from the base config
    assert run.config["output"]["run_id"] == run.run_id


def test_invalid_combinations_are_reported_per_run(tmp_path):
    path = write(tmp_path, {"name": "mix", "config": {"data": {"source": "synthetic"}, "trainer": {"accelerator": "cpu"}},
                            "axes": {"trainer.precision": ["bf16-mixed", "16-mixed"]}})
    matrix = load_matrix(path)
    validate_runs(matrix)
    assert matrix.runs[0].error is None
    assert matrix.runs[1].error.startswith("trainer.precision='16-mixed': fp16 autocast needs a CUDA GPU")


@pytest.mark.parametrize("spec, message", [
    ({"axes": {"trainer.precison": ["32-true"]}}, "matrix.axes.trainer.precison='trainer.precison': no such config field"),
    ({"axes": {"trainer.epochs": []}}, "an axis needs a non-empty list"),
    ({"axes": {"trainer.epochs": [1]}, "exclude": [{"trainer.epochs": 1}]}, "the matrix is empty"),
    ({"axis": {}}, "matrix.axis={}: allowed keys"),
    ({"name": "a b", "axes": {"trainer.epochs": [1]}}, "matrix.name='a b'"),
])
def test_bad_matrix_files_get_one_line(tmp_path, spec, message):
    with pytest.raises(CifarbenchError) as err:
        load_matrix(write(tmp_path, spec))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_expand_command_lists_runs(tmp_path):
    result = run_cli("matrix", "expand", "bench/matrices/tiny-cpu.yaml", timeout=120)
    assert result.returncode == 0 and "tiny-cpu-pathdevice-devices2-seed1" in result.stdout


def test_run_executes_each_run_once_and_resumes(tmp_path):
    spec = yaml.safe_load((REPO / "bench/matrices/tiny-cpu.yaml").read_text())
    spec["base"] = str(REPO / "bench/configs/smoke.yaml")
    spec["axes"] = {"data.path": ["device"], "trainer.seed": [1, 2]}
    spec["config"]["trainer"] |= {"epochs": 1}
    spec["config"]["output"] = {"wandb": "disabled"}
    matrix_file = write(tmp_path, spec)
    result = run_cli("run", str(matrix_file), "--output_dir", str(tmp_path / "results"), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    results = Path(last_line(result))
    records = {p.parent.name: read_record(p) for p in results.glob("*/record.json")}
    assert sorted(records) == ["tiny-cpu-pathdevice-seed1", "tiny-cpu-pathdevice-seed2"]
    assert all(r["status"] in ("completed", "not-reached") for r in records.values())
    assert {r["config"]["trainer"]["seed"] for r in records.values()} == {1, 2}

    # an interrupted sweep: one run lost its record; only that one runs again
    (results / "tiny-cpu-pathdevice-seed2" / "record.json").unlink()
    mtime = (results / "tiny-cpu-pathdevice-seed1" / "record.json").stat().st_mtime
    again = run_cli("run", str(matrix_file), "--output_dir", str(tmp_path / "results"), timeout=300)
    assert again.returncode == 0
    assert "done before tiny-cpu-pathdevice-seed1" in " ".join(again.stdout.split())
    assert (results / "tiny-cpu-pathdevice-seed1" / "record.json").stat().st_mtime == mtime
    assert read_record(results / "tiny-cpu-pathdevice-seed2" / "record.json")["status"] in ("completed", "not-reached")


@pytest.mark.parametrize("name, runs", [("scaling", 24), ("precision-compile", 18), ("data-paths", 5)])
def test_shipped_gpu_matrices_expand_and_are_refused_on_this_cpu(name, runs):
    matrix = load_matrix(REPO / f"bench/matrices/{name}.yaml")
    assert len(matrix.runs) == runs and len({r.run_id for r in matrix.runs}) == runs
    validate_runs(matrix)
    if not __import__("torch").cuda.is_available():
        assert all(r.error.startswith("trainer.accelerator='gpu': no CUDA GPU is visible") for r in matrix.runs)
