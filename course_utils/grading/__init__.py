"""The checker behind every test cell of the course.

A test cell calls ``check("forward_mean", forward_mean)``. The checker looks up the exercise (its reference
implementation, a generator of random inputs and a list of known wrong variants: :mod:`.registry`), runs the
student's function under ``jax.jit`` on seeded random inputs, compares with the reference, and either prints one
short line or raises a :class:`CheckFailure` that says, in words a student understands, what went wrong: which
input, the expected and actual shapes and dtypes, the size of the error, and the likely slip when the outputs match
a known wrong variant (a hint) or one edit of the reference's own code on every input.

A check is three steps, and this module reads in their order:

1. :func:`plan` draws the inputs (a :class:`~.wire.Request`);
2. :func:`evaluate` runs the student's code on them and returns plain data (:mod:`.trials`: the only step that
   runs the student's code);
3. :func:`judge` computes the references and the hints and gives the verdict (:func:`verdict`: the same, never
   raising, for the grader).

:func:`check` runs all three in the student's kernel, for instant feedback. While grading,
``autograder/execute.py`` runs ``plan`` and ``judge`` in the grader's process and only ``evaluate`` in the kernel
(through :func:`~.wire.serve`), so nothing the student's code does to its own process can change a verdict. The
outputs always travel through :func:`~.wire.encode_outcome` / :func:`~.wire.decode_outcome` (JSON and .npz, never
pickle), in the notebook too, so the verdict is the same in both places.

The modules, from the bottom up (each imports only those above it in this list):

- :mod:`.kept`: the checker's own references to ``np.asarray``, ``jax.jit`` and builtins, taken at import, so
  that an answer cell that replaces them cannot make its feedback lie;
- :mod:`.registry`: :class:`Exercise`, :class:`Hint`, :func:`register` (filled by :mod:`course_utils.exercises`);
- :mod:`.values`: describing values in messages and comparing them (:func:`compare`);
- :mod:`.jitting`: calling under jit at the course's :data:`PRECISION` (:func:`jit_call`);
- :mod:`.compiled`: reading compiled programs (the course's reference markers, their size);
- :mod:`.trials`: the student's side, :func:`evaluate` (:class:`Build` and :class:`Trial` for classes and
  training steps);
- :mod:`.wire`: the format between kernel and grader (:class:`Request`, :func:`encode_outcome`,
  :func:`decode_outcome`, :func:`serve`, :func:`kernel_code`), which ``autograder/execute.py`` imports too;
- :mod:`.failures`: the messages of a failed check (:class:`CheckFailure`);
- :mod:`.expected`: the reference's output and its tolerance;
- :mod:`.diagnosis` and :mod:`.edits`: the likely slip behind a wrong output.
"""

import inspect
from typing import Callable

import numpy as np

from .diagnosis import diagnose, explaining_hints, explains, explanation, found_edits
from .expected import WIDEN_FACTOR, expected_output, widen_of
from .failures import (JIT_ADVICE, CheckFailure, built_outputs, dependency_lines, fail, forbidden_references,
                       judge_class_not_reference, judge_not_reference, malformed, student_output, unrolled_lines,
                       unwritten_lines)
from .jitting import (MAX_TEXT, PRECISION, at_precision, binds, error_record, first_line, jit_call, run_call,
                      student_line)
from .kept import isinstance as _isinstance, len as _len, zip as _zip
from .registry import Exercise, Hint, exercise, exercise_names, register
from .trials import UNJITTED_SECONDS, Build, Trial, evaluate
from .values import compare, describe_args, describe_value, matches
from .wire import (MAX_ARRAYS, MAX_MESSAGE, MAX_REPLY, MIME, ReplyError, Request, clip_message, decode_outcome,
                   encode_outcome, kernel_code, serve, text_list)

__all__ = [
    # the three steps and the checks built on them
    "plan", "evaluate", "judge", "verdict", "check",
    # the registry
    "Exercise", "Hint", "register", "exercise", "exercise_names",
    # values, precision, trials
    "describe_value", "describe_args", "compare", "matches", "PRECISION", "at_precision", "jit_call", "run_call",
    "error_record", "binds", "first_line", "student_line", "MAX_TEXT", "Build", "Trial", "UNJITTED_SECONDS",
    # the wire
    "Request", "MIME", "MAX_REPLY", "MAX_ARRAYS", "MAX_MESSAGE", "ReplyError", "encode_outcome", "decode_outcome",
    "clip_message", "text_list", "serve", "kernel_code",
    # failures, expected outputs, diagnosis
    "CheckFailure", "fail", "malformed", "JIT_ADVICE", "dependency_lines", "unwritten_lines", "unrolled_lines",
    "student_output", "built_outputs", "forbidden_references", "judge_not_reference", "judge_class_not_reference",
    "expected_output", "widen_of", "WIDEN_FACTOR", "diagnose", "explains", "explaining_hints", "found_edits",
    "explanation",
]


def plan(name: str, n_cases: int = 5, seed: int = 0, edge_cases: bool = False) -> Request:
    """The inputs of one ``check``, drawn by whoever judges it (the grader's process while grading)."""
    ex = exercise(name)
    trials = ex.trials(edge_cases) if ex.trials is not None else _cases(ex, n_cases, seed, edge_cases)
    return Request(name, tuple(trials), tuple(ex.static_argnums), tuple(ex.module_argnums), tuple(ex.requires),
                   ex.reference_class, ex.max_equations)


