"""The checker behind every test cell of the course.

A test cell calls ``check("forward_mean", forward_mean)``. The checker looks up
the exercise (its reference implementation, a generator of random inputs and
a list of known wrong variants), runs the student's function under
``jax.jit`` on seeded random inputs, compares with the reference, and either
prints one short line or raises an AssertionError that says, in words a
student understands, what went wrong: which input, the expected and actual
shapes and dtypes, the size of the error, and the likely slip when the output
matches a known wrong variant.

Answer cells run in the same Python process as the tests. So that an answer
cannot make the tests pass by replacing ``np.allclose``, ``jnp.allclose`` or
``jax.jit``, this module keeps its own references to every function it uses,
taken when it is first imported (the notebook's setup cell imports it before
any answer cell runs), and compares with plain Python arithmetic on the
numbers. ``check`` itself is looked up again from this module by every test
cell, so rebinding the name ``check`` in the notebook has no effect either.
"""

import contextlib
import dataclasses
import inspect
import io
import math
import warnings
from typing import Callable, Sequence

import jax
import numpy as np

# Private references, taken at import time (see the module docstring).
_jit = jax.jit
_make_jaxpr = jax.make_jaxpr
_precision = jax.default_matmul_precision
_asarray = np.asarray
_float = float
_isfinite = math.isfinite
_abs, _zip, _enumerate, _len = abs, zip, enumerate, len  # builtins can be replaced too
_isinstance, _issubclass = isinstance, issubclass


@dataclasses.dataclass(frozen=True)
class Hint:
    """A known wrong variant of an exercise and the slip it reveals."""

    variant: Callable
    message: str


@dataclasses.dataclass(frozen=True)
class Exercise:
    """What the checker needs to test one exercise.

    ``make_case(rng)`` returns the positional arguments of one random input
    (a tuple); ``edge_cases`` are fixed inputs added to the hidden tests, or a
    function that returns them (for inputs that are slow to make, such as
    models: made when a test first asks for them, not when the course imports).
    ``static_argnums`` are the positions of arguments that must be Python
    values under jit (sizes such as T). ``requires`` names a loop primitive
    the compiled function must contain (for exercises that teach lax.scan).
    ``property_check`` replaces the comparison with a reference for
    exercises that are tested by their properties; for a class exercise,
    ``reference_class`` is the course's own class and ``probe(cls)`` builds a
    small instance and calls it (to see whether it calls the reference's
    ``__call__``). ``module_argnums`` are the
    positions of flax.nnx modules (a model passed to a loss, say): they are
    split into graph and state so that the function can be jitted.
    ``output_names`` name the elements of an exercise that returns a tuple
    (``("mean", "variance")``): each is compared on its own, and messages
    say which one is wrong.
    """

    name: str
    reference: Callable | None
    make_case: Callable | None = None
    hints: Sequence[Hint] = ()
    edge_cases: Sequence[tuple] | Callable[[], Sequence[tuple]] = ()
    static_argnums: tuple = ()
    rtol: float = 1e-4
    atol: float = 1e-6
    requires: tuple = ()
    requires_message: str = ""
    property_check: Callable | None = None
    module_argnums: tuple = ()
    output_names: tuple = ()
    reference_class: type | None = None
    probe: Callable | None = None

    def fixed_cases(self) -> list:
        """The edge cases, made now if they are given as a function."""
        return list(self.edge_cases() if callable(self.edge_cases) else self.edge_cases)


_REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    _REGISTRY[exercise.name] = exercise
    return exercise


class CheckFailure(AssertionError):
    """Raised by :func:`check` when a student's function is wrong.

    In Jupyter, Colab and nbgrader's feedback (all IPython kernels) a test cell
    that fails shows only this message: IPython displays what
    ``_render_traceback_`` returns instead of a traceback through the checker.
    """

    def _render_traceback_(self):
        return str(self).splitlines()


