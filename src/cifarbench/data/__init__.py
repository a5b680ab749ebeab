"""Data sources and the three interchangeable data paths behind ``data.path``."""

from __future__ import annotations

from ..config import DataConfig
from .module import CifarDataModule, DataEpoch

__all__ = ["CifarDataModule", "DataEpoch", "build_datamodule"]


def build_datamodule(cfg: DataConfig, seed: int, drop_last_train: bool = True) -> CifarDataModule:
    """The LightningDataModule for ``cfg.path``; heavy imports (albumentations, ffcv) only for the one asked for."""
    if cfg.path == "ffcv":
        from .ffcv_path import FFCVDataModule

        return FFCVDataModule(cfg, drop_last_train, seed)
    if cfg.path == "device":
        from .device_path import DeviceDataModule

        return DeviceDataModule(cfg, drop_last_train, seed)
    from .albumentations_path import AlbumentationsDataModule

    return AlbumentationsDataModule(cfg, drop_last_train, seed)
