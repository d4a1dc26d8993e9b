"""The expected output of a check: the reference's, with the tolerance its own float32 rounding calls for.

The reference runs in float32 like the student's function, and once more in float64 on the grader's CPU: an
algebraically equivalent answer rounds differently, by about as much as the reference's own float32 error, so
that error widens the tolerance of the comparison (:func:`widen_of`).
"""

import warnings

import jax
import numpy as np

from .jitting import jit_call
from .memo import fingerprint, once
from .kept import (asarray as _asarray, enumerate as _enumerate, isinstance as _isinstance, len as _len,
                   to_float as _float, zip as _zip)
from .registry import Exercise


WIDEN_FACTOR = 4.0
"""How much the reference's own float32 error (against a float64 run, in units of the exercise's tolerance)
widens the tolerance: another correct formulation rounds differently, by about as much as the reference."""


_SANE = 1e-2  # a float64 run further off than this (relative) is another computation (random draws): not widened


def _to_float64(value):
    """``value`` with its floating-point arrays (and a flax.nnx module's) in float64; anything else as it is."""
    if _isinstance(value, (np.ndarray, jax.Array)):
        try:
            floating = np.issubdtype(value.dtype, np.floating)
        except TypeError:  # a typed PRNG key
            return value
        return np.asarray(value, np.float64) if floating else value
    if _isinstance(value, (tuple, list)):
        return type(value)(_to_float64(v) for v in value)
    from flax import nnx

    if _isinstance(value, nnx.Module):
        graphdef, state = nnx.split(value)
        return nnx.merge(graphdef, jax.tree_util.tree_map(_to_float64, state))
    return value


def widen_of(expected, precise, rtol, atol) -> float:
    """1 + WIDEN_FACTOR times the float32 ``expected``'s largest error against the float64 ``precise``, measured
    in units of the tolerance at each value (``atol + rtol * |precise|``)."""
    try:
        e = _asarray(expected)
        if not np.issubdtype(e.dtype, np.floating):
            return 1.0
        e, p = e.astype(np.float64), _asarray(precise).astype(np.float64)
    except Exception:  # noqa: BLE001
        return 1.0
    if e.shape != p.shape:
        return 1.0
    both = np.isfinite(e) & np.isfinite(p)
    if not both.any():
        return 1.0
    diff, scale = np.abs(e[both] - p[both]), np.abs(p[both])
    if _float(np.max(diff)) > _SANE * (_float(np.max(scale)) + 1.0):
        return 1.0
    widen = 1.0 + WIDEN_FACTOR * _float(np.max(diff / (atol + rtol * scale)))
    return widen if widen >= 1.05 else 1.0  # a reference that accurate keeps the exercise's tolerance


def expected_output(ex: Exercise, args):
    """(the reference's output on ``args``, how much its comparison's tolerance is widened): see
    :func:`_expected_output`; computed once per process for a trial (:mod:`.memo`: every student gets the same)."""
    key = ("expected", ex.name, tuple(ex.static_argnums), tuple(ex.module_argnums), ex.rtol, ex.atol, fingerprint(args))
    return once(ex.reference, key, lambda: _expected_output(ex, args))


def _expected_output(ex: Exercise, args):
    """(the reference's output on ``args``, how much its comparison's tolerance is widened).

    The output is computed in float32, as the student's function runs. The same reference is run again in
    float64 on the grader's CPU (``jax.enable_x64``), and the tolerance is widened by the float32 output's
    largest error against it (:func:`widen_of`; one factor per output of a tuple): an algebraically
    equivalent answer rounds differently, and where the reference itself is off by 2e-3 (a guided sampler,
    many steps) its own rounding must not fail a correct answer. Where the reference is accurate the factor
    is about 1. Where the float64 run fails or is no run of the same computation (it draws other random
    numbers), the factor is 1.
    """
    expected = jit_call(ex.reference, args, ex.static_argnums, ex.module_argnums)
    try:
        with jax.enable_x64(True), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            args64 = tuple(a if i in ex.static_argnums else _to_float64(a) for i, a in _enumerate(args))
            precise = jit_call(ex.reference, args64, ex.static_argnums, ex.module_argnums)
            precise = jax.tree_util.tree_map(_asarray, precise)
    except Exception:  # noqa: BLE001 - no float64 run: the exercise's own tolerance only
        return expected, None
    if _isinstance(expected, (tuple, list)):
        if not _isinstance(precise, (tuple, list)) or _len(precise) != _len(expected):
            return expected, None
        return expected, tuple(widen_of(e, p, ex.rtol, ex.atol) for e, p in _zip(expected, precise))
    return expected, widen_of(expected, precise, ex.rtol, ex.atol)
