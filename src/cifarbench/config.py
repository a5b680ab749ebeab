"""The whole run configuration: every hyper-parameter and knob with its default, in one place.

Defaults are the seed project's recipe (CustomResNet, batch 512, 24 epochs, Adam + OneCycle peaking at
epoch 5, target 93%). The CLI exposes each field as ``--section.field`` and reads YAML files of the same
shape (jsonargparse, as LightningCLI does), so ``cifarbench fit --print-config`` prints a valid config.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

from jsonargparse.typing import (ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, OpenUnitInterval,
                                 PositiveFloat, PositiveInt, restricted_number_type, restricted_string_type)

# Each bounded field's range is its type: jsonargparse refuses a value outside it while parsing (CLI flags, YAML
# files, matrix runs) and `checks.check_fields` checks a config built in Python the same way. ALLOWED says
# each range in words, for the one-line error (`config_parser.explain_argument_error`).
Fraction = restricted_number_type("Fraction", float, [(">=", 0), ("<", 1)])  # dropout, label smoothing, momentum
Accuracy = restricted_number_type("Accuracy", float, [(">", 0), ("<=", 1)])
Seed = restricted_number_type("Seed", int, [(">=", 0), ("<=", 2**32 - 1)])  # what numpy's generator accepts
JpegQuality = restricted_number_type("JpegQuality", int, [(">=", 1), ("<=", 100)])
CutoutSize = restricted_number_type("CutoutSize", int, [(">=", 0), ("<=", 32)])  # the hole must fit a 32x32 image
ClassCount = restricted_number_type("ClassCount", int, (">=", 2))
SweepSteps = restricted_number_type("SweepSteps", int, (">=", 15))  # lr-find's suggestion skips the first 10 points
AboveOne = restricted_number_type("AboveOne", float, (">", 1))
Port = restricted_number_type("Port", int, [(">=", 1), ("<=", 65535)])
Name = restricted_string_type("Name", r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # safe in paths, sbatch and W&B
ALLOWED = {
    "PositiveInt": "must be a whole number of at least 1", "NonNegativeInt": "must be 0 or more",
    "PositiveFloat": "must be greater than 0", "NonNegativeFloat": "must be 0 or more",
    "ClosedUnitInterval": "a probability must be between 0 and 1", "OpenUnitInterval": "must be in (0, 1)",
    "Fraction": "must be in [0, 1)", "Accuracy": "must be in (0, 1], e.g. 0.93",
    "Seed": f"a seed must be a whole number from 0 to {2**32 - 1}", "JpegQuality": "a JPEG quality is 1 to 100",
    "CutoutSize": "0 to 32: the hole must fit in a 32x32 image", "ClassCount": "at least 2 classes",
    "SweepSteps": "at least 15: the suggestion skips the first 10 points", "AboveOne": "must be above 1",
    "Port": "a TCP port is 1 to 65535",
    "Name": "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit",
}

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true")
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


@dataclass
class ModelConfig:
    name: Literal["custom_resnet", "resnet9", "airbench94"] = "custom_resnet"  # src/cifarbench/models/<name>.py
    width: PositiveInt = 64  # custom_resnet, resnet9: prep channels (64: 6,573,120 params); airbench94: first group's
    dropout: Fraction = 0.0  # custom_resnet: prep layer and layer 2 (its residual blocks keep the seed's 0.05)
    num_classes: ClassCount = 10  # outputs of the head; an image folder's class count must match it
    # test-time augmentation: evaluate on the mean logits of the image and its mirror image (flip), and of both
    # shifted one pixel up-left and down-right (flip_translate: airbench's, half the weight on the shifted views)
    tta: Literal["none", "flip", "flip_translate"] = "none"
    whiten_bias_epochs: NonNegativeInt = 3  # airbench94: epochs its whitening layer's bias trains, then frozen


@dataclass
class OptimConfig:
    # Adam (weight decay 1e-4) or SGD (momentum 0.9, weight decay 5e-4), as the seed
    optimizer: Literal["adam", "sgd"] = "adam"
    max_lr: PositiveFloat = 0.02  # OneCycle peak; `cifarbench lr-find` suggests one for your setup
    weight_decay: Optional[NonNegativeFloat] = None  # None: 1e-4 for Adam, 5e-4 for SGD (the seed's values)
    momentum: Fraction = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    label_smoothing: Fraction = 0.0  # cross-entropy label smoothing (training only)
    pct_start: OpenUnitInterval = 5 / 24  # peak at epoch 5 of 24, as in the seed
    div_factor: PositiveFloat = 2000.0  # initial lr = max_lr / div_factor
    final_div_factor: PositiveFloat = 1.0  # final lr = initial lr / final_div_factor
    anneal_strategy: Literal["linear", "cos"] = "linear"  # OneCycle's shape after the peak (the seed's: linear)
    cycle_momentum: bool = True  # OneCycle's momentum cycle 0.95 -> 0.85 -> 0.95 (torch's default, the seed's);
    #                              false: `momentum` (SGD) or Adam's beta1 stays constant
    # max_lr is for a global batch of data.batch_size (one device). At k times that batch (weak scaling over k
    # devices) it is multiplied by k (linear, Goyal et al. 2017), by sqrt(k) (sqrt, as for Adam), or kept (none)
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    bias_lr_scale: PositiveFloat = 1.0  # BatchNorm parameters' LR multiple (airbench94: 64); their weight decay is
    #                                     divided by it, so that LR x decay, the shrink per step, stays the same
    lookahead_every: Optional[PositiveInt] = None  # airbench's Lookahead: every N steps the weights and their EMA
    #                              both move to the EMA (decay 0.95^N x progress^3), the EMA is the end; None: off

    def lr_multiplier(self, global_batch: int, reference_batch: int) -> float:
        """What max_lr is multiplied by at ``global_batch`` images per step, for a max_lr tuned at ``reference_batch``."""
        ratio = global_batch / reference_batch
        return {"none": 1.0, "linear": ratio, "sqrt": ratio ** 0.5}[self.lr_scaling]

    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 1e-4 if self.optimizer == "adam" else 5e-4


@dataclass
class FFCVConfig:
    """The FFCV data path: where its .beton files live and how its Loader reads them."""

    dir: str = "ffcv"  # {train,val,test}.beton + manifest.json; written by `cifarbench prepare-ffcv` (or on first use)
    storage: Literal["raw", "jpeg"] = "raw"  # how prepare-ffcv stores images: raw RGB or JPEG
    jpeg_quality: JpegQuality = 90  # with storage: jpeg
    order: Literal["random", "quasi_random"] = "random"  # training order (evaluation is sequential)
    os_cache: bool = True  # let the OS page cache hold the file (else FFCV's own process cache)
    batches_ahead: PositiveInt = 3  # batches FFCV's Loader prepares ahead of the step


@dataclass
class DataConfig:
    # torchvision's download, an image folder or .tar.gz, or generated images
    source: Literal["torchvision", "folder", "synthetic"] = "torchvision"
    # seed: the seed's split (val_size of the 50,000 training images held out for validation, the test set once at
    # the end); published: all 50,000 train, the 10,000 test images validated after each epoch (DAWNBench, airbench)
    protocol: Literal["seed", "published"] = "seed"
    # torchvision: download/cache directory; folder: a directory or .tar.gz of train/<class>/*.jpg + test/<class>/*.jpg
    root: str = "~/.cache/cifarbench/cifar10"
    download: bool = True  # torchvision source only
    path: Literal["albumentations", "ffcv", "device"] = "albumentations"  # the input pipeline
    batch_size: PositiveInt = 512  # per device (weak scaling), or the global batch split over the devices (strong)
    # weak: each device takes batch_size, so more devices make a bigger global batch (fewer, larger steps);
    # strong: the global batch stays batch_size whatever the device count (the same steps, split)
    batch_scaling: Literal["weak", "strong"] = "weak"
    num_workers: NonNegativeInt = 4  # per device: DataLoader processes (albumentations) or FFCV threads; unused by device
    val_size: PositiveInt = 5000  # held out of the training set with split_seed (seed: 45,000 / 5,000)
    split_seed: Seed = 42  # the permutation that picks the validation images (the same for every run seed)
    train_subset: Optional[PositiveInt] = None  # keep only this many training images, class-balanced (quick runs)
    test_subset: Optional[PositiveInt] = None  # a class-balanced subset of the test images; None: all
    synthetic_train_size: PositiveInt = 10_000  # synthetic source only
    synthetic_test_size: PositiveInt = 1000  # generated test images (synthetic source)
    # augmentation (the seed's): pad-and-crop translate, horizontal flip, one square cutout
    pad: NonNegativeInt = 4
    flip_prob: ClosedUnitInterval = 0.5  # horizontal flip
    cutout_size: CutoutSize = 8  # one square hole filled with the mean pixel; 0: none
    cutout_prob: ClosedUnitInterval = 0.5  # how often the hole is cut
    alternating_flip: bool = False  # replaces flip_prob: half flipped, then each image every other epoch (airbench)
    ffcv: FFCVConfig = field(default_factory=FFCVConfig)

    def device_batch(self, world: int) -> int:
        """Images per step on each of ``world`` devices."""
        return self.batch_size if self.batch_scaling == "weak" else self.batch_size // world

    def train_images(self) -> int:
        """Training images per epoch (all devices together), after subsetting and the seed protocol's val split."""
        full = self.synthetic_train_size if self.source == "synthetic" else 50_000
        return min(full, self.train_subset or full) - (self.val_size if self.protocol == "seed" else 0)

    def val_images(self) -> int:
        """Images of each validation: the held-out split (seed protocol) or the test set (published)."""
        if self.protocol == "seed":
            return self.val_size
        full = self.synthetic_test_size if self.source == "synthetic" else 10_000
        return min(full, self.test_subset or full)


