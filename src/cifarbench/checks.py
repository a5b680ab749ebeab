"""Refuses, before any work starts, every config that cannot run as asked on this machine.

Each check raises a ConfigError naming the field, the value and what would work instead, so a user
learns in a second what a sweep would otherwise tell them after queueing and loading data.
"""

from __future__ import annotations

import netrc
import importlib.util
import os
import socket
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Literal, Optional, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import torch

from .config import ALLOWED, RunConfig, TrainerConfig
from .data.sources import CIFAR10_CLASSES, check_image_folder
from .errors import ConfigError
from .measure.environment import cpu_native_bf16
from .record import writable

CLUSTER_VARIABLES = ("SLURM_NNODES", "WORLD_SIZE", "MASTER_ADDR")


def check_config(cfg: RunConfig, on_this_machine: bool = True) -> None:
    """Cheapest first: values, this machine, the output (and W&B), then the data set (reads its headers).
    ``on_this_machine=False`` where the run goes to a cluster: its job checks the machine on its own nodes."""
    check_values(cfg)
    if on_this_machine:
        check_machine(cfg.trainer)
    check_output(cfg)
    check_data(cfg)


def check_values(cfg: RunConfig) -> None:
    check_fields(cfg)
    check_lr_find(cfg)
    check_combinations(cfg)
    if cfg.model.dropout and cfg.model.name != "custom_resnet":
        raise ConfigError("model.dropout", cfg.model.dropout, f"only custom_resnet has dropout; {cfg.model.name} "
                          "trains as its paper describes it: use model.dropout=0")


def check_fields(section: object, prefix: str = "") -> None:
    """Every field against its declared type: a choice (Literal) or a range (config.ALLOWED), walked through the
    sections. The parser already refused such values in flags, files and matrices; this covers a config built in
    Python (and a run's config.yaml read back), with the same one-line message."""
    for f in fields(section):
        value, kind, name = getattr(section, f.name), get_type_hints(type(section))[f.name], prefix + f.name
        if is_dataclass(value):
            check_fields(value, name + ".")
            continue
        if value is None and type(None) in get_args(kind):
            continue
        kind = next((k for k in get_args(kind) if k is not type(None)), kind) if get_origin(kind) is Union else kind
        if get_origin(kind) is Literal and value not in get_args(kind):
            raise ConfigError(name, value, f"expected one of {', '.join(map(str, get_args(kind)))}")
        if getattr(kind, "__name__", None) in ALLOWED:
            try:
                kind(value)
            except (TypeError, ValueError):
                raise ConfigError(name, value, ALLOWED[kind.__name__]) from None


def check_combinations(cfg: RunConfig) -> None:
    """Combinations that fail late, or silently, on any machine: refused before any work."""
    t, world = cfg.trainer, cfg.trainer.world_size()
    if t.precision == "16-true" and cfg.optim.optimizer == "adam":
        raise ConfigError("trainer.precision", t.precision, "with optim.optimizer=adam: Adam's eps (1e-8) is below "
                          "fp16's smallest value and becomes 0, so steps divide by ~0; use 16-mixed or bf16-true, "
                          "or optim.optimizer=sgd")
    if t.sync_batchnorm and world == 1:
        raise ConfigError("trainer.sync_batchnorm", t.sync_batchnorm, "one device has no other batch statistics to "
                          "sync with; use it with devices x num_nodes > 1")
    if cfg.data.path == "ffcv" and cfg.data.ffcv.order == "quasi_random" and world > 1:
        raise ConfigError("data.ffcv.order", cfg.data.ffcv.order, f"FFCV's quasi-random order does not support "
                          f"distributed training ({world} devices; it fails at the first epoch): use order=random")
    if t.compile in ("reduce-overhead", "max-autotune") and (world > 1 or t.strategy != "auto"):
        raise ConfigError("trainer.compile", t.compile, "has not been shown to work under DDP (CUDA graphs and "
                          "DDP's communication hooks); with DDP use compile=default or off")


def check_lr_find(cfg: RunConfig) -> None:
    f = cfg.lr_find
    if not f.max_lr > f.min_lr:
        raise ConfigError("lr_find.max_lr", f.max_lr, f"must be greater than lr_find.min_lr ({f.min_lr})")
    if f.enabled and cfg.trainer.world_size() > 1:
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


