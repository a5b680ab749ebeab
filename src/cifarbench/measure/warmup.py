"""An untimed warm-up of every shape training and evaluation will run, so compile is off the steady clock."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import lightning as L
import torch
import torch.nn.functional as F

from .clock import Stamp, elapsed, settle, stamp


class UntimedWarmup(L.Callback):
    """Before the first training step, runs ``steps`` forward+backward passes of the training batch shape and
    one evaluation forward per ``eval_batch_sizes`` (and of its mirror image, as flip test-time augmentation
    feeds it), on random inputs, then puts every weight and buffer back.

    This is what airbench does with a throw-away run: torch.compile's graphs (train and eval, both memory
    layouts), cuDNN's autotuning and the allocator's first growth happen here, before the ``steady`` clock
    of :class:`TimeToTarget` starts. The weights are restored and gradients cleared, so training starts
    exactly as it would have. It calls the LightningModule itself, not the DDP wrapper: no collective runs.
    Put it before TimeToTarget in the callback list (both use ``on_train_start``). Its duration (compile time
    when torch.compile is on) is stamped without waiting and read once training has ended (:attr:`summary`).
    """

    def __init__(self, steps: int, batch_size: int, eval_batch_sizes: Sequence[int], num_classes: int = 10,
                 image_shape: tuple[int, int, int] = (3, 32, 32)):
        self.steps, self.batch_size, self.eval_batch_sizes = steps, batch_size, sorted(set(eval_batch_sizes))
        self.num_classes, self.image_shape = num_classes, image_shape
        self.done = False
        self._stamps: Optional[tuple[Stamp, Stamp]] = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.done or self.steps == 0:
            return
        start = stamp(trainer.strategy.root_device)
        saved = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        modes = {module: module.training for module in pl_module.modules()}  # frozen parts stay in eval mode
        pl_module.train()
        for _ in range(self.steps):
            images, labels = self._batch(trainer, pl_module, self.batch_size)
            with trainer.precision_plugin.train_step_context():
                loss = F.cross_entropy(pl_module(images), labels)
            loss.backward()
        pl_module.eval()
        with torch.inference_mode(), trainer.precision_plugin.val_step_context():
            for size in self.eval_batch_sizes:
                images, _ = self._batch(trainer, pl_module, size)
                getattr(pl_module, "eval_logits", pl_module)(images)  # with every view test-time augmentation adds
        for module, training in modes.items():
            module.train(training)
        pl_module.load_state_dict(saved)
        pl_module.zero_grad(set_to_none=True)
        self.done = True
        self._stamps = (start, stamp(trainer.strategy.root_device))

    @property
    def summary(self) -> dict[str, Any]:
        """The warm-up's device-timed seconds (compile, autotuning, first allocations and its own steps); read
        after training, when waiting for the stamps costs nothing."""
        seconds = None
        if self._stamps:
            settle(*self._stamps)
            seconds = elapsed(*self._stamps)
        return {"steps": self.steps, "eval_batch_sizes": self.eval_batch_sizes, "seconds": seconds,
                "region": "the untimed warm-up before the first training step: torch.compile's graphs, cuDNN "
                          "autotuning and first allocations, on random data; on the mlperf clock only"}

    def _batch(self, trainer: L.Trainer, pl_module: L.LightningModule, size: int):
        """Random inputs of the loader's shape and dtype, through the same conversions a real batch gets."""
        device = trainer.strategy.root_device
        batch = (torch.randn(size, *self.image_shape, device=device),
                 torch.randint(0, self.num_classes, (size,), device=device))
        batch = trainer.precision_plugin.convert_input(batch)
        return pl_module.on_after_batch_transfer(batch, 0)
