"""Calling a function the way the checker does: under ``jax.jit``, at the course's precision.

Every function a check runs (the reference, the student's answer, a hint's variant) goes through
:func:`jit_call`, at :data:`PRECISION`. :func:`run_call` is the student's side of one call: the output and the
warnings, or the error as plain data (:func:`error_record`) for the grader to explain.
"""

import contextlib
import inspect
import io
import warnings

import jax

from ..notebook import is_notebook_code
from .kept import (asarray as _asarray, enumerate as _enumerate, isinstance as _isinstance, jit as _jit, len as _len,
                   matmul_precision as _precision)

MAX_TEXT = 2000
"""Characters of one message from the student's process (an error's line, a warning): longer ones are cut, here
and again when the outcome is encoded (:mod:`.wire`)."""

PRECISION = "highest"
"""The matrix-product precision of every function the checker runs: the reference, the student's
function and the hints' variants alike. JAX's default on a GPU is TF32 (about 1e-3 relative error)
and on a TPU bfloat16 passes; "highest" is float32 everywhere, so a verdict does not depend on the
backend. Every evaluation goes through :func:`jit_call`, which sets it."""


def at_precision():
    """The context in which the checker runs everything: ``jax.default_matmul_precision(PRECISION)``."""
    return _precision(PRECISION)


def jit_call(fn, args, static_argnums=(), module_argnums=()):
    """Call ``fn(*args)`` under jax.jit at :data:`PRECISION`, passing flax.nnx modules at ``module_argnums`` as graph + state.

    One compiled function serves every call with the same ``fn``, static
    values and module structures (a new jit per call would recompile).
    """
    with at_precision():
        return _jit_call(fn, args, static_argnums, module_argnums)


def _jit_call(fn, args, static_argnums, module_argnums):
    if not module_argnums:
        return _jit(fn, static_argnums=static_argnums)(*args)
    graphdefs, static_values, states, dynamic = split_modules(args, static_argnums, module_argnums)
    return _jitted_with_modules(fn, graphdefs, static_values, states, dynamic)


def split_modules(args, static_argnums, module_argnums):
    """``args`` taken apart for a compiled call: (the graph definitions of the flax.nnx modules at ``module_argnums``
    as (position, graphdef) pairs, the static values as (position, value) pairs, {position: the modules' states},
    the other arguments). :func:`call_with_modules` puts them back together."""
    from flax import nnx

    split = {i: nnx.split(args[i]) for i in module_argnums}
    graphdefs = tuple((i, g) for i, (g, _) in sorted(split.items()))
    states = {i: st for i, (_, st) in split.items()}
    static_values = tuple((i, args[i]) for i in static_argnums)
    dynamic = tuple(a for i, a in _enumerate(args) if i not in split and i not in static_argnums)
    return graphdefs, static_values, states, dynamic


def call_with_modules(fn, graphdefs, static_values, states, dynamic):
    """``fn`` on arguments rebuilt from nnx graph definitions + states, static and dynamic values."""
    from flax import nnx

    n = _len(graphdefs) + _len(static_values) + _len(dynamic)
    full, it = [], iter(dynamic)
    modules, statics = dict(graphdefs), dict(static_values)
    for i in range(n):
        if i in modules:
            full.append(nnx.merge(modules[i], states[i]))
        elif i in statics:
            full.append(statics[i])
        else:
            full.append(next(it))
    return fn(*full)


_jitted_with_modules = _jit(call_with_modules, static_argnums=(0, 1, 2))


# The errors that say a function does not work under jit (a traced value used as a Python value).
JIT_ERRORS = tuple(
    getattr(jax.errors, name)
    for name in ("ConcretizationTypeError", "TracerBoolConversionError",
                 "TracerArrayConversionError", "TracerIntegerConversionError",
                 "NonConcreteBooleanIndexError", "UnexpectedTracerError", "KeyReuseError")
    if hasattr(jax.errors, name)
)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (its type's name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def student_line(exc: BaseException) -> str | None:
    """Where in the student's own cells ``exc`` was raised (the innermost such line), or None."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_notebook_code(f.filename)]
    if not frames:
        return None
    frame = frames[-1]
    code = f": {frame.line.strip()}" if frame.line else ""
    return f"  in your code, line {frame.lineno} of the cell that defines `{frame.name}`{code}"


def error_record(exc: BaseException, signature_ok: bool = True) -> dict:
    """What the grader needs to explain an error raised by the student's code: its kind, type, first line, and where.

    A TypeError is a changed signature ("signature") only when the arguments do not bind to the function's
    parameters; otherwise it comes from a line inside the answer (or a function it calls)."""
    if type(exc).__name__ == "ReferenceWithheld":  # course_utils.withheld: a reference called while grading
        kind = "withheld"
    elif _isinstance(exc, NotImplementedError):
        kind = "not_implemented"
    elif _isinstance(exc, JIT_ERRORS):
        kind = "jit"
    elif _isinstance(exc, TypeError):
        kind = "type" if signature_ok else "signature"
    else:
        kind = "other"
    return {"kind": kind, "type": type(exc).__name__, "line": first_line(exc)[:MAX_TEXT], "where": (student_line(exc) or "")[:MAX_TEXT]}


def binds(fn, args) -> bool:
    """Whether ``fn(*args)`` binds (False: the student changed the signature)."""
    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        return False
    except Exception:  # noqa: BLE001 - no signature to read (a builtin): assume it binds
        return True
    return True


def run_call(fn, args, static_argnums, module_argnums) -> dict:
    """``fn(*args)`` under jit: {"out": output, "notes": [warnings]} or {"error": record}."""
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(captured):
            warnings.simplefilter("always")
            out = jit_call(fn, args, static_argnums, module_argnums)
            out = jax.tree_util.tree_map(_asarray, out)
    except Exception as exc:  # noqa: BLE001 - every error is explained by the grader
        return {"error": error_record(exc, not _isinstance(exc, TypeError) or binds(fn, args))}
    return {"out": out, "notes": [f"note: your function warned: {w.category.__name__}: {w.message}"[:MAX_TEXT] for w in caught]}
