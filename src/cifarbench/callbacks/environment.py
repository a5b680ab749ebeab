"""Records the machine, libraries, code revision, world and config of a run."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch.distributed as dist

from ..environment import collect_environment


class EnvironmentInfo(L.Callback):
    """Collects the environment at ``setup`` (after the process group exists), hostnames of every rank."""

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = config
        self.summary: dict[str, Any] = {}

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.summary:
            return
        env = collect_environment()
        hostnames = [env["hostname"]]
        if dist.is_available() and dist.is_initialized():
            hostnames = [None] * dist.get_world_size()
            dist.all_gather_object(hostnames, env["hostname"])
        env |= {"world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
                "devices_per_node": trainer.num_devices, "accelerator": type(trainer.accelerator).__name__,
                "strategy": lightning_class_name(trainer.strategy), "hostnames": sorted(set(hostnames)),
                "config": self.config}
        self.summary = env


def lightning_class_name(obj: object) -> str:
    """The Lightning class ``obj`` is or extends (WatchedDDPStrategy reports as the DDPStrategy it runs)."""
    return next(c.__name__ for c in type(obj).__mro__ if c.__module__.startswith("lightning."))
