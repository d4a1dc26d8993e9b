"""The checker's own references to the functions it uses, taken when it is first imported.

In a student's notebook the answer cells run in the same Python process as the checker. So that an answer cannot
make its own instant feedback lie by replacing ``np.asarray``, ``jax.jit`` or a builtin such as ``abs`` or
``isinstance``, the checker's modules call these references, taken here when :mod:`course_utils.grading` is first
imported (the notebook's setup cell imports it before any answer cell runs), never the names as they are at call
time. Each module imports what it uses under a private alias (``from .kept import asarray as _asarray``).
"""

import builtins
import math

import jax
import numpy as np

jit, make_jaxpr, matmul_precision = jax.jit, jax.make_jaxpr, jax.default_matmul_precision
asarray, isfinite = np.asarray, math.isfinite
# builtins can be replaced too
to_float, abs, zip, enumerate, len = builtins.float, builtins.abs, builtins.zip, builtins.enumerate, builtins.len
isinstance, issubclass = builtins.isinstance, builtins.issubclass
