"""Kinds of exercise shared by several notebooks.

:func:`train_step_exercise` makes the exercise "write one optimisation step": the student's function
``step(model, optimizer, *batch)`` updates an ``nnx`` model and its ``nnx.Optimizer`` in place and returns the
loss. The checker builds the same model (the same reference weights) and the same optimizer on both sides, runs
the student's step and the reference step a few times on the same batches, and compares the losses, the
parameters after every step and the optimizer's step count. Known slips (gradient ascent, no update, a gradient
that is zero because the differentiated function ignores its argument, the loss after the update, a loss that
is not a scalar, ...) are recognised by running their variants the same way.

Usage (notebook 05's conditional step with label dropout would look like this)::

    from course_utils.exercises.kinds import StepSetup, train_step_exercise

    def _unet(rngs):                                  # module level: the kernel imports it by name
        return models.TwoPixelUNet(T=50, rngs=rngs)

    def _adam():
        return optax.adam(1e-2, eps=1e-4)

    def _batches(rng, n_steps):                       # numpy arrays only; one tuple per step
        return [(x0, y, t, noise, alpha_bars, key_data, np.float32(0.2)) for ...]

    register(train_step_exercise(
        "conditional_train_step", guidance.conditional_train_step,
        setups=[StepSetup(_unet, _adam, _batches, "Adam (learning rate 0.01)")],
        edge_setups=[...],                            # added by check(..., edge_cases=True)
        hints=[Hint(_ascent_variant, "...")],         # step functions with the student's signature
        arg_names=("x0", "y", "t", "noise", "alpha_bars", "key", "p_uncond"),
        depends_on=("drop_labels",)))

Everything that crosses from the grader to the kernel is plain data: the factories are module-level functions
(pickled by name), the batches numpy arrays, and the reference weights the model's parameters as numpy arrays
(made on the grader's side from ``model(nnx.Rngs(seed))`` and loaded into the kernel's model), so both
processes start from identical states. Randomness inside a step must come from its arguments (pass a key's
data, ``jax.random.key_data(key)``, as an array).
"""

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..grading import (JIT_ADVICE, Exercise, Hint, Trial, at_precision, binds, dependency_lines, error_record, fail,
                       forbidden_references, malformed, matches, unwritten_lines)
from ..grading.compiled import traced_references
from ..grading.memo import fingerprint, once


@dataclasses.dataclass(frozen=True)
class StepSetup:
    """One configuration of a training-step exercise: what to build and what to feed it.

    ``model(rngs)`` returns a fresh ``nnx.Module``; ``optimizer()`` returns an optax transformation (wrapped in
    ``nnx.Optimizer(model, ..., wrt=nnx.Param)``); ``batches(rng, n_steps)`` returns ``n_steps`` tuples of the
    arguments after ``(model, optimizer)``, as numpy arrays, drawn with the numpy Generator ``rng``. All three must be
    module-level functions (or ``functools.partial`` of them). ``label`` names the optimizer in messages.
    """

    model: Callable
    optimizer: Callable
    batches: Callable
    label: str = "the optimizer"
    seed: int = 0


