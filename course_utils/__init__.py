"""course_utils: reference implementations and helpers for "Diffusion models from scratch in JAX".

Each module holds one idea (schedules, forward process, losses, data, plotting,
grading); each function computes one equation and is named after its result.
The grading checker is imported on its own: ``from course_utils.grading import check``; so are
the modules with a command line (``course_utils.mnist``, ``course_utils.classifier``), which
run as ``python -m course_utils.mnist train ...``.

"""

from . import (analytic, checkpoints, config, data, embeddings, forward, guidance, losses, metrics, models, notebook, plotting,
               sampling, schedules, timing, training, unet)

__version__ = "0.1.0"
__all__ = ["analytic", "checkpoints", "config", "data", "embeddings", "forward", "guidance", "losses", "metrics", "models",
           "notebook", "plotting", "sampling", "schedules", "timing", "training", "unet"]