def judge(request: Request, outcome) -> str:
    """The verdict on ``outcome`` (what :func:`evaluate` returned for ``request``): the line a passing check prints,
    or a CheckFailure. Computes the references and the hints itself: nothing but the outputs is taken from
    the student's process."""
    name = request.name
    ex = exercise(name)
    if not _isinstance(outcome, dict):
        malformed(name)
    if "malformed" in outcome:  # what decode_outcome refused (execute.py), said in a few words
        malformed(name, str(outcome["malformed"]))
    if "missing" in outcome:
        err = outcome["missing"] if _isinstance(outcome["missing"], dict) else {}
        fail(name, [f"the test could not find your answer: {str(err.get('type'))[:100]}: {str(err.get('line'))[:MAX_TEXT]}",
                    "Run the cell that defines it (and every cell above it) before this test."])
    if "not_callable" in outcome:
        fail(name, [f"expected a function, got {str(outcome['not_callable'])[:100]}. Did a later cell overwrite `{name}`?"])
    unrolled = outcome.get("unrolled") if _isinstance(outcome.get("unrolled"), dict) else None
    if "unrolled" in outcome and "results" not in outcome:
        info = unrolled or {}
        index = info.get("trial") if _isinstance(info.get("trial"), int) else 0
        args = request.trials[index] if 0 <= index < _len(request.trials) else ()
        arg_names = list(inspect.signature(ex.reference).parameters) if ex.reference is not None else \
            [f"argument {i + 1}" for i in range(_len(args))]
        fail(name, [*unrolled_lines(ex, info, passed=False), "The input was:", describe_args(arg_names, args)])
    advice = "".join("\n  " + line for line in unrolled_lines(ex, unrolled, passed=True)) if unrolled is not None else ""
    results, calls = outcome.get("results"), outcome.get("calls")
    if not _isinstance(results, list) or _len(results) != _len(request.trials) or not _isinstance(calls, dict):
        malformed(name)
    if ex.judge is not None:
        summary = ex.judge(ex, request.trials, results)
        judge_class_not_reference(ex, calls)
        return f"{name}: {summary}{advice}"
    arg_names = list(inspect.signature(ex.reference).parameters)
    notes = []
    for number, (args, record) in enumerate(_zip(request.trials, results), start=1):
        got = student_output(ex, record, arg_names, args)
        notes += text_list(record.get("notes", []))[:20]
        expected, widen = expected_output(ex, args)
        problem = compare(expected, got, ex.rtol, ex.atol, ex.output_names, widen)
        if problem is None:
            continue
        lines = [f"wrong output on test input {number} of {_len(request.trials)}.", "The input was:",
                 describe_args(arg_names, args),
                 f"  expected: {describe_value(expected)}",
                 f"  got:      {describe_value(got) if got is not None else None}",
                 *("  " + line for line in problem)]
        lines += explanation(ex, request.trials, results, number - 1, expected, got)
        lines += dependency_lines(ex)
        fail(name, lines)
    if ex.requires and calls.get("has_required") is False:
        fail(name, [ex.requires_message or f"it must use one of {ex.requires}."])
    judge_not_reference(ex, calls)
    n = _len(request.trials)
    return f"{name}: passed {n} of {n} test inputs." + "".join("\n  " + note for note in dict.fromkeys(notes)) + advice


def verdict(request: Request, outcome) -> tuple[bool, str]:
    """(passed, the line it prints or the checker's message) for ``outcome``: how the grader judges a check.
    Never raises: an error while judging (a reply that is well-formed but absurd) fails the check.
    Its text is at most MAX_MESSAGE characters (``clip_message``), whatever the outputs it describes."""
    try:
        with at_precision():
            return True, clip_message(judge(request, outcome))
    except CheckFailure as exc:
        return False, clip_message(str(exc))
    except Exception as exc:  # noqa: BLE001 - RecursionError and MemoryError included: the check fails
        return False, clip_message(f"{request.name}: the grader could not judge your function's results "
                                   f"({type(exc).__name__}: {first_line(exc)}). If your code looks right, "
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
    exercise(name)  # an unknown name is the notebook's error, raised as it is
    try:
        with at_precision():
            request = plan(name, n_cases, seed, edge_cases)
            outcome = decode_outcome(encode_outcome(evaluate(request, fn)))
            summary = judge(request, outcome)
    except CheckFailure:
        raise
    except NotImplementedError:
        fail(name, ["not implemented yet. Replace `raise NotImplementedError()` with your code."])
    except Exception as exc:  # noqa: BLE001 - any other error, in words
        where = _error_lines(exc) or ["  (the error is not in a line of your notebook: if your code looks right, tell your instructor)"]
        fail(name, [f"testing it raised {type(exc).__name__}: {first_line(exc)}", *where])
    print(summary)


# ---------------------------------------------------------------- helpers

def _error_lines(exc: BaseException) -> list:
    """The line of the student's code that raised ``exc``, as a list of zero or one message line."""
    where = student_line(exc)
    return [where] if where else []


def _cases(ex: Exercise, n_cases: int, seed: int, edge_cases: bool):
    """``n_cases`` random inputs drawn from ``seed`` (one numpy Generator each), and the edge cases if asked."""
    cases = [ex.make_case(np.random.default_rng([seed, i])) for i in range(n_cases)]
    if edge_cases:
        cases += ex.fixed_cases()
    return cases
