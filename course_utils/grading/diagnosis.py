"""Diagnosis: why a wrong output is wrong, in one sentence when the checker can tell.

Three sources, tried in order by :func:`explanation`: the exercise's hand-written hints (known wrong variants,
:class:`~.registry.Hint`) whose outputs match the student's on every input (:func:`explains`); one edit of the
reference's own code that does (:mod:`.edits`, :func:`found_edits`); and the shape of the error itself, a constant
factor, a sign, an offset, a shift by one step, a transpose (:func:`diagnose`). All of it runs in the grader's
process, on the student's outputs only.
"""

import warnings

import jax
import numpy as np

from .expected import expected_output
from .jitting import at_precision, jit_call
from .memo import fingerprint, once
from .kept import (abs as _abs, asarray as _asarray, isinstance as _isinstance, len as _len, to_float as _float,
                   zip as _zip)
from .registry import Exercise, Hint
from .values import compare, matches


def _run_variant(ex: Exercise, hint: Hint, args):
    """A hint's wrong variant on ``args``, compiled like the student's function (or None if it fails); once per
    process for a trial (:mod:`.memo`)."""
    def run():
        try:
            return jit_call(hint.variant, args, ex.static_argnums, ex.module_argnums)
        except Exception:  # noqa: BLE001 - a variant that does not apply to this input
            return None

    return once(hint.variant, ("variant", tuple(ex.static_argnums), tuple(ex.module_argnums), fingerprint(args)), run)


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
    mismatch is counted there instead of ending the test (for :func:`likely_hints`)."""
    informative = nan_only = student_finite = False
    for args, got, expected, widen in seen:
        out = run(args)
        if out is None:
            continue
        if not matches(out, got, ex.rtol, ex.atol, widen):
            if tally is None:
                return False
            tally[1] += 1
            continue
        if tally is not None:
            tally[0] += 1
        student_finite = student_finite or _any_finite(got)
        if not informative and not matches(out, expected, ex.rtol, ex.atol, widen):
            if _differs_where_finite(out, expected, ex.rtol, ex.atol, widen):
                informative = True
            else:
                nan_only = True
    return informative or (nan_only and student_finite)


def explaining_hints(ex: Exercise, seen) -> list:
    """The messages of the hand-written hints that explain the student's outputs on every input (:func:`explains`)."""
    return [h.message for h in ex.hints if explains(ex, lambda args, h=h: _run_variant(ex, h, args), seen)]


def likely_hints(ex: Exercise, seen) -> list:
    """The one hand-written hint that matches the input shown and most of the others (or nothing).

    A variant as ill-conditioned as sin(10000 t) differs from a student's equivalent code by float32 rounding on
    some inputs, so no hint explains every input. This looser test is the last resort: it is asked only when no
    hint and no edit of the reference (:func:`found_edits`) explains every input, since a different slip can
    agree with a hint on the inputs where both are small (``exp(-10000 i / half)`` and a linspace exponent)."""
    if not seen:
        return []
    first, likely = seen[0], []
    for h in ex.hints:
        run, tally = (lambda args, h=h: _run_variant(ex, h, args)), [0, 0]
        out = run(first[0])
        if out is None or not matches(out, first[1], ex.rtol, ex.atol, first[3]):
            continue
        if explains(ex, run, seen, tally) and tally[0] > tally[1] + 1:
            likely.append(h.message)
    return likely if _len(likely) == 1 else []


def _slip_lines(messages) -> list:
    """One line for the slips that explain the output: two or more give the same output on every test input."""
    messages = list(dict.fromkeys(messages))
    if not messages:
        return []
    if _len(messages) == 1:
        return [f"Likely slip: {messages[0]}"]
    return [f"Likely slip: {messages[0]} Or, with the same output on every test input: " + " Or: ".join(messages[1:])]


def _run_edit(run, args):
    """An edited reference (:mod:`.edits`) on ``args``, op by op at :data:`~.jitting.PRECISION` (or None)."""
    try:
        with at_precision(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return jax.tree_util.tree_map(_asarray, run(args))
    except Exception:  # noqa: BLE001 - an edit that does not run on this input
        return None


def _operations(ex: Exercise, args) -> int:
    """How many operations the reference runs on ``args`` (:func:`.edits.operation_count`): the cost of one try
    of an edit in the search's budget (kept per input by :func:`.edits.search`)."""
    from . import edits

    try:  # traced as compiled (the search itself runs under jax.disable_jit, where loops unroll or fail)
        with jax.disable_jit(False):
            traced = jax.make_jaxpr(lambda: jit_call(ex.reference, args, ex.static_argnums, ex.module_argnums))()
    except Exception:  # noqa: BLE001 - a reference that does not trace here: one operation
        return 1
    return edits.operation_count(traced.jaxpr)


def found_edits(ex: Exercise, seen, limit: int = 3) -> list:
    """The edits of the reference that explain the student's outputs (:func:`explains`), found by
    :func:`.edits.search`, described in words (at most ``limit``: more say nothing)."""
    if ex.reference is None or ex.judge is not None or not seen:
        return []
    from . import edits

    def cost(item):  # the smallest input first: most edits are told apart on any input, and it runs fastest
        return sum(int(np.size(a)) for a in item[0] if _isinstance(a, (np.ndarray, jax.Array)))

    cheap_first = sorted(seen, key=cost)
    try:
        found = edits.search(lambda run: explains(ex, run, cheap_first), ex.reference, ex.name, _run_edit,
                             lambda args: _operations(ex, args))
    except Exception:  # noqa: BLE001 - the search only adds a line: it never decides or breaks a verdict
        return []
    return [f"{d} (an edit of the reference that gives your outputs)" for d in found] if 0 < _len(found) <= limit else []


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
                if compare(e, g, 1e-4, 1e-6) is not None:
                    return diagnose(e, g)
            except Exception:  # noqa: BLE001
                return []
        return []
    try:
        return diagnose(expected, got)
    except Exception:  # noqa: BLE001
        return []


def explanation(ex: Exercise, trials, results, index: int, expected, got) -> list:
    """The lines that explain a wrong output on trial ``index`` (0-based; ``expected``, ``got``: its outputs): the
    hand-written hints that explain the student's outputs on every input, else the edits of the reference found
    by search that do, else the one hint that explains most inputs (:func:`likely_hints`), else the shape of the
    error (:func:`diagnose`) on this input or on all of them."""
    seen = _outputs_seen(ex, trials, results, index)
    slips = (_slip_lines(explaining_hints(ex, seen)) or _slip_lines(found_edits(ex, seen))
             or _slip_lines(likely_hints(ex, seen)))
    if slips:
        return slips
    return [f"  {line}" for line in _diagnose_outputs(expected, got) or _diagnose_all(ex, trials, results)]
