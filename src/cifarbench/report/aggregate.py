"""Runs -> one row per configuration and GPU count: medians over seeds, spread, scaling, baseline ratios.

Variance handling (stated in the report too): the centre is the median over the runs of a configuration,
the spread its interquartile range; with 5 or more runs the MLPerf-style trimmed mean (drop the fastest
and the slowest, average the rest) is given as well. Time-to-target uses only the runs that reached the
target: a run that did not reach it is counted as such ("reached 2/3"), never averaged in as a number.
Speed and accuracy use the runs that trained to the end (completed or not-reached); failed and diverged
runs are listed apart with their errors. A run stopped before its end (failed, interrupted, abandoned) is never
counted as a time, even if it had reached the target.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..record import RESULT_STATUSES, STOPPED_STATUSES, UNFINISHED_STATUSES

TRAINED_TO_THE_END = ("completed", "not-reached")  # the results that trained all their epochs
TRIMMED_MEAN_MIN_RUNS = 5
STATUS_ORDER = [*RESULT_STATUSES, *STOPPED_STATUSES, *UNFINISHED_STATUSES]


def spread(values: Iterable[Optional[float]]) -> dict[str, Any]:
    """n, median, quartiles, IQR, min, max and (n >= 5) the trimmed mean of the values that are numbers."""
    xs = np.sort(np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float))
    if xs.size == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None, "iqr": None, "min": None, "max": None,
                "trimmed_mean": None}
    q1, median, q3 = np.percentile(xs, [25, 50, 75])
    trimmed = float(xs[1:-1].mean()) if xs.size >= TRIMMED_MEAN_MIN_RUNS else None
    return {"n": int(xs.size), "median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "min": float(xs[0]), "max": float(xs[-1]), "trimmed_mean": trimmed}


def scaling_efficiency(images_per_sec: float, gpus: int, one_gpu_images_per_sec: Optional[float]) -> Optional[float]:
    """Per-GPU throughput at ``gpus`` over the 1-GPU throughput of the same configuration (1.0 = linear)."""
    if missing(one_gpu_images_per_sec) or missing(images_per_sec) or one_gpu_images_per_sec == 0:
        return None
    return images_per_sec / gpus / one_gpu_images_per_sec


def summarise(runs: pd.DataFrame, baseline: Optional[str] = None) -> pd.DataFrame:
    """One row per (configuration, GPU count), ordered by configuration label then GPUs."""
    rows = [_group_row(group) for _, group in runs.groupby("configuration", sort=False)]
    table = pd.DataFrame(rows).sort_values(["label", "gpus"], kind="stable").reset_index(drop=True)
    one_gpu = table[table["gpus"] == 1].set_index("scaling_group")["images_per_sec"].to_dict()
    table["scaling_efficiency"] = [scaling_efficiency(r.images_per_sec, r.gpus, one_gpu.get(r.scaling_group))
                                   for r in table.itertuples()]
    if baseline is not None:
        table = with_baseline(table, runs, baseline)
    return table


def _group_row(group: pd.DataFrame) -> dict[str, Any]:
    trained = group[group["status"].isin(TRAINED_TO_THE_END)]
    reached = group[group["reached"] & group["time_to_target"].notna() & ~group["status"].isin(STOPPED_STATUSES)]
    ttt, ips = spread(reached["time_to_target"]), spread(trained["images_per_sec"])
    first = group.iloc[0]
    counts = group["status"].value_counts()
    counts = counts.reindex(sorted(counts.index, key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else 99))
    return {
        "label": first["label"], "gpus": int(first["gpus"]), "configuration": first["configuration"],
        "scaling_group": first["scaling_group"], "data_path": first["data_path"], "target": first["target"],
        "protocol": first["protocol"], "network": first["network"], "scaling": first["scaling"],
        "runs": len(group), "seeds": sorted(s for s in group["seed"].dropna().astype(int)),
        "status": ", ".join(f"{n} {status}" for status, n in counts.items())
                  + (f" ({int(trained['throttled'].sum())} on a throttled GPU)" if trained["throttled"].any() else ""),
        "images_per_sec": ips["median"], "images_per_sec_iqr": ips["iqr"],
        "images_per_sec_per_gpu": None if ips["median"] is None else ips["median"] / int(first["gpus"]),
        "reached": len(reached), "ttt_median": ttt["median"], "ttt_q1": ttt["q1"], "ttt_q3": ttt["q3"],
        "ttt_iqr": ttt["iqr"], "ttt_trimmed_mean": ttt["trimmed_mean"],
        "best_val_acc": spread(trained["best_val_acc"])["median"],
        "data_stall": spread(trained["data_stall"])["median"], "mfu": spread(trained["mfu"])["median"],
        "peak_memory_bytes": spread(trained["peak_memory_bytes"])["median"],
        "images_per_joule": spread(trained["images_per_joule"])["median"],
        "throttled": int(trained["throttled"].sum()),
    }


def with_baseline(table: pd.DataFrame, runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Adds each row's speed-up against the baseline: a run id (its configuration) or a configuration
    label (its fewest-GPU row). >1 means faster than the baseline. Rows of another protocol get none: their
    accuracy is measured on other images, so their times to target are not comparable."""
    by_run = runs.loc[runs["run_id"] == baseline, "configuration"]
    if len(by_run):
        base = table[table["configuration"] == by_run.iloc[0]].iloc[0]
    elif (table["label"] == baseline).any():
        base = table[table["label"] == baseline].sort_values("gpus").iloc[0]
    else:
        labels = ", ".join(sorted(table["label"].unique()))
        raise ConfigError("--baseline", baseline, f"a run id of these records or a configuration label ({labels})")
    same = table["protocol"] == base["protocol"]
    return table.assign(
        baseline=f"{base['label']} ({base['gpus']} GPU, {base['protocol']} protocol)",
        speedup_time_to_target=[_ratio(base["ttt_median"], t) if ok else None for t, ok in zip(table["ttt_median"], same)],
        speedup_images_per_sec=[_ratio(i, base["images_per_sec"]) if ok else None
                                for i, ok in zip(table["images_per_sec"], same)],
    )


def _ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    if missing(numerator) or missing(denominator) or denominator == 0:
        return None
    return float(numerator) / float(denominator)


def missing(value: Any) -> bool:
    """None or NaN (pandas turns a None among numbers into NaN)."""
    return value is None or (isinstance(value, float) and np.isnan(value))
