"""Feedback for each student: the score of every exercise and the checker's message.

Written from the grading results (``grade.load_results``), not from the
autograded notebooks: a student sees what the checker said (what is wrong,
the input, the likely slip), and never the source of a test cell, a hidden
test or a traceback. Messages are the one-line ``ename: evalue`` of an error
or the checker's own text, which holds no source.
"""

import html
from pathlib import Path

from .grade import ATTENTION, StudentResult, valid_student_id

STYLE = """body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}
pre{white-space:pre-wrap;margin:0}.ok{color:#176117}.bad{color:#a11}"""


def exercise_of(test_cell: str) -> str:
    """``test_mean_loss`` -> ``mean_loss``."""
    return test_cell[5:] if test_cell.startswith("test_") else test_cell


def feedback_html(result: StudentResult, assignment: str) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(assignment)}: feedback for {e(result.student)}</title>",
             f"<style>{STYLE}</style></head><body>",
             f"<h1>{e(assignment)}</h1><p>Feedback for <b>{e(result.student)}</b>.</p>"]
    if result.status == ATTENTION:
        parts.append(f"<p class='bad'>Your submission could not be graded automatically: {e(result.reason)}. "
                     "Your instructor has been told and will look at it.</p></body></html>")
        return "".join(parts)
    parts.append(f"<p>Automatic score: <b>{result.score:g} / {result.max_score:g}</b>")
    if result.manual_max:
        parts.append(f" (plus {result.manual_max:g} points of written answers, graded by hand)")
    parts.append("</p>")
    if result.reasons:
        parts.append("<p>Notes from the autograder:</p><ul>" + "".join(f"<li>{e(r)}</li>" for r in result.reasons) + "</ul>")
    parts.append("<table><tr><th>exercise</th><th>points</th><th>what the checker said</th></tr>")
    for cell, c in result.cells.items():
        ok = c.score >= c.max_score
        said = "passed" if ok else (c.message or "failed")
        parts.append(f"<tr><td>{e(exercise_of(cell))}</td><td>{c.score:g} / {c.max_score:g}</td>"
                     f"<td class='{'ok' if ok else 'bad'}'><pre>{e(said)}</pre></td></tr>")
    parts.append("</table></body></html>")
    return "".join(parts)


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
