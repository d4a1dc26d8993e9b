"""The grader's half of a check: test cells it can run, replies it can read safely, answer cells it flags.

While grading (autograder/execute.py), the student's kernel only evaluates answers; the grader draws the
inputs, reads the reply as plain data and judges it. These tests cover that boundary without a kernel:
the in-kernel feedback and the grader go through the same plan -> evaluate -> encode -> decode -> judge.
"""

import base64
import io
import json
import pickle

import jax.numpy as jnp
import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from autograder import provenance
from autograder.execute import UnrunnableTestCell, _is_test_cell, parse_test_cell
from course_utils import grading
from notebook_tools import ASSIGNMENTS, solution_path, student_path


# ------------------------------------------------------------------ test cells the grader runs itself


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_every_test_cell_of_the_course_is_a_list_of_checks(name):
    """The grader runs only check(...) calls: every test cell of every notebook must be one (hidden tests too)."""
    nb = nbformat.read(solution_path(name), as_version=4)
    cells = [c for c in nb.cells if _is_test_cell(c)]
    assert cells
    for cell in cells:
        for exercise, answer, options in parse_test_cell(cell.source):
            assert exercise in grading.exercise_names()
            grading.plan(exercise, **options)  # the grader can draw its inputs


@pytest.mark.parametrize("source", [
    "print('passed')",
    "check('forward_mean', forward_mean)\nassert True",
    "check('forward_mean', lambda x, b: x)",
    "check('forward_mean', forward_mean, n_cases=int('5'))",
    "check('forward_mean', forward_mean, timeout=3)",
    "check(name, forward_mean)",
    "import os\ncheck('forward_mean', forward_mean)",
    "",
    "check('forward_mean'",
])
def test_anything_else_in_a_test_cell_is_refused(source):
    with pytest.raises(UnrunnableTestCell):
        parse_test_cell(source)


def test_a_test_cell_with_hidden_tests_parses_with_its_options():
    source = ('from course_utils.grading import check\ncheck("q_sample", q_sample)\n### BEGIN HIDDEN TESTS\n'
              'check("q_sample", q_sample, n_cases=30, seed=7, edge_cases=True)\n### END HIDDEN TESTS')
    assert parse_test_cell(source) == [("q_sample", "q_sample", {}),
                                       ("q_sample", "q_sample", {"n_cases": 30, "seed": 7, "edge_cases": True})]


# ------------------------------------------------------------------ the reply: plain data only


def _outcome(fn, name="q_sample"):
    request = grading.plan(name)
    return request, grading.evaluate(request, fn)


def test_a_reply_round_trips_and_is_judged_like_in_the_kernel():
    request, outcome = _outcome(lambda x0, a, e: jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * e)
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(outcome)))
    assert ok and text == "q_sample: passed 5 of 5 test inputs.", text
    request, outcome = _outcome(lambda x0, a, e: a * x0 + (1 - a) * e)
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(outcome)))
    assert not ok and text.startswith("q_sample: wrong output on test input 1 of 5."), text


@pytest.mark.parametrize("name,right,slip,named", [
    ("noise_loss_weight", lambda b, a, ab, s2: b * b / (2 * s2 * a * (1 - ab)),
     lambda b, a, ab, s2: b**2 / (2 * s2 * ab * (1 - ab)), "the weight's dependence on alpha_t and alpha_bar_t is wrong"),
])
def test_new_exercises_are_judged_on_the_grader_side(name, right, slip, named):
    """The grader's path (plan, evaluate in the kernel, encode, decode, verdict) for the exercises added by issue 16."""
    request = grading.plan(name, n_cases=8, seed=3, edge_cases=True)
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(grading.evaluate(request, right))))
    assert ok, text
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(grading.evaluate(request, slip))))
    assert not ok and "Likely slip" in text and named in text, text


def test_the_request_holds_inputs_but_no_expected_values():
    """What the kernel receives: the inputs only (the references run in the grader)."""
    request = grading.plan("posterior_mean", n_cases=30, seed=201, edge_cases=True)
    ex = grading.exercise("posterior_mean")
    expected = [np.asarray(grading.jit_call(ex.reference, args)) for args in request.trials]
    payload = pickle.dumps(request)
    assert not any(e.tobytes() in payload for e in expected if e.size > 1)


