"""`cifarbench profile-data`: is training held back by its input pipeline?

Three rates, measured separately on the same config, per device:
  (a) loader alone: images/s the data path delivers, batches fully materialised on the device, no model;
  (b) model alone: images/s the training step consumes, fed one batch that already sits on the device;
  (c) real loop: images/s of actual training and the share of step time spent waiting for data.
If (a) < (b) the data path cannot keep up: the run is data-bound.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from rich.console import Console
from rich.table import Table

from ..checks import check_config, resolved_accelerator
from ..config import RunConfig
from ..data import build_datamodule
from ..data.module import CifarDataModule
from ..measure import DataWait, SteadyStateThroughput
from ..measure.clock import synced_now
from ..measure.environment import collect_environment
from ..measure.peak_flops import apply_math_mode
from ..record import atomic_write_text, new_record, write_record
from ..cluster.requeue import resolve_run_id
from ..train.trainer import build_trainer
from ..train.module import CifarClassifier


class RepeatedBatch:
    """One batch already on the device, handed out ``steps`` times: a loader that never makes the step wait."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], steps: int):
        self.batch, self.steps = batch, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return itertools.repeat(self.batch, self.steps)


def loader_rate(datamodule: CifarDataModule, device: torch.device, steps: int, warmup: int) -> float:
    """(a): images/s of the training loader alone, over ``steps`` batches after ``warmup`` (epochs chained)."""
    datamodule.standalone_device = device  # no Trainer yet: the device path and FFCV must still fill ``device``
    datamodule.prepare_data()
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    images, start = 0, None
    batches = (batch for _ in itertools.count() for batch in loader)
    for i, (x, y) in enumerate(batches):
        x = x.to(device, non_blocking=True)  # the loader's job ends with the batch on the device
        if i == warmup:
            start = synced_now(device)
        elif i > warmup:
            images += len(y)
        if i == warmup + steps:
            break
    elapsed = synced_now(device) - start
    batches.close()  # ends the epoch: FFCV's loader thread would otherwise keep competing for cores
    return images / elapsed


def training_rate(cfg: RunConfig, steps: int, warmup: int, datamodule: Optional[CifarDataModule]) -> dict[str, Any]:
    """(b) without a ``datamodule`` (the step alone, fed one batch), else (c) (the real loop): a short Lightning
    fit, no validation."""
    module = CifarClassifier(cfg.model, cfg.optim, cfg.trainer.channels_last, cfg.trainer.compile)
    wait = DataWait(warmup)
    throughput = SteadyStateThroughput(warmup, phases=wait.profiler)
    trainer = build_trainer(replace(cfg.trainer, epochs=1, checkpoint=False), Path(cfg.output.dir), [throughput, wait],
                            loggers=[], limit_train_batches=warmup + steps, limit_val_batches=0,
                            enable_progress_bar=False, enable_model_summary=False, profiler=wait.profiler)
    if datamodule is None:
        generator = torch.Generator().manual_seed(0)
        batch = (torch.randn(cfg.data.batch_size, 3, 32, 32, generator=generator),
                 torch.randint(0, 10, (cfg.data.batch_size,), generator=generator))
        device = trainer.strategy.root_device
        trainer.fit(module, train_dataloaders=RepeatedBatch(tuple(t.to(device) for t in batch), warmup + steps))
    else:
        trainer.fit(module, datamodule=datamodule)
    return {"images_per_sec": throughput.summary.get("images_per_sec"),
            "fetch_fraction": wait.summary.get("fetch_fraction"), "harness_fraction": wait.summary.get("harness_fraction")}


def verdict(loader: float, model: float, fetch: float | None = None) -> str:
    """Data-bound when the loader alone is slower than the step alone. A compute-bound verdict gets a warning
    when real training still spent its time fetching batches (the fetch only, never the harness's hooks and
    loggers): the loader and the model then compete for the same CPU cores."""
    ratio = loader / model
    if ratio < 1:
        return f"data-bound: the loader delivers {ratio:.0%} of what the model consumes"
    text = f"compute-bound: the loader delivers {ratio:.1f}x what the model consumes"
    if fetch is not None and fetch > 0.2:
        text += f", yet training spent {fetch:.0%} of its time fetching batches (loader and model share the CPU cores)"
    return text


