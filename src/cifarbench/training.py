"""The training recipe as a LightningModule: loss, metrics, optimizer and the seed's OneCycle schedule."""

from __future__ import annotations

from dataclasses import asdict

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

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
        self.train_acc, self.val_acc, self.test_acc = (MulticlassAccuracy(NUM_CLASSES, average="micro") for _ in range(3))
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

    def _step(self, batch, stage: str, accuracy: MulticlassAccuracy) -> torch.Tensor:
        images, labels = batch
        logits = self.net(images)
        if stage != "train" and self.tta_flip:  # the mirror image is as likely as the image: average both views
            logits = (logits + self.net(images.flip(-1))) / 2
        smoothing = self.optim_cfg.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        accuracy(logits, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=not on_step)
        self.log(f"{stage}/acc", accuracy, on_step=on_step, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test", self.test_acc)

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