def _packed(arrays: dict, allow_pickle=False) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, allow_pickle=allow_pickle)
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("reply", [
    None, 42, "not json", "[]", "{}",
    json.dumps({"body": {"none": 1}}),  # no arrays
    json.dumps({"body": {"array": "a0"}, "arrays": "!!!not base64"}),
    json.dumps({"body": {"array": "a9"}, "arrays": _packed({})}),  # an array that is not there
    json.dumps({"body": {"pickle": "x"}, "arrays": _packed({})}),
    json.dumps({"body": {"int": "3"}, "arrays": _packed({})}),
    json.dumps({"body": {"seq": {"a": 1}}, "arrays": _packed({})}),
    json.dumps({"body": {"dict": [[1, {"none": 1}]]}, "arrays": _packed({})}),
    json.dumps({"body": {"array": "a0"}, "arrays": _packed({"a0": np.array([object()], dtype=object)}, allow_pickle=True)}),
    json.dumps({"body": {"array": "a0"}, "arrays": base64.b64encode(pickle.dumps({"a0": 1})).decode()}),
    json.dumps({"body": {"seq": [{"seq": []}] * 3, "x": 1, "y": 2}, "arrays": _packed({})}),
])
def test_a_malformed_or_hostile_reply_is_refused_without_running_anything(reply):
    with pytest.raises(grading.ReplyError):
        grading.decode_outcome(reply)


def test_a_deeply_nested_reply_is_refused():
    body = {"none": 1}
    for _ in range(200):
        body = {"seq": [body]}
    with pytest.raises(grading.ReplyError):
        grading.decode_outcome(json.dumps({"body": body, "arrays": _packed({})}))


@pytest.mark.parametrize("outcome", [
    {}, {"results": "x", "calls": {}}, {"results": [], "calls": {}}, {"results": [{}] * 5, "calls": {}},
    {"results": [{"error": "x"}] * 5, "calls": {}}, {"malformed": "x"}, {"results": [{"out": None}] * 5, "calls": []},
])
def test_a_well_formed_but_absurd_reply_fails_the_check(outcome):
    ok, text = grading.verdict(grading.plan("q_sample"), outcome)
    assert not ok and text.startswith("q_sample: "), text


def test_a_forged_reply_needs_the_right_numbers():
    """A reply claiming success earns nothing: the grader only compares outputs with its own references."""
    request = grading.plan("simple_loss")
    forged = {"results": [{"out": np.float32(0.0), "notes": ["passed"]}] * len(request.trials),
              "calls": {"references": [], "has_required": True}}
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(forged)))
    assert not ok and "wrong output" in text


def _train_step_right(model, optimizer, x0, t, noise, alpha_bars):
    from flax import nnx

    from course_utils import training

    loss, grads = nnx.value_and_grad(training.ddpm_loss)(model, x0, t, noise, alpha_bars)
    optimizer.update(model, grads)
    return loss


def _train_step_ascent(model, optimizer, x0, t, noise, alpha_bars):
    import jax
    from flax import nnx

    from course_utils import training

    loss, grads = nnx.value_and_grad(training.ddpm_loss)(model, x0, t, noise, alpha_bars)
    optimizer.update(model, jax.tree.map(lambda g: -g, grads))
    return loss


def test_a_training_step_crosses_to_the_kernel_as_plain_data_and_is_judged_by_the_grader():
    """train_step's request holds factories (by name) and arrays; the kernel builds the same model and optimizer,
    runs the answer and sends back losses and parameters; the grader runs the reference and the hints itself."""
    from course_utils.exercises import kinds

    request = grading.plan("train_step", edge_cases=True)
    kernel_request = pickle.loads(pickle.dumps(request))
    assert len(kernel_request.trials) == 4
    for trial in kernel_request.trials:
        assert isinstance(trial, kinds.StepTrial)
        assert all(type(p) is np.ndarray for p in trial.params)
        assert all(type(a) is np.ndarray for batch in trial.batches for a in batch)
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(
        grading.evaluate(kernel_request, _train_step_right))))
    assert ok and text.startswith("train_step: passed 4 of 4 test runs"), text
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(
        grading.evaluate(kernel_request, _train_step_ascent))))
    assert not ok and "Likely slip: gradient ascent" in text, text


def test_a_forged_training_step_reply_needs_the_right_numbers():
    request = grading.plan("train_step")
    outcome = grading.evaluate(request, _train_step_right)
    for record in outcome["results"]:
        record["params"] = [p + 1e-3 for p in record["params"]]
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(outcome)))
    assert not ok and "parameters differ from the reference's" in text, text
    outcome = grading.evaluate(request, _train_step_right)
    for record in outcome["results"]:
        record["counts"] = record["counts"][:1]
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(outcome)))
    assert not ok and "malformed" in text, text


def test_objects_that_are_not_data_come_back_as_their_type_name():
    class Sneaky:
        def __array__(self, *a, **k):
            raise RuntimeError("boom")

    decoded = grading.decode_outcome(grading.encode_outcome({"results": [{"out": Sneaky()}], "calls": {}}))
    assert type(decoded["results"][0]["out"]).__name__ == "Sneaky"


