"""The checker behind every test cell of the course.

A test cell calls ``check("forward_mean", forward_mean)``. The checker looks up
the exercise (its reference implementation, a generator of random inputs and
a list of known wrong variants), runs the student's function under
``jax.jit`` on seeded random inputs, compares with the reference, and either
prints one short line or raises an AssertionError that says, in words a
student understands, what went wrong: which input, the expected and actual
shapes and dtypes, the size of the error, and the likely slip when the outputs
match a known wrong variant (a hint) or one edit of the reference's own code
(:mod:`course_utils.edits`) on every input.

A check is three steps: :func:`plan` draws the inputs, :func:`evaluate` runs
the student's code on them and returns plain data (the only step that runs
the student's code), and :func:`judge` computes the references and the hints
and gives the verdict. In a student's own notebook all three run in the
kernel, for instant feedback. While grading, ``autograder/execute.py`` runs
``plan`` and ``judge`` in the grader's process and only ``evaluate`` in the
kernel (through :func:`serve`), so nothing the student's code does to its own
process can change a verdict. The outputs always travel through
:func:`encode_outcome` / :func:`decode_outcome` (JSON and .npz, never pickle),
in the notebook too, so the verdict is the same in both places.

In the notebook, answer cells run in the same Python process as the checker.
So that an answer cannot make its own instant feedback lie by replacing
``np.allclose``, ``jnp.allclose`` or ``jax.jit``, this module keeps its own
references to every function it uses, taken when it is first imported (the
notebook's setup cell imports it before any answer cell runs), and compares
with plain Python arithmetic on the numbers.
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

from .notebook import is_notebook_code

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
    Exercises tested by their properties, and class exercises, give
    ``trials(edge_cases)`` (argument tuples, or :class:`Build` objects for a
    class) in place of ``make_case``, and ``judge(ex, trials, results)``, which
    returns the summary line or raises CheckFailure; ``reference_class`` is the
    course's own class (a student's class must not run its ``__call__``).
    Both run in the grader's process while grading; only the trials' outputs
    come from the student's. ``module_argnums`` are the
    positions of flax.nnx modules (a model passed to a loss, say): they are
    split into graph and state so that the function can be jitted.
    ``output_names`` name the elements of an exercise that returns a tuple
    (``("mean", "variance")``): each is compared on its own, and messages
    say which one is wrong. ``depends_on`` names earlier exercises whose
    functions the student's answer may call: a wrong output says to check
    them first. ``max_equations``: the most equations the traced answer may
    have on one input to be compiled (checked in the kernel before compiling,
    see :func:`evaluate`): a Python loop over T unrolls under jit and compiling
    it can take minutes and gigabytes, so such an answer runs op by op without
    jit instead (right but slow passes, with ``unrolled_message``, the advice
    on what to use).
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
    trials: Callable | None = None
    judge: Callable | None = None
    module_argnums: tuple = ()
    output_names: tuple = ()
    reference_class: type | None = None
    depends_on: tuple = ()
    max_equations: int | None = None
    unrolled_message: str = ""

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


def _describe_args(names, args) -> str:
    return "\n".join(f"    {n} = {describe_value(a)}" for n, a in zip(names, args))


# ---------------------------------------------------------------- comparing

def _compare(expected, got, rtol, atol, names=(), widen=None):
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
    """``_compare`` for a function that returns a tuple of arrays."""
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
        problem = _compare(exp, out, rtol, atol, widen=w)
        if problem is not None:
            return [f"the {name} is wrong: {problem[0]}", *problem[1:]]
    return None


def _matches(a, b, rtol, atol, widen=None) -> bool:
    try:
        return _compare(a, b, rtol, atol, widen=widen) is None
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------- running

_JIT_ERRORS = tuple(
    getattr(jax.errors, name)
    for name in ("ConcretizationTypeError", "TracerBoolConversionError",
                 "TracerArrayConversionError", "TracerIntegerConversionError",
                 "NonConcreteBooleanIndexError", "UnexpectedTracerError", "KeyReuseError")
    if hasattr(jax.errors, name)
)

# One line of advice per kind of jit failure (by the error's type name).
_JIT_ADVICE = {
    "TracerBoolConversionError": "a Python `if`, `while`, `and`/`or` or `bool()` on an array: use jnp.where(condition, a, b) "
                                 "(or jax.lax.cond) instead.",
    "NonConcreteBooleanIndexError": "boolean indexing (x[mask]) gives an array whose size depends on the values: "
                                    "use jnp.where(mask, a, b) to keep the shape fixed.",
    "TracerIntegerConversionError": "int(), range() or a Python index on an array: index arrays with arrays "
                                    "(betas[t - 1]) and use jax.lax loops instead of range over a traced value.",
    "TracerArrayConversionError": "numpy (np.*) or np.asarray on a traced array: use the jnp functions instead.",
    "ConcretizationTypeError": "a Python value (float(), a shape, a Python loop bound) taken from an array: "
                               "keep the computation in jnp (jnp.where for conditions).",
    "UnexpectedTracerError": "a traced value leaked out of the function (stored in a global or on self): "
                             "return values instead of storing them.",
}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _fail(name: str, lines) -> None:
    raise CheckFailure("\n".join([f"{name}: " + lines[0], *lines[1:]])) from None


def student_line(exc: BaseException) -> str | None:
    """Where in the student's own cells ``exc`` was raised (the innermost such line), or None."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_notebook_code(f.filename)]
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


# ---------------------------------------------------------------- the student's side: evaluating

def _error_record(exc: BaseException, signature_ok: bool = True) -> dict:
    """What the grader needs to explain an error raised by the student's code: its kind, type, first line, and where.

    A TypeError is a changed signature ("signature") only when the arguments do not bind to the function's
    parameters; otherwise it comes from a line inside the answer (or a function it calls)."""
    if type(exc).__name__ == "ReferenceWithheld":  # course_utils.withheld: a reference called while grading
        kind = "withheld"
    elif _isinstance(exc, NotImplementedError):
        kind = "not_implemented"
    elif _isinstance(exc, _JIT_ERRORS):
        kind = "jit"
    elif _isinstance(exc, TypeError):
        kind = "type" if signature_ok else "signature"
    else:
        kind = "other"
    return {"kind": kind, "type": type(exc).__name__, "line": _first_line(exc)[:_MAX_TEXT], "where": (student_line(exc) or "")[:_MAX_TEXT]}


