"""Unit tests compare course_utils with independent computations (numpy, closed forms) to float32 accuracy.

They run at the "highest" matrix-product precision on every backend: JAX's default on a GPU is TF32
(about 1e-3 relative error) and on a TPU bfloat16 passes, a speed setting of the hardware, not an
error of the equations. What a student's test cell compares is set by the checker itself
(``course_utils.grading.PRECISION``, tested in test_grading_backends.py).
"""

import jax
import pytest


@pytest.fixture(autouse=True)
def _float32_matrix_products():
    with jax.default_matmul_precision("highest"):
        yield
