"""The whole run configuration: every hyper-parameter and knob with its default, in one place.

Defaults are the seed project's recipe (CustomResNet, batch 512, 24 epochs, Adam + OneCycle peaking at
epoch 5, target 93%). The CLI exposes each field as ``--section.field`` and reads YAML files of the same
shape (jsonargparse, as LightningCLI does), so ``cifarbench fit --print-config`` prints a valid config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Optional

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


@dataclass
class ModelConfig:
    width: int = 64  # prep-layer channels; 64 is the seed's network (6,573,120 params)
    dropout: float = 0.0
    tta_flip: bool = False  # evaluate on the mean logits of each image and its mirror image (test-time augmentation)


@dataclass
class OptimConfig:
    optimizer: Literal["adam", "sgd"] = "adam"
    max_lr: float = 0.02  # OneCycle peak; `cifarbench lr-find` suggests one for your setup
    weight_decay: Optional[float] = None  # None: 1e-4 for Adam, 5e-4 for SGD (the seed's values)
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    label_smoothing: float = 0.0
    pct_start: float = 5 / 24  # peak at epoch 5 of 24, as in the seed
    div_factor: float = 2000.0  # initial lr = max_lr / div_factor
    final_div_factor: float = 1.0  # final lr = initial lr / final_div_factor
    anneal_strategy: Literal["linear", "cos"] = "linear"

    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 1e-4 if self.optimizer == "adam" else 5e-4


@dataclass
class FFCVConfig:
    """The FFCV data path: where its .beton files live and how its Loader reads them."""

    dir: str = "ffcv"  # {train,val,test}.beton + manifest.json; written by `cifarbench prepare-ffcv` (or on first use)
    storage: Literal["raw", "jpeg"] = "raw"  # how prepare-ffcv stores images: raw RGB or JPEG
    jpeg_quality: int = 90
    order: Literal["random", "quasi_random"] = "random"  # training order (evaluation is sequential)
    os_cache: bool = True  # let the OS page cache hold the file (else FFCV's own process cache)
    batches_ahead: int = 3


@dataclass
class DataConfig:
    source: Literal["torchvision", "folder", "synthetic"] = "torchvision"
    # torchvision: download/cache directory; folder: a directory or .tar.gz of train/<class>/*.jpg + test/<class>/*.jpg
    root: str = "~/.cache/cifarbench/cifar10"
    download: bool = True  # torchvision source only
    path: Literal["albumentations", "ffcv", "device"] = "albumentations"  # the input pipeline
    batch_size: int = 512  # per device
    num_workers: int = 4  # per device: DataLoader processes (albumentations) or FFCV threads; unused by device
    val_size: int = 5000  # held out of the training set with split_seed (seed: 45,000 / 5,000)
    split_seed: int = 42
    train_subset: Optional[int] = None  # keep only this many training images, class-balanced (quick runs)
    test_subset: Optional[int] = None
    synthetic_train_size: int = 10_000  # synthetic source only
    synthetic_test_size: int = 1000
    # augmentation (the seed's): pad-and-crop translate, horizontal flip, one square cutout
    pad: int = 4
    flip_prob: float = 0.5
    cutout_size: int = 8
    cutout_prob: float = 0.5
    ffcv: FFCVConfig = field(default_factory=FFCVConfig)

    def train_images(self) -> int:
        """Training images per epoch (all devices together), after subsetting and the val split."""
        full = self.synthetic_train_size if self.source == "synthetic" else 50_000
        return min(full, self.train_subset or full) - self.val_size


@dataclass
class DDPConfig:
    """Options of torch DistributedDataParallel, used with strategy ddp or ddp_spawn."""

    gradient_as_bucket_view: bool = False
    static_graph: bool = False
    bucket_cap_mb: int = 25
    find_unused_parameters: bool = False
    # a collective waiting longer than this fails the job (a dead or stuck rank); compile warm-up must fit in it
    timeout_seconds: int = 1800


@dataclass
class TrainerConfig:
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
    devices: int = 1  # per node
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    ddp: DDPConfig = field(default_factory=DDPConfig)
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true"] = "32-true"
    channels_last: bool = False
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    matmul_precision: Literal["highest", "high", "medium"] = "highest"
    cudnn_benchmark: bool = False
    sync_batchnorm: bool = False
    epochs: int = 24
    seed: int = 1
    checkpoint: bool = True  # keep checkpoints/last.ckpt
    checkpoint_every_n_epochs: int = 1  # write it every N epochs (and at the last); each write is timed, off the steady clock


@dataclass
class MeasureConfig:
    target_accuracy: float = 0.93  # validation accuracy that stops the time-to-target clocks
    warmup_steps: int = 5  # first training steps of each attempt kept out of steady-state throughput
    untimed_warmup_steps: int = 2  # train steps (and one eval pass) run on random data before any clock; 0: none
    stop_at_target: bool = False  # end training at the first validation at the target (DAWNBench's rule)
    divergence_check_every: Optional[int] = None  # steps between NaN checks (one read + one collective); None: the logging interval
    per_step: bool = True  # data wait and divergence check each step; false only to measure what they cost


@dataclass
class ProfilerConfig:
    """A short torch.profiler window written as TensorBoard traces into <run dir>/profiler/ (per rank)."""

    enabled: bool = False
    wait: int = 5  # training steps skipped first (warm-up, compile)
    warmup: int = 2  # steps profiled but thrown away
    active: int = 3  # steps recorded


@dataclass
class LRFindConfig:
    """The LR range test: `cifarbench lr-find`, or first thing in `fit` with ``enabled``."""

    enabled: bool = False  # fit: run the range test first and train with its suggestion as optim.max_lr
    min_lr: float = 1e-7  # the exponential sweep's start ...
    max_lr: float = 10.0  # ... and end, as the seed's range test
    steps: int = 200  # training steps of the sweep (fewer when it stops early)
    early_stop_threshold: Optional[float] = 4.0  # stop once the loss exceeds this multiple of the best; null: never


@dataclass
class OutputConfig:
    dir: str = "results"  # each run writes <dir>/<run_id>/
    run_id: Optional[str] = None  # None: <name>-<timestamp>, shared by every rank of the job
    name: str = "cifarbench"
    wandb: Literal["offline", "online", "disabled"] = "offline"
    wandb_project: str = "cifarbench"
    wandb_entity: Optional[str] = None


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    profiler: ProfilerConfig = field(default_factory=ProfilerConfig)
    lr_find: LRFindConfig = field(default_factory=LRFindConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    test: bool = True  # evaluate the test set after training

    def to_dict(self) -> dict:
        return asdict(self)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)