def unwritten_lines(err) -> list | None:
    """The message for an error record of an answer that computes nothing itself: a stub (``raise
    NotImplementedError()``), or a call of a course reference, which the grading sandbox withholds. None otherwise."""
    kind = err.get("kind") if _isinstance(err, dict) else None
    if kind == "withheld":
        import re

        found = re.search(r"`(course_utils\.[\w.]+)`", str(err.get("line", "")))
        name = found.group(1) if found else "of the course"
        return [f"it calls the reference implementation {name} instead of computing the result; the course's "
                "references are not available while grading: write it with your own code."]
    if kind == "not_implemented":
        return ["not implemented yet. Replace `raise NotImplementedError()` with your code."]
    return None


def _binds(fn, args) -> bool:
    """Whether ``fn(*args)`` binds (False: the student changed the signature)."""
    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        return False
    except Exception:  # noqa: BLE001 - no signature to read (a builtin): assume it binds
        return True
    return True


def _run_call(fn, args, static_argnums, module_argnums) -> dict:
    """``fn(*args)`` under jit: {"out": output, "notes": [warnings]} or {"error": record}."""
    captured = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(captured):
            warnings.simplefilter("always")
            out = jit_call(fn, args, static_argnums, module_argnums)
            out = jax.tree_util.tree_map(_asarray, out)
    except Exception as exc:  # noqa: BLE001 - every error is explained by the grader
        return {"error": _error_record(exc, not _isinstance(exc, TypeError) or _binds(fn, args))}
    return {"out": out, "notes": [f"note: your function warned: {w.category.__name__}: {w.message}"[:_MAX_TEXT] for w in caught]}


@dataclasses.dataclass(frozen=True)
class Build:
    """One trial of a class exercise, run in the student's process: build ``cls(*args, rngs=nnx.Rngs(seed), **kwargs)``,
    load ``state`` into it when given (the reference's weights, so the outputs can be compared), and call
    ``forward(model, *inputs)`` on each of ``inputs``. ``forward`` is a module-level function (it is pickled)."""

    args: tuple = ()
    kwargs: tuple = ()  # (name, value) pairs
    inputs: tuple = ()  # one tuple of arguments after the model per call
    forward: Callable | None = None
    state: object = None
    seed: int = 0
    fill: tuple = ()  # (shape, array) pairs: every nnx.Param of that shape gets that array (layer names not fixed)

    def call(self) -> str:
        listed = [*map(repr, self.args), *(f"{k}={v!r}" for k, v in self.kwargs), f"rngs=nnx.Rngs({self.seed})"]
        return ", ".join(listed)


def _run_build(cls, trial: Build) -> dict:
    from flax import nnx

    try:
        model = cls(*trial.args, rngs=nnx.Rngs(trial.seed), **dict(trial.kwargs))
    except Exception as exc:  # noqa: BLE001
        return {"build_error": _error_record(exc)}
    if trial.state is not None:
        try:
            nnx.update(model, trial.state)
        except Exception as exc:  # noqa: BLE001
            return {"state_error": _error_record(exc)}
    try:
        leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
        n_params = int(sum(p.size for p in leaves))
        shapes = [[int(d) for d in np.shape(p)] for p in leaves][:200]
    except Exception:  # noqa: BLE001
        n_params, shapes = -1, []
    if trial.fill:
        by_shape = {tuple(int(d) for d in shape): array for shape, array in trial.fill}
        if any(tuple(s) not in by_shape for s in shapes) or n_params < 0:
            return {"fill_error": {"shapes": shapes}, "n_params": n_params}
        try:
            state = nnx.state(model, nnx.Param)
            nnx.update(model, jax.tree.map(lambda p: jax.numpy.asarray(by_shape[tuple(np.shape(p))], p.dtype), state))
        except Exception as exc:  # noqa: BLE001
            return {"state_error": _error_record(exc)}
    calls = [_run_call(trial.forward, (model, *inputs), (), (0,)) for inputs in trial.inputs]
    return {"calls": calls, "n_params": n_params, "shapes": shapes}


class Trial:
    """A trial that runs an answer itself, in the student's process, for exercise kinds whose inputs are not plain
    arguments (a model and an optimizer built from factories: :mod:`course_utils.exercises.kinds`).

    :func:`evaluate` calls ``trial.run(fn)``, which must return plain data (dicts and lists of arrays, numbers and
    strings: what :func:`encode_outcome` writes); the exercise's own ``judge`` reads it in the grader's process.
    A subclass is a frozen dataclass of plain data and module-level functions (the request is pickled to the
    kernel, functions by reference), so that both processes build the same objects from it.
    """

    def run(self, fn) -> dict:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Request:
    """Everything the student's process needs to evaluate one ``check``: data chosen by the grader, nothing secret.

    ``trials`` are argument tuples (``fn(*trial)``) or :class:`Build` objects (class exercises). It is
    pickled from the grader to the kernel; the answer comes back as plain data (:func:`encode_outcome`).
    """

    name: str
    trials: tuple
    static_argnums: tuple = ()
    module_argnums: tuple = ()
    requires: tuple = ()
    reference_class: type | None = None
    max_equations: int | None = None


def _count_equations(jaxpr) -> int:
    """The equations of ``jaxpr`` and of the jaxprs nested in it."""
    return sum(_len(inner.eqns) for inner in _nested_jaxprs(jaxpr))


def _unrolled(request: Request, fn):
    """The first trial whose traced answer has more than ``request.max_equations`` equations, as
    {"trial": index, "equations": count}, or None. Tracing is cheap (no compilation): it runs before the trials,
    so that an unrolled Python loop is reported in seconds instead of compiling for minutes."""
    limit = request.max_equations
    if not limit:
        return None
    seen = set()
    for i, trial in _enumerate(request.trials):
        if _isinstance(trial, (Build, Trial)):
            continue
        key = tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) if i_ not in request.static_argnums else ("static", a)
                    for i_, a in _enumerate(trial))
        if key in seen:
            continue
        seen.add(key)
        try:
            closed = _jaxpr_of(fn, trial, request.static_argnums, request.module_argnums)
        except Exception:  # noqa: BLE001 - the error is reported when the trial runs
            continue
        n = _count_equations(closed.jaxpr)
        if n > limit:
            return {"trial": i, "equations": int(n)}
    return None


