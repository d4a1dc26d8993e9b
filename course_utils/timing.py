"""Timing helpers for the notebooks' timing cells and the benchmarks."""

import statistics
import time

import jax


def _block(out):
    return jax.tree_util.tree_map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, out)


def time_call(fn, *args, repeats=5, warmup=1):
    """Median wall-clock seconds of ``fn(*args)`` over ``repeats`` runs.

    The result is waited for (``block_until_ready``), because JAX runs
    asynchronously; ``warmup`` calls first leave compilation out of the time.
    """
    for _ in range(warmup):
        _block(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _block(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)
