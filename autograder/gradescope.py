"""Grading on Gradescope: the autograder zip, and the run of one submission that writes Gradescope's results.json.

``python -m autograder gradescope ASSIGNMENT --out DIR`` writes ``DIR/gradescope_ASSIGNMENT.zip``, the file an
instructor uploads as a Gradescope programming assignment's autograder (base image: Ubuntu 22.04). It holds what
grading needs (``course_utils``, ``autograder``, the assignment's solution and release, ``pyproject.toml``) and the
two scripts Gradescope runs:

- ``setup.sh`` (once, when the image is built): Python 3.11, bubblewrap, and the course in a virtual environment.
- ``run_autograder`` (once per submission): :func:`run` on the notebook Gradescope put in ``/autograder/submission``,
  graded by the same code, checker, sandbox and limits as ``grade`` (a class of one), and the result written to
  ``/autograder/results/results.json``.

Gradescope's format (its documentation, "Autograder specifications"): a total ``score``, an ``output`` for the
whole submission and one entry per test with ``name``, ``score``, ``max_score``, ``status``, ``output`` and
``visibility``. Each test cell is one visible test. When a cell fails on its hidden inputs (its visible checks
passed), the visible test says only that a hidden test failed, and the checker's message goes into a second entry,
"<cell>: hidden tests" (0 points of its own), visible ``after_due_date``: the message (what is wrong, the likely
slip), never the hidden test's source. A notebook that cannot be graded scores 0 with the reason in the output and
one failed test "not graded", so the student sees why and can resubmit. Where the sandbox cannot run (a container
without unprivileged user namespaces), grading goes on unsandboxed and the output says NOT ISOLATED: each Gradescope
submission runs in a container of its own, so no student can touch another's grade, but the kernel can then read
the autograder's files (the answer key).
"""

import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from . import course

ROOT = Path(os.environ.get("AUTOGRADER_ROOT", "/autograder"))
STUDENT = "submission"
HIDDEN_MARK = "### BEGIN HIDDEN TESTS"

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (base image: Ubuntu 22.04).
set -euo pipefail
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3.11 python3.11-venv bubblewrap
python3.11 -m venv /autograder/venv
/autograder/venv/bin/pip install -q -e "/autograder/source[instructor]"
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this once per submission: grade the notebook in /autograder/submission, write results.json.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
cd "$ROOT/source" && exec "$PYTHON" -m autograder.gradescope run {assignment}
"""


def write_zip(assignment: str, out_dir: Path) -> Path:
    """The Gradescope autograder zip of ``assignment`` (see the module docstring)."""
    out = Path(out_dir) / f"gradescope_{assignment}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [course.REPO / "pyproject.toml", course.REPO / "README.md"]
    for folder in (course.REPO / "course_utils", course.REPO / "autograder", course.SOLUTIONS / assignment,
                   course.NOTEBOOKS / assignment):
        files += [p for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.parts
                  and ".ipynb_checkpoints" not in p.parts]
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path in files:
            z.write(path, path.relative_to(course.REPO))
        for name, text in (("setup.sh", SETUP), ("run_autograder", RUN.replace("{assignment}", assignment))):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o755 << 16
            z.writestr(info, text)
    return out


def _hidden_failure(cell) -> bool:
    """Whether a graded test cell failed in its hidden part: its visible checks all passed before the failure."""
    from .execute import UnrunnableTestCell, parse_test_cell

    visible = cell.source.split(HIDDEN_MARK)[0]
    try:
        n_visible = len(parse_test_cell(visible))
    except UnrunnableTestCell:
        return False
    passed = sum(len(o.get("text", "").strip().splitlines()) for o in cell.get("outputs", [])
                 if o.get("output_type") == "stream" and o.get("name") == "stdout")
    return HIDDEN_MARK in cell.source and passed >= n_visible


def results_json(result, graded_nb=None, isolated: bool = True, seconds: float | None = None) -> dict:
    """Gradescope's results.json for one student's :class:`~autograder.grade.StudentResult`."""
    from .results import FLAGGED, NOT_ISOLATED

    tests = []
    cells = {}
    if graded_nb is not None:
        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in graded_nb.cells if c.cell_type == "code"}
    notes = []
    if not result.graded:
        notes.append(f"Your notebook could not be graded: {result.reason}. Fix it and submit again.")
        tests.append({"name": "not graded", "score": 0.0, "max_score": 0.0, "status": "failed",
                      "output": result.reason, "visibility": "visible"})
    for name, cell in sorted(result.cells.items()):
        hidden = cell.message and name in cells and _hidden_failure(cells[name])
        passed = cell.score >= cell.max_score
        output = ("passed" if passed else
                  "passed its visible tests; a hidden test failed (what went wrong is shown after the due date)"
                  if hidden else cell.message)
        tests.append({"name": name, "score": float(cell.score), "max_score": float(cell.max_score),
                      "status": "passed" if passed else "failed", "output": output, "visibility": "visible"})
        if hidden:
            tests.append({"name": f"{name}: hidden tests", "score": 0.0, "max_score": 0.0, "status": "failed",
                          "output": cell.message, "visibility": "after_due_date"})
    if result.status == FLAGGED:
        notes.append("Graded, and flagged for your instructor to look at.")
    if not isolated:
        notes.append(NOT_ISOLATED)
    doc = {"score": float(result.score) if result.graded else 0.0, "output": "\n".join(notes),
           "output_format": "text", "test_output_format": "text", "stdout_visibility": "hidden", "tests": tests}
    if seconds is not None:
        doc["execution_time"] = int(round(seconds))
    return doc


def run(assignment: str, root: Path = ROOT) -> Path:
    """Grade the one notebook in ``root/submission`` and write ``root/results/results.json``."""
    import nbformat

    from .grade import grade
    from .results import ATTENTION, StudentResult
    from .sandbox import sandbox_problem

    started = time.monotonic()
    course.check_assignment(assignment)
    results_dir = root / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    notebooks = sorted(p for p in (root / "submission").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    isolated = not sandbox_problem()
    with tempfile.TemporaryDirectory(prefix="gradescope-") as tmp:
        tmp = Path(tmp)
        tmp.chmod(0o755)
        if len(notebooks) != 1:
            why = "no notebook was submitted" if not notebooks else \
                f"{len(notebooks)} notebooks were submitted ({', '.join(p.name for p in notebooks[:5])}); submit one"
            result, graded_nb = StudentResult(STUDENT, ATTENTION, reasons=[why]), None
        else:
            (tmp / "class" / STUDENT).mkdir(parents=True)
            shutil.copyfile(notebooks[0], tmp / "class" / STUDENT / f"{assignment}.ipynb")
            (result,) = grade(assignment, tmp / "class", tmp / "work", course.Limits(sandbox=isolated), workers=1,
                              compile_cache=False, allow_unsandboxed=not isolated, log=lambda message: None)
            path = tmp / "work" / "autograded" / STUDENT / assignment / f"{assignment}.ipynb"
            graded_nb = nbformat.read(path, as_version=4) if path.exists() else None
        doc = results_json(result, graded_nb, isolated, time.monotonic() - started)
    out = results_dir / "results.json"
    out.write_text(json.dumps(doc, indent=1))
    return out


def main(argv=None) -> int:
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "run":
        print("usage: python -m autograder.gradescope run ASSIGNMENT (what run_autograder calls)", file=sys.stderr)
        return 2
    run(args[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