UNJITTED_SECONDS = 60.0
"""How long an answer too large to compile (more than ``max_equations``) may run op by op, without jit, on all
the trials of one check before it fails as too slow."""


def _run_unjitted(request: Request, fn):
    """The results of every trial run op by op (``jax.disable_jit``), or None when they take more than
    :data:`UNJITTED_SECONDS` (the trials left are not run)."""
    import time

    start, results = time.perf_counter(), []
    with jax.disable_jit(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for trial in request.trials:
            if time.perf_counter() - start > UNJITTED_SECONDS:
                return None
            results.append(trial.run(fn) if _isinstance(trial, Trial) else _run_build(fn, trial) if _isinstance(trial, Build)
                           else _run_call(fn, trial, request.static_argnums, request.module_argnums))
    return results if time.perf_counter() - start <= UNJITTED_SECONDS else None


def _unrolled_lines(ex: Exercise, info: dict, passed: bool) -> list:
    """The advice to an answer whose traced program is too large to compile (a Python loop over the steps)."""
    count = info.get("equations") if _isinstance(info.get("equations"), int) else "too many"
    index = info.get("trial") if _isinstance(info.get("trial"), int) else 0
    how = (f"traced under jax.jit your function has {count} operations on test input {index + 1}: a Python loop over "
           "the steps unrolls (JAX traces its body once per step), and compiling the result would take minutes and "
           "gigabytes of memory")
    if passed:
        head = f"note: {how}, so it was run op by op without jit: right, but slow."
    else:
        head = (f"{how}; run op by op without jit instead, it took more than {UNJITTED_SECONDS:g} s on the test "
                "inputs: too slow.")
    return [head, ex.unrolled_message or "Use a vectorised jnp function or jax.lax.scan instead of a Python loop."]


def evaluate(request: Request, fn) -> dict:
    """Run the student's ``fn`` (or a thunk returning it) on every trial of ``request``: the only part of a check
    that runs the student's code. Returns plain data: the outputs or errors, and what the compiled code calls."""
    if _isinstance(fn, _Thunk):
        try:
            fn = fn.get()
        except Exception as exc:  # noqa: BLE001 - e.g. a NameError: the cell that defines it was not run
            return {"missing": _error_record(exc)}
    if not callable(fn):
        return {"not_callable": type(fn).__name__}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unrolled = _unrolled(request, fn)
    if unrolled is not None:  # right but slow is right: run it op by op, without compiling
        results = _run_unjitted(request, fn)
        if results is None:
            return {"unrolled": {**unrolled, "too_slow": UNJITTED_SECONDS}}
        return {"results": results, "calls": _introspect(request, fn), "unrolled": unrolled}
    results = []
    for trial in request.trials:
        results.append(trial.run(fn) if _isinstance(trial, Trial) else _run_build(fn, trial) if _isinstance(trial, Build) else
                       _run_call(fn, trial, request.static_argnums, request.module_argnums))
    return {"results": results, "calls": _introspect(request, fn)}


def _introspect(request: Request, fn) -> dict:
    """What the compiled student code contains (on the first trial): the reference markers, the required loop."""
    info = {"references": [], "has_required": None, "inherits_call": False}
    if not request.trials:
        return info
    first = request.trials[0]
    if _isinstance(first, Trial):  # such a trial reports what it needs in its own results
        return info
    try:
        if _isinstance(first, Build):
            reference = request.reference_class
            if reference is not None and _isinstance(fn, type) and _issubclass(fn, reference) and fn.__call__ is reference.__call__:
                info["inherits_call"] = True
            from flax import nnx

            def probe():
                model = fn(*first.args, rngs=nnx.Rngs(first.seed), **dict(first.kwargs))
                return first.forward(model, *first.inputs[0])
            info["references"] = sorted(_references_in(_make_jaxpr(probe)().jaxpr))
        else:
            closed = _jaxpr_of(fn, first, request.static_argnums, request.module_argnums)
            info["references"] = sorted(_references_in(closed.jaxpr))
            if request.requires:
                text = str(closed)
                info["has_required"] = any(f"{p}[" in text or f" {p} " in text for p in request.requires)
    except Exception:  # noqa: BLE001 - the values are checked anyway
        pass
    return info


class _Thunk:
    """``fn`` looked up when the kernel evaluates a check (a NameError is reported, not raised)."""

    def __init__(self, get):
        self.get = get


# ---------------------------------------------------------------- between the processes: plain data only

MIME = "application/x-course-check+json"
_MAX_TEXT = 2000  # characters of one message from the student's process
_MAX_REPLY = 64 * 2**20  # bytes of one reply
_MAX_DEPTH = 20
# What a reply may decode to, checked before it is decoded (a reply is judged in the grader's process): the bytes of
# all its arrays, read from each .npy header (savez stores them uncompressed, so an honest reply's arrays are smaller
# than its text; a forged one may deflate a GiB into a MiB), the number of arrays, and the number of JSON values,
# counted from the commas and opening brackets of the text (an upper bound: strings may hold some) before parsing.
# Nesting is bounded while parsing: json's parser raises RecursionError past the interpreter's recursion limit
# (about 1,000 levels), and the structure itself is read at most _MAX_DEPTH + 2 levels deep.
_MAX_ARRAY_BYTES = _MAX_REPLY
_MAX_ARRAYS = 10_000
_MAX_JSON_VALUES = 200_000
MAX_MESSAGE = 20_000  # characters of a checker's message (the rest is cut, with a line that says so)


def encode_outcome(outcome) -> str:
    """``outcome`` as JSON, arrays in an .npz archive (base64): no pickle, so reading it runs no code."""
    import base64
    import json

    arrays = {}

    def spec(value, depth=0):
        if depth > _MAX_DEPTH:
            return {"other": "deeply nested value"}
        if value is None:
            return {"none": 1}
        if _isinstance(value, bool):
            return {"bool": bool(value)}
        if _isinstance(value, str):
            return {"str": value[:_MAX_TEXT]}
        if _isinstance(value, (tuple, list)):
            return {"seq": [spec(v, depth + 1) for v in value], "type": "list" if _isinstance(value, list) else "tuple"}
        if _isinstance(value, dict):
            return {"dict": [[str(k)[:200], spec(v, depth + 1)] for k, v in value.items()]}
        if _isinstance(value, int) and not _isinstance(value, np.integer):
            return {"int": int(value)} if _abs(value) < 2**62 else {"float": _float(value)}
        if _isinstance(value, float):
            return {"float": _float(value)}
        try:
            arr = _asarray(value)
        except Exception:  # noqa: BLE001
            arr = None
        if arr is None or arr.dtype == object:
            return {"other": type(value).__name__[:100]}
        key = f"a{_len(arrays)}"
        arrays[key] = arr
        return {"array": key}

    body = spec(outcome)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return json.dumps({"body": body, "arrays": base64.b64encode(buffer.getvalue()).decode("ascii")})


class ReplyError(ValueError):
    """The student's process sent something that is not a well-formed reply."""


def clip_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to at most about ``limit`` characters, with a visible line saying how much was cut."""
    text = str(text)
    if _len(text) <= limit:
        return text
    return text[:limit] + f"\n[... truncated: {_len(text) - limit} more characters not shown]"


def _read_arrays(packed: bytes) -> dict:
    """The arrays of the .npz archive ``packed``, refused before any is inflated when their headers declare more
    than _MAX_ARRAY_BYTES in all, more than _MAX_ARRAYS arrays, or Python objects."""
    import zipfile

    from numpy.lib import format as npy

    total = 0
    with zipfile.ZipFile(io.BytesIO(packed)) as archive:
        members = archive.infolist()
        if _len(members) > _MAX_ARRAYS:
            raise ReplyError(f"the reply has more than {_MAX_ARRAYS} arrays")
        for info in members:
            if not info.filename.endswith(".npy"):
                raise ReplyError("the reply has an unexpected structure")
            with archive.open(info) as member:
                version = npy.read_magic(member)
                read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                shape, _fortran, dtype = read(member)
            if dtype.hasobject:
                raise ReplyError("the reply has an array of Python objects")
            total += math.prod(shape) * dtype.itemsize
            if total > _MAX_ARRAY_BYTES:
                raise ReplyError(f"the reply's arrays hold more than {_MAX_ARRAY_BYTES // 2**20} MiB")
        with np.load(io.BytesIO(packed), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def _opaque(name: str):
    """A stand-in for an object the student's code returned that is not data (shown by its type's name)."""
    safe = "".join(c for c in str(name) if c.isalnum() or c == "_")[:100] or "object"
    return type(safe, (), {"__repr__": lambda self: f"<{safe}>"})()


def decode_outcome(text) -> dict:
    """Read what :func:`encode_outcome` wrote; raise ReplyError for anything else. Safe on hostile input."""
    import base64
    import binascii
    import json

    import zipfile

    if not _isinstance(text, str) or _len(text) > _MAX_REPLY:
        raise ReplyError("the reply is not text of a reasonable size")
    try:
        if text.count(",") + text.count("{") + text.count("[") > _MAX_JSON_VALUES:
            raise ReplyError(f"the reply holds more than {_MAX_JSON_VALUES} values")
        try:
            doc = json.loads(text)
        except RecursionError:
            raise ReplyError("the reply is nested deeper than the grader reads") from None
        packed = base64.b64decode(doc["arrays"], validate=True)
        arrays = _read_arrays(packed)
    except ReplyError:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error, OSError, EOFError, zipfile.BadZipFile, OverflowError,
            RecursionError, MemoryError) as exc:  # a reply that cannot be decoded, whatever the reason, is malformed
        raise ReplyError(f"the reply could not be read ({type(exc).__name__})") from None

    def value(node, depth=0):
        if depth > _MAX_DEPTH + 2 or not _isinstance(node, dict) or _len(node) not in (1, 2):
            raise ReplyError("the reply has an unexpected structure")
        (key, content), *_ = node.items()
        if key == "none":
            return None
        if key in ("bool", "str", "int", "float"):
            kind = {"bool": bool, "str": str, "int": int, "float": (float, int)}[key]
            if not _isinstance(content, kind):
                raise ReplyError("the reply has a value of the wrong type")
            return content
        if key == "seq" and _isinstance(content, list):
            items = [value(v, depth + 1) for v in content]
            return items if node.get("type") == "list" else tuple(items)
        if key == "dict" and _isinstance(content, list):
            out = {}
            for pair in content:
                if not (_isinstance(pair, list) and _len(pair) == 2 and _isinstance(pair[0], str)):
                    raise ReplyError("the reply has an unexpected structure")
                out[pair[0]] = value(pair[1], depth + 1)
            return out
        if key == "array" and content in arrays:
            return arrays[content]
        if key == "other" and _isinstance(content, str):
            return _opaque(content)
        raise ReplyError("the reply has an unexpected structure")

    if not _isinstance(doc, dict):
        raise ReplyError("the reply has an unexpected structure")
    try:
        return value(doc.get("body"))
    except (RecursionError, MemoryError) as exc:
        raise ReplyError(f"the reply could not be read ({type(exc).__name__})") from None


def serve(payload: str, get_fn) -> None:
    """Kernel side of a check while grading: evaluate the grader's request on the student's function and
    display the outcome as plain data (see ``autograder/execute.py``). Nothing it shows can decide a verdict
    except through the outputs it reports."""
    import base64
    import pickle

    from IPython.display import display

    with _precision(PRECISION):
        outcome = evaluate(pickle.loads(base64.b64decode(payload)), _Thunk(get_fn))
    display({MIME: encode_outcome(outcome)}, raw=True)


def kernel_code(request: Request, expression: str) -> str:
    """The code the grader runs in the student's kernel for one check: ``expression`` names the student's function."""
    import base64
    import pickle

    payload = base64.b64encode(pickle.dumps(request)).decode("ascii")
    return f"__import__('course_utils.grading').grading.serve({payload!r}, lambda: ({expression}))"


# ---------------------------------------------------------------- the grader's side: inputs, references, verdicts

def _run_variant(ex: Exercise, hint: Hint, args):
    """A hint's wrong variant on ``args``, compiled like the student's function (or None if it fails)."""
    try:
        return jit_call(hint.variant, args, ex.static_argnums, ex.module_argnums)
    except Exception:  # noqa: BLE001 - a variant that does not apply to this input
        return None


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


def _widen_of(expected, precise, rtol, atol) -> float:
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
    """(the reference's output on ``args``, how much its comparison's tolerance is widened).

    The output is computed in float32, as the student's function runs. The same reference is run again in
    float64 on the grader's CPU (``jax.enable_x64``), and the tolerance is widened by the float32 output's
    largest error against it (:func:`_widen_of`; one factor per output of a tuple): an algebraically
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
        return expected, tuple(_widen_of(e, p, ex.rtol, ex.atol) for e, p in _zip(expected, precise))
    return expected, _widen_of(expected, precise, ex.rtol, ex.atol)