@dataclass
class DDPConfig:
    """Options of torch DistributedDataParallel, used with strategy ddp or ddp_spawn."""

    gradient_as_bucket_view: bool = False  # gradients as views into DDP's all-reduce buckets (saves a copy)
    static_graph: bool = False  # tells DDP the graph never changes between steps
    bucket_cap_mb: PositiveInt = 25  # DDP's all-reduce bucket size
    find_unused_parameters: bool = False  # DDP searches for parameters without gradients each step (slow; not needed here)
    # a collective waiting longer than this fails the job (a dead or stuck rank); compile warm-up must fit in it
    timeout_seconds: PositiveInt = 1800


@dataclass
class TrainerConfig:
    accelerator: Literal["auto", "cpu", "gpu", "cuda"] = "auto"  # where to train; gpu without a CUDA GPU is refused
    devices: PositiveInt = 1  # per node
    num_nodes: PositiveInt = 1  # nodes; more than 1 needs a cluster launcher (srun via `cifarbench submit`, torchrun)
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"  # Lightning strategy; ddp launches one process per device
    ddp: DDPConfig = field(default_factory=DDPConfig)
    # Lightning precision; fp16 on a CPU and bf16 on pre-Ampere GPUs are refused, bf16 on a CPU without bf16 units
    # warned about (emulated: several to ~100x slower)
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "bf16-true", "16-true"] = "32-true"
    channels_last: bool = False  # the network and every batch in NHWC (Lightning has no switch; the module does it)
    # torch.compile of the network before the strategy wraps it; the last two need CUDA
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"
    # highest: strict FP32; high or medium: TF32 matmuls and convolutions on Ampere and newer (MFU's peak follows)
    matmul_precision: Literal["highest", "high", "medium"] = "highest"
    cudnn_benchmark: bool = False  # torch.backends.cudnn.benchmark: cuDNN autotunes each shape
    sync_batchnorm: bool = False  # SyncBatchNorm across ranks (CUDA only)
    epochs: PositiveInt = 24  # training epochs (the seed's 24)
    seed: Seed = 1  # seed_everything: model init, shuffling, augmentation workers
    checkpoint: bool = True  # keep checkpoints/last.ckpt
    checkpoint_every_n_epochs: PositiveInt = 1  # write it every N epochs (and at the last); each write is timed, off the steady clock
    log_every_n_steps: Optional[PositiveInt] = None  # steps between logger writes (each reads the step's metrics on the host); None: 50, at most an epoch

    def world_size(self) -> int:
        """Training processes of the job: devices per node x nodes."""
        return self.devices * self.num_nodes


