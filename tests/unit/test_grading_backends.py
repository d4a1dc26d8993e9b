"""The checker's verdict does not depend on the backend, and a failing test cell shows the student only its message.

On a GPU JAX multiplies matrices in TF32 by default, on a TPU in bfloat16 passes; a reference computed
at one precision and a student's function at another disagree by 1e-4 to 1e-3. The checker runs
every function at ``grading.PRECISION``: these tests record, while each function is traced, the
precision JAX is asked for, for the reference, the student's function, a hint's variant, a property
check and a class exercise's probe. That is what decides the lowering on every backend, so it can
be checked on a CPU.
"""

import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course_utils import grading
from course_utils.grading import CheckFailure, Exercise, Hint, check


def _precision_now():
    return jax.config.jax_default_matmul_precision


@pytest.fixture
def recorded():
    """A fake exercise whose reference, hint and the student's answer record the precision they are traced at."""
    seen = {}

    def reference(a, b):
        seen.setdefault("reference", set()).add(_precision_now())
        return a @ b

    def variant(a, b):
        seen.setdefault("hint", set()).add(_precision_now())
        return -(a @ b)

    ex = grading.register(Exercise(name="_precision_probe", reference=reference,
                                   make_case=lambda rng: (rng.normal(size=(3, 4)).astype(np.float32),
                                                          rng.normal(size=(4, 2)).astype(np.float32)),
                                   hints=[Hint(variant, "sign")]))
    yield ex, seen
    grading.registry._REGISTRY.pop(ex.name)


def test_reference_student_and_hints_run_at_the_same_precision(recorded):
    ex, seen = recorded

    def right(a, b):
        seen.setdefault("student", set()).add(_precision_now())
        return jnp.matmul(a, b)

    check(ex.name, right)
    assert seen == {"reference": {grading.PRECISION}, "student": {grading.PRECISION}}

    def wrong(a, b):
        seen.setdefault("student", set()).add(_precision_now())
        return -jnp.matmul(a, b)

    with pytest.raises(CheckFailure, match="Likely slip: sign"):
        check(ex.name, wrong)
    assert seen == {"reference": {grading.PRECISION}, "student": {grading.PRECISION}, "hint": {grading.PRECISION}}


def test_precision_does_not_depend_on_the_notebook_setting(recorded):
    """A student (or Colab) that sets a lower default precision does not change what the checker compares."""
    ex, seen = recorded
    jax.config.update("jax_default_matmul_precision", "bfloat16")
    try:
        def right(a, b):
            seen.setdefault("student", set()).add(_precision_now())
            return a @ b

        check(ex.name, right)
    finally:
        jax.config.update("jax_default_matmul_precision", None)
    assert seen == {"reference": {grading.PRECISION}, "student": {grading.PRECISION}}


class _Recorder(nnx.Module):
    seen = []

    def __init__(self, rngs):
        self.w = nnx.Param(jnp.ones((2, 2)))

    def __call__(self, x):
        _Recorder.seen.append(_precision_now())
        return x @ self.w


def _apply(model, x):
    return model(x)


def test_class_exercises_run_at_the_same_precision():
    """Class exercises (the models of notebooks 04-06) build and call the student's class in the student's
    process and judge in the grader's: everything is traced at grading.PRECISION."""
    _Recorder.seen.clear()

    def judge(ex, trials, results):
        (out,) = grading.built_outputs(ex, trials[0], results[0], ["x"])
        _Recorder(nnx.Rngs(0))(jnp.ones((1, 2)))  # a judge may call models eagerly, too
        return "ok"

    trials = lambda edge: [grading.Build(inputs=((np.ones((1, 2), np.float32),),), forward=_apply)]  # noqa: E731
    grading.register(Exercise(name="_class_probe", reference=None, trials=trials, judge=judge, reference_class=nnx.Module))
    try:
        check("_class_probe", _Recorder)
    finally:
        grading.registry._REGISTRY.pop("_class_probe")
    assert _Recorder.seen and set(_Recorder.seen) == {grading.PRECISION}


