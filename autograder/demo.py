"""A synthetic class for one notebook, graded end to end: what an instructor sees, in one command.

``python -m autograder demo`` writes a folder of submissions made from the
released notebook and the solutions (students who did everything, who made a
slip, who stopped half way, who did nothing, whose code raises, whose kernel
dies, who uploaded a corrupt file or nothing), grades it in parallel with the
default SQLite gradebook, and writes the export, the feedback and the report.
"""

import copy
from pathlib import Path

import nbformat

from . import course


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def with_solutions(student_nb, solution_nb, keep: int | None = None):
    """The released notebook with the first ``keep`` (default: all) code answers taken from the solution."""
    nb = copy.deepcopy(student_nb)
    sources = {_meta(c)["grade_id"]: c.source for c in solution_nb.cells if _meta(c).get("solution")}
    answers = [c for c in nb.cells if _meta(c).get("solution") and c.cell_type == "code"]
    for cell in answers[:keep]:
        cell.source = sources[_meta(cell)["grade_id"]]
    return nb


def replace_answer(nb, index: int, body: str):
    """``nb`` with its ``index``-th code answer replaced by ``def NAME(*args, **kwargs):`` + ``body``."""
    nb = copy.deepcopy(nb)
    cell = [c for c in nb.cells if _meta(c).get("solution") and c.cell_type == "code"][index]
    name = next(line.split()[1].split("(")[0].rstrip(":") for line in cell.source.splitlines()
                if line.startswith(("def ", "class ")))
    cell.source = f"def {name}(*args, **kwargs):\n" + "\n".join("    " + line for line in body.splitlines()) + "\n"
    return nb


def make_class(assignment: str, folder: Path) -> dict:
    """Write the synthetic class of ``assignment`` into ``folder``; return {student: what they did}."""
    released = nbformat.read(course.NOTEBOOKS / assignment / f"{assignment}.ipynb", as_version=4)
    solution = nbformat.read(course.SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    correct = with_solutions(released, solution)
    notebooks = {
        "ada": ("everything right", correct),
        "grace": ("everything right", correct),
        "alan": ("a wrong value in the last exercise",
                 replace_answer(correct, -1, "return args[0] * 0 + 1")),
        "barbara": ("first exercise only", with_solutions(released, solution, keep=1)),
        "edsger": ("nothing done", released),
        "donald": ("an answer that raises", replace_answer(correct, 0, "raise ValueError('I got stuck here')")),
        "john": ("the kernel dies in the last exercise", replace_answer(correct, -1, "pass\nimport os\nos._exit(1)")),
    }
    folder = Path(folder)
    what = {}
    for student, (description, nb) in notebooks.items():
        (folder / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / student / f"{assignment}.ipynb")
        what[student] = description
    (folder / "linus").mkdir(parents=True, exist_ok=True)
    (folder / "linus" / f"{assignment}.ipynb").write_text('{"cells": [ {"cell_type": "code", "source": ')
    what["linus"] = "a corrupt notebook (cut-off JSON)"
    (folder / "margaret").mkdir(parents=True, exist_ok=True)
    (folder / "margaret" / "notes.txt").write_text("I forgot to upload the notebook\n")
    what["margaret"] = "no notebook"
    return what


def run_demo(assignment: str, workdir: Path, workers: int | None = None, timeout: int = 300, log=print) -> dict:
    """Make the class, grade it, write export, feedback and report; return their paths and the results."""
    from .feedback import write_feedback
    from .grade import grade
    from .results import write_table
    from .report import write_report

    workdir = Path(workdir).resolve()
    folder = workdir / "demo_submissions"
    from .trees import clear_tree

    clear_tree(folder)
    what = make_class(assignment, folder)
    log(f"synthetic class of {len(what)} students in {folder}:")
    for student, description in what.items():
        log(f"  {student:>10}: {description}")
    results = grade(assignment, folder, workdir, course.Limits(timeout=timeout), workers=workers, log=log)
    return {
        "results": results,
        "export": write_table(results, workdir / f"grades_{assignment}.csv"),
        "feedback": write_feedback(results, assignment, workdir / "feedback"),
        "report": write_report(results, assignment, workdir / f"report_{assignment}.html"),
    }
