"""Training: the LightningModule (``module``), the Trainer built from the config (``trainer``), and one run from
config to record (``run``)."""
