"""Describing and comparing values: what a message shows of an array, and whether an output is right.

Plain numpy and Python arithmetic on the numbers (through :mod:`.kept`): nothing here runs under jit or calls a
function an answer could have replaced.
"""

import math

import jax
import numpy as np

from .kept import (abs as _abs, asarray as _asarray, enumerate as _enumerate, isfinite as _isfinite,
                   isinstance as _isinstance, len as _len, to_float as _float, zip as _zip)


def _fmt_number(x) -> str:
    return f"{x:.6g}"


def describe_value(value) -> str:
    """A short description of an input or output: dtype, shape and a few values."""
    if callable(value) and not isinstance(value, (np.ndarray, jax.Array)):
        return f"a {type(value).__name__}"
    if _isinstance(value, (tuple, list)):
        return "(" + ", ".join(describe_value(x) for x in value) + ")"
    if isinstance(value, (bool, int)) and not isinstance(value, np.bool_):
        return repr(value)
    if isinstance(value, float):
        return _fmt_number(value)
    try:
        arr = _asarray(value)
    except Exception:  # noqa: BLE001 - not an array
        return f"a {type(value).__name__}"
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        return f"a {type(value).__name__}"
    if arr.ndim == 0:
        return f"{arr.dtype}[] {_fmt_number(arr.item())}"
    flat = arr.reshape(-1)
    shown = ", ".join(_fmt_number(x) for x in flat[:4].tolist())
    more = ", ..." if flat.size > 4 else ""
    return f"{arr.dtype}{list(arr.shape)} [{shown}{more}]"


def describe_args(names, args) -> str:
    """One indented line per argument, ``name = description`` (the "The input was:" block of a message)."""
    return "\n".join(f"    {n} = {describe_value(a)}" for n, a in zip(names, args))


def compare(expected, got, rtol, atol, names=(), widen=None):
    """Return None when ``got`` matches ``expected``, else a list of message lines.

    A value is right when its error is at most ``(atol + rtol * |expected|) * widen``: ``widen`` (1 or more)
    is what the reference's own float32 rounding calls for (see :func:`expected_output`), a number, or one per
    output. When ``expected`` is a tuple of outputs, each is compared on its own (``names`` name
    them in messages). The message shows the value that exceeds its own allowance by the most, with that
    allowance.
    """
    if got is None:
        return ["it returned None: did you forget the `return` statement?"]
    if _isinstance(expected, (tuple, list)):
        return _compare_outputs(expected, got, rtol, atol, names, widen)
    if _isinstance(got, (tuple, list)):
        return [f"it returned a {type(got).__name__} of {_len(got)} values, expected a single array"]
    exp = _asarray(expected)
    try:
        out = _asarray(got)
    except Exception:  # noqa: BLE001 - anything that is not an array
        return [f"it returned a {type(got).__name__}, expected an array"]
    if out.dtype == object:
        return [f"it returned a {type(got).__name__}, expected an array"]
    if out.shape != exp.shape:
        lines = [f"wrong shape: expected {exp.shape}, got {out.shape}"]
        if out.size == exp.size:
            lines.append("(same number of elements: a reshape, transpose or missing/extra axis?)")
        elif exp.ndim and out.shape and out.shape[1:] == exp.shape[1:]:
            lines.append(f"(the first axis has {out.shape[0]} entries instead of {exp.shape[0]}: an off-by-one in the number of steps?)")
        return lines
    if not np.issubdtype(out.dtype, np.floating) and np.issubdtype(exp.dtype, np.floating):
        return [f"wrong dtype: expected a floating-point array ({exp.dtype}), got {out.dtype}"]
    widen = _float(widen) if _isinstance(widen, (int, float)) and _isfinite(widen) and widen > 1 else 1.0
    exp64 = exp.astype(np.float64).reshape(-1).tolist()
    out64 = out.astype(np.float64).reshape(-1).tolist()
    worst, worst_i, n_bad, n_nan = -1.0, 0, 0, 0  # worst: the largest error divided by its allowance
    for i, (e, g) in _enumerate(_zip(exp64, out64)):
        if _isfinite(e) and _isfinite(g):
            allowed = (atol + rtol * _abs(e)) * widen
            ratio = _abs(g - e) / allowed if allowed > 0 else (math.inf if g != e else 0.0)
            bad = ratio > 1
        else:  # NaN or inf on either side: right only when both agree
            bad = not ((e != e and g != g) or e == g)
            ratio = math.inf if bad else 0.0
            n_nan += bad and not _isfinite(g)
        n_bad += bad
        if ratio > worst:
            worst, worst_i = ratio, i
    if n_bad == 0:
        return None
    index = tuple(int(k) for k in np.unravel_index(worst_i, exp.shape)) if exp.ndim else ()
    where = f" at index {index}" if exp.ndim else ""
    e, g = exp64[worst_i], out64[worst_i]
    error = _abs(g - e) if _isfinite(e) and _isfinite(g) else math.inf
    allowance = (f"({atol:g} + {rtol:g} * |expected|) * {widen:.3g}, widened for the reference's own float32 rounding"
                 if widen > 1 else f"{atol:g} + {rtol:g} * |expected|")
    lines = []
    if n_nan:
        lines.append(f"{n_nan} of {exp.size} output values are NaN or infinite (a division by zero, or sqrt/log of a negative number?)")
    lines.append(
        f"{n_bad} of {exp.size} values are wrong; the largest error for its allowance is {_fmt_number(error)}{where} "
        f"(expected {_fmt_number(e)}, got {_fmt_number(g)}; allowed there: "
        f"{_fmt_number((atol + rtol * _abs(e)) * widen) if _isfinite(e) else 'the same value'} = {allowance})"
    )
    return lines


def _compare_outputs(expected, got, rtol, atol, names, widen=None):
    """``compare`` for a function that returns a tuple of arrays."""
    n = _len(expected)
    names = list(names) if _len(names) == n else [f"output {i + 1}" for i in range(n)]
    widens = list(widen) if _isinstance(widen, (tuple, list)) and _len(widen) == n else [widen] * n
    listed = ", ".join(names)
    if not _isinstance(got, (tuple, list)):
        return [f"it returned a single {type(got).__name__}, expected a tuple of {n} values ({listed}).",
                f"Return them together: `return {listed}`."]
    if _len(got) != n:
        return [f"it returned {_len(got)} values, expected {n} ({listed})"]
    for name, exp, out, w in _zip(names, expected, got, widens):
        problem = compare(exp, out, rtol, atol, widen=w)
        if problem is not None:
            return [f"the {name} is wrong: {problem[0]}", *problem[1:]]
    return None


def matches(a, b, rtol, atol, widen=None) -> bool:
    """Whether ``b`` matches ``a`` (:func:`compare` finds nothing wrong); False when comparing them fails."""
    try:
        return compare(a, b, rtol, atol, widen=widen) is None
    except Exception:  # noqa: BLE001
        return False
