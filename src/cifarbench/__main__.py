import sys

from .slurm_signal import hold_requeue_signal

hold_requeue_signal()  # first, before the slow imports: see slurm_signal

from .cli import main  # noqa: E402

sys.exit(main())
