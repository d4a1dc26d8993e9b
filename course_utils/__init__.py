"""course_utils: reference implementations and helpers for "Diffusion models from scratch in JAX".

Each module holds one idea (schedules, forward process, losses, data, plotting,
grading); each function computes one equation and is named after its result.
"""

from . import config, forward, losses, schedules

__version__ = "0.1.0"
__all__ = ["config", "forward", "losses", "schedules"]
