"""The fresh set of students' answers (``fresh_answers.py``, issue 27) through the checker: every correct answer
passes, every wrong one fails, and most wrong ones get a message that names their slip, none a misleading one.

Run as a script to print the whole table and the counts (``python tests/unit/test_fresh_answers.py``); the test
runs the same set (several minutes on 2 cores: it is marked slow and grouped apart).
"""

import math
import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import course_utils as cu
from course_utils import grading
from course_utils.grading import CheckFailure
from course_utils.schedules import ScheduleSummary
from course_utils.unet import Conv, GroupNorm, Linear

try:
    from . import fresh_answers
except ImportError:  # run as a script
    import fresh_answers


def _groups(channels):
    return 8 if channels % 8 == 0 else 1


def _namespace() -> dict:
    """What a student's notebook holds when an answer runs: the imports and every correct answer above it."""
    ns = dict(jax=jax, jnp=jnp, np=np, nnx=nnx, cu=cu, math=math, ScheduleSummary=ScheduleSummary,
              Conv=Conv, GroupNorm=GroupNorm, Linear=Linear, groups=_groups)
    for source in fresh_answers.SOLUTIONS.values():
        exec(source, ns)  # noqa: S102 - the course's own solutions
    return ns


_BASE = None


def answer_function(name, old, new):
    """The answer's function (or class): the solution of ``name`` with ``old`` replaced by ``new``."""
    global _BASE
    if _BASE is None:
        _BASE = _namespace()
    ns = dict(_BASE)
    source = fresh_answers.SOLUTIONS[name]
    assert old in source, (name, old)
    exec(source.replace(old, new), ns)  # noqa: S102
    defined = re.search(r"^(?:def|class) (\w+)", source.replace(old, new).strip()).group(1)
    return ns[defined]


_NOT_EXPLAINING = ("    ", "  expected:", "  got:", "The input was:", "This exercise may call")


def explaining_lines(message: str) -> list:
    """The lines of a failure message that explain it (not the input shown, the values or the error's size)."""
    lines = []
    for line in message.splitlines()[1:]:
        if line.startswith(_NOT_EXPLAINING) or re.search(r"values are wrong; the largest error|wrong output on test input", line):
            continue
        lines.append(line)
    head = message.splitlines()[0] if message else ""
    return [head.split(":", 1)[-1], *lines]


def hinted(message: str) -> bool:
    """Whether the message offers a slip (a hint or a found edit), which then must be the right one."""
    return "Likely slip" in message


def run(answer):
    """(passed, message, seconds) of one answer through ``check`` with the hidden inputs."""
    name, old, new, _ = answer
    fn = answer_function(name, old, new)
    start = time.perf_counter()
    try:
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            grading.check(name, fn, n_cases=5, seed=11, edge_cases=True)
        return True, "", time.perf_counter() - start
    except CheckFailure as exc:
        return False, str(exc), time.perf_counter() - start


def classify(answer, passed, message) -> str:
    """ok / ok-failed / missed (a wrong answer passed) / named / misleading / unnamed."""
    pattern = answer[3]
    if pattern is None:
        return "ok" if passed else "ok-failed"
    if passed:
        return "missed"
    if any(re.search(pattern, line, re.IGNORECASE) for line in explaining_lines(message)):
        return "named"
    return "misleading" if hinted(message) else "unnamed"


def measure(answers=None, out=sys.stdout):
    """Run every answer; print one line per answer and the counts; return the counts."""
    answers = fresh_answers.ANSWERS if answers is None else answers
    counts, rows = {}, []
    for answer in answers:
        passed, message, seconds = run(answer)
        kind = classify(answer, passed, message)
        counts[kind] = counts.get(kind, 0) + 1
        rows.append((answer, kind, message, seconds))
        explain = " | ".join(line.strip() for line in explaining_lines(message))[:300] if message else ""
        print(f"{kind:10s} {seconds:5.1f}s {answer[0]:26s} {answer[2][:60]!r:64s} {explain}", file=out, flush=True)
    wrong = sum(1 for a in answers if a[3] is not None)
    print(f"\n{len(answers) - wrong} correct, {wrong} wrong: {counts}; named {counts.get('named', 0)} of {wrong} "
          f"({100 * counts.get('named', 0) / max(wrong, 1):.0f} %)", file=out)
    return counts, rows


@pytest.mark.slow
def test_fresh_answers():
    """The whole set, with the search's budget students get (counted, so the result does not depend on the
    machine's speed or load)."""
    counts, rows = measure()
    wrong = sum(1 for a in fresh_answers.ANSWERS if a[3] is not None)
    assert counts.get("ok-failed", 0) == 0, [(r[0], r[2]) for r in rows if r[1] == "ok-failed"]
    assert counts.get("missed", 0) == 0, [r[0] for r in rows if r[1] == "missed"]
    assert counts.get("misleading", 0) == 0, [(r[0], r[2]) for r in rows if r[1] == "misleading"]
    assert counts.get("named", 0) >= 0.8 * wrong


# The answers of two exercises: the default suite keeps the set runnable (the whole set is the slow test).
_SAMPLE = [a for a in fresh_answers.ANSWERS if a[0] in ("forward_mean", "guided_eps")]


@pytest.mark.parametrize("answer", _SAMPLE, ids=[f"{a[0]}-{i}" for i, a in enumerate(_SAMPLE)])
def test_a_fresh_answer_passes_when_right_and_fails_when_wrong(answer):
    passed, message, _ = run(answer)
    assert passed == (answer[3] is None), message


if __name__ == "__main__":
    # python tests/unit/test_fresh_answers.py [--json OUT] [exercise ...]
    args = sys.argv[1:]
    out_json = args.pop(args.index("--json") + 1) if "--json" in args else None
    args = [a for a in args if a != "--json"]
    counts, rows = measure([a for a in fresh_answers.ANSWERS if not args or a[0] in args])
    if out_json:
        import json
        try:
            from course_utils.grading import edits
        except ImportError:  # the checker before issue 27
            edits = None
        with open(out_json, "w") as f:
            json.dump([dict(answer=list(r[0]), kind=r[1], message=r[2], seconds=r[3]) for r in rows], f, indent=1)
        with open(out_json + ".searches", "w") as f:
            json.dump(getattr(edits, "TIMES", []), f)