# ---------------------------------------------------------------- describing

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
    arr = _asarray(value)
    if arr.ndim == 0:
        return f"{arr.dtype}[] {_fmt_number(arr.item())}"
    flat = arr.reshape(-1)
    shown = ", ".join(_fmt_number(x) for x in flat[:4].tolist())
    more = ", ..." if flat.size > 4 else ""
    return f"{arr.dtype}{list(arr.shape)} [{shown}{more}]"


def _describe_args(names, args) -> str:
    return "\n".join(f"    {n} = {describe_value(a)}" for n, a in zip(names, args))


# ---------------------------------------------------------------- comparing

def _compare(expected, got, rtol, atol, names=()):
    """Return None when ``got`` matches ``expected``, else a list of message lines.

    When ``expected`` is a tuple of outputs, each is compared on its own
    (``names`` name them in messages).
    """
    if got is None:
        return ["it returned None: did you forget the `return` statement?"]
    if _isinstance(expected, (tuple, list)):
        return _compare_outputs(expected, got, rtol, atol, names)
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
    exp64 = exp.astype(np.float64).reshape(-1).tolist()
    out64 = out.astype(np.float64).reshape(-1).tolist()
    worst, worst_i, n_bad, n_nan = -1.0, 0, 0, 0
    for i, (e, g) in _enumerate(_zip(exp64, out64)):
        if _isfinite(e) and _isfinite(g):
            err = _abs(g - e)
            bad = err > atol + rtol * _abs(e)
        else:  # NaN or inf on either side: right only when both agree
            bad = not ((e != e and g != g) or e == g)
            err = math.inf if bad else 0.0
            n_nan += bad and not _isfinite(g)
        n_bad += bad
        if err > worst:
            worst, worst_i = err, i
    if n_bad == 0:
        return None
    index = tuple(int(k) for k in np.unravel_index(worst_i, exp.shape)) if exp.ndim else ()
    where = f" at index {index}" if exp.ndim else ""
    lines = []
    if n_nan:
        lines.append(f"{n_nan} of {exp.size} output values are NaN or infinite (a division by zero, or sqrt/log of a negative number?)")
    lines.append(
        f"{n_bad} of {exp.size} values are wrong; the largest error is {_fmt_number(worst)}{where} "
        f"(expected {_fmt_number(exp64[worst_i])}, got {_fmt_number(out64[worst_i])}; "
        f"allowed: {atol:g} + {rtol:g} * |expected|)"
    )
    return lines


def _compare_outputs(expected, got, rtol, atol, names):
    """``_compare`` for a function that returns a tuple of arrays."""
    n = _len(expected)
    names = list(names) if _len(names) == n else [f"output {i + 1}" for i in range(n)]
    listed = ", ".join(names)
    if not _isinstance(got, (tuple, list)):
        return [f"it returned a single {type(got).__name__}, expected a tuple of {n} values ({listed}).",
                f"Return them together: `return {listed}`."]
    if _len(got) != n:
        return [f"it returned {_len(got)} values, expected {n} ({listed})"]
    for name, exp, out in _zip(names, expected, got):
        problem = _compare(exp, out, rtol, atol)
        if problem is not None:
            return [f"the {name} is wrong: {problem[0]}", *problem[1:]]
    return None


def _matches(a, b, rtol, atol) -> bool:
    try:
        return _compare(a, b, rtol, atol) is None
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------- running

