"""The training recipe as a LightningModule: loss, metrics, optimizer, schedule and the recipe options
(per-group learning rates, Lookahead, test-time augmentation) that any network can use."""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_accuracy

from ..config import ModelConfig, OptimConfig
from ..loggers import loggers_write_this_step
from ..models import build_network
from ..models.airbench94 import WHITEN_IMAGES, init_whitening


class CifarClassifier(L.LightningModule):
    """``model.name``'s network trained with cross-entropy (label smoothing), Adam or SGD (Nesterov), and a
    OneCycle schedule stepped every batch, whose shape covers the seed's, Page's and airbench's.

    ``channels_last`` converts the network and every batch (Lightning has no switch for it);
    ``compile`` compiles the network in place in ``configure_model``, before the strategy wraps it,
    so it works the same under DDP (the Trainer does not compile for you).
    """

    def __init__(self, model: ModelConfig, optim: OptimConfig, channels_last: bool = False, compile: str = "off"):
        super().__init__()
        self.save_hyperparameters({"model": asdict(model), "optim": asdict(optim),
                                   "channels_last": channels_last, "compile": compile})
        self.optim_cfg, self.channels_last, self.compile_mode = optim, channels_last, compile
        self.model_cfg, self.num_classes = model, model.num_classes
        self.net = build_network(model)
        self.lookahead: Optional[dict[str, torch.Tensor]] = None  # the EMA of the weights (optim.lookahead_every)
        # No per-step reads from the device in training: MeanMetric's NaN check and the accuracy's argument
        # validation each read a tensor on the host (a GPU sync every step); DivergenceGuard finds NaNs on the device.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.train_acc = MulticlassAccuracy(model.num_classes, average="micro", validate_args=False)
        self.val_acc, self.test_acc = (MulticlassAccuracy(model.num_classes, average="micro") for _ in range(2))
        # with test-time augmentation, the accuracy without it too (the first view: no extra forward pass)
        self.val_acc_no_tta, self.test_acc_no_tta = (MulticlassAccuracy(model.num_classes, average="micro")
                                                     for _ in range(2))
        self._configured = False

    def configure_model(self) -> None:
        if self._configured:  # called again by every trainer.fit/test
            return
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_mode != "off":
            self.net.compile(mode=self.compile_mode)  # in place: state_dict keys stay unprefixed
        self._configured = True

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not self.channels_last:
            return batch
        images, labels = batch
        return images.contiguous(memory_format=torch.channels_last), labels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def eval_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The logits evaluation uses: the network's, or their mean over the views of ``model.tta``."""
        return self._eval_views(images)[1]

    def _eval_views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the image's own logits, the logits with test-time augmentation): the first view is the image itself."""
        if self.model_cfg.tta == "none":
            plain = self.net(images)
            return plain, plain
        plain = self._view(images)
        return plain, self._augmented_logits(images, plain)

    def _view(self, images: torch.Tensor) -> torch.Tensor:
        """One view's logits, copied out: a network compiled with CUDA graphs (compile reduce-overhead or
        max-autotune) writes every call's output into the same buffer, so the next view would overwrite this one."""
        return self.net(images).clone()

    def _augmented_logits(self, images: torch.Tensor, plain: torch.Tensor) -> torch.Tensor:
        logits = (plain + self._view(images.flip(-1))) / 2  # the mirror image is as likely as the image
        if self.model_cfg.tta == "flip":
            return logits
        padded = F.pad(images, (1, 1, 1, 1), mode="reflect")  # shifted one pixel up-left and down-right
        shifted = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
        shifted_logits = sum((self._view(view) + self._view(view.flip(-1))) / 2 for view in shifted) / len(shifted)
        return (logits + shifted_logits) / 2

    def setup(self, stage: str) -> None:
        """airbench94's whitening layer from the first training images (as the data path decodes them, unaugmented),
        before any checkpoint is restored (which would bring the same filters: they are computed, not trained)."""
        if stage == "fit" and self.model_cfg.name == "airbench94" and self.trainer.datamodule is not None:
            init_whitening(self.net.whiten, self.trainer.datamodule.first_train_images(WHITEN_IMAGES))

    def on_train_start(self) -> None:
        if self.optim_cfg.lookahead_every is not None and self.lookahead is None:  # from the initial weights
            self.lookahead = {k: v.detach().clone() for k, v in self._float_state().items()}

    def on_before_optimizer_step(self, optimizer) -> None:
        """airbench94's whitening bias stops training after ``model.whiten_bias_epochs``: its gradient is dropped
        before the step, so the optimizer skips it (weight decay and momentum included), as with ``requires_grad``
        off. Turning ``requires_grad`` off mid-run would break DDP, which fixed the set of parameters it reduces
        when it wrapped the model, and would recompile a compiled network inside the timed window."""
        if self.model_cfg.name == "airbench94" and self.current_epoch >= self.model_cfg.whiten_bias_epochs:
            self.net.whiten.bias.grad = None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Lookahead (hlb-CIFAR10's, kept by airbench): every N steps both the weights and their moving average
        move to the average, with a decay that grows as training ends; the last step ends on the average. All
        on the device: in-place tensor ops, no read."""
        every = self.optim_cfg.lookahead_every
        if every is None:
            return
        total, step = int(self.trainer.estimated_stepping_batches), self.global_step
        if step % every == 0 or step >= total:
            state = self._float_state()
            decay = 1.0 if step >= total else 0.95 ** every * (step / total) ** 3
            for key, value in state.items():  # weights and BatchNorm statistics
                self.lookahead[key].lerp_(value.detach(), 1 - decay)
                value.detach().copy_(self.lookahead[key])

    def _float_state(self) -> dict[str, torch.Tensor]:
        """What Lookahead averages: the network's weights and BatchNorm statistics (not its integer step counts)."""
        return {k: v for k, v in self.net.state_dict().items() if v.dtype.is_floating_point}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.lookahead is not None:
            checkpoint["lookahead"] = self.lookahead

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.lookahead = checkpoint.get("lookahead")

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.optim_cfg.label_smoothing)
        # Epoch means accumulate in torchmetrics (a few tensor ops); self.log runs only on the steps the loggers
        # write: each call costs ~0.5 ms of Lightning bookkeeping, 2% of a 50 ms step (bench/harness_overhead.py).
        self.train_loss.update(loss.detach())  # no weight: torchmetrics would copy a Python number to the device
        self.train_acc.update(logits.detach(), labels)
        if loggers_write_this_step(self.trainer):
            # not on the progress bar: Lightning would then read it on the host (.item()) after every batch
            self.log("train/loss_step", loss.detach())
            self.log("train/acc_step", multiclass_accuracy(logits.detach(), labels, self.num_classes, average="micro",
                                                         validate_args=False))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict({"train/loss_epoch": self.train_loss, "train/acc_epoch": self.train_acc})  # computed, reset

    def _eval_step(self, batch, stage: str, accuracy: MulticlassAccuracy, plain_accuracy: MulticlassAccuracy) -> None:
        images, labels = batch
        plain, logits = self._eval_views(images)
        accuracy(logits, labels)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), prog_bar=True, sync_dist=True)
        self.log(f"{stage}/acc", accuracy, prog_bar=True)
        if self.model_cfg.tta != "none":
            plain_accuracy(plain, labels)
            self.log(f"{stage}/acc_no_tta", plain_accuracy)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc, self.val_acc_no_tta)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc, self.test_acc_no_tta)

    def parameter_groups(self) -> list[dict]:
        """BatchNorm parameters at ``bias_lr_scale`` x the LR and decay / ``bias_lr_scale`` (airbench's 64x for
        its BatchNorm biases), the rest as configured. Frozen parameters are left out (airbench94's whitening
        filters and BatchNorm scales); its whitening bias is in throughout (its gradient
        is dropped once it is frozen: ``on_before_optimizer_step``)."""
        cfg, decay = self.optim_cfg, self.optim_cfg.resolved_weight_decay()
        norm = {id(p) for m in self.net.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.SyncBatchNorm))
                for p in m.parameters()}
        trained = [p for p in self.net.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trained if id(p) not in norm], "lr": cfg.max_lr, "weight_decay": decay},
                  {"params": [p for p in trained if id(p) in norm], "lr": cfg.max_lr * cfg.bias_lr_scale,
                   "weight_decay": decay / cfg.bias_lr_scale}]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self):
        cfg = self.optim_cfg
        groups = self.parameter_groups()
        fused = fused_kernels(str(self.trainer.precision), self.device)
        if cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(groups, **fused)
        else:
            optimizer = torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.nesterov, **fused)
        # Total steps from the real train loader (DDP sharding, drop_last and all): the seed computed
        # len(dataset) // batch_size and so cut the last epoch's schedule short.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in groups], total_steps=int(self.trainer.estimated_stepping_batches),
            pct_start=cfg.pct_start, div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor,
            anneal_strategy=cfg.anneal_strategy, three_phase=False, cycle_momentum=cfg.cycle_momentum,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def fused_kernels(precision: str, device: torch.device) -> dict[str, bool]:
    """torch.optim's fused step for fp16 mixed precision on CUDA: GradScaler then hands its inf/NaN flag to the
    step on the device; with the default (foreach) step it reads the flag on the host every step, a sync."""
    return {"fused": True} if precision == "16-mixed" and device.type == "cuda" else {}
