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

from ..config import configuration_identity, flatten
from ..record import RECORD_NAME, SCHEMA_VERSION, shown_status

GPU_COUNT = frozenset({"trainer.devices", "trainer.num_nodes"})  # what a scaling curve varies
# What besides the configuration decides a run's speed: where records differ in one of these, a configuration's
# runs are kept apart by it (never pooled), and its label says the value
SOFTWARE_AND_DEVICE = ("torch", "lightning", "cuda", "cudnn", "nccl", "device", "commit")


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
    runs, differing = identify(runs)
    runs = label_configurations(runs)
    if differing:
        values = "; ".join(f"{f}: {', '.join(sorted({str(r[f]) for r in runs['software']}))}" for f in differing)
        warnings.append(f"the records differ in {', '.join(differing)} ({values}): each configuration's runs are "
                        "kept apart by them (the labels say which is which), never pooled")
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
        "status": shown_status(record),
        "error": record.get("error"), "schema_version": record.get("schema_version"),
        "seed": cfg.get("trainer.seed"), "gpus": gpus, "data_path": cfg.get("data.path"),
        # what the accuracy is measured on: runs of different protocols are never ranked against each other
        "protocol": cfg.get("data.protocol", "seed"), "network": cfg.get("model.name", "custom_resnet"),
        "scaling": scaling_text(cfg), "config": cfg, "software": software(env),
        "images_per_sec": images, "images_per_sec_per_device": tp.get("images_per_sec_per_device"),
        "mfu": tp.get("mfu"), "warmup_seconds": tp.get("warmup_seconds"),
        "reached": bool(tt.get("reached")), "target": tt.get("target", cfg.get("measure.target_accuracy")),
        # the mlperf clock (everything on it); train_only leaves validation and checkpoint writes out
        "time_to_target": _clock(tt, "mlperf"), "time_to_target_train_only": _clock(tt, "train_only"),
        "best_val_acc": acc.get("best_val"), "final_val_acc": acc.get("final_val"), "test_acc": acc.get("test"),
        "data_stall": dw.get("stall_fraction"), "harness_share": dw.get("harness_fraction"),
        "peak_memory_bytes": peak_memory(record.get("resources") or {}),
        "images_per_joule": ((record.get("resources") or {}).get("energy") or {}).get("images_per_joule"),
        "throttled": bool(((record.get("resources") or {}).get("gpu") or {}).get("throttled")),
        "restarts": record.get("restarts", 0),
        "diverged_at_step": (record.get("divergence") or {}).get("step"),
        "machine": machine(env), "host": env.get("hostname"), "environment": env,
        "started_at": record.get("started_at"), "path": str(path),
    }


def identify(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Each run's identities: ``config_only`` (its configuration, whatever it ran on: `compare` matches by it),
    ``configuration`` (one summary row) and ``scaling_group`` (the same less the GPU count), the last two with the
    :data:`SOFTWARE_AND_DEVICE` fields in which the records differ. Returns them and those fields."""
    values = pd.DataFrame(list(runs["software"]))
    differing = [f for f in SOFTWARE_AND_DEVICE if values[f].dropna().astype(str).nunique() > 1]  # None: unknown
    keyed = [cfg | {f"environment.{f}": values.at[i, f] for f in differing} for i, cfg in enumerate(runs["config"])]
    return runs.assign(config_only=[configuration_identity(cfg) for cfg in runs["config"]],
                       configuration=[configuration_identity(cfg) for cfg in keyed],
                       scaling_group=[configuration_identity(cfg, GPU_COUNT) for cfg in keyed]), differing


def software(env: dict[str, Any]) -> dict[str, Optional[str]]:
    """A record's :data:`SOFTWARE_AND_DEVICE` values (None where it does not say)."""
    versions, gpu = env.get("versions") or {}, env.get("gpu") or {}
    commit = (env.get("git") or {}).get("commit")
    return {"torch": versions.get("torch"), "lightning": versions.get("lightning"), "cuda": gpu.get("cuda"),
            "cudnn": gpu.get("cudnn"), "nccl": gpu.get("nccl"), "device": machine(env),
            "commit": commit[:10] if commit else None}


def peak_memory(resources: dict[str, Any]) -> Optional[float]:
    """The memory that limits a configuration: the device's peak reserved by torch's allocator on GPUs, else the
    host process's peak resident set."""
    return resources.get("peak_device_memory_reserved_bytes") or resources.get("peak_host_rss_bytes")


def scaling_text(cfg: dict[str, Any]) -> str:
    """How a run's work grows with its device count: weak (the per-device batch fixed, so the global batch grows)
    or strong (the global batch fixed, split), and what its max_lr did at that global batch."""
    lr = cfg.get("optim.lr_scaling", "none")
    return f"{cfg.get('data.batch_scaling', 'weak')}, lr {'fixed' if lr == 'none' else lr}"


def _clock(time_to_target: dict[str, Any], name: str) -> Optional[float]:
    return ((time_to_target.get("clocks") or {}).get(name) or {}).get("seconds") if time_to_target.get("reached") else None


def machine(env: dict[str, Any]) -> Optional[str]:
    """What decides speed: the GPU model, else the CPU model, its cores and vector units (where the record has
    them: one model name covers CPUs with and without bf16 units)."""
    if not env:
        return None
    if (env.get("gpu") or {}).get("names"):
        return env["gpu"]["names"][0]
    cpu = env.get("cpu") or {}
    units = f", {cpu['capability']}{' + bf16' if cpu.get('native_bf16') else ''}" if cpu.get("capability") else ""
    return f"{cpu.get('model', '?')} ({cpu.get('logical_cores', '?')} cores{units})"


def label_configurations(runs: pd.DataFrame, by: str = "scaling_group") -> pd.DataFrame:
    """A short readable name per configuration (``by``: GPU count aside, a column of its own): its ``output.name``
    when every configuration has its own (a matrix of one configuration: the matrix's name); else what it changes against the reference configuration, the
    one with the most runs, e.g. ``path=albumentations``, the reference being named by its values of the
    fields that some configuration changes alone (``path=device``); followed by the values of the software and
    device fields the runs are kept apart by (``torch=2.13.0+cpu``)."""
    names = runs.groupby(by)["name"].unique()
    if all(len(n) == 1 for n in names) and len({n[0] for n in names}) == len(names):
        return runs.assign(label=runs["name"])  # each configuration was given its own output.name: use it
    groups = {g: json.loads(g) for g in runs[by].unique()}
    reference = groups[runs[by].value_counts().index[0]]
    keys = sorted({k for cfg in groups.values() for k in cfg})
    environment = [k for k in keys if k.startswith("environment.")]  # named in every label: what the rows split by
    diffs = {g: [k for k in keys if k not in environment and _text(cfg.get(k)) != _text(reference.get(k))]
             for g, cfg in groups.items()}
    alone = sorted({d[0] for d in diffs.values() if len(d) == 1})
    labels = {}
    for g, cfg in groups.items():
        shown = (diffs[g] or alone) + environment
        labels[g] = " ".join(f"{_short(k, keys)}={cfg.get(k)}" for k in shown) or "reference"
    return runs.assign(label=runs[by].map(labels))


def _short(key: str, keys: list[str]) -> str:
    """``data.path`` -> ``path`` unless another field also ends in ``path``."""
    leaf = key.split(".")[-1]
    return leaf if sum(k.split(".")[-1] == leaf for k in keys) == 1 else key


def _text(value: Any) -> str:
    return json.dumps(value, default=str)