_JIT_ERRORS = tuple(
    getattr(jax.errors, name)
    for name in ("ConcretizationTypeError", "TracerBoolConversionError",
                 "TracerArrayConversionError", "TracerIntegerConversionError")
    if hasattr(jax.errors, name)
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _fail(name: str, lines) -> None:
    raise CheckFailure("\n".join([f"{name}: " + lines[0], *lines[1:]])) from None


def _is_student_file(filename: str) -> bool:
    """True for code typed in a notebook cell: IPython compiles cells as ``<ipython-input-...>``
    (IPython < 8, Colab's older images) or as files in a folder ``ipykernel_<pid>`` (ipykernel 6+)."""
    return filename.startswith("<ipython-input") or "ipykernel_" in filename or filename.startswith("<cell")


def student_line(exc: BaseException) -> str | None:
    """Where in the student's own cells ``exc`` was raised (the innermost such line), or None."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_student_file(f.filename)]
    if not frames:
        return None
    frame = frames[-1]
    code = f": {frame.line.strip()}" if frame.line else ""
    return f"  in your code, line {frame.lineno} of the cell that defines `{frame.name}`{code}"


def _error_lines(exc: BaseException) -> list:
    """The line of the student's code that raised ``exc``, as a list of zero or one message line."""
    where = student_line(exc)
    return [where] if where else []


def _call_with_modules(fn, graphdefs, static_values, states, dynamic):
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


_jitted_with_modules = _jit(_call_with_modules, static_argnums=(0, 1, 2))


PRECISION = "highest"
"""The matrix-product precision of every function the checker runs: the reference, the student's
function and the hints' variants alike. JAX's default on a GPU is TF32 (about 1e-3 relative error)
and on a TPU bfloat16 passes; "highest" is float32 everywhere, so a verdict does not depend on the
backend. Every evaluation goes through :func:`jit_call`, which sets it."""


def jit_call(fn, args, static_argnums=(), module_argnums=()):
    """Call ``fn(*args)`` under jax.jit at :data:`PRECISION`, passing flax.nnx modules at ``module_argnums`` as graph + state.

    One compiled function serves every call with the same ``fn``, static
    values and module structures (a new jit per call would recompile).
    """
    with _precision(PRECISION):
        return _jit_call(fn, args, static_argnums, module_argnums)


def _jit_call(fn, args, static_argnums, module_argnums):
    if not module_argnums:
        return _jit(fn, static_argnums=static_argnums)(*args)
    from flax import nnx

    split = {i: nnx.split(args[i]) for i in module_argnums}
    graphdefs = tuple((i, g) for i, (g, _) in sorted(split.items()))
    states = {i: st for i, (_, st) in split.items()}
    static_values = tuple((i, args[i]) for i in static_argnums)
    dynamic = tuple(a for i, a in _enumerate(args) if i not in split and i not in static_argnums)
    return _jitted_with_modules(fn, graphdefs, static_values, states, dynamic)


def _call_student(ex: Exercise, fn, args, arg_names):
    """Run ``fn`` under jit on ``args``; return (output, notes) or raise CheckFailure."""
    notes = []
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(captured):
            warnings.simplefilter("always")
            out = jit_call(fn, args, ex.static_argnums, ex.module_argnums)
            out = jax.tree_util.tree_map(_asarray, out)
        notes += [f"note: your function warned: {w.category.__name__}: {w.message}" for w in caught]
    except NotImplementedError:
        _fail(ex.name, ["not implemented yet. Replace `raise NotImplementedError()` with your code."])
    except _JIT_ERRORS as exc:
        _fail(ex.name, [
            "it does not work under jax.jit.",
            f"    {type(exc).__name__}: {_first_line(exc)}",
            "Inside jax.jit the inputs are abstract arrays: use jnp functions instead of",
            "Python `if`/`float()`/numpy on them, and jnp.where for conditions.",
            *_error_lines(exc),
            "The input was:", _describe_args(arg_names, args),
        ])
    except TypeError as exc:
        # A TypeError raised by a line of the student's function is a slip in that line; one raised
        # by the call itself (no such line) is a changed signature.
        where = _error_lines(exc)
        advice = [] if where else [f"Keep the signature given in the exercise: {ex.name}({', '.join(arg_names)})."]
        _fail(ex.name, [
            f"calling it raised TypeError: {_first_line(exc)}",
            *where, *advice,
            "The input was:", _describe_args(arg_names, args),
        ])
    except Exception as exc:  # noqa: BLE001 - report any error in words
        _fail(ex.name, [
            f"it raised {type(exc).__name__}: {_first_line(exc)}",
            *_error_lines(exc),
            "The input was:", _describe_args(arg_names, args),
        ])
    return out, notes


def _run_variant(ex: Exercise, hint: Hint, args):
    """A hint's wrong variant on ``args``, compiled like the student's function (or None if it fails)."""
    try:
        return jit_call(hint.variant, args, ex.static_argnums, ex.module_argnums)
    except Exception:  # noqa: BLE001 - a variant that does not apply to this input
        return None


def _check_requires(ex: Exercise, fn, args) -> None:
    if not ex.requires:
        return
    try:
        jaxpr = str(_make_jaxpr(fn, static_argnums=ex.static_argnums)(*args))
    except Exception:  # noqa: BLE001 - the value check reports errors
        return
    if not any(f"{prim}[" in jaxpr or f" {prim} " in jaxpr for prim in ex.requires):
        _fail(ex.name, [ex.requires_message or f"it must use one of {ex.requires}."])


def _references_called(ex: Exercise, fn, args) -> set:
    """The course_utils references whose marked scope (``_validate.REFERENCE_SCOPE``) appears in the jaxpr of ``fn(*args)``."""
    if ex.module_argnums:
        from flax import nnx

        split = {i: nnx.split(args[i]) for i in ex.module_argnums}
        graphdefs = tuple((i, g) for i, (g, _) in sorted(split.items()))
        statics = tuple((i, args[i]) for i in ex.static_argnums)
        dynamic = tuple(a for i, a in _enumerate(args) if i not in split and i not in ex.static_argnums)
        closed = _make_jaxpr(lambda st, dyn: _call_with_modules(fn, graphdefs, statics, st, dyn))(
            {i: st for i, (_, st) in split.items()}, dynamic)
    else:
        closed = _make_jaxpr(fn, static_argnums=ex.static_argnums)(*args)
    return _references_in(closed.jaxpr)


def _references_in(jaxpr) -> set:
    """The reference markers in the name stacks of ``jaxpr`` and of the jaxprs nested in it."""
    from ._validate import REFERENCE_SCOPE

    found, todo = set(), [jaxpr]
    while todo:
        jaxpr = todo.pop()
        for eqn in jaxpr.eqns:
            for part in str(eqn.source_info.name_stack).split("/"):
                if part.startswith(REFERENCE_SCOPE + ":"):
                    found.add(part[_len(REFERENCE_SCOPE) + 1:])
            for value in eqn.params.values():
                for sub in (value if _isinstance(value, (tuple, list)) else (value,)):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        todo.append(inner)
    return found


def _check_not_reference(ex: Exercise, fn, args) -> None:
    """Fail when ``fn`` calls the exercise's own reference (or a course_utils function of the same name)."""
    if ex.reference is None:
        return
    from ._validate import reference_marker

    own = reference_marker(ex.reference)
    try:
        called = _references_called(ex, fn, args)
    except Exception:  # noqa: BLE001 - the value check has already run the function
        return
    forbidden = sorted(m for m in called if m == own or m.rsplit(".", 1)[-1] == ex.name)
    if forbidden:
        _fail(ex.name, [f"it calls the reference implementation {forbidden[0]} instead of computing the result.",
                        "Write the computation yourself; calling the course's reference earns no points for this exercise."])


def _check_class_not_reference(ex: Exercise, cls) -> None:
    """Fail when the student's class runs the ``__call__`` of the course's own class (``ex.reference_class``).

    Extending the reference for its constructor and helpers is allowed (notebook 05's exercise does);
    inheriting its ``__call__``, or calling it, is not.
    """
    reference = ex.reference_class
    if reference is None:
        return
    name = f"{reference.__module__}.{reference.__qualname__}"
    if _isinstance(cls, type) and _issubclass(cls, reference) and cls.__call__ is reference.__call__:
        how = f"it inherits __call__ from the reference class {name}"
    else:
        try:
            called = _references_in(_make_jaxpr(lambda: ex.probe(cls))().jaxpr)
        except Exception:  # noqa: BLE001 - the property check has already run the class
            return
        if f"{name}.__call__" not in called:
            return
        how = f"it calls the reference class {name}"
    _fail(ex.name, [f"{how} instead of computing the result.",
                    "Write __call__ yourself; using the course's reference earns no points for this exercise."])


def _cases(ex: Exercise, n_cases: int, seed: int, edge_cases: bool):
    cases = [ex.make_case(np.random.default_rng([seed, i])) for i in range(n_cases)]
    if edge_cases:
        cases += ex.fixed_cases()
    return cases


def check(name: str, fn: Callable, *, n_cases: int = 5, seed: int = 0, edge_cases: bool = False) -> None:
    """Test a student's ``fn`` for the exercise ``name``; print one line, or raise CheckFailure.

    ``n_cases`` random inputs are drawn from the seed ``seed``; with
    ``edge_cases=True`` the exercise's fixed edge cases are added. Everything
    runs at :data:`PRECISION` (property checks included). An error that escapes
    an exercise's own checks is reported as a CheckFailure too, with the line of
    the student's code that raised it, never as a traceback through the checker.
    """
    if name not in _REGISTRY:
        raise KeyError(f"check: unknown exercise {name!r}; known: {sorted(_REGISTRY)}")
    try:
        with _precision(PRECISION):
            _check(name, fn, n_cases, seed, edge_cases)
    except CheckFailure:
        raise
    except NotImplementedError:
        _fail(name, ["not implemented yet. Replace `raise NotImplementedError()` with your code."])
    except Exception as exc:  # noqa: BLE001 - any other error, in words
        where = _error_lines(exc) or ["  (the error is not in a line of your notebook: if your code looks right, tell your instructor)"]
        _fail(name, [f"testing it raised {type(exc).__name__}: {_first_line(exc)}", *where])


def _check(name, fn, n_cases, seed, edge_cases):
    if name not in _REGISTRY:
        raise KeyError(f"check: unknown exercise {name!r}; known: {sorted(_REGISTRY)}")
    ex = _REGISTRY[name]
    if not callable(fn):
        _fail(name, [f"expected a function, got {type(fn).__name__}. Did a later cell overwrite `{name}`?"])
    if ex.property_check is not None:
        summary = ex.property_check(ex, fn)
        _check_class_not_reference(ex, fn)
        print(f"{name}: {summary}")
        return
    arg_names = list(inspect.signature(ex.reference).parameters)
    worst_note = []
    cases = _cases(ex, n_cases, seed, edge_cases)
    for number, args in enumerate(cases, start=1):
        expected = jit_call(ex.reference, args, ex.static_argnums, ex.module_argnums)
        got, notes = _call_student(ex, fn, args, arg_names)
        worst_note += notes
        problem = _compare(expected, got, ex.rtol, ex.atol, ex.output_names)
        if problem is None:
            continue
        lines = [f"wrong output on test input {number} of {len(cases)}.", "The input was:",
                 _describe_args(arg_names, args),
                 f"  expected: {describe_value(expected)}",
                 f"  got:      {describe_value(got) if got is not None else None}",
                 *("  " + line for line in problem)]
        slips = [h.message for h in ex.hints if _matches(_run_variant(ex, h, args), got, ex.rtol, ex.atol)]
        lines += [f"Likely slip: {s}" for s in slips]
        _fail(name, lines)
    _check_requires(ex, fn, cases[0])
    _check_not_reference(ex, fn, cases[0])
    print(f"{name}: passed {len(cases)} of {len(cases)} test inputs." + ("".join("\n  " + n for n in dict.fromkeys(worst_note))))


def exercise(name: str) -> Exercise:
    """The registered exercise ``name`` (for tests and instructors)."""
    return _REGISTRY[name]


def exercise_names() -> list[str]:
    return sorted(_REGISTRY)


# Importing the definitions registers every exercise of the course.
from . import exercises as _exercises  # noqa: E402,F401
