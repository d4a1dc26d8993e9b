"""What a notebook shows where the grading sandbox withholds a reference (course_utils.withheld, notebook.py)."""

import pytest

from course_utils.notebook import yours_or_reference
from course_utils.withheld import ReferenceWithheld, withheld


def test_a_withheld_reference_raises_one_line_naming_it():
    with pytest.raises(ReferenceWithheld) as info:
        withheld("course_utils.forward.q_sample")
    assert isinstance(info.value, NotImplementedError)  # the notebooks' fallbacks treat it like a stub
    (line,) = info.value._render_traceback_()
    assert "course_utils.forward.q_sample" in line and "not available while grading" in line


def _stub():
    raise NotImplementedError()


def _withheld_reference():
    withheld("course_utils.sampling.ddpm_sample")


def test_a_fallback_to_a_withheld_reference_says_so_in_one_line_without_a_chain(capsys):
    with pytest.raises(ReferenceWithheld) as info:
        yours_or_reference("sample", _stub, _withheld_reference)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    (line,) = info.value._render_traceback_()
    assert "your `sample` is not written yet" in line and "not available while grading" in line
    assert capsys.readouterr().out == ""  # no "uses the course's reference" note for a reference that did not run


def test_a_fallback_to_an_available_reference_prints_one_note(capsys):
    assert yours_or_reference("sample", _stub, lambda: 42) == 42
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "your `sample` is not written yet" in out and "reference implementation" in out


def test_an_answer_that_needs_a_withheld_function_is_named_as_such(capsys):
    with pytest.raises(ReferenceWithheld) as info:
        yours_or_reference("sample", _withheld_reference, _withheld_reference)
    assert "calls a course function that is not available while grading" in str(info.value)


def _cell(source: str, name: str = "/tmp/ipykernel_1/123.py"):
    """Run ``source`` as a notebook cell would (IPython compiles cells to files under ipykernel_<pid>)."""
    scope = {}
    exec(compile(source, name, "exec"), scope)
    return scope


def test_a_fallback_names_the_stub_that_raised_not_the_exercise(capsys):
    """With the model's class a stub, the training cell says the class is missing, not the training step."""
    cell = _cell("class MLPDenoiser:\n    def __init__(self):\n        raise NotImplementedError()\n"
                 "def train_step(model):\n    return 1.0\n")
    assert yours_or_reference("train_step", lambda: cell["train_step"](cell["MLPDenoiser"]()), lambda: 7) == 7
    out = capsys.readouterr().out
    assert "your `MLPDenoiser` is not written yet" in out and "train_step" not in out


def test_when_the_reference_needs_the_missing_piece_too_one_line_and_no_chain(capsys):
    from course_utils.notebook import CellSkipped

    cell = _cell("class MLPDenoiser:\n    def __init__(self):\n        raise NotImplementedError()\n")
    with pytest.raises(CellSkipped) as info:
        yours_or_reference("train_step", lambda: cell["MLPDenoiser"](), lambda: cell["MLPDenoiser"]())
    assert info.value.__cause__ is None and info.value.__suppress_context__
    (line,) = info.value._render_traceback_()
    assert "your `MLPDenoiser` is not written yet" in line and "the rest of this cell is skipped" in line
