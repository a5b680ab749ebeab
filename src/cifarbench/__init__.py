"""cifarbench: benchmark CIFAR-10 training under Lightning across strategies, data paths and clusters."""

__version__ = "0.1.0"
