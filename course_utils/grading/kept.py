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

jit = jax.jit
make_jaxpr = jax.make_jaxpr
matmul_precision = jax.default_matmul_precision
asarray = np.asarray
to_float = builtins.float
isfinite = math.isfinite
abs = builtins.abs
zip = builtins.zip
enumerate = builtins.enumerate
len = builtins.len
isinstance = builtins.isinstance
issubclass = builtins.issubclass