@functools.lru_cache(maxsize=None)
def _initial_params(model_factory, seed):
    """The reference weights: the parameters of ``model_factory(nnx.Rngs(seed))`` as numpy arrays (leaf order)."""
    model = model_factory(nnx.Rngs(seed))
    return tuple(np.asarray(p) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


def build(trial: "StepTrial"):
    """(model, optimizer) of ``trial``: the model with the trial's weights, a fresh ``nnx.Optimizer``. The same on both sides."""
    model = trial.model(nnx.Rngs(trial.seed))
    state = nnx.state(model, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    if len(leaves) != len(trial.params):
        raise ValueError("the trial's weights do not fit its model")
    nnx.update(model, jax.tree.unflatten(tree, [jnp.asarray(p, l.dtype) for p, l in zip(trial.params, leaves)]))
    return model, nnx.Optimizer(model, _transformation(trial.optimizer), wrt=nnx.Param)


@functools.lru_cache(maxsize=None)
def _transformation(factory):
    """One optax object per factory: it is part of the optimizer's graph definition, so a new object would mean a
    new compilation of every step."""
    return factory()


def _one_step(fn, graphdef, state, args):
    model, optimizer = nnx.merge(graphdef, state)
    loss = fn(model, optimizer, *args)
    return loss, nnx.state((model, optimizer))


_one_step_jitted = jax.jit(_one_step, static_argnums=(0, 1))


def _flat_params(model) -> np.ndarray:
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return np.concatenate([np.asarray(p, np.float32).reshape(-1) for p in leaves])


def _count(optimizer) -> int:
    """The optimizer's step count (``nnx.Optimizer.step``), read without a deprecation warning on any flax version."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return int(np.asarray(jax.tree.leaves(optimizer.step)[0]))


def _describe_loss(loss):
    """The returned loss as plain data: {"loss": array} for an array, else {"loss_kind": what it is}."""
    if loss is None:
        return {"loss_kind": "None"}
    if isinstance(loss, (tuple, list)):
        return {"loss_kind": f"a {type(loss).__name__} of {len(loss)} values"}
    if isinstance(loss, (jax.Array, np.ndarray, np.generic, float, int)):
        return {"loss": np.asarray(loss)}
    return {"loss_kind": f"a {type(loss).__name__}"}


def run_steps(trial: "StepTrial", fn, find_references=False) -> dict:
    """Build ``trial``'s model and optimizer, take one compiled step ``fn(model, optimizer, *batch)`` per batch, and
    record plain data: per step the returned loss, the parameters (flattened) and the optimizer's step count; the
    reference markers in the compiled step; or the error and the step it happened at. Runs the student's answer
    in the kernel, and the reference and the hints' variants in the grader: the same code on both sides
    (``find_references`` traces the step once more to list the reference markers: for the student's run)."""
    with at_precision():
        try:
            model, optimizer = build(trial)
        except Exception as exc:  # noqa: BLE001 - the course's own factories: not the student's fault
            return {"setup_error": error_record(exc)}
        graphdef, state = nnx.split((model, optimizer))
        record = {"losses": [], "params": [], "counts": [], "references": []}
        for k, args in enumerate(trial.batches):
            args = tuple(jnp.asarray(a) for a in args)
            try:
                if k == 0 and find_references:
                    record["references"] = traced_references(lambda st, a: _one_step(fn, graphdef, st, a), state, args)
                loss, state = _one_step_jitted(fn, graphdef, state, args)
                model, optimizer = nnx.merge(graphdef, state)
                record["params"].append(_flat_params(model))
                record["counts"].append(_count(optimizer))
                record["losses"].append(_describe_loss(jax.tree.map(np.asarray, loss) if loss is not None else None))
            except Exception as exc:  # noqa: BLE001 - explained by the grader
                signature_ok = not isinstance(exc, TypeError) or binds(fn, (model, optimizer, *args))
                record["error"] = error_record(exc, signature_ok)
                record["error"]["at_step"] = k
                break
        return record


@dataclasses.dataclass(frozen=True)
class StepTrial(Trial):
    """One run of a training-step exercise: a setup's factories, its reference weights and its batches."""

    model: Callable
    optimizer: Callable
    batches: tuple
    params: tuple
    label: str = "the optimizer"
    seed: int = 0

    def run(self, fn) -> dict:
        return run_steps(self, fn, find_references=True)


def _trials(setups, edge_setups, n_steps, edge_cases, offset):
    chosen = list(setups) + (list(edge_setups) if edge_cases else [])
    trials = []
    for number, setup in enumerate(chosen):
        rng = np.random.default_rng([offset, number])
        batches = tuple(tuple(np.asarray(a) for a in batch) for batch in setup.batches(rng, n_steps))
        trials.append(StepTrial(setup.model, setup.optimizer, batches, _initial_params(setup.model, setup.seed),
                                setup.label, setup.seed))
    return trials


# ---------------------------------------------------------------- the grader's side


def _valid_record(name, record, n_steps):
    if not isinstance(record, dict):
        malformed(name)
    if "error" in record or "setup_error" in record:
        return
    for key in ("losses", "params", "counts"):
        if not isinstance(record.get(key), list) or len(record[key]) != n_steps:
            malformed(name)


def _same_run(a, b, rtol, atol) -> bool:
    """Whether two records of :func:`run_steps` agree (the losses, the parameters and the counts of every step)."""
    if not (isinstance(a, dict) and isinstance(b, dict)) or "error" in a or "error" in b:
        return False
    if any(len(a.get(k, [])) != len(b.get(k, [])) for k in ("losses", "params", "counts")):
        return False
    for la, lb in zip(a["losses"], b["losses"]):
        if not (isinstance(la, dict) and isinstance(lb, dict)) or ("loss" in la) != ("loss" in lb):
            return False
        if "loss" in la and not matches(la["loss"], lb["loss"], rtol, atol):
            return False
        if "loss" not in la and la.get("loss_kind") != lb.get("loss_kind"):
            return False
    return (list(a["counts"]) == list(b["counts"]) and
            all(matches(pa, pb, rtol, atol) for pa, pb in zip(a["params"], b["params"])))


def _run_steps_once(trial: "StepTrial", fn) -> dict:
    """:func:`run_steps` of a reference or a hint's variant, in the grader: once per process for a trial, since every
    student is judged on the same trials (:mod:`course_utils.grading.memo`)."""
    return once(fn, ("steps", fingerprint(trial)), lambda: run_steps(trial, fn))


def _parameter_name(trial, index) -> str:
    """The name of the parameter that holds flat index ``index`` (``hidden[0].kernel[3, 1]``)."""
    model = trial.model(nnx.Rngs(trial.seed))
    flat, _ = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))
    start = 0
    for path, leaf in flat:
        size = int(np.size(leaf))
        if index < start + size:
            where = np.unravel_index(index - start, np.shape(leaf)) if np.ndim(leaf) else ()
            name = "".join(str(getattr(p, "key", getattr(p, "idx", p))) if i == 0 else
                           (f"[{p.idx}]" if hasattr(p, "idx") else f".{getattr(p, 'key', p)}")
                           for i, p in enumerate(path))
            return name.replace(".value", "") + (f"[{', '.join(str(int(w)) for w in where)}]" if where else "")
        start += size
    return f"number {index}"


class TrainStepKind:
    """The judge of a training-step exercise (see :func:`train_step_exercise`)."""

    def __init__(self, reference, arg_names, rtol, atol, forbidden=()):
        self.reference, self.arg_names, self.rtol, self.atol = reference, tuple(arg_names), rtol, atol
        self.forbidden = tuple(forbidden)

    def __call__(self, ex, trials, results) -> str:
        name = ex.name
        for number, (trial, record) in enumerate(zip(trials, results), start=1):
            self._judge_trial(ex, trial, record, number, len(trials))
        return (f"passed {len(trials)} of {len(trials)} test runs ({len(trials[0].batches)} steps each, "
                f"{', '.join(dict.fromkeys(t.label for t in trials))}): the same losses and parameters as the reference.")

    def _where(self, trial, number, total):
        return f"test run {number} of {total} ({trial.label}, {len(trial.batches)} steps from the same weights)"

    def _judge_trial(self, ex, trial, record, number, total):
        name, n_steps = ex.name, len(trial.batches)
        _valid_record(name, record, n_steps)
        where = self._where(trial, number, total)
        if "setup_error" in record:
            fail(name, ["the test could not build its model and optimizer. Restart the kernel and run every cell "
                        "in order; if it persists, tell your instructor."])
        forbidden = forbidden_references(record.get("references"), self.reference, name, also=self.forbidden)
        if forbidden:
            fail(name, [f"it calls the reference implementation {forbidden[0]} instead of computing the step.",
                        "Write the step yourself; calling the course's reference earns no points for this exercise."])
        if "error" in record:
            self._explain_error(ex, trial, record["error"], where)
        expected = _run_steps_once(trial, self.reference)
        if "error" in expected:
            raise RuntimeError(f"the reference step failed: {expected['error']}")
        for k in range(n_steps):
            self._judge_loss_kind(ex, record["losses"][k], k, n_steps, where)
        if _same_run(expected, record, self.rtol, self.atol):
            return
        lines = [f"wrong result on {where}."] + self._first_difference(trial, expected, record)
        slips = [h.message for h in ex.hints if _same_run(_run_steps_once(trial, h.variant), record, self.rtol, self.atol)]
        lines += [f"Likely slip: {s}" for s in slips]
        if not slips:
            lines += self._diagnose(trial, expected, record)
        lines += dependency_lines(ex)
        fail(name, lines)

    def _explain_error(self, ex, trial, err, where):
        err = err if isinstance(err, dict) else {}
        kind, etype, line = err.get("kind"), str(err.get("type", "Exception"))[:100], str(err.get("line", ""))[:2000]
        at = err.get("at_step") if isinstance(err.get("at_step"), int) else 0
        found = [str(err["where"])[:2000]] if err.get("where") else []
        call = f"{ex.name}(model, optimizer, {', '.join(self.arg_names)})"
        if unwritten_lines(err):
            fail(ex.name, unwritten_lines(err))
        if kind == "signature":
            fail(ex.name, [f"calling it raised TypeError: {line}", f"Keep the signature given in the exercise: {call}."])
        lines = [f"step {at + 1} of {where} raised {etype}: {line}", *found]
        if kind == "jit":
            advice = JIT_ADVICE.get(etype)
            lines.insert(1, "It must work under jax.jit: the test compiles your step, as the training loop does.")
            lines += [f"The cause: {advice}"] if advice else []
        if "update" in line and ("grads" in line or "argument" in line):
            lines.append("With flax 0.11 and newer the call is optimizer.update(model, grads): the model first, then "
                         "the gradient of the loss with respect to its parameters.")
        lines += dependency_lines(ex)
        fail(ex.name, lines)

    def _judge_loss_kind(self, ex, loss, k, n_steps, where):
        if not isinstance(loss, dict):
            malformed(ex.name)
        if "loss" not in loss:
            what = str(loss.get("loss_kind", "something else"))[:100]
            if what == "None":
                fail(ex.name, [f"it returned None on {where}: did you forget `return loss`?",
                               "The model and the optimizer are updated in place; the function returns the loss."])
            fail(ex.name, [f"it returned {what} on {where}; return only the loss, a scalar.",
                           "The model and the optimizer are updated in place (nnx objects); nnx.value_and_grad gives "
                           "(loss, grads): return the loss, not the pair."])
        value = loss["loss"]
        if not isinstance(value, np.ndarray):
            malformed(ex.name)
        if value.shape != ():
            fail(ex.name, [f"the loss it returned has shape {value.shape} on {where}: it must be a scalar, shape ().",
                           "Average the squared errors over the batch and the coordinates (as ddpm_loss does), and return "
                           "that one number."])
        if not np.issubdtype(value.dtype, np.floating):
            fail(ex.name, [f"the loss it returned has dtype {value.dtype}: expected a floating-point scalar."])

    def _first_difference(self, trial, expected, record):
        initial = np.concatenate([np.asarray(p, np.float32).reshape(-1) for p in trial.params])
        for k in range(len(trial.batches)):
            e_loss, g_loss = float(expected["losses"][k]["loss"]), float(record["losses"][k]["loss"])
            lines = []
            if not matches(e_loss, g_loss, self.rtol, self.atol):
                lines.append(f"  step {k + 1}: the loss it returned is {g_loss:.6g}, expected {e_loss:.6g}")
            e, g = np.asarray(expected["params"][k], np.float64), np.asarray(record["params"][k], np.float64)
            if g.shape != e.shape:
                lines.append(f"  after step {k + 1} the model has {g.size} parameters, expected {e.size}")
                return lines
            bad = np.abs(g - e) > self.atol + self.rtol * np.abs(e)
            if bad.any():
                i = int(np.argmax(np.abs(g - e)))
                moved = np.abs(g - initial) if k == 0 else np.abs(g - np.asarray(record["params"][k - 1], np.float64))
                lines.append(f"  after step {k + 1}: {int(bad.sum())} of {e.size} parameters differ from the reference's; "
                             f"the largest difference is in {_parameter_name(trial, i)} (expected {e[i]:.6g}, got {g[i]:.6g})")
                if not moved.any():
                    lines.append(f"  step {k + 1} did not change any parameter")
            if record["counts"][k] != expected["counts"][k]:
                lines.append(f"  after step {k + 1} the optimizer has counted {record['counts'][k]} updates, "
                             f"expected {expected['counts'][k]}")
            if lines:
                return lines
        return []

    def _diagnose(self, trial, expected, record):
        initial = np.concatenate([np.asarray(p, np.float32).reshape(-1) for p in trial.params])
        unchanged = all(np.array_equal(np.asarray(p, np.float32), initial) for p in record["params"])
        if unchanged and record["counts"][-1] == 0:
            return ["  The parameters never change and the optimizer counts no update: call optimizer.update(model, grads)."]
        if unchanged:
            return ["  The optimizer is updated but the parameters never change: the gradient you pass is zero. "
                    "Differentiate a function of the model it receives (nnx.value_and_grad(loss_fn)(model, ...))."]
        e_step = np.asarray(expected["params"][0], np.float64) - initial
        g_step = np.asarray(record["params"][0], np.float64) - initial
        if np.all(np.abs(g_step + e_step) <= self.atol + self.rtol * np.abs(e_step)):
            return ["  The first step moved every parameter by minus the expected change: the gradient's sign is flipped."]
        return []


def train_step_exercise(name: str, reference: Callable, *, setups: Sequence[StepSetup],
                        edge_setups: Sequence[StepSetup] = (), hints: Sequence[Hint] = (),
                        arg_names: Sequence[str] = ("x0", "t", "noise", "alpha_bars"), n_steps: int = 3,
                        depends_on: tuple = (), rtol: float = 1e-4, atol: float = 1e-6, seed: int = 0,
                        forbidden: Sequence[Callable] = ()) -> Exercise:
    """The exercise "write one optimisation step ``name(model, optimizer, *arg_names)``, return the loss".

    ``reference`` is the course's step (marked with ``_validate.marked``: an answer that calls it earns nothing).
    Each of ``setups`` (and of ``edge_setups`` with ``check(..., edge_cases=True)``) is one test run of ``n_steps``
    steps from the reference weights; the student's run passes when every returned loss is a scalar equal to the
    reference's and the parameters and the optimizer's step count after every step equal the reference's (to
    ``rtol``/``atol``). ``hints`` are :class:`~course_utils.grading.Hint` objects whose variants are wrong step
    functions with the student's signature; a wrong run that matches one is reported with its message.
    ``depends_on`` names the earlier exercises the step calls (the student's loss, say). Register the result
    with :func:`course_utils.grading.register`. See the module docstring for an example. ``forbidden``: other
    marked references that do the whole step (an earlier notebook's step of the same signature); an answer that
    calls one earns nothing, as one that calls ``reference``.
    """
    kind = TrainStepKind(reference, arg_names, rtol, atol, forbidden)
    return Exercise(name=name, reference=None, hints=tuple(hints), rtol=rtol, atol=atol, depends_on=tuple(depends_on),
                    trials=functools.partial(_trials, tuple(setups), tuple(edge_setups), n_steps, offset=seed),
                    judge=kind)
