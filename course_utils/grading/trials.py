"""The student's side of a check: running the answer on the trials the grader chose.

:func:`evaluate` is the only step of a check that runs the student's code. A trial is an argument tuple (the
answer is called on it under jit, :func:`~.jitting.run_call`), a :class:`Build` (a class exercise: build the
student's class, load the reference's weights, call it) or a :class:`Trial` (an exercise kind that runs the answer
itself, such as a training step: :mod:`course_utils.exercises.kinds`). It returns plain data only, which
:mod:`.wire` carries to the grader: the outputs or the errors, and what the compiled code calls
(:mod:`.compiled`). In the notebook it runs in the kernel beside the other two steps; while grading, in the
student's kernel only (through :func:`~.wire.serve`).
"""

import dataclasses
import time
import warnings
from typing import Callable

import jax
import numpy as np

from .compiled import count_equations, jaxpr_of, references_in, traced_references
from .jitting import error_record, run_call
from .kept import enumerate as _enumerate, isinstance as _isinstance, issubclass as _issubclass


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
        return {"build_error": error_record(exc)}
    if trial.state is not None:
        try:
            nnx.update(model, trial.state)
        except Exception as exc:  # noqa: BLE001
            return {"state_error": error_record(exc)}
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
            return {"state_error": error_record(exc)}
    calls = [run_call(trial.forward, (model, *inputs), (), (0,)) for inputs in trial.inputs]
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


def _unrolled(request, fn):
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
            closed = jaxpr_of(fn, trial, request.static_argnums, request.module_argnums)
        except Exception:  # noqa: BLE001 - the error is reported when the trial runs
            continue
        n = count_equations(closed.jaxpr)
        if n > limit:
            return {"trial": i, "equations": int(n)}
    return None


UNJITTED_SECONDS = 60.0
"""How long an answer too large to compile (more than ``max_equations``) may run op by op, without jit, on all
the trials of one check before it fails as too slow."""


def _run_unjitted(request, fn):
    """The results of every trial run op by op (``jax.disable_jit``), or None when they take more than
    :data:`UNJITTED_SECONDS` (the trials left are not run)."""
    start, results = time.perf_counter(), []
    with jax.disable_jit(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for trial in request.trials:
            if time.perf_counter() - start > UNJITTED_SECONDS:
                return None
            results.append(_run_trial(request, fn, trial))
    return results if time.perf_counter() - start <= UNJITTED_SECONDS else None


def evaluate(request, fn) -> dict:
    """Run the student's ``fn`` (or a thunk returning it) on every trial of ``request``: the only part of a check
    that runs the student's code. Returns plain data: the outputs or errors, and what the compiled code calls."""
    if _isinstance(fn, Thunk):
        try:
            fn = fn.get()
        except Exception as exc:  # noqa: BLE001 - e.g. a NameError: the cell that defines it was not run
            return {"missing": error_record(exc)}
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
    results = [_run_trial(request, fn, trial) for trial in request.trials]
    return {"results": results, "calls": _introspect(request, fn)}


def _run_trial(request, fn, trial) -> dict:
    """The student's ``fn`` on one trial: a :class:`Trial` runs itself, a :class:`Build` builds the class and calls
    it, an argument tuple is passed to ``fn`` under jit."""
    if _isinstance(trial, Trial):
        return trial.run(fn)
    if _isinstance(trial, Build):
        return _run_build(fn, trial)
    return run_call(fn, trial, request.static_argnums, request.module_argnums)


def _introspect(request, fn) -> dict:
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
            info["references"] = traced_references(probe)
        else:
            closed = jaxpr_of(fn, first, request.static_argnums, request.module_argnums)
            info["references"] = sorted(references_in(closed.jaxpr))
            if request.requires:
                text = str(closed)
                info["has_required"] = any(f"{p}[" in text or f" {p} " in text for p in request.requires)
    except Exception:  # noqa: BLE001 - the values are checked anyway
        pass
    return info


class Thunk:
    """The student's function, looked up when the kernel evaluates a check (a NameError is reported, not raised)."""

    def __init__(self, get):
        self.get = get