@dataclass
class MeasureConfig:
    target_accuracy: Accuracy = 0.93  # validation accuracy that stops the time-to-target clocks
    warmup_steps: NonNegativeInt = 5  # first training steps of each attempt kept out of steady-state throughput
    untimed_warmup_steps: NonNegativeInt = 2  # train steps (and one eval pass) run on random data before any clock; 0: none
    stop_at_target: bool = False  # end training at the first validation at the target (DAWNBench's rule)
    divergence_check_every: Optional[PositiveInt] = None  # steps between NaN checks (one read + one collective); None: the logging interval
    per_step: bool = True  # data wait and divergence check each step; false only to measure what they cost
    sync_sentinel: bool = False  # count, on any device, the calls that would make the host wait for a GPU (slow: tests, debugging)
    cost_per_gpu_hour: Optional[PositiveFloat] = None  # price of one device-hour: the record adds the cost to target


@dataclass
class ProfilerConfig:
    """A short torch.profiler window written as TensorBoard traces into <run dir>/profiler/ (per rank)."""

    enabled: bool = False  # trace a few training steps (the traced steps are slower: the record says it was on)
    wait: NonNegativeInt = 5  # training steps skipped first (warm-up, compile)
    warmup: NonNegativeInt = 2  # steps profiled but thrown away
    active: PositiveInt = 3  # steps recorded