def _jaxpr_of(fn, args, static_argnums, module_argnums):
    if module_argnums:
        from flax import nnx

        split = {i: nnx.split(args[i]) for i in module_argnums}
        graphdefs = tuple((i, g) for i, (g, _) in sorted(split.items()))
        statics = tuple((i, args[i]) for i in static_argnums)
        dynamic = tuple(a for i, a in _enumerate(args) if i not in split and i not in static_argnums)
        return _make_jaxpr(lambda st, dyn: _call_with_modules(fn, graphdefs, statics, st, dyn))(
            {i: st for i, (_, st) in split.items()}, dynamic)
    return _make_jaxpr(fn, static_argnums=static_argnums)(*args)


def _nested_jaxprs(jaxpr):
    """``jaxpr`` and every jaxpr nested in its equations (the bodies of scan, while, cond, pjit...)."""
    todo = [jaxpr]
    while todo:
        jaxpr = todo.pop()
        yield jaxpr
        for eqn in jaxpr.eqns:
            for value in eqn.params.values():
                for sub in (value if _isinstance(value, (tuple, list)) else (value,)):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        todo.append(inner)


def _references_in(jaxpr) -> set:
    """The reference markers in the name stacks of ``jaxpr`` and of the jaxprs nested in it."""
    from ._validate import REFERENCE_SCOPE

    found = set()
    for inner in _nested_jaxprs(jaxpr):
        for eqn in inner.eqns:
            for part in str(eqn.source_info.name_stack).split("/"):
                if part.startswith(REFERENCE_SCOPE + ":"):
                    found.add(part[_len(REFERENCE_SCOPE) + 1:])
    return found


