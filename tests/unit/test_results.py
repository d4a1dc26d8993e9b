"""The results (autograder/results.py): saved and read back whole, bounded, and exported without a plain zero."""

import csv

from autograder.results import (ATTENTION, FLAGGED, GRADED, MAX_REASONS, REASON_CHARS, CellResult, StudentResult,
                                bounded, load_results, result_from_dict, save_results, write_table)

NAME = "02_loss_comparison"


def _class():
    return [StudentResult("alice", GRADED, [], {"test_a": CellResult(2.0, 2.0, ""), "test_b": CellResult(0.0, 1.0, "b")},
                          1.0, "alice.ipynb"),
            StudentResult("bob", FLAGGED, ["time limit"], {"test_a": CellResult(1.0, 2.0, "a")}, 1.0, "bob.ipynb"),
            StudentResult("carol", ATTENTION, ["corrupt notebook"], notebook="carol.ipynb")]


def test_results_saved_are_read_back(tmp_path):
    path = save_results(_class(), tmp_path, NAME)
    assert path.name == f"results_{NAME}.json" and not list(tmp_path.glob(".*.tmp"))
    assert load_results(tmp_path, NAME, refresh_scores=False) == _class()
    assert [result_from_dict(r.__dict__ | {"cells": {k: vars(v) for k, v in r.cells.items()}}) for r in _class()] == _class()


def test_a_students_reasons_are_bounded_with_a_visible_truncation():
    """(moved from tests/pipeline/test_trees.py)"""
    reasons = bounded(["x" * 10_000] * (MAX_REASONS + 7))
    assert len(reasons) == MAX_REASONS + 1 and reasons[-1] == "[... truncated: 7 more reasons not shown]"
    assert all(len(r) < REASON_CHARS + 100 for r in reasons) and "truncated" in reasons[0]
    assert bounded(["short"]) == ["short"]


def test_the_table_has_an_empty_score_for_a_submission_not_graded(tmp_path):
    rows = list(csv.reader(write_table(_class(), tmp_path / "out" / "grades.csv").open()))
    assert rows[0] == ["student", "status", "reason", "score", "max_score", "manual_points_pending", "test_a", "test_b"]
    by = {r[0]: r for r in rows[1:]}
    assert by["alice"][3:] == ["2", "3", "1", "2", "0"]
    assert by["bob"][1:4] == [FLAGGED, "time limit", "1"] and by["bob"][7] == ""
    assert by["carol"][3:6] == ["", "", ""], "needs attention: never a 0"