def test_jit_call_sets_the_precision_also_outside_check():
    seen = []
    grading.jit_call(lambda x: seen.append(_precision_now()) or x, (jnp.ones(2),))
    assert seen == [grading.PRECISION]


# ------------------------------------------------------------------ what a failing test cell shows


def _student_function(source, name):
    """A function defined as if typed in a notebook cell (IPython compiles cells under such a file name)."""
    filename = "/tmp/ipykernel_4242/1234567.py"
    import linecache

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = {"jnp": jnp, "np": np}
    exec(compile(source, filename, "exec"), namespace)
    return namespace[name]


def test_a_failure_renders_as_its_message_only():
    with pytest.raises(CheckFailure) as info:
        check("forward_mean", lambda x_prev, beta: x_prev)
    exc = info.value
    assert exc._render_traceback_() == str(exc).splitlines()
    assert str(exc).startswith("forward_mean: wrong output")
    assert exc.__suppress_context__ and exc.__cause__ is None


def test_an_unfinished_exercise_has_no_chained_exception():
    def stub(x_prev, beta):
        raise NotImplementedError()

    with pytest.raises(CheckFailure, match="not implemented yet") as info:
        check("forward_mean", stub)
    assert info.value.__suppress_context__


def test_an_error_in_the_students_code_shows_the_students_line():
    fn = _student_function(textwrap.dedent("""\
        def forward_mean(x_prev, beta):
            scale = jnp.sqrt(1 - beta)
            return scale * x_prev.reshape(7, -1)
        """), "forward_mean")
    with pytest.raises(CheckFailure) as info:
        check("forward_mean", fn)
    message = str(info.value)
    assert "line 3" in message and "return scale * x_prev.reshape(7, -1)" in message, message


def test_an_error_in_a_students_model_inside_a_property_check_is_a_check_failure():
    """Class exercises call the student's model in their own code: an error there is explained, not a traceback."""
    source = textwrap.dedent("""\
        import jax.numpy as jnp
        from flax import nnx
        from course_utils import models

        class MLPDenoiser(models.MLPDenoiser):
            def __call__(self, x, t):
                return x @ jnp.ones((3, 3))
        """)
    cls = _student_function(source, "MLPDenoiser")
    with pytest.raises(CheckFailure) as info:
        check("MLPDenoiser", cls)
    message = str(info.value)
    assert message.startswith("MLPDenoiser: ")
    assert "line 7" in message and "x @ jnp.ones((3, 3))" in message, message


def test_jupyter_shows_only_the_message(tmp_path):
    """In a real IPython kernel, the error output of a failing check is the checker's message, line for line."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from course_utils.grading import check\n"
                                          "def forward_mean(x_prev, beta):\n    raise NotImplementedError()"),
                nbformat.v4.new_code_cell('check("forward_mean", forward_mean)'),
                nbformat.v4.new_code_cell('def forward_mean(x_prev, beta):\n    return x_prev.reshape(7, -1)\n'
                                          'check("forward_mean", forward_mean)')]
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    for cell, expected in ((nb.cells[1], "forward_mean: not implemented yet"),
                           (nb.cells[2], "forward_mean: ")):
        (error,) = [o for o in cell.outputs if o.output_type == "error"]
        assert error.ename == "CheckFailure"
        text = "\n".join(error.traceback)
        assert text.startswith(expected), text
        assert "course_utils/grading" not in text and "During handling" not in text and "Traceback" not in text, text
    assert "line 2" in "\n".join(nb.cells[2].outputs[-1].traceback)


def test_a_type_error_in_the_students_line_is_not_called_a_wrong_signature():
    fn = _student_function(textwrap.dedent("""\
        def forward_mean(x_prev, beta):
            return x_prev.reshape(7, -1)
        """), "forward_mean")
    with pytest.raises(CheckFailure) as info:
        check("forward_mean", fn)
    assert "calling it raised TypeError" in str(info.value) and "signature" not in str(info.value)
    wrong_signature = _student_function("def forward_mean(x_prev):\n    return x_prev\n", "forward_mean")
    with pytest.raises(CheckFailure, match=r"Keep the signature given in the exercise: forward_mean\(x_prev, beta\)"):
        check("forward_mean", wrong_signature)
