"""The gradebook: nbgrader's SQLite database, written only by the grading process, one atomic replace at a time.

Each worker's nbgrader writes the gradebook of its own course directory (SQLite does not take concurrent writers
well). After each chunk the grading process copies the chunk's grades into a copy of the main gradebook through
nbgrader's API (:func:`merge_gradebook`) and puts the copy in place with ``os.replace`` (:func:`update_gradebook`),
so that formgrader and ``nbgrader export`` see one ordinary gradebook, and a process killed at any moment leaves
the old gradebook or the new one, whole. :func:`gradebook_scores` reads the scores back (hand grading included).
"""

import os
import shutil
import uuid
import warnings
from pathlib import Path

from .atomic import fsync

# nbgrader's gradebook API makes SQLAlchemy warn that a new submission is "not in session" while it adds one (the
# submission is added all the same): three lines of noise per merge that say nothing to an instructor.
warnings.filterwarnings("ignore", message=r"Object of type <\w+> not in session", module="nbgrader")


def update_gradebook(workdir: Path, update):
    """Apply ``update(path)`` to a copy of WORKDIR/gradebook.db (a new file if there is none yet) and put the
    copy in its place with ``os.replace``; return what ``update`` returned.

    The main gradebook is only ever changed this way, by the grading process: a process killed at any moment
    leaves either the old gradebook or the new one, complete (SQLite keeps everything in the one file between
    transactions). The workers' nbgrader writes only the gradebooks of their own course directories.
    """
    main = Path(workdir) / "gradebook.db"
    tmp = main.with_name(f".gradebook.db.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if main.exists():
            shutil.copyfile(main, tmp)
        result = update(tmp)
        fsync(tmp)
        os.replace(tmp, main)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
    fsync(main.parent, directory=True)
    return result


def merge_into_gradebook(source_db: Path, workdir: Path, assignment: str, students: list[str]) -> dict:
    """``merge_gradebook`` from a worker's gradebook into WORKDIR's, atomically (``update_gradebook``); return
    {student: why its grades could not be merged}."""
    def merge(target: Path) -> dict:
        try:
            return merge_gradebook(source_db, target, assignment, students)
        except Exception as exc:  # noqa: BLE001 - the worker's gradebook is unreadable: its students need attention
            return {s: f"its worker's gradebook could not be read ({type(exc).__name__}: {exc})" for s in students}

    return update_gradebook(workdir, merge)


def merge_gradebook(source_db: Path, target_db: Path, assignment: str, students: list[str]) -> dict:
    """Copy the submissions of ``students`` (scores, comments, flags, timestamps) from one gradebook to another;
    return {student: why it could not be copied} (those have no grades in the target)."""
    from nbgrader.api import Gradebook, MissingEntry

    failed = {}
    with Gradebook(f"sqlite:///{source_db}") as src, Gradebook(f"sqlite:///{target_db}") as dst:
        for student in students:
            try:
                sub = src.find_submission(assignment, student)
            except MissingEntry:
                continue
            try:
                _copy_submission(src, dst, sub, assignment, student)
            except Exception as exc:  # noqa: BLE001 - reported for this student, the others are merged
                dst.db.rollback()
                try:
                    dst.remove_submission(assignment, student)
                except Exception:  # noqa: BLE001
                    dst.db.rollback()
                failed[student] = f"its grades could not be merged into the gradebook ({type(exc).__name__}: {exc})"
    return failed


def _copy_submission(src, dst, sub, assignment: str, student: str) -> None:
    """One student's submission (its notebooks' grades and comments) from the gradebook ``src`` into ``dst``."""
    from nbgrader.api import MissingEntry

    dst.update_or_create_student(student)
    try:
        dst.remove_submission(assignment, student)
    except MissingEntry:
        pass
    dst.add_submission(assignment, student, timestamp=sub.timestamp)
    for nb in sub.notebooks:
        target_nb = dst.find_submission_notebook(nb.name, assignment, student)
        target_nb.flagged = nb.flagged
        target_nb.late_submission_penalty = nb.late_submission_penalty
        for grade in nb.grades:
            g = dst.find_grade(grade.name, nb.name, assignment, student)
            g.auto_score, g.manual_score = grade.auto_score, grade.manual_score
            g.extra_credit, g.needs_manual_grade = grade.extra_credit, grade.needs_manual_grade
        for comment in nb.comments:
            c = dst.find_comment(comment.name, nb.name, assignment, student)
            c.auto_comment, c.manual_comment = comment.auto_comment, comment.manual_comment
    dst.db.commit()


def gradebook_scores(workdir: Path, assignment: str, unfinished: set | None = None,
                     students=None) -> tuple[dict, float]:
    """{student: {test cell: (score, max)}} from the gradebook (manual scores included), and the written questions' points.

    A student with a test cell that has neither an automatic nor a manual score (nbgrader was killed or crashed
    before it saved the grades) is added to ``unfinished``, when given. ``students``: only these (default: all).
    """
    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook(f"sqlite:///{workdir / 'gradebook.db'}") as gb:
        nb = gb.find_notebook(assignment, assignment)
        manual_max = sum(c.max_score for c in nb.grade_cells if c.cell_type == "markdown")
        for sub in gb.find_assignment(assignment).submissions:
            if students is not None and sub.student.id not in students:
                continue
            for snb in sub.notebooks:
                code = [g for g in snb.grades if g.cell.cell_type == "code"]
                scores[sub.student.id] = {g.name: (float(g.score or 0.0), float(g.max_score)) for g in code}
                if unfinished is not None and any(g.auto_score is None and g.manual_score is None for g in code):
                    unfinished.add(sub.student.id)
    return scores, manual_max
