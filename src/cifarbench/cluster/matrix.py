"""Benchmark matrices: a base config plus axes of overrides, expanded into runs with stable ids.

A matrix file (``bench/matrices/*.yaml``)::

    name: precision-x-compile
    base: ../configs/smoke.yaml        # a run config file, relative to the matrix file (optional)
    config: {trainer: {epochs: 2}}     # overrides on top of the base (optional)
    axes:                              # the cross product of these dotted fields
      trainer.precision: [32-true, bf16-mixed]
      trainer.compile: ["off", default]
    exclude:                           # combinations to leave out (all listed fields must match)
      - {trainer.precision: 32-true, trainer.compile: default}
    slurm: {partition: gpu, time: "01:00:00", cpus_per_task: 8}

Each run's id is the matrix name plus its axis values, so ids do not change when the file is edited
elsewhere, and a resumed sweep finds its finished runs again.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

from ..checks import check_config
from ..config import RunConfig
from ..config_parser import config_from_dict, read_yaml
from ..errors import CifarbenchError, ConfigError

MATRIX_KEYS = {"name", "base", "config", "axes", "exclude", "slurm"}


@dataclass
class MatrixRun:
    run_id: str
    overrides: dict[str, Any]  # dotted field -> value, the axis values of this run
    config: dict[str, Any]  # the full run config as a nested dict
    error: Optional[str] = None  # why this combination cannot run here, found before anything starts


@dataclass
class Matrix:
    name: str
    path: Path
    runs: list[MatrixRun]
    slurm: dict[str, Any] = field(default_factory=dict)


def load_matrix(path: str | Path, results_root: Optional[str | Path] = None) -> Matrix:
    """The matrix's runs; with ``results_root`` each run writes into ``<results_root>/<matrix name>/<run id>/``."""
    path = Path(path)
    spec = read_yaml(path, "matrix") or {}
    if not isinstance(spec, dict):
        raise ConfigError("matrix", str(path), "a matrix file is a YAML mapping with name, base, config, axes ...")
    unknown = set(spec) - MATRIX_KEYS
    if unknown:
        raise ConfigError(f"matrix.{sorted(unknown)[0]}", spec[sorted(unknown)[0]], f"allowed keys: {sorted(MATRIX_KEYS)}")
    name = str(spec.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError("matrix.name", name, "use letters, digits, '.', '_' or '-'")
    base = _load_base(path, spec.get("base"))
    _merge(base, spec.get("config") or {})
    axes: dict[str, list] = spec.get("axes") or {}
    if not axes:
        raise ConfigError("matrix.axes", spec.get("axes"), "the matrix is empty: give at least one axis "
                          "(one configuration is a run: `cifarbench fit -c`)")
    for key, values in axes.items():
        _check_field(key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"matrix.axes.{key}", values, "an axis needs a non-empty list of values")
    excludes = spec.get("exclude") or []
    for rule in excludes:
        for key in rule:
            _check_field(key)
    runs = []
    for combo in itertools.product(*axes.values()):
        overrides = dict(zip(axes, combo))
        if any(all(overrides.get(k) == v for k, v in rule.items()) for rule in excludes):
            continue
        run_id = _run_id(name, overrides)
        config = copy.deepcopy(base)
        for key, value in overrides.items():
            _merge(config, _nest(key, value))
        results = {"dir": str(Path(results_root) / name)} if results_root is not None else {}
        _merge(config, {"output": {"run_id": run_id, "name": name, **results}})
        try:  # a value no machine can run is the matrix's error, found before any run starts
            config_from_dict(config)
        except CifarbenchError as err:
            raise CifarbenchError(f"matrix run {run_id}: {err}") from None
        runs.append(MatrixRun(run_id, overrides, config))
    if not runs:
        raise ConfigError("matrix.axes", axes, "the matrix is empty: every combination is excluded")
    return Matrix(name, path, runs, spec.get("slurm") or {})


def validate_runs(matrix: Matrix, on_this_machine: bool = True) -> None:
    """Sets each run's ``error`` to the one-line reason it cannot run (None when it can). ``on_this_machine=False``
    for runs submitted to a cluster: the machine (devices, CUDA, a launcher for several nodes) is checked by each
    job on its own nodes, the values, output and data here, before anything is submitted."""
    for run in matrix.runs:
        try:
            check_config(config_from_dict(run.config), on_this_machine)
        except CifarbenchError as err:
            run.error = str(err)


def _load_base(matrix_path: Path, base: Optional[str]) -> dict[str, Any]:
    if not base:
        return {}
    found = read_yaml((matrix_path.parent / base).resolve(), "matrix.base") or {}
    if not isinstance(found, dict):
        raise ConfigError("matrix.base", base, "a config file is a YAML mapping of sections (model, data, ...)")
    return found


def _check_field(key: str) -> None:
    """A dotted field must exist in RunConfig (e.g. trainer.precision, data.ffcv.order)."""
    cls: Any = RunConfig
    for part in key.split("."):
        names = {f.name: f for f in fields(cls)} if is_dataclass(cls) else {}
        if part not in names:
            raise ConfigError(f"matrix.axes.{key}", key, f"no such config field; fields here: {sorted(names) or 'none'}")
        factory = names[part].default_factory
        cls = factory if factory is not MISSING else None


def _run_id(name: str, overrides: dict[str, Any]) -> str:
    parts = [name] + [f"{key.split('.')[-1]}{value}" for key, value in overrides.items()]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(str(p) for p in parts))[:128]


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
