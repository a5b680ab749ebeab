"""Everything that runs a configuration beyond one process: matrices, the local runner, Slurm scripts and their
submission, requeued attempts, the DDP rank watchdog and Slurm's requeue signal."""
