"""Run records -> one row per run: the only input of the report.

Records come from any number of results directories (local runs, Slurm runs, several matrices). A file
that is not a readable run record is skipped with a warning; records of another schema version or from
other machines are read as far as they go, with a warning, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from ..record import RECORD_NAME, SCHEMA_VERSION

# Fields that say which repetition or where a run is, not what it is: left out of a configuration's identity.
NOT_CONFIGURATION = {"trainer.seed", "output.dir", "output.name", "output.run_id", "output.wandb",
                     "output.wandb_project", "output.wandb_entity", "data.root"}
GPU_COUNT = {"trainer.devices", "trainer.num_nodes"}  # what a scaling curve varies


@dataclass
class Collected:
    runs: pd.DataFrame
    curves: dict[str, list[dict[str, Any]]]
    warnings: list[str] = field(default_factory=list)


def find_records(paths: Iterable[str | Path]) -> list[Path]:
    """Every record.json under the given directories (or the given record files themselves)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_file():
            found.append(path)
        else:
            found.extend(p for p in sorted(path.rglob(RECORD_NAME)) if "wandb" not in p.parts)
    return found


def collect(paths: Iterable[str | Path]) -> Collected:
    rows, curves, warnings = [], {}, []
    for path in find_records(paths):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or "run_id" not in record or "config" not in record:
                raise ValueError("no run_id or config")
        except (OSError, ValueError) as err:
            warnings.append(f"skipped {path}: not a readable run record ({err})")
            continue
        if record.get("kind", "fit") != "fit":
            continue  # profile-data records hold loader rates, not training runs
        if record.get("schema_version") != SCHEMA_VERSION:
            warnings.append(f"{path}: schema_version {record.get('schema_version')!r}, this cifarbench reads "
                            f"{SCHEMA_VERSION}; fields it does not know are left empty")
        row = run_row(record, path)
        rows.append(row)
        curves[row["key"]] = record.get("curve") or []
    runs = pd.DataFrame(rows)
    if runs.empty:
        return Collected(runs, curves, warnings)
    runs = _label_configurations(runs)
    machines = runs["machine"].dropna().unique()
    if len(machines) > 1:
        warnings.append(f"the records come from {len(machines)} kinds of machine ({'; '.join(sorted(machines))}): "
                        "speeds differ by machine as well as by configuration")
    duplicated = runs["run_id"][runs["run_id"].duplicated()].unique()
    if len(duplicated):
        warnings.append(f"run ids found more than once (kept apart by path): {', '.join(sorted(duplicated))}")
    return Collected(runs, curves, warnings)


def run_row(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """The numbers the report shows, flattened from one record (a missing section reads as empty)."""
    cfg = flatten(record.get("config") or {})
    env = record.get("environment") or {}
    tp, tt = record.get("throughput") or {}, record.get("time_to_target") or {}
    dw, acc = record.get("data_wait") or {}, record.get("accuracy") or {}
    gpus = int(cfg.get("trainer.devices", 1)) * int(cfg.get("trainer.num_nodes", 1))
    images = tp.get("images_per_sec")
    return {
        "key": str(path.parent), "run_id": record.get("run_id"), "name": cfg.get("output.name"),
        "status": record.get("status"),
        "error": record.get("error"), "schema_version": record.get("schema_version"),
        "seed": cfg.get("trainer.seed"), "gpus": gpus, "data_path": cfg.get("data.path"),
        # what the accuracy is measured on: runs of different protocols are never ranked against each other
        "protocol": cfg.get("data.protocol", "seed"), "network": cfg.get("model.name", "custom_resnet"),
        "scaling_group": _identity(cfg, NOT_CONFIGURATION | GPU_COUNT), "scaling": scaling_text(cfg),
        "configuration": _identity(cfg, NOT_CONFIGURATION),
        "config": cfg,
        "images_per_sec": images, "images_per_sec_per_device": tp.get("images_per_sec_per_device"),
        "mfu": tp.get("mfu"), "warmup_seconds": tp.get("warmup_seconds"),
        "reached": bool(tt.get("reached")), "target": tt.get("target", cfg.get("measure.target_accuracy")),
        # the mlperf clock (everything on it); train_only leaves validation and checkpoint writes out
        "time_to_target": _clock(tt, "mlperf"), "time_to_target_train_only": _clock(tt, "train_only"),
        "best_val_acc": acc.get("best_val"), "final_val_acc": acc.get("final_val"), "test_acc": acc.get("test"),
        "data_stall": dw.get("stall_fraction"), "harness_share": dw.get("harness_fraction"),
        "restarts": record.get("restarts", 0),
        "diverged_at_step": (record.get("divergence") or {}).get("step"),
        "machine": machine(env), "host": env.get("hostname"), "environment": env,
        "started_at": record.get("started_at"), "path": str(path),
    }


def scaling_text(cfg: dict[str, Any]) -> str:
    """How a run's work grows with its device count: weak (the per-device batch fixed, so the global batch grows)
    or strong (the global batch fixed, split), and what its max_lr did at that global batch."""
    lr = cfg.get("optim.lr_scaling", "none")
    return f"{cfg.get('data.batch_scaling', 'weak')}, lr {'fixed' if lr == 'none' else lr}"


def _clock(time_to_target: dict[str, Any], name: str) -> Optional[float]:
    return ((time_to_target.get("clocks") or {}).get(name) or {}).get("seconds") if time_to_target.get("reached") else None


def machine(env: dict[str, Any]) -> Optional[str]:
    """What decides speed: the GPU model, else the CPU model and its cores."""
    if not env:
        return None
    if (env.get("gpu") or {}).get("names"):
        return env["gpu"]["names"][0]
    cpu = env.get("cpu") or {}
    return f"{cpu.get('model', '?')} ({cpu.get('logical_cores', '?')} cores)"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _identity(cfg: dict[str, Any], leave_out: set[str]) -> str:
    return json.dumps({k: v for k, v in sorted(cfg.items()) if k not in leave_out}, default=str)


def _label_configurations(runs: pd.DataFrame) -> pd.DataFrame:
    """A short readable name per configuration (GPU count aside, a column of its own): its ``output.name``
    when every configuration has its own; else what it changes against the reference configuration, the
    one with the most runs, e.g. ``path=albumentations``, the reference being named by its values of the
    fields that some configuration changes alone (``path=device``)."""
    names = runs.groupby("scaling_group")["name"].unique()
    if len(names) > 1 and all(len(n) == 1 for n in names) and len({n[0] for n in names}) == len(names):
        return runs.assign(label=runs["name"])  # each configuration was given its own output.name: use it
    groups = {g: json.loads(g) for g in runs["scaling_group"].unique()}
    reference = groups[runs["scaling_group"].value_counts().index[0]]
    keys = sorted({k for cfg in groups.values() for k in cfg})
    diffs = {g: [k for k in keys if _text(cfg.get(k)) != _text(reference.get(k))] for g, cfg in groups.items()}
    alone = sorted({d[0] for d in diffs.values() if len(d) == 1})
    labels = {}
    for g, cfg in groups.items():
        shown = diffs[g] or alone
        labels[g] = " ".join(f"{_short(k, keys)}={cfg.get(k)}" for k in shown) or "reference"
    return runs.assign(label=runs["scaling_group"].map(labels))


def _short(key: str, keys: list[str]) -> str:
    """``data.path`` -> ``path`` unless another field also ends in ``path``."""
    leaf = key.split(".")[-1]
    return leaf if sum(k.split(".")[-1] == leaf for k in keys) == 1 else key


def _text(value: Any) -> str:
    return json.dumps(value, default=str)