@dataclass
class LRFindConfig:
    """The LR range test: `cifarbench lr-find`, or first thing in `fit` with ``enabled``."""

    enabled: bool = False  # fit: run the range test first and train with its suggestion as optim.max_lr
    min_lr: PositiveFloat = 1e-7  # the exponential sweep's start ...
    max_lr: PositiveFloat = 10.0  # ... and end, as the seed's range test
    steps: SweepSteps = 200  # training steps of the sweep (fewer when it stops early)
    early_stop_threshold: Optional[AboveOne] = 4.0  # stop once the loss exceeds this multiple of the best; null: never


@dataclass
class OutputConfig:
    dir: str = "results"  # each run writes <dir>/<run_id>/
    run_id: Optional[Name] = None  # None: <name>-<timestamp>, shared by every rank of the job
    name: Name = "cifarbench"  # the run id's prefix, the W&B group's first part; a matrix sets its name
    wandb: Literal["offline", "online", "disabled"] = "offline"  # W&B mode; online needs `wandb login` (offline runs upload later with `wandb sync`)
    wandb_project: Name = "cifarbench"  # W&B project
    wandb_entity: Optional[str] = None  # W&B team or user; None: the login's default
    # an unfinished run with this run id (interrupted, failed, killed) resumes from its newest checkpoint; false:
    # it starts afresh (a run with a result is never trained again either way)
    resume: bool = True


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


# Fields that say which repetition a run is, where it writes or what a device-hour costs, not what it trains:
# left out of a configuration's identity (the report's rows, `compare`'s matching, the W&B group).
NOT_CONFIGURATION = frozenset({"trainer.seed", "output.dir", "output.name", "output.run_id", "output.wandb",
                               "output.wandb_project", "output.wandb_entity", "output.resume", "data.root",
                               "measure.cost_per_gpu_hour"})


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"path": "device"}}`` -> ``{"data.path": "device"}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def configuration_identity(flat: dict[str, Any], leave_out: frozenset[str] = frozenset()) -> str:
    """A flattened config's identity: its fields less :data:`NOT_CONFIGURATION` (and ``leave_out``), as JSON."""
    drop = NOT_CONFIGURATION | leave_out
    return json.dumps({k: v for k, v in sorted(flat.items()) if k not in drop}, default=str)