def _text_list(value) -> list:
    return [str(v)[:_MAX_TEXT] for v in value] if _isinstance(value, (list, tuple)) else []


def _judge_not_reference(ex: Exercise, calls: dict) -> None:
    """Fail when the student's code calls the exercise's own reference (or a course_utils function of the same name)."""
    if ex.reference is None:
        return
    from ._validate import reference_marker

    own = reference_marker(ex.reference)
    forbidden = sorted(m for m in _text_list(calls.get("references")) if m == own or m.rsplit(".", 1)[-1] == ex.name)
    if forbidden:
        _fail(ex.name, [f"it calls the reference implementation {forbidden[0]} instead of computing the result.",
                        "Write the computation yourself; calling the course's reference earns no points for this exercise."])


def _judge_class_not_reference(ex: Exercise, calls: dict) -> None:
    """Fail when the student's class runs the ``__call__`` of the course's own class (``ex.reference_class``).

    Extending the reference for its constructor and helpers is allowed (notebook 05's exercise does);
    inheriting its ``__call__``, or calling it, is not.
    """
    reference = ex.reference_class
    if reference is None:
        return
    name = f"{reference.__module__}.{reference.__qualname__}"
    if calls.get("inherits_call") is True:
        how = f"it inherits __call__ from the reference class {name}"
    elif f"{name}.__call__" in _text_list(calls.get("references")):
        how = f"it calls the reference class {name}"
    else:
        return
    _fail(ex.name, [f"{how} instead of computing the result.",
                    "Write __call__ yourself; using the course's reference earns no points for this exercise."])


def _cases(ex: Exercise, n_cases: int, seed: int, edge_cases: bool):
    cases = [ex.make_case(np.random.default_rng([seed, i])) for i in range(n_cases)]
    if edge_cases:
        cases += ex.fixed_cases()
    return cases


def plan(name: str, n_cases: int = 5, seed: int = 0, edge_cases: bool = False) -> Request:
    """The inputs of one ``check``, drawn by whoever judges it (the grader's process while grading)."""
    if name not in _REGISTRY:
        raise KeyError(f"check: unknown exercise {name!r}; known: {sorted(_REGISTRY)}")
    ex = _REGISTRY[name]
    trials = ex.trials(edge_cases) if ex.trials is not None else _cases(ex, n_cases, seed, edge_cases)
    return Request(name, tuple(trials), tuple(ex.static_argnums), tuple(ex.module_argnums), tuple(ex.requires),
                   ex.reference_class, ex.max_equations)


def _malformed(name: str, why: str = "") -> None:
    _fail(name, ["the test could not read your function's results (the reply from the notebook's kernel is malformed"
                 + (f": {why[:200]}" if why else "") + ").",
                 "Restart the kernel, run every cell in order, and try again."])


def _dependency_lines(ex: Exercise) -> list:
    """The line that points at the earlier exercises this one may call."""
    if not ex.depends_on:
        return []
    names = " and ".join(f"`{n}`" for n in ex.depends_on)
    return [f"This exercise may call your {names} from an earlier exercise: if its test fails, fix it first."]


