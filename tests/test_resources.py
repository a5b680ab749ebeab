"""What a run used besides time: memory, energy (or why none), GPU throttling, cost; and `cifarbench compare`,
which tells a regression from noise on real runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cifarbench.measure.energy import rapl_meter
from cifarbench.measure.resources import ROW, summarise
from cifarbench.train.run import fit
from conftest import last_line, run_cli, tiny_config


def test_a_fit_records_peak_memory_energy_or_why_none_and_its_cost(tmp_path):
    _, record = fit(tiny_config(tmp_path, measure={"target_accuracy": 0.05, "warmup_steps": 2,
                                                   "cost_per_gpu_hour": 3.0}))
    resources = record["resources"]
    assert resources["peak_host_rss_bytes"] > 100 * 2**20  # torch alone holds more than 100 MiB
    assert resources["peak_device_memory_allocated_bytes"] is None and resources["gpu"] is None  # a CPU run
    energy = resources["energy"]
    assert energy["steady_images"] == record["throughput"]["steady_images"]
    if energy["source"].startswith("rapl"):  # counters this machine lets us read
        assert energy["steady_joules"] > 0 and energy["images_per_joule"] > 0 and energy["to_target_joules"] > 0
    else:  # none: the reason, never a made-up figure
        assert energy["source"].startswith("none: ") and energy["steady_joules"] is None
        assert energy["images_per_joule"] is None and energy["to_target_joules"] is None
    cost = resources["cost"]
    seconds = record["time_to_target"]["clocks"]["mlperf"]["seconds"]
    assert cost["to_target"] == pytest.approx(3.0 * seconds / 3600)
    assert cost["per_million_images"] == pytest.approx(3.0 / 3600 * 1e6 / record["throughput"]["images_per_sec"])


def rapl_package(root: Path, name: str, energy_uj: int, wrap: int = 1000_000_000) -> Path:
    package = root / name
    package.mkdir(parents=True)
    (package / "name").write_text("package-0\n" if name.count(":") == 1 else "core\n")
    (package / "max_energy_range_uj").write_text(f"{wrap}\n")
    (package / "energy_uj").write_text(f"{energy_uj}\n")
    return package


def test_rapl_counters_are_summed_over_packages_across_a_wrap_and_missing_ones_say_why(tmp_path):
    """This machine has no RAPL counters (a VM): a directory laid out as the kernel's stands in for them."""
    meter, source = rapl_meter(tmp_path / "none")
    assert meter is None and source.startswith("none: no RAPL package counters")
    package = rapl_package(tmp_path, "intel-rapl:0", 999_000_000)
    rapl_package(tmp_path, "intel-rapl:0:0", 5)  # a subdomain of package 0: counted within it already
    meter, source = rapl_meter(tmp_path)
    assert source == "rapl: intel-rapl:0 (package-0)" and meter.read() == 0.0
    (package / "energy_uj").write_text("4000000\n")  # wrapped at 1000 J: 1 J before the wrap, 4 J after
    assert meter.read() == pytest.approx(5.0)


def rank(**values: float) -> dict[str, float]:
    return {key: math.nan for key in ROW} | {"counted": 0.0, "steady_images": 0.0, "steady_steps": 0.0} | values


