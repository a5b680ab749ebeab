import sys

from .cluster.signals import hold_requeue_signal

hold_requeue_signal()  # first, before the slow imports: see cluster.signals

from .cli import main  # noqa: E402

sys.exit(main())
