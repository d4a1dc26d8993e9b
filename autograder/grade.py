"""Autograde a folder of submissions with nbgrader and write a grade table.

The submissions folder holds one folder per student, named by the student's
id, containing the notebook (``NN_name.ipynb``, either directly or inside a
folder named after the assignment). Every submission is executed in grading
mode (``COURSE_FAST=1``) with a per-cell time limit; the table lists, for
each student, the automatic score of every test cell, the total, and a status
that says when a notebook could not be graded and why.
"""

import csv
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from . import course


@dataclass
class StudentResult:
    student: str
    status: str  # "graded", or what went wrong
    cell_scores: dict = field(default_factory=dict)  # test cell id -> (score, max)
    manual_max: float = 0.0

    @property
    def score(self) -> float:
        return sum(score for score, _ in self.cell_scores.values())

    @property
    def max_score(self) -> float:
        return sum(mx for _, mx in self.cell_scores.values())


def find_notebook(folder: Path, assignment: str) -> Path | None:
    """The student's notebook: NAME.ipynb in the folder or in folder/NAME/, else the only notebook there."""
    for candidate in (folder / f"{assignment}.ipynb", folder / assignment / f"{assignment}.ipynb"):
        if candidate.is_file():
            return candidate
    notebooks = [p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts]
    return notebooks[0] if len(notebooks) == 1 else None


_STUDENT_ID = re.compile(r"^[A-Za-z0-9_.@-]+$")


def collect(submissions: Path, workdir: Path, assignment: str) -> dict[str, str]:
    """Copy each student's notebook into workdir/submitted; return {student: problem} for those skipped."""
    problems = {}
    submitted = workdir / "submitted"
    if submitted.exists():
        shutil.rmtree(submitted)
    for folder in sorted(p for p in Path(submissions).iterdir() if p.is_dir()):
        student = folder.name
        if not _STUDENT_ID.match(student):
            problems[student] = "folder name is not a valid student id (letters, digits, _ . @ - only)"
            continue
        notebook = find_notebook(folder, assignment)
        if notebook is None:
            problems[student] = f"no notebook named {assignment}.ipynb found"
            continue
        target = submitted / student / assignment / f"{assignment}.ipynb"
        target.parent.mkdir(parents=True)
        shutil.copy2(notebook, target)
    return problems


def read_gradebook(workdir: Path, assignment: str, students: list[str]) -> dict[str, StudentResult]:
    from nbgrader.api import Gradebook, MissingEntry

    results = {}
    with Gradebook(f"sqlite:///{workdir / 'gradebook.db'}") as gb:
        nb = gb.find_notebook(assignment, assignment)
        test_cells = [c.name for c in nb.grade_cells if c.cell_type == "code"]
        manual_max = sum(c.max_score for c in nb.grade_cells if c.cell_type == "markdown")
        for student in students:
            autograded = workdir / "autograded" / student / assignment / f"{assignment}.ipynb"
            if not autograded.exists():
                results[student] = StudentResult(student, "could not be graded: nbgrader produced no output (see the log)")
                continue
            try:
                gb.find_submission_notebook(assignment, assignment, student)
            except MissingEntry:
                results[student] = StudentResult(student, "could not be graded: no gradebook entry")
                continue
            result = StudentResult(student, "graded", manual_max=manual_max)
            for cell in test_cells:
                grade = gb.find_grade(cell, assignment, assignment, student)
                score = grade.score if grade.score is not None else 0.0
                result.cell_scores[cell] = (float(score), float(grade.max_score))
            results[student] = result
    return results


def grade(assignment: str, submissions: Path, workdir: Path, timeout: int = 120) -> list[StudentResult]:
    """Autograde every submission of ``assignment``; return one result per student (sorted by id)."""
    course.check_assignment(assignment)
    submissions = Path(submissions)
    if not submissions.is_dir():
        raise SystemExit(f"submissions folder {submissions} does not exist")
    workdir = course.prepare_workdir(Path(workdir), assignment, timeout)
    course.nbgrader(workdir, "generate_assignment", assignment, "--force")
    problems = collect(submissions, workdir, assignment)
    graded = sorted(p.name for p in (workdir / "submitted").iterdir()) if (workdir / "submitted").exists() else []
    if graded:
        # Exits 1 when any submission errored, after grading the rest: the table says which.
        log = course.nbgrader(workdir, "autograde", assignment, "--force", "--create", check=False)
        (workdir / "autograde.log").write_text(log.stdout + log.stderr)
    results = read_gradebook(workdir, assignment, graded) if graded else {}
    for student, problem in problems.items():
        results[student] = StudentResult(student, f"not graded: {problem}")
    return [results[s] for s in sorted(results)]


def write_table(results: list[StudentResult], path: Path) -> Path:
    """One row per student: status, total, maximum, then every test cell's score."""
    cells = sorted({c for r in results for c in r.cell_scores})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "status", "score", "max_score", "manual_points_pending", *cells])
        for r in results:
            graded = r.status == "graded"
            writer.writerow([
                r.student, r.status,
                f"{r.score:g}" if graded else "", f"{r.max_score:g}" if graded else "",
                f"{r.manual_max:g}" if graded else "",
                *(f"{r.cell_scores[c][0]:g}" if c in r.cell_scores else "" for c in cells),
            ])
    return path
