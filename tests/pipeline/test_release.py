"""The released notebooks are exactly what release makes from solutions/, hide
every solution and hidden test, and every notebook in git is stored without outputs."""

import re

import pytest

from autograder import course
from autograder.release import release
from notebook_tools import ASSIGNMENTS, is_solution_cell, is_test_cell, nbgrader_meta, read, solution_path, student_path

BETWEEN = {
    "solution": re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S),
    "hidden test": re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S),
}


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_release_regenerates_notebooks_byte_for_byte(tmp_path, name):
    released = release(name, tmp_path)
    committed = course.NOTEBOOKS / name
    assert sorted(p.name for p in released.iterdir()) == sorted(p.name for p in committed.iterdir())
    for path in released.iterdir():
        assert path.read_bytes() == (committed / path.name).read_bytes(), (
            f"notebooks/{name}/{path.name} is out of date: run `python -m autograder release {name}`")


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_no_solution_or_hidden_test_reaches_students(name):
    student_text = student_path(name).read_text()
    solution = read(solution_path(name))
    hidden = [m for cell in solution.cells for pattern in BETWEEN.values() for m in pattern.findall(cell.source)]
    assert hidden, "the solution notebook has no solution or hidden-test blocks"
    for block in hidden:
        for line in block.strip().splitlines():
            line = line.strip()
            if len(line) > 12 and line not in _ALLOWED_REPEATS:
                assert line not in student_text, f"{name}: solution or hidden-test line reached the student notebook: {line!r}"
    assert "BEGIN SOLUTION" not in student_text and "HIDDEN TESTS" not in student_text


# Lines that legitimately appear both in a solution and elsewhere in the student notebook.
_ALLOWED_REPEATS = {"from course_utils.grading import check"}


@pytest.mark.parametrize("path", sorted(course.SOLUTIONS.glob("*/*.ipynb")) + sorted(course.NOTEBOOKS.glob("*/*.ipynb")),
                         ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_notebooks_in_git_have_no_outputs(path):
    nb = read(path)
    with_outputs = [c.id for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not with_outputs, f"{path} stores outputs in cells {with_outputs}: clear them before committing"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_notebook_structure(name):
    """Badge to its own Colab page, a setup cell, and a test cell (calling the checker) after every exercise."""
    nb = read(solution_path(name))
    assert f"blob/main/notebooks/{name}/{name}.ipynb" in nb.cells[0].source, "the Colab badge must open this notebook"
    assert "course_utils" in nb.cells[1].source and "setup()" in nb.cells[1].source, "the second cell is the setup cell"
    ids = [nbgrader_meta(c).get("grade_id") for c in nb.cells]
    assert len(ids) == len(set(ids)), "grade ids must be unique"
    code_exercises = [c for c in nb.cells if is_solution_cell(c) and c.cell_type == "code"]
    assert code_exercises
    from course_utils import grading
    for cell in code_exercises:
        function = re.search(r"^(?:def|class) (\w+)\b", cell.source, re.M).group(1)
        assert function in grading.exercise_names(), f"{function} has no registered exercise"
        tests = [c for c in nb.cells if is_test_cell(c) and f'check("{function}", {function}' in c.source]
        assert tests, f"{name}: exercise {function} has no test cell"
    manual = [c for c in nb.cells if is_solution_cell(c) and c.cell_type == "markdown"]
    assert manual and all(nbgrader_meta(c).get("grade") for c in manual), "written questions are graded by hand"
    assert "take away" in nb.cells[-1].source.lower(), "the notebook ends with what to take away"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_authoring_text_form_round_trips(name):
    """export then build gives the solution notebook back byte for byte."""
    import nbformat

    from autograder import authoring

    path = solution_path(name)
    rebuilt = authoring.build(authoring.export(read(path)))
    assert nbformat.writes(rebuilt) + "\n" == path.read_text()