def test_the_jobs_energy_counts_each_cpu_package_once_and_a_throttled_gpu_is_named():
    # two ranks on one node share its RAPL package: local rank 0 alone counts it
    cpu = summarise([rank(steady_joules=100.0, steady_images=500.0, steady_steps=5.0, counted=1.0, fit_joules=150.0,
                          to_target_joules=120.0, peak_host_rss_bytes=2e9),
                     rank(steady_joules=100.0, steady_images=500.0, steady_steps=5.0, fit_joules=150.0,
                          to_target_joules=120.0, peak_host_rss_bytes=3e9)], "rapl: intel-rapl:0 (package-0)", False)
    assert cpu["energy"]["steady_joules"] == 100.0 and cpu["energy"]["images_per_joule"] == 10.0
    assert cpu["energy"]["joules_per_step"] == 20.0 and cpu["energy"]["to_target_joules"] == 120.0
    assert cpu["peak_host_rss_bytes"] == 3e9 and cpu["gpu"] is None
    # each GPU has its own counter; one of them hit its power cap (NVML's bit 0x4) at the window's end
    gpu = summarise([rank(steady_joules=300.0, steady_images=900.0, steady_steps=3.0, counted=1.0,
                          throttle_bits_at_start=0.0, throttle_bits_at_end=4.0, sm_clock_mhz_at_end=1410.0),
                     rank(steady_joules=200.0, steady_images=900.0, steady_steps=3.0, counted=1.0,
                          throttle_bits_at_start=1.0, throttle_bits_at_end=0.0, sm_clock_mhz_at_end=1980.0)],
                    "nvml: NVIDIA H100", True)
    assert gpu["energy"]["steady_joules"] == 500.0 and gpu["energy"]["images_per_joule"] == pytest.approx(3.6)
    assert gpu["gpu"]["throttled"] and gpu["gpu"]["throttle_reasons"] == ["sw_power_cap"]  # idle (0x1) is not one
    assert gpu["gpu"]["sm_clock_mhz_at_end"] == [1410.0, 1980.0]


@pytest.mark.slow
def test_compare_fails_on_a_real_slowdown_and_passes_on_a_speed_up_or_no_change(tmp_path):
    """A: one configuration, 3 seeds, 2 threads; B: the same with OMP_NUM_THREADS=1 (about half as fast here)."""
    for side, threads in (("A", "2"), ("B", "1")):
        done = run_cli("run", "bench/matrices/three-seeds.yaml", "--output_dir", str(tmp_path / side), timeout=600,
                       env={"OMP_NUM_THREADS": threads})
        assert done.returncode == 0, done.stdout[-3000:]
    a, b = str(tmp_path / "A/three-seeds"), str(tmp_path / "B/three-seeds")

    slower = run_cli("compare", a, b, "--fail-if-slower", "0.05", "--output", str(tmp_path / "a-b"))
    assert slower.returncode == 1, slower.stdout[-3000:]
    result = json.loads((tmp_path / "a-b/compare.json").read_text())
    (row,) = result["rows"]
    assert row["verdict"] == "slower" and row["base_runs"] == row["new_runs"] == 3 and row["ci_high"] < 0.95
    assert "cifarbench: slower: " in slower.stdout and last_line(slower).endswith("a-b/compare.md")
    assert (tmp_path / "a-b/compare.png").stat().st_size > 0

    faster = run_cli("compare", b, a, "--fail-if-slower", "0.05", "--output", str(tmp_path / "b-a"))
    assert faster.returncode == 0 and "faster" in (tmp_path / "b-a/compare.md").read_text(), faster.stdout[-3000:]
    same = run_cli("compare", a, a, "--fail-if-slower", "0.05", "--output", str(tmp_path / "a-a"))
    assert same.returncode == 0 and "no detectable change" in (tmp_path / "a-a/compare.md").read_text()
    # by time to target too (every run reached the 5% target); one run a side cannot decide
    one = str(next(Path(b).glob("*/record.json")))
    undecided = run_cli("compare", a, one, "--metric", "time_to_target", "--output", str(tmp_path / "a-1"))
    assert undecided.returncode == 0 and "cannot decide: 3 vs 1 runs" in (tmp_path / "a-1/compare.md").read_text()


@pytest.mark.parametrize("args, field", [(["compare", "/no/such/results", "/tmp"], "BASE='/no/such/results'"),
                                         (["compare", "/tmp", "/tmp", "--fail-if-slower", "1.5"], "--fail-if-slower=1.5")])
def test_compare_refuses_bad_input_in_one_line(args, field):
    done = run_cli(*args, timeout=120)
    assert done.returncode == 2 and len(done.stdout.strip().splitlines()) == 1 and field in done.stdout, done.stdout
