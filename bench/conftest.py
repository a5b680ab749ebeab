"""pytest-benchmark runs under bench/: the machine (CPU model and cores, GPU) goes into every JSON."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def pytest_benchmark_update_machine_info(config, machine_info):
    from cifarbench.measure.environment import collect_environment

    env = collect_environment()
    machine_info["cifarbench"] = {"cpu": env["cpu"], "gpu": env["gpu"], "versions": env["versions"],
                                  "git": env["git"]}
