"""`cifarbench compare BASE NEW`: is NEW faster or slower than BASE, configuration by configuration, beyond noise?

Configurations are matched by their config alone (seed and output aside), whatever they ran on: comparing two
torch releases, commits or machines is the point. For each, the speed-up NEW/BASE is the ratio of the medians
over the seeds (for time to target, BASE's time over NEW's: above 1 is faster either way), with a 95% percentile
bootstrap interval (scipy.stats.bootstrap, resampling each side's runs) and a two-sided Mann-Whitney p-value.
The verdict is "faster" or "slower" only when the whole interval lies on that side of 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import CifarbenchError, ConfigError
from ..figures import save_png
from ..record import STOPPED_STATUSES, atomic_write_text, writable
from .aggregate import TRAINED_TO_THE_END
from .collect import collect, label_configurations
from .plots import styled_figure

METRICS = {"images_per_sec": ("images/s (steady state)", True),  # column -> (what it is, higher is better)
           "time_to_target": ("time to target, mlperf clock", False)}
CONFIDENCE = 0.95
MIN_RUNS = 2  # per side: with one run there is no spread to tell a change from noise


def side_runs(paths: list[str], side: str) -> pd.DataFrame:
    """One side's runs (``side``: base or new), refused in one line when it has none."""
    for path in paths:
        if not Path(path).exists():
            raise ConfigError(side.upper(), path, "a results directory or record.json file that exists")
    runs = collect(paths).runs
    if runs.empty:
        raise CifarbenchError(f"{side.upper()}: no run records (record.json) under {', '.join(paths)}")
    return runs.assign(side=side)


def metric_values(runs: pd.DataFrame, metric: str) -> pd.Series:
    """The runs' values of ``metric`` that count: images/s of runs that trained to the end, times of runs that
    reached the target (a run that did not, or was stopped before its end, is no time)."""
    usable = (runs["status"].isin(TRAINED_TO_THE_END) if metric == "images_per_sec"
              else runs["reached"] & ~runs["status"].isin(STOPPED_STATUSES))
    return runs.loc[usable, metric].dropna().astype(float)


def speedup(base: np.ndarray, new: np.ndarray, higher_is_better: bool) -> dict[str, Any]:
    """Point speed-up, its bootstrap interval, the Mann-Whitney p-value and the verdict for one configuration."""
    out: dict[str, Any] = {"base_runs": len(base), "new_runs": len(new),
                           "base_median": float(np.median(base)) if len(base) else None,
                           "new_median": float(np.median(new)) if len(new) else None,
                           "speedup": None, "ci_low": None, "ci_high": None, "p_value": None}
    if min(len(base), len(new)) < MIN_RUNS:
        return out | {"verdict": f"cannot decide: {len(base)} vs {len(new)} runs (at least {MIN_RUNS} a side)"}

    def ratio(b, n, axis=-1):
        b, n = np.median(b, axis=axis), np.median(n, axis=axis)
        return n / b if higher_is_better else b / n

    interval = stats.bootstrap((base, new), ratio, vectorized=True, method="percentile",
                               confidence_level=CONFIDENCE, rng=np.random.default_rng(0)).confidence_interval
    low, high = float(interval.low), float(interval.high)
    verdict = "faster" if low > 1 else "slower" if high < 1 else "no detectable change"
    return out | {"speedup": float(ratio(base, new)), "ci_low": low, "ci_high": high,
                  "p_value": float(stats.mannwhitneyu(new, base, alternative="two-sided").pvalue), "verdict": verdict}