def diagnose(expected, got) -> list:
    """One-sentence descriptions of the shape of an error that matches no known slip (grader side, numpy only):
    a constant factor, the sign, a constant offset, a shift by one step along the first axis, a transpose."""
    try:
        exp = np.asarray(expected, np.float64)
        out = np.asarray(got, np.float64)
    except Exception:  # noqa: BLE001
        return []
    if exp.size == 0 or out.size == 0 or not np.all(np.isfinite(exp)):
        return []
    if not np.all(np.isfinite(out)):
        return []

    def close(a, b):
        return a.shape == b.shape and bool(np.all(np.abs(a - b) <= 1e-5 + 1e-3 * np.abs(b)))

    if out.shape != exp.shape:
        if exp.ndim == 2 and out.shape == exp.shape[::-1] and close(out.T, exp):
            return ["your output is the expected one transposed (the two axes are swapped)."]
        return []
    lines = []
    scale = _float(np.max(np.abs(exp)))
    if scale > 0 and exp.ndim == 2 and exp.shape[0] == exp.shape[1] and exp.shape[0] > 1 and close(out, exp.T):
        return ["your output is the expected one transposed (the two axes are swapped)."]
    if scale > 0 and close(out, -exp):
        return ["your output is the expected one with the sign flipped (-1 times it)."]
    denom = _float(np.sum(exp * exp))
    if denom > 0 and exp.size > 1 and np.unique(np.round(exp, 6)).size > 1:  # a scalar is always a multiple
        k = _float(np.sum(out * exp) / denom)
        if _abs(k - 1) > 1e-3 and k != 0 and close(out, k * exp):
            lines.append(f"your output is the expected one times a constant factor {k:.6g} "
                         f"(about 1/{1 / k:.4g}): a missing or extra constant or square root?")
            return lines
    if exp.size > 1:
        offset = _float(np.mean(out - exp))
        if _abs(offset) > 1e-5 and close(out, exp + offset):
            return [f"your output is the expected one plus a constant {offset:.6g} everywhere."]
    if exp.ndim >= 1 and exp.shape[0] > 2:
        if close(out[1:], exp[:-1]):
            return ["your output is the expected one shifted by one step along the first axis "
                    "(your entry t is the expected entry t - 1): an off-by-one in the time index?"]
        if close(out[:-1], exp[1:]):
            return ["your output is the expected one shifted by one step along the first axis "
                    "(your entry t is the expected entry t + 1): an off-by-one in the time index?"]
    return lines


def student_output(ex: Exercise, record, arg_names, args):
    """The student's output in ``record`` (from :func:`evaluate`), or a CheckFailure explaining its error."""
    if not _isinstance(record, dict) or not ("out" in record or "error" in record):
        _malformed(ex.name)
    if "out" in record:
        return record["out"]
    err = record["error"] if _isinstance(record["error"], dict) else {}
    kind, etype, line = err.get("kind"), str(err.get("type", "Exception"))[:100], str(err.get("line", ""))[:_MAX_TEXT]
    where = [str(err["where"])[:_MAX_TEXT]] if err.get("where") else []
    shown = ["The input was:", _describe_args(arg_names, args)]
    if unwritten_lines(err):
        _fail(ex.name, unwritten_lines(err))
    if kind == "jit":
        advice = _JIT_ADVICE.get(etype)
        _fail(ex.name, ["it does not work under jax.jit.", f"    {etype}: {line}",
                        *([f"The cause: {advice}"] if advice else []),
                        "Inside jax.jit the inputs are abstract arrays: use jnp functions instead of",
                        "Python `if`/`float()`/numpy on them, and jnp.where for conditions.", *where, *shown])
    if kind == "signature":
        _fail(ex.name, [f"calling it raised TypeError: {line}",
                        f"Keep the signature given in the exercise: {ex.name}({', '.join(arg_names)}).", *shown])
    if kind == "type":
        # The arguments bind: the TypeError comes from a line of the answer or from a function it calls.
        _fail(ex.name, [f"calling it raised TypeError inside your code (or a function it calls): {line}", *where,
                        *_dependency_lines(ex), *shown])
    _fail(ex.name, [f"it raised {etype}: {line}", *where, *shown])


def built_outputs(ex: Exercise, trial: Build, record, arg_names) -> list:
    """The outputs of the student's class on each of ``trial.inputs``, or a CheckFailure explaining what failed."""
    if not _isinstance(record, dict):
        _malformed(ex.name)
    call = f"{ex.name}({trial.call()})"
    for key in ("build_error", "state_error"):
        if key in record:
            err = record[key] if _isinstance(record[key], dict) else {}
            if unwritten_lines(err):
                _fail(ex.name, unwritten_lines(err))
            where = [str(err["where"])[:_MAX_TEXT]] if err.get("where") else []
            if key == "build_error":
                _fail(ex.name, [f"creating `{call}` raised {str(err.get('type'))[:100]}: {str(err.get('line'))[:_MAX_TEXT]}",
                                *where, "Keep the constructor given in the exercise."])
            _fail(ex.name, ["the model's layers differ from the reference's. Keep the constructor (__init__) given in "
                            "the exercise and write only __call__."])
    calls = record.get("calls")
    if not _isinstance(calls, list) or _len(calls) != _len(trial.inputs):
        _malformed(ex.name)
    model = _opaque(ex.name)
    return [student_output(ex, rec, ["model", *arg_names], (model, *inputs)) for rec, inputs in _zip(calls, trial.inputs)]


def _outputs_seen(ex: Exercise, trials, results, first: int) -> list:
    """(args, the student's output, the expected output, its tolerance's widening) of every trial the student's
    function returned an output for, the trial ``first`` (0-based, the one shown) first."""
    seen = []
    order = [first] + [i for i in range(_len(trials)) if i != first]
    for i in order:
        record = results[i] if i < _len(results) else None
        if not _isinstance(record, dict) or "out" not in record:
            continue
        try:
            expected, widen = expected_output(ex, trials[i])
        except Exception:  # noqa: BLE001
            continue
        seen.append((trials[i], record["out"], expected, widen))
    return seen


def _leaves(value) -> list:
    try:
        return [_asarray(leaf, np.float64) for leaf in jax.tree_util.tree_leaves(value)]
    except Exception:  # noqa: BLE001
        return []


def _any_finite(value) -> bool:
    return any(bool(np.any(np.isfinite(leaf))) for leaf in _leaves(value))


