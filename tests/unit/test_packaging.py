"""What a student's install pulls in: the package's own dependencies, never the instructor's grading stack."""

import tomllib
from pathlib import Path

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
GRADING_STACK = ("nbgrader", "nbclient", "nbformat", "jupyter", "sqlalchemy", "pytest")


def _names(requirements):
    return [r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in requirements]


def test_the_student_install_has_no_grading_stack():
    assert not [n for n in _names(PYPROJECT["project"]["dependencies"]) if n.startswith(GRADING_STACK)]


def test_the_instructor_extra_has_the_grading_stack_and_dev_adds_the_tests():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"nbgrader", "nbclient", "nbformat", "ipykernel"} <= set(_names(extras["instructor"]))
    assert "course_utils[instructor]" in extras["dev"] and {"pytest", "pytest-xdist"} <= set(_names(extras["dev"]))
