"""What went wrong, in words: reading what the student's process sent into an output or a CheckFailure.

A failing check raises :class:`CheckFailure` (through :func:`fail`), whose message is all a student sees. The
functions here turn the plain records of :func:`~.trials.evaluate` (an output, or an error's kind, type, line and
place) into that message: the answer is a stub or calls a withheld reference, it does not work under jit (with the
likely cause), its signature changed, it raised, it calls the course's own reference, or the reply is malformed.
Wrong *values* are judged by :func:`course_utils.grading.judge` with :mod:`.values` and explained by
:mod:`.diagnosis`.
"""

import re

from .._validate import reference_marker
from .kept import isinstance as _isinstance, len as _len, zip as _zip
from .jitting import MAX_TEXT
from .registry import Exercise
from .trials import UNJITTED_SECONDS, Build
from .values import describe_args
from .wire import opaque, text_list


class CheckFailure(AssertionError):
    """Raised by :func:`check` when a student's function is wrong.

    In Jupyter, Colab and nbgrader's feedback (all IPython kernels) a test cell
    that fails shows only this message: IPython displays what
    ``_render_traceback_`` returns instead of a traceback through the checker.
    """

    def _render_traceback_(self):
        return str(self).splitlines()


def fail(name: str, lines) -> None:
    """Raise the CheckFailure of exercise ``name``: its first line is ``name: lines[0]``, the rest follow."""
    raise CheckFailure("\n".join([f"{name}: " + lines[0], *lines[1:]])) from None


def malformed(name: str, why: str = "") -> None:
    """Fail because the kernel's reply could not be read (``why``: what :func:`~.wire.decode_outcome` refused)."""
    fail(name, ["the test could not read your function's results (the reply from the notebook's kernel is malformed"
                + (f": {why[:200]}" if why else "") + ").",
                "Restart the kernel, run every cell in order, and try again."])


# One line of advice per kind of jit failure (by the error's type name).
JIT_ADVICE = {
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


def unwritten_lines(err) -> list | None:
    """The message for an error record of an answer that computes nothing itself: a stub (``raise
    NotImplementedError()``), or a call of a course reference, which the grading sandbox withholds. None otherwise."""
    kind = err.get("kind") if _isinstance(err, dict) else None
    if kind == "withheld":
        found = re.search(r"`(course_utils\.[\w.]+)`", str(err.get("line", "")))
        name = found.group(1) if found else "of the course"
        return [f"it calls the reference implementation {name} instead of computing the result; the course's "
                "references are not available while grading: write it with your own code."]
    if kind == "not_implemented":
        return ["not implemented yet. Replace `raise NotImplementedError()` with your code."]
    return None


def dependency_lines(ex: Exercise) -> list:
    """The line (none, or one) that points at the earlier exercises this one may call."""
    if not ex.depends_on:
        return []
    names = " and ".join(f"`{n}`" for n in ex.depends_on)
    return [f"This exercise may call your {names} from an earlier exercise: if its test fails, fix it first."]


def unrolled_lines(ex: Exercise, info: dict, passed: bool) -> list:
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


def student_output(ex: Exercise, record, arg_names, args):
    """The student's output in ``record`` (from :func:`evaluate`), or a CheckFailure explaining its error."""
    if not _isinstance(record, dict) or not ("out" in record or "error" in record):
        malformed(ex.name)
    if "out" in record:
        return record["out"]
    err = record["error"] if _isinstance(record["error"], dict) else {}
    kind, etype, line = err.get("kind"), str(err.get("type", "Exception"))[:100], str(err.get("line", ""))[:MAX_TEXT]
    where = [str(err["where"])[:MAX_TEXT]] if err.get("where") else []
    shown = ["The input was:", describe_args(arg_names, args)]
    if unwritten_lines(err):
        fail(ex.name, unwritten_lines(err))
    if kind == "jit":
        advice = JIT_ADVICE.get(etype)
        fail(ex.name, ["it does not work under jax.jit.", f"    {etype}: {line}",
                       *([f"The cause: {advice}"] if advice else []),
                        "Inside jax.jit the inputs are abstract arrays: use jnp functions instead of",
                        "Python `if`/`float()`/numpy on them, and jnp.where for conditions.", *where, *shown])
    if kind == "signature":
        fail(ex.name, [f"calling it raised TypeError: {line}",
                       f"Keep the signature given in the exercise: {ex.name}({', '.join(arg_names)}).", *shown])
    if kind == "type":
        # The arguments bind: the TypeError comes from a line of the answer or from a function it calls.
        fail(ex.name, [f"calling it raised TypeError inside your code (or a function it calls): {line}", *where,
                       *dependency_lines(ex), *shown])
    fail(ex.name, [f"it raised {etype}: {line}", *where, *shown])


def built_outputs(ex: Exercise, trial: Build, record, arg_names) -> list:
    """The outputs of the student's class on each of ``trial.inputs``, or a CheckFailure explaining what failed."""
    if not _isinstance(record, dict):
        malformed(ex.name)
    call = f"{ex.name}({trial.call()})"
    for key in ("build_error", "state_error"):
        if key in record:
            err = record[key] if _isinstance(record[key], dict) else {}
            if unwritten_lines(err):
                fail(ex.name, unwritten_lines(err))
            where = [str(err["where"])[:MAX_TEXT]] if err.get("where") else []
            if key == "build_error":
                fail(ex.name, [f"creating `{call}` raised {str(err.get('type'))[:100]}: {str(err.get('line'))[:MAX_TEXT]}",
                               *where, "Keep the constructor given in the exercise."])
            fail(ex.name, ["the model's layers differ from the reference's. Keep the constructor (__init__) given in "
                           "the exercise and write only __call__."])
    calls = record.get("calls")
    if not _isinstance(calls, list) or _len(calls) != _len(trial.inputs):
        malformed(ex.name)
    model = opaque(ex.name)
    return [student_output(ex, rec, ["model", *arg_names], (model, *inputs)) for rec, inputs in _zip(calls, trial.inputs)]


def forbidden_references(markers, reference, name: str, also=()) -> list:
    """The reference markers the student's compiled code carries (``markers``, as the kernel sent them) that are the
    exercise's own ``reference``, one of the course functions ``also`` forbids, or a course function named after the
    exercise ``name``."""
    own = {reference_marker(reference)} | {reference_marker(f) for f in also}
    return [m for m in text_list(markers) if m in own or m.rsplit(".", 1)[-1] == name]


def judge_not_reference(ex: Exercise, calls: dict) -> None:
    """Fail when the student's code calls the exercise's own reference (or a course_utils function of the same name)."""
    if ex.reference is None:
        return
    forbidden = sorted(forbidden_references(calls.get("references"), ex.reference, ex.name))
    if forbidden:
        fail(ex.name, [f"it calls the reference implementation {forbidden[0]} instead of computing the result.",
                       "Write the computation yourself; calling the course's reference earns no points for this exercise."])


def judge_class_not_reference(ex: Exercise, calls: dict) -> None:
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
    elif f"{name}.__call__" in text_list(calls.get("references")):
        how = f"it calls the reference class {name}"
    else:
        return
    fail(ex.name, [f"{how} instead of computing the result.",
                   "Write __call__ yourself; using the course's reference earns no points for this exercise."])