def compare_runs(base: pd.DataFrame, new: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Every configuration in both sides compared; those in one side only listed by label."""
    both = label_configurations(pd.concat([base, new], ignore_index=True), by="config_only")
    higher_is_better = METRICS[metric][1]
    rows, labels = [], both.groupby("config_only")["label"].first()
    shared = sorted(set(base["config_only"]) & set(new["config_only"]), key=lambda c: labels[c])
    for config in shared:
        mine = both[both["config_only"] == config]
        values = {side: metric_values(mine[mine["side"] == side], metric).to_numpy() for side in ("base", "new")}
        gpus = int(mine["gpus"].iloc[0])
        rows.append({"configuration": labels[config], "gpus": gpus,
                     **speedup(values["base"], values["new"], higher_is_better)})
    only = {side: sorted(labels[c] for c in set(runs["config_only"]) - set(shared))
            for side, runs in (("base", base), ("new", new))}
    return {"metric": metric, "metric_text": METRICS[metric][0], "confidence": CONFIDENCE, "rows": rows,
            "only_in_base": only["base"], "only_in_new": only["new"]}


def regressions(result: dict[str, Any], fail_if_slower: Optional[float]) -> list[dict[str, Any]]:
    """The rows whose whole interval lies below 1 - ``fail_if_slower``."""
    if fail_if_slower is None:
        return []
    return [r for r in result["rows"] if r["ci_high"] is not None and r["ci_high"] < 1 - fail_if_slower]


def markdown(result: dict[str, Any]) -> str:
    def cell(value, fmt):
        return "–" if value is None else format(value, fmt)

    table = pd.DataFrame([{
        "Configuration": r["configuration"], "GPUs": r["gpus"], "Runs (base, new)": f"{r['base_runs']}, {r['new_runs']}",
        f"Base {result['metric_text']}": cell(r["base_median"], ",.1f"), "New": cell(r["new_median"], ",.1f"),
        "Speed-up": "–" if r["speedup"] is None else f"{r['speedup']:.3f}x",
        f"{int(result['confidence'] * 100)}% interval": (f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
                                                          if r["ci_low"] is not None else "–"),
        "Mann-Whitney p": cell(r["p_value"], ".3f"), "Verdict": r["verdict"]} for r in result["rows"]])
    lines = [f"BASE: {', '.join(result['base'])}  \nNEW: {', '.join(result['new'])}  \n"
             f"Speed-up NEW/BASE of the median {result['metric_text']} over each side's runs (above 1: NEW is "
             f"faster), with a {int(result['confidence'] * 100)}% percentile bootstrap interval and a two-sided "
             "Mann-Whitney p-value (with 3 runs a side it cannot be below 0.1: the interval decides).\n",
             table.to_markdown(index=False, disable_numparse=True) if len(table) else "No configuration is in both sides."]
    for side in ("base", "new"):
        if result[f"only_in_{side}"]:
            lines.append(f"\nOnly in {side} (not compared): {', '.join(result[f'only_in_{side}'])}")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], fail_if_slower: Optional[float]):
    """Each configuration's speed-up with its interval; 1 (no change) and the failure threshold marked."""
    rows = [r for r in result["rows"] if r["speedup"] is not None]
    fig, ax = styled_figure(f"Speed-up NEW/BASE, {result['metric_text']} (bars: {int(result['confidence'] * 100)}% "
                      "bootstrap interval)", height=max(2.5, 0.6 * len(rows) + 1.5))
    for y, r in enumerate(rows):
        colour = {"faster": "C2", "slower": "C3"}.get(r["verdict"], "C0")
        ax.errorbar(r["speedup"], y, xerr=[[r["speedup"] - r["ci_low"]], [r["ci_high"] - r["speedup"]]], fmt="o",
                    color=colour, capsize=4)
    ax.axvline(1.0, color="grey", linestyle="--")
    if fail_if_slower is not None:
        ax.axvline(1 - fail_if_slower, color="C3", linestyle=":", label=f"--fail-if-slower {fail_if_slower}")
        ax.legend(fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r['configuration']} ({r['gpus']} GPU)" for r in rows])
    ax.set_xlabel("speed-up (above 1: NEW is faster)")
    return fig


def compare(base: list[str], new: list[str], metric: str = "images_per_sec", fail_if_slower: Optional[float] = None,
            out_dir: Optional[Path] = None) -> tuple[dict[str, Any], Path, list[dict[str, Any]]]:
    """Writes compare.json, compare.md and compare.png into ``out_dir`` (default: ``<first NEW path>/compare``);
    returns the result, the Markdown file and the regressions beyond ``fail_if_slower``."""
    if fail_if_slower is not None and not 0 <= fail_if_slower < 1:
        raise ConfigError("--fail-if-slower", fail_if_slower, "a fraction from 0 to below 1, e.g. 0.05 for 5%")
    first = Path(new[0])
    out_dir = Path(out_dir or (first if first.is_dir() else first.parent) / "compare")
    if not writable(out_dir):
        raise ConfigError("--output", str(out_dir), "is not a writable directory (nor inside one)")
    result = compare_runs(side_runs(base, "base"), side_runs(new, "new"), metric)
    result |= {"base": base, "new": new, "fail_if_slower": fail_if_slower}
    failed = regressions(result, fail_if_slower)
    atomic_write_text(out_dir / "compare.json", json.dumps(result | {"regressions": failed}, indent=2) + "\n")
    atomic_write_text(out_dir / "compare.md", markdown(result))
    save_png(plot(result, fail_if_slower), out_dir / "compare.png", dpi=110)
    return result, out_dir / "compare.md", failed
