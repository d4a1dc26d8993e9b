"""Feedback for each student: the score of every exercise and the checker's message.

Written from the grading results (``grade.load_results``), not from the
autograded notebooks: a student sees what the checker said (what is wrong,
the input, the likely slip), and never the source of a test cell, a hidden
test or a traceback. Messages are the one-line ``ename: evalue`` of an error
or the checker's own text, which holds no source.
"""

from pathlib import Path

from .intake import valid_student_id
from .results import StudentResult
from .pages import render


def exercise_of(test_cell: str) -> str:
    """``test_mean_loss`` -> ``mean_loss``."""
    return test_cell[5:] if test_cell.startswith("test_") else test_cell


def feedback_html(result: StudentResult, assignment: str) -> str:
    rows = [{"exercise": exercise_of(cell), "score": c.score, "max_score": c.max_score, "ok": c.score >= c.max_score,
             "said": "passed" if c.score >= c.max_score else (c.message or "failed")} for cell, c in result.cells.items()]
    return render("feedback.html.j2", assignment=assignment, r=result, rows=rows)


def write_feedback(results: list[StudentResult], assignment: str, out_dir: Path, log=lambda message: None) -> list[Path]:
    """One ``OUT_DIR/<student>/<assignment>.html`` per student; return the paths.

    A result whose student id is not a valid id (``grade.valid_student_id``: it could name a folder outside
    OUT_DIR) gets no page: there is no student to give it to; ``log`` says so (the report and the export list it).
    """
    paths = []
    for result in results:
        if not valid_student_id(result.student):
            log(f"no feedback written for {ascii(result.student)}: not a valid student id")
            continue
        path = Path(out_dir) / result.student / f"{assignment}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(feedback_html(result, assignment))
        paths.append(path)
    return paths
