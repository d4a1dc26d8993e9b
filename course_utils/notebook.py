"""What the first cell of every notebook calls."""

import jax
import matplotlib as mpl

from . import config


def setup() -> str:
    """Set the figure style and return a line naming JAX's backend and devices.

    Calling it initialises JAX's backend, so that JAX's one-time messages
    (such as "no GPU found") appear here and never under a test cell.
    """
    mpl.rcParams.update({
        "figure.dpi": 100,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.constrained_layout.use": True,
    })
    devices = ", ".join(str(d) for d in jax.devices())
    mode = "grading mode (COURSE_FAST=1): runs are shortened" if config.fast_mode() else "full mode"
    return f"JAX {jax.__version__} on {jax.default_backend().upper()} ({devices}); {mode}"
