"""Refuses, before any work starts, every config that cannot run as asked on this machine.

Each check raises a ConfigError naming the field, the value and what would work instead, so a user
learns in a second what a sweep would otherwise tell them after queueing and loading data.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

from .config import RunConfig, TrainerConfig
from .errors import ConfigError

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CLUSTER_VARIABLES = ("SLURM_NNODES", "WORLD_SIZE", "MASTER_ADDR")


LR_FIND_MIN_STEPS = 15


def check_config(cfg: RunConfig) -> None:
    check_values(cfg)
    check_machine(cfg.trainer)
    check_data(cfg)
    check_output(cfg)


def check_values(cfg: RunConfig) -> None:
    for name, value in [("model.width", cfg.model.width), ("data.batch_size", cfg.data.batch_size),
                        ("data.val_size", cfg.data.val_size), ("trainer.devices", cfg.trainer.devices),
                        ("trainer.num_nodes", cfg.trainer.num_nodes), ("trainer.epochs", cfg.trainer.epochs),
                        ("trainer.ddp.bucket_cap_mb", cfg.trainer.ddp.bucket_cap_mb),
                        ("trainer.ddp.timeout_seconds", cfg.trainer.ddp.timeout_seconds),
                        ("data.synthetic_train_size", cfg.data.synthetic_train_size),
                        ("data.synthetic_test_size", cfg.data.synthetic_test_size),
                        ("data.train_subset", cfg.data.train_subset), ("data.test_subset", cfg.data.test_subset),
                        ("trainer.checkpoint_every_n_epochs", cfg.trainer.checkpoint_every_n_epochs),
                        ("measure.divergence_check_every", cfg.measure.divergence_check_every)]:
        if value is not None and value < 1:
            raise ConfigError(name, value, "must be a whole number of at least 1")
    for name, value in [("data.num_workers", cfg.data.num_workers), ("measure.warmup_steps", cfg.measure.warmup_steps),
                        ("measure.untimed_warmup_steps", cfg.measure.untimed_warmup_steps),
                        ("data.pad", cfg.data.pad), ("data.cutout_size", cfg.data.cutout_size)]:
        if value < 0:
            raise ConfigError(name, value, "must be 0 or more")
    for name, value in [("data.flip_prob", cfg.data.flip_prob), ("data.cutout_prob", cfg.data.cutout_prob)]:
        if not 0 <= value <= 1:
            raise ConfigError(name, value, "a probability must be between 0 and 1")
    for name, value in [("model.dropout", cfg.model.dropout), ("optim.label_smoothing", cfg.optim.label_smoothing)]:
        if not 0 <= value < 1:
            raise ConfigError(name, value, "must be in [0, 1)")
    if cfg.data.cutout_size > 32:
        raise ConfigError("data.cutout_size", cfg.data.cutout_size, "at most 32: the hole must fit in a 32x32 image")
    if not 1 <= cfg.data.ffcv.jpeg_quality <= 100:
        raise ConfigError("data.ffcv.jpeg_quality", cfg.data.ffcv.jpeg_quality, "a JPEG quality is 1 to 100")
    if not 0 < cfg.optim.pct_start < 1:
        raise ConfigError("optim.pct_start", cfg.optim.pct_start, "must be in (0, 1): the fraction of steps before the peak")
    for name, value in [("optim.max_lr", cfg.optim.max_lr), ("optim.div_factor", cfg.optim.div_factor),
                        ("optim.final_div_factor", cfg.optim.final_div_factor)]:
        if not value > 0:
            raise ConfigError(name, value, "must be greater than 0")
    if cfg.optim.weight_decay is not None and cfg.optim.weight_decay < 0:
        raise ConfigError("optim.weight_decay", cfg.optim.weight_decay, "must be 0 or more (or null for the optimizer's default)")
    if not 0 < cfg.measure.target_accuracy <= 1:
        raise ConfigError("measure.target_accuracy", cfg.measure.target_accuracy, "must be in (0, 1], e.g. 0.93")
    check_lr_find(cfg)
    if cfg.output.run_id is not None and not RUN_ID_PATTERN.match(cfg.output.run_id):
        raise ConfigError("output.run_id", cfg.output.run_id, "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")


def check_lr_find(cfg: RunConfig) -> None:
    f = cfg.lr_find
    if not f.min_lr > 0:
        raise ConfigError("lr_find.min_lr", f.min_lr, "must be greater than 0 (the sweep is exponential)")
    if not f.max_lr > f.min_lr:
        raise ConfigError("lr_find.max_lr", f.max_lr, f"must be greater than lr_find.min_lr ({f.min_lr})")
    if f.steps < LR_FIND_MIN_STEPS:
        raise ConfigError("lr_find.steps", f.steps, f"at least {LR_FIND_MIN_STEPS}: the suggestion skips the first 10 points")
    if f.early_stop_threshold is not None and not f.early_stop_threshold > 1:
        raise ConfigError("lr_find.early_stop_threshold", f.early_stop_threshold, "must be above 1 (or null: never stop)")
    if f.enabled and cfg.trainer.devices * cfg.trainer.num_nodes > 1:
        raise ConfigError("lr_find.enabled", f.enabled, "only for 1-device runs: run `cifarbench lr-find` first and "
                          "add its lr_find.yaml with -c")


def resolved_accelerator(t: TrainerConfig) -> str:
    if t.accelerator in ("gpu", "cuda"):
        return "cuda"
    return "cuda" if t.accelerator == "auto" and torch.cuda.is_available() else "cpu"


def check_machine(t: TrainerConfig) -> None:
    accelerator = resolved_accelerator(t)
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator", t.accelerator, "no CUDA GPU is visible on this machine; use accelerator=cpu")
    if accelerator == "cuda":
        available, unit = torch.cuda.device_count(), "CUDA GPUs"
    else:
        available, unit = os.cpu_count() or 1, "CPU cores (each CPU device is one training process)"
    if t.devices > available:
        raise ConfigError("trainer.devices", t.devices, f"this node has {available} {unit}; use at most {available}")
    if t.num_nodes > 1 and not any(v in os.environ for v in CLUSTER_VARIABLES):
        raise ConfigError("trainer.num_nodes", t.num_nodes, "several nodes need a cluster launcher (srun via "
                          "`cifarbench submit`, or torchrun); on one machine use num_nodes=1")
    if t.strategy == "auto" and t.ddp != type(t.ddp)():
        raise ConfigError("trainer.strategy", t.strategy, "trainer.ddp options apply only with strategy=ddp or ddp_spawn")
    if accelerator == "cpu":
        if t.precision == "16-mixed":
            raise ConfigError("trainer.precision", t.precision, "fp16 autocast needs a CUDA GPU; on CPU use bf16-mixed or 32-true")
        if t.precision == "16-true":
            raise ConfigError("trainer.precision", t.precision, "the CPU has no fast fp16 kernels (a matmul runs ~200x "
                              "slower than bf16 here); on CPU use bf16-true, bf16-mixed or 32-true")
        if t.sync_batchnorm:
            raise ConfigError("trainer.sync_batchnorm", t.sync_batchnorm, "torch's SyncBatchNorm runs only on CUDA "
                              "devices; on CPU use sync_batchnorm=false")
        if t.compile in ("reduce-overhead", "max-autotune"):
            raise ConfigError("trainer.compile", t.compile, "this mode needs CUDA (CUDA graphs / GPU kernel autotuning); "
                              "on CPU use compile=default or off")
    elif t.precision.startswith("bf16") and not torch.cuda.is_bf16_supported():
        raise ConfigError("trainer.precision", t.precision, f"{torch.cuda.get_device_name()} has no bf16 support; use 16-mixed or 32-true")


def check_data(cfg: RunConfig) -> None:
    d = cfg.data
    root = Path(d.root).expanduser()
    if d.source == "folder" and not root.exists():
        raise ConfigError("data.root", d.root, "no such file or directory; give a directory or .tar.gz of "
                          "train/<class>/*.jpg + test/<class>/*.jpg")
    if d.source == "torchvision" and not d.download and not (root / "cifar-10-batches-py").is_dir():
        raise ConfigError("data.root", d.root, "holds no cifar-10-batches-py; set data.download=true to fetch CIFAR-10 there")
    if d.path == "ffcv":
        from .data.ffcv_path import MANIFEST, check_betons, require_ffcv

        require_ffcv()
        if (Path(d.ffcv.dir).expanduser() / MANIFEST).exists():  # else the run writes them first
            check_betons(d)
    if d.train_images() <= 0:
        raise ConfigError("data.val_size", d.val_size, f"must be smaller than the {d.train_images() + d.val_size} "
                          "training images")
    world = cfg.trainer.devices * cfg.trainer.num_nodes
    per_device = d.train_images() // world
    if d.batch_size > per_device:
        raise ConfigError("data.batch_size", d.batch_size, f"each of the {world} devices gets {per_device} training images "
                          f"per epoch; use a batch size of at most {per_device} (training drops the last partial batch)")


def check_output(cfg: RunConfig) -> None:
    out = Path(cfg.output.dir).expanduser()
    existing = next((p for p in [out, *out.parents] if p.exists()), None)
    try:  # a real write (os.access says yes to root everywhere, /proc included); nothing stays behind
        with tempfile.TemporaryFile(dir=existing):
            pass
    except (OSError, TypeError):
        raise ConfigError("output.dir", cfg.output.dir, "is not a writable directory (nor inside one)") from None