def profile_data(cfg: RunConfig, steps: int = 30, warmup: int = 5, sweep_workers: Optional[list[int]] = None,
                 sweep_batch_sizes: Optional[list[int]] = None, console: Optional[Console] = None) -> tuple[Path, dict]:
    """Measures (a), (b), (c) for each num_workers x batch size and writes a ``profile-data`` record."""
    # One device: the rates are per device, and a DDP launch would re-run this whole sweep per rank.
    cfg = replace(cfg, trainer=replace(cfg.trainer, devices=1, num_nodes=1, strategy="auto"))
    points = [replace(cfg, data=replace(cfg.data, num_workers=workers, batch_size=batch_size))
              for workers, batch_size in itertools.product(sweep_workers or [cfg.data.num_workers],
                                                           sweep_batch_sizes or [cfg.data.batch_size])]
    for point in points:  # every point of the sweep, before anything is measured
        check_config(point)
    apply_math_mode(cfg.trainer.matmul_precision)  # as `fit` does: TF32 or strict fp32 decide (b) and (c)
    console = console or Console(width=None if Console().is_terminal else 160)
    run_id = resolve_run_id(replace(cfg, output=replace(cfg.output, name=f"{cfg.output.name}-profile-data")))
    run_dir = Path(cfg.output.dir).expanduser() / run_id
    device = torch.device("cuda", 0) if resolved_accelerator(cfg.trainer) == "cuda" else torch.device("cpu")
    rows = []
    for point in points:
        workers, batch_size = point.data.num_workers, point.data.batch_size
        console.print(f"[bold]{cfg.data.path}[/]: num_workers={workers} batch_size={batch_size}: measuring ...")
        datamodule = build_datamodule(point.data, seed=point.trainer.seed)  # loads the data once for (a) and (c)
        loader = loader_rate(datamodule, device, steps, warmup)
        model = training_rate(point, steps, warmup, datamodule=None)["images_per_sec"]
        real = training_rate(point, steps, warmup, datamodule=datamodule)
        rows.append({"data_path": cfg.data.path, "num_workers": workers, "batch_size": batch_size,
                     "loader_images_per_sec": loader, "model_images_per_sec": model,
                     "train_images_per_sec": real["images_per_sec"], "train_fetch_fraction": real["fetch_fraction"],
                     "train_harness_fraction": real["harness_fraction"],
                     "verdict": verdict(loader, model, real["fetch_fraction"])})
    console.print(rows_table(rows, device))
    for r in rows:
        console.print(f"verdict ({r['data_path']}, num_workers={r['num_workers']}, batch_size={r['batch_size']}): "
                      f"{r['verdict']}")
    record = new_record(cfg, run_id, "completed", kind="profile-data", device=str(device), steps=steps, warmup=warmup,
                        rows=rows, environment=collect_environment())
    atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    path = write_record(run_dir, record)
    log_to_wandb(cfg, run_id, run_dir, rows)
    return path, record


def rows_table(rows: list[dict[str, Any]], device: torch.device) -> Table:
    table = Table(title=f"data path vs model, images/s per device ({device})")
    for column in ("path", "workers", "batch", "(a) loader", "(b) model", "(c) training", "fetch", "harness", "verdict"):
        table.add_column(column, justify="left" if column in ("path", "verdict") else "right")
    for r in rows:
        table.add_row(r["data_path"], str(r["num_workers"]), str(r["batch_size"]), f"{r['loader_images_per_sec']:,.0f}",
                      f"{r['model_images_per_sec']:,.0f}", f"{r['train_images_per_sec']:,.0f}",
                      f"{r['train_fetch_fraction']:.0%}", f"{r['train_harness_fraction']:.0%}", r["verdict"])
    return table


def log_to_wandb(cfg: RunConfig, run_id: str, run_dir: Path, rows: list[dict[str, Any]]) -> None:
    if cfg.output.wandb == "disabled":
        return
    import wandb

    run = wandb.init(project=cfg.output.wandb_project, entity=cfg.output.wandb_entity, id=run_id, name=run_id,
                     dir=str(run_dir), mode=cfg.output.wandb, job_type="profile-data", config=cfg.to_dict())
    columns = list(rows[0])
    run.log({"profile_data": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in rows])})
    run.summary.update({f"{k}": rows[0][k] for k in columns if k.endswith(("per_sec", "fraction"))})
    run.finish()
