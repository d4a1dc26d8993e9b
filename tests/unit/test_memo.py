"""The grader's per-process store (``course_utils/grading/memo.py``): what depends only on the trials is computed
once for a class, and never handed to another function or to other inputs."""

import dataclasses
import functools

import numpy as np
from flax import nnx

from course_utils import grading
from course_utils.grading import memo
from course_utils.grading.memo import fingerprint, once


def test_a_value_is_computed_once_per_function_and_inputs():
    calls = []

    def reference(x):
        calls.append(x)
        return x * 2

    x = np.arange(3.0)
    for _ in range(3):
        assert once(reference, ("t", fingerprint((x,))), lambda: reference(x)).tolist() == [0.0, 2.0, 4.0]
    assert len(calls) == 1
    y = x.copy()
    y[1] = 5.0
    once(reference, ("t", fingerprint((y,))), lambda: reference(y))  # other inputs: computed
    assert len(calls) == 2


def test_another_function_at_a_freed_address_is_never_given_the_old_value():
    key = ("t", fingerprint((1,)))
    for value in range(20):  # new functions, some at addresses of freed ones
        fn = (lambda v: lambda: v)(value)
        assert once(fn, key, fn) == value


def test_fingerprints_tell_apart_values_shapes_dtypes_nesting_and_dataclass_fields():
    a = np.zeros((2, 3), np.float32)
    prints = {fingerprint(v) for v in [(a,), (a.reshape(3, 2),), (a.astype(np.float64),), ((a,),), ([a],),
                                       (a, 1), (a, 1.0), (a, "1"), (np.ones((2, 3), np.float32),)]}
    assert len(prints) == 9

    @dataclasses.dataclass(frozen=True)
    class Trial:
        batches: tuple
        label: str = "x"
        model: object = None

    base = Trial((a,), "x", functools.partial(int, base=2))
    assert fingerprint(base) == fingerprint(Trial((a.copy(),), "x", functools.partial(int, base=2)))
    assert fingerprint(base) != fingerprint(Trial((a + 1,), "x", base.model))
    assert fingerprint(base) != fingerprint(Trial((a,), "y", base.model))
    assert fingerprint(base) != fingerprint(Trial((a,), "x", functools.partial(int, base=3)))


def test_modules_are_told_apart_by_their_weights():
    m1, m2 = nnx.Linear(2, 2, rngs=nnx.Rngs(0)), nnx.Linear(2, 2, rngs=nnx.Rngs(1))
    assert fingerprint((m1,)) != fingerprint((m2,))
    assert fingerprint((m1,)) == fingerprint((nnx.Linear(2, 2, rngs=nnx.Rngs(0)),))


def test_a_class_is_judged_with_one_run_of_the_reference_per_trial(monkeypatch):
    """Judging many students on one plan computes each trial's expected output once; the verdicts do not change.
    (A fresh plan: new arrays with the same values are the same trial.)"""
    from course_utils.grading import expected

    runs = []
    compute = expected._expected_output
    monkeypatch.setattr(expected, "_expected_output", lambda ex, args: runs.append(1) or compute(ex, args))

    def right(x_prev, beta):
        import jax.numpy as jnp
        return jnp.sqrt(1 - beta) * x_prev

    def wrong(x_prev, beta):
        return (1 - beta) * x_prev

    verdicts = []
    for fn in [right, wrong, right, wrong]:
        request = grading.plan("forward_mean", n_cases=4, seed=12345)
        verdicts.append(grading.verdict(request, grading.evaluate(request, fn))[0])
    assert verdicts == [True, False, True, False]
    assert len(runs) == 4, f"{len(runs)} runs of the reference for 4 trials judged 4 times"
    other = grading.plan("forward_mean", n_cases=4, seed=54321)
    grading.verdict(other, grading.evaluate(other, right))
    assert len(runs) == 8, "other trials must be computed, never served from the store"


def test_the_store_is_bounded_in_bytes(monkeypatch):
    monkeypatch.setattr(memo, "MAX_BYTES", 10_000)
    big = np.zeros(1000)  # 8,000 bytes: two never fit together

    def owner():
        return big

    once(owner, "a", owner)
    once(owner, "b", owner)
    assert memo._BYTES[0] <= 10_000
    assert sum(1 for o, _ in memo._STORE.values() if o is owner) == 1