def slow_precision(t: TrainerConfig) -> Optional[str]:
    """A warning for a precision this CPU only emulates (a valid choice, so not refused): bf16 without bf16 units."""
    if resolved_accelerator(t) != "cpu" or not t.precision.startswith("bf16") or cpu_native_bf16():
        return None
    return (f"trainer.precision={t.precision!r} on a CPU without bf16 units ({torch.backends.cpu.get_cpu_capability()}, "
            "no avx512_bf16 or amx_bf16): torch emulates bf16, several to ~100x slower than 32-true on this machine")


def check_data(cfg: RunConfig) -> None:
    d = cfg.data
    root = Path(d.root).expanduser()
    if d.source == "folder" and not root.exists():
        raise ConfigError("data.root", d.root, "no such file or directory; give a directory or .tar.gz of "
                          "train/<class>/*.jpg + test/<class>/*.jpg")
    if d.source == "torchvision" and importlib.util.find_spec("torchvision") is None:
        raise ConfigError("data.source", d.source, "needs the torchvision package, built for your torch (pip install "
                          "torchvision, or cifarbench[vision]); or use data.source=folder or synthetic")
    if d.source == "torchvision" and not d.download and not (root / "cifar-10-batches-py").is_dir():
        raise ConfigError("data.root", d.root, "holds no cifar-10-batches-py; set data.download=true to fetch CIFAR-10 there")
    if d.source == "folder":
        check_image_folder(root, cfg.model.num_classes)
    elif cfg.model.num_classes != len(CIFAR10_CLASSES):
        raise ConfigError("model.num_classes", cfg.model.num_classes, f"data.source={d.source} has "
                          f"{len(CIFAR10_CLASSES)} classes; use model.num_classes={len(CIFAR10_CLASSES)}")
    if d.path == "ffcv":
        from .data.ffcv_path import MANIFEST, check_betons, require_ffcv

        require_ffcv()
        if (Path(d.ffcv.dir).expanduser() / MANIFEST).exists():  # else the run writes them first
            check_betons(d)
        elif not writable(Path(d.ffcv.dir).expanduser()):
            raise ConfigError("data.ffcv.dir", d.ffcv.dir, "holds no .beton files and is not a writable directory "
                              "(nor inside one) to write them into")
    if d.train_images() <= 0:  # only the seed protocol holds images out
        raise ConfigError("data.val_size", d.val_size, f"must be smaller than the {d.train_images() + d.val_size} "
                          "training images")
    world = cfg.trainer.world_size()
    if d.batch_scaling == "strong" and d.batch_size % world:
        raise ConfigError("data.batch_size", d.batch_size, f"strong scaling splits this global batch over the {world} "
                          f"devices: use a multiple of {world}")
    per_device = d.train_images() // world
    if d.device_batch(world) > per_device:
        raise ConfigError("data.batch_size", d.batch_size, f"each of the {world} devices gets {per_device} training images "
                          f"per epoch; use a batch size of at most {per_device} per device (training drops the last "
                          "partial batch)")


def check_output(cfg: RunConfig) -> None:
    if not writable(Path(cfg.output.dir).expanduser()):
        raise ConfigError("output.dir", cfg.output.dir, "is not a writable directory (nor inside one)")
    if cfg.output.wandb == "online" and (os.environ.get("WANDB_MODE") or "online") == "online":
        check_wandb_online(cfg.output.wandb)


def check_wandb_online(value: str) -> None:
    """W&B online needs credentials and its server: both looked at here, in seconds, instead of a 40-line
    traceback after the run has started. Credentials are where W&B looks for them (WANDB_API_KEY, an identity
    token file, or the netrc entry `wandb login` writes for the server's host)."""
    url = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    offline = "or use --output.wandb offline and `wandb sync` the run directory later"
    if not (os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE") or _netrc_login(url.hostname)):
        raise ConfigError("output.wandb", value, f"no W&B API key for {url.hostname}: run `wandb login` or set "
                          f"WANDB_API_KEY, {offline}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=5).close()
    except OSError as err:
        raise ConfigError("output.wandb", value, f"cannot reach {url.hostname}:{port} ({err.strerror or err}); "
                          f"check the network, {offline}") from None


def _netrc_login(host: Optional[str]) -> bool:
    try:
        return bool(host and netrc.netrc(os.environ.get("NETRC")).authenticators(host))
    except (OSError, netrc.NetrcParseError):
        return False
