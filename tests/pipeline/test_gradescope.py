"""Gradescope: the autograder zip, and run_autograder on a correct, a wrong and a broken submission, in a folder laid
out as Gradescope lays out /autograder; results.json checked against Gradescope's documented format."""

import json
import os
import stat
import subprocess
import sys
import zipfile

import nbformat
import pytest

from autograder.__main__ import main
from notebook_tools import read, solution_path, student_path, with_solutions

NAME = "02_loss_comparison"
pytestmark = pytest.mark.xdist_group("gradescope")
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}


def _check_format(doc):
    """Gradescope's results.json (Autograder specifications): the keys it reads, with their types."""
    assert isinstance(doc["score"], float) and isinstance(doc["output"], str)
    assert doc.get("stdout_visibility", "visible") in VISIBILITY
    for test in doc["tests"]:
        assert set(test) <= {"score", "max_score", "status", "name", "name_format", "number", "output",
                             "output_format", "tags", "visibility", "extra_data"}
        assert isinstance(test["score"], float) and isinstance(test["max_score"], float) and test["name"]
        assert test["status"] in ("passed", "failed") and test["visibility"] in VISIBILITY
    assert json.loads(json.dumps(doc)) == doc


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    assert main(["gradescope", NAME, "--out", str(out)]) == 0
    return out / f"gradescope_{NAME}.zip"


def test_the_zip_holds_what_gradescope_runs(autograder_zip):
    with zipfile.ZipFile(autograder_zip) as z:
        names = set(z.namelist())
        mode = z.getinfo("run_autograder").external_attr >> 16
        run = z.read("run_autograder").decode()
    assert {"setup.sh", "run_autograder", "pyproject.toml", f"solutions/{NAME}/{NAME}.ipynb",
            f"notebooks/{NAME}/{NAME}.ipynb", "autograder/gradescope.py", "course_utils/grading/__init__.py"} <= names
    assert mode & stat.S_IXUSR and f"autograder.gradescope run {NAME}" in run
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", ".git", "grading/"))]


def _run(tmp_path, autograder_zip, nb_text):
    root = tmp_path / "autograder"
    with zipfile.ZipFile(autograder_zip) as z:
        z.extractall(root / "source")
    (root / "submission").mkdir(parents=True)
    if nb_text is not None:
        (root / "submission" / "my_work.ipynb").write_text(nb_text)
    script = root / "source" / "run_autograder"
    script.chmod(0o755)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((root / "results" / "results.json").read_text())
    _check_format(doc)
    return doc


@pytest.fixture(scope="module")
def runs(tmp_path_factory, autograder_zip):
    correct = with_solutions(read(student_path(NAME)), read(solution_path(NAME)))
    wrong = with_solutions(read(student_path(NAME)), read(solution_path(NAME)))
    (cell,) = [c for c in wrong.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "simple_loss"]
    cell.source = "def simple_loss(eps, eps_theta):\n    return jnp.mean((eps - eps_theta) ** 2)\n"
    return {name: _run(tmp_path_factory.mktemp(name), autograder_zip, text) for name, text in
            (("correct", nbformat.writes(correct)), ("wrong", nbformat.writes(wrong)), ("broken", '{"cells": ['))}


def test_a_correct_submission_scores_full_marks(runs):
    doc = runs["correct"]
    assert doc["score"] == sum(t["max_score"] for t in doc["tests"]) == 11.0
    assert all(t["status"] == "passed" and t["visibility"] == "visible" for t in doc["tests"])


def test_a_wrong_submission_loses_that_test_with_the_checkers_message(runs):
    doc = runs["wrong"]
    assert doc["score"] == 10.0
    (failed,) = [t for t in doc["tests"] if t["status"] == "failed" and t["max_score"] > 0]
    assert failed["name"] == "test_simple_loss" and failed["score"] == 0.0 and "simple_loss" in failed["output"]
    assert "BEGIN HIDDEN" not in json.dumps(doc) and "check(" not in json.dumps(doc)


def test_a_broken_submission_gets_a_clear_status_not_a_silent_zero(runs):
    doc = runs["broken"]
    assert doc["score"] == 0.0 and "could not be graded" in doc["output"]
    assert [t["name"] for t in doc["tests"]] == ["not graded"] and "JSON" in doc["tests"][0]["output"]


def test_a_hidden_failure_shows_its_message_after_the_due_date_only():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from autograder.grade import GRADED, CellResult, StudentResult
    from autograder.gradescope import results_json

    source = ('from course_utils.grading import check\ncheck("simple_loss", simple_loss)\n### BEGIN HIDDEN TESTS\n'
              'check("simple_loss", simple_loss, n_cases=30, seed=3, edge_cases=True)\n### END HIDDEN TESTS')

    def graded(outputs):
        cell = new_code_cell(source, metadata={"nbgrader": {"grade_id": "test_simple_loss", "grade": True}})
        cell.outputs = outputs
        return new_notebook(cells=[cell])

    message = "simple_loss: on input 7 of 30 the output is wrong"
    result = StudentResult("s", GRADED, cells={"test_simple_loss": CellResult(0, 1, message)})
    hidden = results_json(result, graded([new_output("stream", name="stdout", text="simple_loss: passed 5 of 5\n"),
                                          new_output("error", ename="CheckFailure", evalue=message, traceback=[])]))
    _check_format(hidden)
    visible_test, hidden_test = hidden["tests"]
    assert visible_test["visibility"] == "visible" and message not in visible_test["output"]
    assert hidden_test["visibility"] == "after_due_date" and hidden_test["output"] == message
    assert hidden_test["max_score"] == 0.0
    shown = results_json(result, graded([new_output("error", ename="CheckFailure", evalue=message, traceback=[])]))
    assert [t["output"] for t in shown["tests"]] == [message]  # a visible failure is shown at once