def _differs_where_finite(out, expected, rtol, atol, widen) -> bool:
    """Whether ``out`` differs from ``expected`` in a value that is finite on both sides (not only in NaNs)."""
    outs, exps = _leaves(out), _leaves(expected)
    if _len(outs) != _len(exps):
        return True
    widens = list(widen) if _isinstance(widen, (tuple, list)) and _len(widen) == _len(outs) else [widen] * _len(outs)
    for o, e, w in _zip(outs, exps, widens):
        if o.shape != e.shape:
            return True
        both = np.isfinite(o) & np.isfinite(e)
        w = _float(w) if _isinstance(w, (int, float)) and w > 1 else 1.0
        if bool(np.any(np.abs(o[both] - e[both]) > (atol + rtol * np.abs(e[both])) * w)):
            return True
    return False


def explains(ex: Exercise, run, seen, tally=None) -> bool:
    """Whether a wrong variant explains the student's outputs: ``run(args)`` (its output, or None where it does
    not apply) matches the student's output on every input of ``seen`` (:func:`_outputs_seen`) where it runs,
    and differs from the expected output in a finite value on at least one of them. Where it differs only by
    NaNs (or infinities), it explains the output only if the student's output has finite values too: an all-NaN
    variant never explains an all-NaN output (NaN against NaN says nothing about the slip), but NaN exactly where
    a slip puts them, and the right values elsewhere, does. With ``tally`` (a list [matched, missed]) a
    mismatch is counted there instead of ending the test (for :func:`explaining_hints`' second pass)."""
    informative = nan_only = student_finite = False
    for args, got, expected, widen in seen:
        out = run(args)
        if out is None:
            continue
        if not _matches(out, got, ex.rtol, ex.atol, widen):
            if tally is None:
                return False
            tally[1] += 1
            continue
        if tally is not None:
            tally[0] += 1
        student_finite = student_finite or _any_finite(got)
        if not informative and not _matches(out, expected, ex.rtol, ex.atol, widen):
            if _differs_where_finite(out, expected, ex.rtol, ex.atol, widen):
                informative = True
            else:
                nan_only = True
    return informative or (nan_only and student_finite)


def _slip_lines(messages) -> list:
    """One line for the slips that explain the output: two or more give the same output on every test input."""
    messages = list(dict.fromkeys(messages))
    if not messages:
        return []
    if _len(messages) == 1:
        return [f"Likely slip: {messages[0]}"]
    return [f"Likely slip: {messages[0]} Or, with the same output on every test input: " + " Or: ".join(messages[1:])]


def _run_edit(run, args):
    """An edited reference (:mod:`course_utils.edits`) on ``args``, op by op at :data:`PRECISION` (or None)."""
    try:
        with _precision(PRECISION), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return jax.tree_util.tree_map(_asarray, run(args))
    except Exception:  # noqa: BLE001 - an edit that does not run on this input
        return None


def found_edits(ex: Exercise, seen, limit: int = 3) -> list:
    """The edits of the reference that explain the student's outputs (:func:`explains`), found by
    :func:`course_utils.edits.search`, described in words (at most ``limit``: more say nothing)."""
    if ex.reference is None or ex.judge is not None or not seen:
        return []
    from . import edits

    def cost(item):  # the smallest input first: most edits are told apart on any input, and it runs fastest
        return sum(int(np.size(a)) for a in item[0] if _isinstance(a, (np.ndarray, jax.Array)))

    cheap_first = sorted(seen, key=cost)
    try:
        found = edits.search(lambda run: explains(ex, run, cheap_first), ex.reference, ex.name, _run_edit)
    except Exception:  # noqa: BLE001 - the search only adds a line: it never decides or breaks a verdict
        return []
    return [f"{d} (an edit of the reference that gives your outputs)" for d in found] if 0 < _len(found) <= limit else []


def explaining_hints(ex: Exercise, seen) -> list:
    """The messages of the hand-written hints that explain the student's outputs (:func:`explains`)."""
    found = [h.message for h in ex.hints if explains(ex, lambda args, h=h: _run_variant(ex, h, args), seen)]
    if found or not seen:
        return found
    # No hint matches every input. A variant as ill-conditioned as sin(10000 t) differs from a student's equivalent
    # code by float32 rounding on some inputs: the one hint that matches the input shown and most of the others
    # still explains the output.
    first, likely = seen[0], []
    for h in ex.hints:
        run, tally = (lambda args, h=h: _run_variant(ex, h, args)), [0, 0]
        out = run(first[0])
        if out is None or not _matches(out, first[1], ex.rtol, ex.atol, first[3]):
            continue
        if explains(ex, run, seen, tally) and tally[0] > tally[1] + 1:
            likely.append(h.message)
    return likely if _len(likely) == 1 else []


def _diagnose_all(ex: Exercise, trials, results) -> list:
    """:func:`diagnose` on every test input's outputs put end to end (a scalar output is a constant factor of the
    expected one only if the factor is the same on every input)."""
    if ex.output_names:
        return []
    exps, outs = [], []
    for args, record in _zip(trials, results):
        if not _isinstance(record, dict) or "out" not in record:
            continue
        try:
            e = np.asarray(jit_call(ex.reference, args, ex.static_argnums, ex.module_argnums), np.float64).reshape(-1)
            g = np.asarray(record["out"], np.float64).reshape(-1)
        except Exception:  # noqa: BLE001
            continue
        if e.shape == g.shape:
            exps.append(e)
            outs.append(g)
    if _len(exps) < 2:
        return []
    exp, out = np.concatenate(exps), np.concatenate(outs)
    found = diagnose(exp, out) if exp.size > 1 else []
    return [line.replace("your output is", "on every test input your output is") for line in found
            if "shifted" not in line and "transposed" not in line]


def _diagnose_outputs(expected, got) -> list:
    """:func:`diagnose` on an output, or on the first wrong element of a tuple of outputs."""
    if _isinstance(expected, (tuple, list)):
        if not _isinstance(got, (tuple, list)) or _len(got) != _len(expected):
            return []
        for e, g in _zip(expected, got):
            try:
                if _compare(e, g, 1e-4, 1e-6) is not None:
                    return diagnose(e, g)
            except Exception:  # noqa: BLE001
                return []
        return []
    try:
        return diagnose(expected, got)
    except Exception:  # noqa: BLE001
        return []


