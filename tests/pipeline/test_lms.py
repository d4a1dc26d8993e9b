"""Grades for a learning platform: Canvas's and Moodle's import columns; statuses as comments, never zeros."""

import csv

from autograder.__main__ import main
from autograder.grade import ATTENTION, FLAGGED, GRADED, CellResult, StudentResult, save_results
from autograder.lms import write_lms


def _class():
    return [StudentResult("alice", GRADED, cells={"t": CellResult(3, 3, "")}),
            StudentResult("bob", FLAGGED, reasons=["calls `exec`"], cells={"t": CellResult(1, 3, "wrong")}),
            StudentResult("carol", ATTENTION, reasons=["corrupt notebook: not valid JSON"]),
            StudentResult("=evil", GRADED, cells={"t": CellResult(0, 3, "wrong")})]


def _read(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_canvas_columns_and_statuses(tmp_path):
    rows = _read(write_lms(_class(), tmp_path / "c.csv", "canvas", "Notebook 2: losses"))
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Notebook 2: losses", "Notes"]
    by = {r[3]: r for r in rows[1:]}
    assert by["alice"][5] == "3" and by["alice"][6] == ""
    assert by["bob"][5] == "1" and by["bob"][6].startswith("flagged") and "exec" in by["bob"][6]
    assert by["carol"][5] == "" and "needs attention" in by["carol"][6]  # never a zero
    assert by["'=evil"][5] == "0"  # a formula-looking id is quoted


def test_moodle_columns_and_statuses(tmp_path):
    rows = _read(write_lms(_class(), tmp_path / "m.csv", "moodle", "02_loss_comparison"))
    assert rows[0] == ["Username", "02_loss_comparison", "Feedback"]
    by = {r[0]: r for r in rows[1:]}
    assert by["carol"][1] == "" and "not valid JSON" in by["carol"][2]
    assert by["bob"][1] == "1" and "flagged" in by["bob"][2]


def test_export_format_from_the_command_line(tmp_path, monkeypatch):
    import autograder.results as results_module

    save_results(_class(), tmp_path, "02_loss_comparison")
    monkeypatch.setattr(results_module, "load_results", lambda workdir, assignment, refresh_scores=True: _class())
    assert main(["export", "02_loss_comparison", "--workdir", str(tmp_path), "--format", "moodle"]) == 0
    rows = _read(tmp_path / "grades_02_loss_comparison_moodle.csv")
    assert rows[0][0] == "Username" and len(rows) == 5
