"""Course-wide settings read from the environment.

Grading mode: set ``COURSE_FAST=1`` and every training or long sampling run in
the notebooks shrinks to seconds. The autograder and the tests set it; students
never need to.
"""

import functools
import os


def fast_mode() -> bool:
    """True when ``COURSE_FAST`` is set to a true value (grading mode)."""
    return os.environ.get("COURSE_FAST", "").strip().lower() in {"1", "true", "yes", "on"}


def pick(full, fast):
    """Return ``fast`` in grading mode and ``full`` otherwise.

    Notebooks size their runs with it, for example
    ``n_samples = pick(full=1_000_000, fast=10_000)``.
    """
    return fast if fast_mode() else full


def float64():
    """A context manager in which JAX computes in float64 (to check float32 results).

    ``with float64(): ...`` uses ``jax.enable_x64`` where it exists and the older
    ``jax.experimental.enable_x64`` otherwise.
    """
    import jax

    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # jax < 0.6

    return enable_x64()


def on_accelerator() -> bool:
    """True when JAX computes on a GPU or TPU (its default backend is not the CPU)."""
    import jax

    return jax.default_backend() != "cpu"


STEPS_PER_CALL_ACCELERATOR = 100
"""Training steps per compiled call of networks with convolutions on a GPU or TPU. One step per call
leaves such a device idle between launches: measured on an H200 with the CPU-sized MNIST U-Net at
batch 64, 51 steps/s with one step per call and 243 steps/s with 100 (issue 13)."""


def steps_per_call(cpu: int = 1, accelerator: int = STEPS_PER_CALL_ACCELERATOR) -> int:
    """How many training steps to run in one compiled call on this backend.

    On a CPU, XLA runs convolutions inside a compiled loop several times slower than on their own
    (``benchmarks/unet_mnist.py``), and one U-Net step is long enough that Python's overhead between
    calls does not count: ``cpu`` (1). On a GPU or TPU a step takes milliseconds and the launch and
    Python overhead dominate: ``accelerator`` steps per call.
    """
    return accelerator if on_accelerator() else cpu


CONVOLUTION_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}
"""XLA options for code with convolutions: on a CPU, YNNPACK does matrix products and reductions but not
convolutions, which XLA's own (Eigen) kernels compute 2-3x faster at the U-Net's sizes
(``benchmarks/unet_mnist.py``). They concern the CPU only; GPUs and TPUs ignore them."""


@functools.cache
def convolution_compiler_options() -> dict:
    """:data:`CONVOLUTION_OPTIONS` where this jax and XLA accept them, else ``{}`` (plain compilation).

    Checked once, by compiling a trivial function with them: older or newer
    versions of XLA may not know the option, and then nothing changes.
    """
    import inspect

    import jax

    if "compiler_options" not in inspect.signature(jax.jit).parameters:
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=CONVOLUTION_OPTIONS)(1.0).block_until_ready()
    except Exception:  # noqa: BLE001 - an unknown option or value: the message differs between versions
        return {}
    return dict(CONVOLUTION_OPTIONS)


def jit(fun=None, **jit_kwargs):
    """``jax.jit`` for functions with convolutions, compiled with :func:`convolution_compiler_options`.

    Use as ``@jit(static_argnames=...)`` or ``@jit``. The options are looked up
    at the first call, not at import, so that importing course_utils does not
    start JAX's backend (a notebook may still choose its CPU devices first).
    ``.jitted()`` returns the underlying ``jax.jit`` function (to ``.lower`` it).
    """
    if fun is None:
        return functools.partial(jit, **jit_kwargs)

    @functools.cache
    def jitted():
        import jax

        options = convolution_compiler_options()
        return jax.jit(fun, compiler_options=options, **jit_kwargs) if options else jax.jit(fun, **jit_kwargs)

    @functools.wraps(fun)
    def call(*args, **kwargs):
        return jitted()(*args, **kwargs)

    call.jitted = jitted
    return call