# ------------------------------------------------------------------ answer cells the grader flags


def _notebook(*answers):
    nb = new_notebook()
    nb.cells = [new_code_cell("import course_utils as cu\nimport jax.numpy as jnp")]
    for source in answers:
        cell = new_code_cell(source)
        cell.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": f"a{len(nb.cells)}", "locked": False}
        nb.cells.append(cell)
    return nb


@pytest.mark.parametrize("answer,reason", [
    ("q_sample = cu.forward.q_sample.__wrapped__", "__wrapped__"),
    ("def q_sample(x0, a, e):\n    return cu.forward.q_sample(x0, a, e)", "cu.forward.q_sample"),
    ("f = cu.forward.q_sample\ndef q_sample(x0, a, e):\n    return f(x0, a, e)", "cu.forward.q_sample"),
    ("from course_utils.forward import q_sample", "imports the course's `q_sample`"),
    ("from course_utils.losses import simple_loss as mine", "imports the course's `simple_loss`"),
    ("import course_utils.grading as g\ng._REGISTRY.clear()", "course_utils.grading"),
    ("from course_utils import grading", "course_utils.grading"),
    ("import sys\nsys.modules['course_utils.grading'] = None", "sys.modules"),
    ("import sys\nsys.displayhook('ok')", "display hook"),
    ("get_ipython().input_transformers_post.append(lambda lines: [])", "IPython"),
    ("import sys\nframe = sys._getframe(1)", "stack frames"),
    ("def q_sample(x0, a, e):\n    return eval('x0')", "eval"),
    ("exec('print(1)')", "exec"),
    ("import inspect", "imports `inspect`"),
    ("f = getattr(cu.forward, 'q_' + 'sample')", "getattr"),
    ("f = cu.forward.__dict__['q_sample']", "__dict__"),
    ("g = (lambda: 0).__globals__", "__globals__"),
    ("import ctypes", "ctypes"),
    ("import builtins\nbuiltins.abs = lambda x: 0", "builtins"),
])
def test_answers_that_reach_for_the_reference_or_the_interpreter_are_flagged(answer, reason):
    found = provenance.flags(_notebook(answer))
    assert list(found) == [1], found
    assert any(reason in r for r in found[1]), found


@pytest.mark.parametrize("answer", [
    "def q_sample(x0, alpha_bar_t, noise):\n    return jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise",
    "import os, sys\nimport numpy as np\nfrom jax import lax\nimport functools\n"
    "def diffuse(x0, betas, noises):\n    def step(x, inp):\n        b, z = inp\n        x = jnp.sqrt(1 - b) * x + jnp.sqrt(b) * z\n"
    "        return x, x\n    _, xs = lax.scan(step, x0, (betas, noises))\n    return jnp.concatenate([x0[None], xs])",
    "def linear_betas(T, beta_start, beta_end):\n    schedule = cu.schedules.make_schedule(jnp.linspace(beta_start, beta_end, T))\n"
    "    return schedule.betas",
    "from flax import nnx\nclass TwoPixelUNet(cu.models.TwoPixelUNet):\n    def __call__(self, x, t, y):\n        return x",
    "print(getattr(cu, 'schedules'))",
    "sched = cu.schedules.make_schedule(jnp.linspace(1e-4, 0.02, 10))\nab = sched.alpha_bars",
])
def test_ordinary_answers_are_not_flagged(answer):
    assert provenance.flags(_notebook(answer)) == {}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_course_notebooks_are_not_flagged(name):
    for path in (solution_path(name), student_path(name)):
        assert provenance.flags(nbformat.read(path, as_version=4)) == {}, path


def test_the_reference_code_itself_is_flagged_up_to_names_and_formatting():
    """diffuse's reference, renamed and reformatted, with a docstring and comments of the student's own."""
    answer = '''def diffuse(start, bs, zs):
    """My own docstring."""
    def one(carry, inputs):
        # one step
        b, z = inputs
        nxt = jnp.sqrt(1 - b) * carry + jnp.sqrt(b) * z
        return nxt, nxt
    import jax
    _, xs = jax.lax.scan(one, start, (bs, zs))
    return jnp.concatenate([start[None], xs], axis=0)
'''
    import inspect

    from course_utils._validate import unmarked
    from course_utils import forward

    source = inspect.getsource(unmarked(forward.diffuse))
    renamed = source.replace("x0", "start").replace("betas", "bs").replace("noises", "zs")
    found = provenance.flags(_notebook(renamed))
    assert found and "the course's reference code" in found[1][0], (found, source)
    assert provenance.canonical(source)[1] >= provenance.MIN_COPY_NODES
    assert provenance.flags(_notebook(answer)) == {} or "reference code" not in str(provenance.flags(_notebook(answer)))


