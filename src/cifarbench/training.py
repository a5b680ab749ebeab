"""The training recipe as a LightningModule: loss, metrics, optimizer and the seed's OneCycle schedule."""

from __future__ import annotations

from dataclasses import asdict

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.functional.classification import multiclass_accuracy

from .config import ModelConfig, OptimConfig
from .model import NUM_CLASSES, CustomResNet


class CifarClassifier(L.LightningModule):
    """CustomResNet trained with cross-entropy, Adam or SGD, and OneCycleLR stepped every batch.

    ``channels_last`` converts the network and every batch (Lightning has no switch for it);
    ``compile`` compiles the network in place in ``configure_model``, before the strategy wraps it,
    so it works the same under DDP (the Trainer does not compile for you).
    """

    def __init__(self, model: ModelConfig, optim: OptimConfig, channels_last: bool = False, compile: str = "off"):
        super().__init__()
        self.save_hyperparameters({"model": asdict(model), "optim": asdict(optim),
                                   "channels_last": channels_last, "compile": compile})
        self.optim_cfg, self.channels_last, self.compile_mode = optim, channels_last, compile
        self.tta_flip = model.tta_flip
        self.net = CustomResNet(model.width, model.dropout)
        # No per-step reads from the device in training: MeanMetric's NaN check and the accuracy's argument
        # validation each read a tensor on the host (a GPU sync every step); DivergenceGuard finds NaNs on the device.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.train_acc = MulticlassAccuracy(NUM_CLASSES, average="micro", validate_args=False)
        self.val_acc, self.test_acc = (MulticlassAccuracy(NUM_CLASSES, average="micro") for _ in range(2))
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

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.net(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.optim_cfg.label_smoothing)
        # Epoch means accumulate in torchmetrics (a few tensor ops); self.log runs only on the steps the loggers
        # write: each call costs ~0.5 ms of Lightning bookkeeping, 2% of a 50 ms step (bench/harness_overhead.py).
        self.train_loss.update(loss.detach(), weight=len(labels))
        self.train_acc.update(logits.detach(), labels)
        if self._loggers_write_this_step():
            self.log("train/loss_step", loss.detach(), prog_bar=True)
            self.log("train/acc_step", multiclass_accuracy(logits.detach(), labels, NUM_CLASSES, average="micro"))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict({"train/loss_epoch": self.train_loss, "train/acc_epoch": self.train_acc})  # computed, reset

    def _loggers_write_this_step(self) -> bool:
        """Lightning's rule for a step's metrics reaching the loggers (``log_every_n_steps``)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and ((self.global_step + 1) % every == 0 or self.trainer.should_stop)

    def _eval_step(self, batch, stage: str, accuracy: MulticlassAccuracy) -> None:
        images, labels = batch
        logits = self.net(images)
        if self.tta_flip:  # the mirror image is as likely as the image: average both views
            logits = (logits + self.net(images.flip(-1))) / 2
        accuracy(logits, labels)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), prog_bar=True, sync_dist=True)
        self.log(f"{stage}/acc", accuracy, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)

    def configure_optimizers(self):
        cfg = self.optim_cfg
        if cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(self.parameters(), lr=cfg.max_lr, weight_decay=cfg.resolved_weight_decay())
        else:
            optimizer = torch.optim.SGD(self.parameters(), lr=cfg.max_lr, momentum=cfg.momentum,
                                        nesterov=cfg.nesterov, weight_decay=cfg.resolved_weight_decay())
        # Total steps from the real train loader (DDP sharding, drop_last and all): the seed computed
        # len(dataset) // batch_size and so cut the last epoch's schedule short.
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.max_lr, total_steps=int(self.trainer.estimated_stepping_batches),
            pct_start=cfg.pct_start, div_factor=cfg.div_factor, final_div_factor=cfg.final_div_factor,
            anneal_strategy=cfg.anneal_strategy, three_phase=False,
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
