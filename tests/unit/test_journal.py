"""The resume journal (autograder/journal.py): what it writes is what it reads back, and nothing else is resumed."""

import json
from pathlib import Path

from autograder import course
from autograder.intake import Submission
from autograder.journal import (entry, load_progress, progress_path, prune, run_key, save_progress,
                                submission_digest, submission_digests)
from autograder.results import GRADED, CellResult, StudentResult, result_from_dict

NAME = "02_loss_comparison"


def _result(student="alice"):
    return StudentResult(student, GRADED, [], {"test_x": CellResult(1.0, 2.0, "x: wrong")}, 3.0, f"{student}.ipynb")


def test_a_journal_reads_back_what_was_saved(tmp_path):
    notebook = tmp_path / "alice" / "a.ipynb"
    notebook.parent.mkdir()
    notebook.write_text("{}")
    finished = {"alice": entry("digest", notebook, "alice.log", _result())}
    save_progress(tmp_path, NAME, "key", finished)
    assert load_progress(tmp_path, NAME, "key") == (json.loads(json.dumps(finished)), "")
    assert result_from_dict(load_progress(tmp_path, NAME, "key")[0]["alice"]["result"]) == _result()
    assert not list(tmp_path.glob(".*.tmp")), "written through a temporary file, renamed into place"


def test_no_journal_another_key_or_a_damaged_journal_resumes_nobody(tmp_path):
    assert load_progress(tmp_path, NAME, "key") == ({}, "")
    save_progress(tmp_path, NAME, "key", {"alice": {}})
    finished, why = load_progress(tmp_path, NAME, "other key")
    assert finished == {} and "other settings" in why
    progress_path(tmp_path, NAME).write_text('{"finished": [')
    finished, why = load_progress(tmp_path, NAME, "key")
    assert finished == {} and "could not be read" in why


def test_the_run_key_changes_with_the_limits():
    assert run_key(NAME, course.Limits()) == run_key(NAME, course.Limits())
    assert run_key(NAME, course.Limits()) != run_key(NAME, course.Limits(timeout=course.Limits().timeout + 1))


def test_a_submission_digest_is_its_bytes_and_where_it_was_found(tmp_path):
    for student, text in (("alice", "{}"), ("bob", "{}"), ("carol", "{ }")):
        (tmp_path / student).mkdir()
        (tmp_path / student / "nb.ipynb").write_text(text)
    subs = [Submission(s, tmp_path / s / "nb.ipynb") for s in ("alice", "bob", "carol")]
    subs.append(Submission("dave", tmp_path / "dave" / "nb.ipynb"))  # no such file: its problem says so
    subs.append(Submission("erin", None, "no notebook found"))
    digests = submission_digests(subs)
    assert set(digests) == {"alice", "bob", "carol"}
    assert len(set(digests.values())) == 3, "another folder or other bytes: another digest"
    assert digests["alice"] == submission_digest(subs[0])
    assert "could not be read" in subs[3].problem and subs[4].problem == "no notebook found"


def test_prune_keeps_only_what_the_journal_lists(tmp_path):
    for student in ("alice", "bob"):
        (tmp_path / "autograded" / student).mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    for log in ("alice.log", "bob.log"):
        (tmp_path / "logs" / log).write_text("")
    prune(tmp_path, {"alice": {"log": "alice.log"}})
    assert [p.name for p in (tmp_path / "autograded").iterdir()] == ["alice"]
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["alice.log"]
    prune(Path(tmp_path / "nothing here"), {})  # no folders: nothing to do