def judge(request: Request, outcome) -> str:
    """The verdict on ``outcome`` (what :func:`evaluate` returned for ``request``): the line a passing check prints,
    or a CheckFailure. Computes the references and the hints itself: nothing but the outputs is taken from
    the student's process."""
    name = request.name
    ex = _REGISTRY[name]
    if not _isinstance(outcome, dict):
        _malformed(name)
    if "malformed" in outcome:  # what decode_outcome refused (execute.py), said in a few words
        _malformed(name, str(outcome["malformed"]))
    if "missing" in outcome:
        err = outcome["missing"] if _isinstance(outcome["missing"], dict) else {}
        _fail(name, [f"the test could not find your answer: {str(err.get('type'))[:100]}: {str(err.get('line'))[:_MAX_TEXT]}",
                     "Run the cell that defines it (and every cell above it) before this test."])
    if "not_callable" in outcome:
        _fail(name, [f"expected a function, got {str(outcome['not_callable'])[:100]}. Did a later cell overwrite `{name}`?"])
    unrolled = outcome.get("unrolled") if _isinstance(outcome.get("unrolled"), dict) else None
    if "unrolled" in outcome and "results" not in outcome:
        info = unrolled or {}
        index = info.get("trial") if _isinstance(info.get("trial"), int) else 0
        args = request.trials[index] if 0 <= index < _len(request.trials) else ()
        arg_names = list(inspect.signature(ex.reference).parameters) if ex.reference is not None else \
            [f"argument {i + 1}" for i in range(_len(args))]
        _fail(name, [*_unrolled_lines(ex, info, passed=False), "The input was:", _describe_args(arg_names, args)])
    advice = "".join("\n  " + line for line in _unrolled_lines(ex, unrolled, passed=True)) if unrolled is not None else ""
    results, calls = outcome.get("results"), outcome.get("calls")
    if not _isinstance(results, list) or _len(results) != _len(request.trials) or not _isinstance(calls, dict):
        _malformed(name)
    if ex.judge is not None:
        summary = ex.judge(ex, request.trials, results)
        _judge_class_not_reference(ex, calls)
        return f"{name}: {summary}{advice}"
    arg_names = list(inspect.signature(ex.reference).parameters)
    notes = []
    for number, (args, record) in enumerate(_zip(request.trials, results), start=1):
        got = student_output(ex, record, arg_names, args)
        notes += _text_list(record.get("notes", []))[:20]
        expected, widen = expected_output(ex, args)
        problem = _compare(expected, got, ex.rtol, ex.atol, ex.output_names, widen)
        if problem is None:
            continue
        lines = [f"wrong output on test input {number} of {_len(request.trials)}.", "The input was:",
                 _describe_args(arg_names, args),
                 f"  expected: {describe_value(expected)}",
                 f"  got:      {describe_value(got) if got is not None else None}",
                 *("  " + line for line in problem)]
        seen = _outputs_seen(ex, request.trials, results, number - 1)
        slips = _slip_lines(explaining_hints(ex, seen)) or _slip_lines(found_edits(ex, seen))
        lines += slips
        if not slips:
            lines += [f"  {line}" for line in _diagnose_outputs(expected, got) or _diagnose_all(ex, request.trials, results)]
        lines += _dependency_lines(ex)
        _fail(name, lines)
    if ex.requires and calls.get("has_required") is False:
        _fail(name, [ex.requires_message or f"it must use one of {ex.requires}."])
    _judge_not_reference(ex, calls)
    n = _len(request.trials)
    return f"{name}: passed {n} of {n} test inputs." + "".join("\n  " + note for note in dict.fromkeys(notes)) + advice


def verdict(request: Request, outcome) -> tuple[bool, str]:
    """(passed, the line it prints or the checker's message) for ``outcome``: how the grader judges a check.
    Never raises: an error while judging (a reply that is well-formed but absurd) fails the check.
    Its text is at most MAX_MESSAGE characters (``clip_message``), whatever the outputs it describes."""
    try:
        with _precision(PRECISION):
            return True, clip_message(judge(request, outcome))
    except CheckFailure as exc:
        return False, clip_message(str(exc))
    except Exception as exc:  # noqa: BLE001 - RecursionError and MemoryError included: the check fails
        return False, clip_message(f"{request.name}: the grader could not judge your function's results "
                                   f"({type(exc).__name__}: {_first_line(exc)}). If your code looks right, "
                                   "tell your instructor.")


def check(name: str, fn: Callable, *, n_cases: int = 5, seed: int = 0, edge_cases: bool = False) -> None:
    """Test a student's ``fn`` for the exercise ``name``; print one line, or raise CheckFailure.

    ``n_cases`` random inputs are drawn from the seed ``seed``; with
    ``edge_cases=True`` the exercise's fixed edge cases are added. Everything
    runs at :data:`PRECISION`. An error that escapes an exercise's own checks
    is reported as a CheckFailure too, with the line of the student's code that
    raised it, never as a traceback through the checker.

    This is the student's instant feedback, in their own process. While grading,
    the same three steps run apart (``autograder/execute.py``): :func:`plan` and
    :func:`judge` in the grader's process, :func:`evaluate` in the student's
    kernel, which sends back only data (:func:`encode_outcome`).
    """
    if name not in _REGISTRY:
        raise KeyError(f"check: unknown exercise {name!r}; known: {sorted(_REGISTRY)}")
    try:
        with _precision(PRECISION):
            request = plan(name, n_cases, seed, edge_cases)
            outcome = decode_outcome(encode_outcome(evaluate(request, fn)))
            summary = judge(request, outcome)
    except CheckFailure:
        raise
    except NotImplementedError:
        _fail(name, ["not implemented yet. Replace `raise NotImplementedError()` with your code."])
    except Exception as exc:  # noqa: BLE001 - any other error, in words
        where = _error_lines(exc) or ["  (the error is not in a line of your notebook: if your code looks right, tell your instructor)"]
        _fail(name, [f"testing it raised {type(exc).__name__}: {_first_line(exc)}", *where])
    print(summary)


def exercise(name: str) -> Exercise:
    """The registered exercise ``name`` (for tests and instructors)."""
    return _REGISTRY[name]


def exercise_names() -> list[str]:
    return sorted(_REGISTRY)


# Importing the definitions registers every exercise of the course.
from . import exercises as _exercises  # noqa: E402,F401
