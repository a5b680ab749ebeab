"""PNG figures written the way records are: whole, or not at all."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: cluster nodes have no display
import matplotlib.pyplot as plt  # noqa: E402

from .record import atomic_write  # noqa: E402


def save_png(fig, path: Path, dpi: int = 100) -> Path:
    """Writes ``fig`` to ``path`` atomically (a killed run leaves no half-written PNG) and closes it."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    plt.close(fig)
    return path
