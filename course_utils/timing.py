"""Timing helpers for the notebooks' timing cells and the benchmarks."""

import statistics
import time

import jax
import numpy as np


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


def ratio_verdict(ratios, *, above, below, every, count, low=0.8, high=1.25):
    """One honest sentence on several time ratios A / B (one per round, or one per size).

    A ratio counts as a difference only outside [low, high] (the timing noise of a shared machine). ``above`` and
    ``below`` name what a ratio > 1 and < 1 means ("A is slower", "A is faster"); ``every`` says over what the ratios
    run ("in every round", "at every d") and ``count`` is a format string for a count of them, with fields k and n
    ("in {k} of the {n} rounds"). The verdict says:

    * every ratio beyond the threshold on one side: "<above or below> <every>";
    * every ratio on one side of 1, some within the noise: "<...> <every>, beyond the timing noise <count>";
    * every ratio within [low, high]: no measurable difference;
    * ratios on both sides of 1: no consistent difference.
    """
    r = np.asarray(ratios, dtype=float).reshape(-1)
    n = r.size
    for side, beyond, name in ((r > 1, r > high, above), (r < 1, r < low, below)):
        if np.all(side) and np.any(beyond):
            if np.all(beyond):
                return f"{name} {every}"
            return (f"{name} {every}, but beyond the timing noise (a ratio outside {low:g}-{high:g}) only "
                    + count.format(k=int(np.sum(beyond)), n=n))
    if np.all((r >= low) & (r <= high)):
        return f"no measurable difference (every ratio within the timing noise, {low:g}-{high:g})"
    return "no consistent difference (the ratios point both ways)"