def test_the_grader_keeps_its_compiled_references_in_its_own_cache(tmp_path):
    """Each worker's grader process has a compilation cache of its own, outside every kernel's sandbox."""
    from autograder import course

    course.write_config(tmp_path, jax_cache=tmp_path / "jax-cache")
    config = (tmp_path / "nbgrader_config.py").read_text()
    assert f"c.LimitedExecute.grader_jax_cache = {str(tmp_path / 'grader-jax-cache')!r}" in config
    course.write_config(tmp_path, jax_cache=None)
    assert "c.LimitedExecute.grader_jax_cache = ''" in (tmp_path / "nbgrader_config.py").read_text()


# ------------------------------------------------------------------ a sampler exercise with a model in its inputs


def _ddim_right(model, x_T, y, w, timesteps, alpha_bars):
    import jax

    def body(x, pair):
        t, t_prev = pair
        steps = jnp.full((x.shape[0],), t)
        eps = (w + 1) * model(x, steps, y) - w * model(x, steps, jnp.full_like(y, -1))
        a, b = alpha_bars[t - 1], jnp.where(t_prev > 0, alpha_bars[t_prev - 1], 1.0)
        x = jnp.sqrt(b) * (x - jnp.sqrt(1 - a) * eps) / jnp.sqrt(a) + jnp.sqrt(1 - b) * eps
        return x, x

    _, xs = jax.lax.scan(body, x_T, jnp.stack([timesteps[:-1], timesteps[1:]], 1))
    return jnp.concatenate([x_T[None], xs])


def test_the_sampler_exercise_crosses_to_the_kernel_and_back_as_data():
    """guided_ddim_sample's inputs hold a stand-in model: the request survives the pickle to the kernel, the reply
    is plain data, and the grader's verdict names the slip of a wrong answer."""
    request = pickle.loads(pickle.dumps(grading.plan("guided_ddim_sample", edge_cases=True)))
    outcome = grading.decode_outcome(grading.encode_outcome(grading.evaluate(request, _ddim_right)))
    ok, text = grading.verdict(request, outcome)
    assert ok and text.startswith("guided_ddim_sample: passed"), text

    def wrong(model, x_T, y, w, timesteps, alpha_bars):   # label 0 as "no label"
        return _ddim_right(lambda x, t, labels: model(x, t, jnp.where(labels < 0, 0, labels)), x_T, y, w, timesteps,
                           alpha_bars)

    outcome = grading.decode_outcome(grading.encode_outcome(grading.evaluate(request, wrong)))
    ok, text = grading.verdict(request, outcome)
    assert not ok and 'Likely slip: "no label" is the label -1' in text, text


def test_guided_sample_is_judged_on_the_graders_side():
    """Notebook 05's sampler exercise through the grader's path: the request (with its U-Nets) pickled as the kernel
    receives it, the reply as plain data, the verdict with the references and hints computed by the grader."""
    from course_utils import guidance
    from course_utils._validate import unmarked

    request = grading.plan("guided_sample", n_cases=3, seed=505, edge_cases=True)
    in_kernel = pickle.loads(pickle.dumps(request))
    right = unmarked(guidance.guided_sample)
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(grading.evaluate(in_kernel, right))))
    assert ok and text.startswith("guided_sample: passed 6 of 6"), text
    slip = grading.exercise("guided_sample").hints[0]
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(grading.evaluate(in_kernel, slip.variant))))
    assert not ok and f"Likely slip: {slip.message}" in text, text


def test_conditional_train_step_is_judged_on_the_graders_side():
    """Notebook 05's training step (the train-step kind) through the grader's path: the request pickled as the kernel
    receives it (factories by name, weights and batches as arrays), the runs as plain data, the verdict in the grader."""
    from course_utils import guidance
    from course_utils._validate import unmarked

    request = grading.plan("conditional_train_step", edge_cases=True)
    in_kernel = pickle.loads(pickle.dumps(request))
    reply = grading.encode_outcome(grading.evaluate(in_kernel, unmarked(guidance.conditional_train_step)))
    ok, text = grading.verdict(request, grading.decode_outcome(reply))
    assert ok and text.startswith("conditional_train_step: passed 3 of 3 test runs"), text
    slip = grading.exercise("conditional_train_step").hints[0]
    ok, text = grading.verdict(request, grading.decode_outcome(grading.encode_outcome(grading.evaluate(in_kernel, slip.variant))))
    assert not ok and f"Likely slip: {slip.message}" in text, text
