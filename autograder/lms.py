"""Grades in the columns a learning platform imports: Canvas's gradebook CSV and Moodle's "Import grades: CSV file".

Both tables carry one row per student of the graded class. A submission that could not be graded ("needs
attention") has an EMPTY score, never a 0, and its reason in the comment column; a flagged one has its score and
the flags in the comment column. What each platform does with the columns (checked against their documentation,
not against a running instance: neither platform can be reached from where the course is built):

- Canvas (Grades > Import): the columns ``Student``, ``ID``, ``SIS User ID``, ``SIS Login ID``, ``Section`` and one
  column per assignment, named as the assignment is named in the Canvas course. Canvas matches a row to a student by
  ``ID`` (its own user id), ``SIS User ID`` or ``SIS Login ID``: this table puts the grading's student id (the
  submission's folder or file name) in ``SIS Login ID`` and leaves ``ID`` empty, so the student ids must be the
  Canvas login ids. An empty score leaves the Canvas grade as it is. The gradebook import reads no comments: the
  statuses go in a ``Notes`` column, which Canvas imports into its Notes column where the gradebook shows one (a
  course setting) and ignores otherwise.
- Moodle (Grades > Import > CSV file): any header; at import, the ``Username`` column is mapped to the user field
  "username" (or choose "ID number" / "Email address" if the student ids are those), the assignment column to the
  grade item, and the ``Feedback`` column to that item's feedback. An empty score is skipped by Moodle's import.
"""

import csv
from pathlib import Path

from .results import FLAGGED, StudentResult, spreadsheet_safe

FORMATS = ("csv", "canvas", "moodle")


def _score(result: StudentResult) -> str:
    return f"{result.score:g}" if result.graded else ""


def _comment(result: StudentResult) -> str:
    if not result.graded:
        return spreadsheet_safe(f"needs attention (not graded): {result.reason}")
    if result.status == FLAGGED:
        return spreadsheet_safe(f"flagged for the instructor: {result.reason}")
    return ""


def canvas_rows(results: list[StudentResult], column: str) -> list[list[str]]:
    """Canvas's gradebook import: header, then one row per student (score empty when not graded)."""
    rows = [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", spreadsheet_safe(column), "Notes"]]
    for r in results:
        rows.append([spreadsheet_safe(r.student), "", "", spreadsheet_safe(r.student), "", _score(r), _comment(r)])
    return rows


def moodle_rows(results: list[StudentResult], column: str) -> list[list[str]]:
    """Moodle's CSV grade import: the user column, the grade, its feedback."""
    rows = [["Username", spreadsheet_safe(column), "Feedback"]]
    for r in results:
        rows.append([spreadsheet_safe(r.student), _score(r), _comment(r)])
    return rows


def write_lms(results: list[StudentResult], path: Path, fmt: str, column: str) -> Path:
    """Write ``results`` for the platform ``fmt`` (``canvas`` or ``moodle``), the grade in a column named
    ``column`` (the assignment's name on the platform)."""
    rows = {"canvas": canvas_rows, "moodle": moodle_rows}[fmt](results, column)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path
