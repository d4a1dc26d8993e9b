"""A small synthetic class autogrades to the expected scores through nbgrader.

Notebook 02 is used (it runs fastest). Submissions: the solution; one slip in
one exercise; the released stubs (every test raises); an infinite loop in one
answer cell; and an answer cell that replaces numpy's and jax.numpy's
comparison functions to pass a wrong answer.
"""

import copy
import csv

import nbformat
import pytest

from autograder.grade import grade, write_table
from conftest import nbgrader_meta, read, solution_path, student_path, with_solutions

NAME = "02_loss_comparison"
pytestmark = pytest.mark.xdist_group("autograde")
TAMPER = '''
import numpy as np, jax.numpy as jnp
np.allclose = lambda *a, **k: True
np.isclose = lambda a, b, *args, **k: np.ones(np.shape(a), bool)
np.testing.assert_allclose = lambda *a, **k: None
np.array_equal = lambda *a, **k: True
jnp.allclose = lambda *a, **k: True
def check(*args, **kwargs):
    print("all good!")
'''


def _replace(nb, grade_id, source):
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if nbgrader_meta(cell).get("grade_id") == grade_id:
            cell.source = source
    return nb


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    solution = read(solution_path(NAME))
    correct = with_solutions(read(student_path(NAME)), solution)
    submissions = {
        "correct": correct,
        "slip": _replace(correct, "simple_loss", "def simple_loss(eps, eps_theta):\n    return jnp.mean((eps - eps_theta) ** 2)\n"),
        "stubs": read(student_path(NAME)),
        "loop": _replace(correct, "mean_loss", "while True:\n    pass\n"),
        "tamper": _replace(correct, "noise_loss", TAMPER + "def noise_loss(eps, eps_theta, beta_t, alpha_t, alpha_bar_t, sigma2):\n    return jnp.sum((eps - eps_theta) ** 2)\n"),
    }
    root = tmp_path_factory.mktemp("class")
    for student, nb in submissions.items():
        (root / "submissions" / student).mkdir(parents=True)
        nbformat.write(nb, root / "submissions" / student / f"{NAME}.ipynb")
    (root / "submissions" / "empty").mkdir()
    results = grade(NAME, root / "submissions", root / "work", timeout=20)
    table = write_table(results, root / "grades.csv")
    return {r.student: r for r in results}, table


def test_expected_scores(graded):
    results, _ = graded
    full = results["correct"].max_score
    assert full == 9
    points = {cell: mx for cell, (_, mx) in results["correct"].cell_scores.items()}
    assert results["correct"].score == full
    assert results["slip"].score == full - points["test_simple_loss"]
    assert results["stubs"].score == 0
    # The loop is interrupted at the time limit; mean_loss is undefined and its test fails.
    assert results["loop"].score == full - points["test_mean_loss"]
    # Replacing the comparison functions and the name `check` does not pass a wrong answer.
    assert results["tamper"].cell_scores["test_noise_loss"][0] == 0
    assert results["tamper"].score == full - points["test_noise_loss"]


def test_statuses_and_table(graded):
    results, table = graded
    assert all(results[s].status == "graded" for s in ("correct", "slip", "stubs", "loop", "tamper"))
    assert results["empty"].status.startswith("not graded: no notebook")
    rows = {row["student"]: row for row in csv.DictReader(table.open())}
    assert rows["correct"]["score"] == "9" and rows["stubs"]["score"] == "0"
    assert rows["empty"]["score"] == "", "a submission that could not be graded is not exported as a zero"
    assert rows["correct"]["manual_points_pending"] == "5"
