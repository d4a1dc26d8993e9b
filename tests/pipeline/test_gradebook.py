"""The gradebook (autograder/gradebook.py): replaced atomically by the grading process, never edited in place.

(Moved from tests/pipeline/test_resume.py, which tests the journal's resuming through whole runs.)
"""

import hashlib
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autograder import course
from autograder.gradebook import gradebook_scores, merge_into_gradebook, update_gradebook


# ---------------------------------------------------------------- the gradebook is replaced, never edited in place

def _gradebook(path: Path, students: dict) -> None:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{path}") as gb:
        if not gb.assignments:
            gb.add_assignment("A")
            gb.add_notebook("A", "A")
            gb.add_grade_cell("test_x", "A", "A", max_score=2, cell_type="code")
            gb.add_solution_cell("x", "A", "A")
        for student, score in students.items():
            gb.update_or_create_student(student)
            gb.add_submission("A", student)
            gb.find_grade("test_x", "A", "A", student).auto_score = score
        gb.db.commit()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_kill_during_a_merge_leaves_the_previous_gradebook_intact(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    _gradebook(work / "gradebook.db", {"old": 1.0})
    shutil.copy(work / "gradebook.db", tmp_path / "worker.db")
    _gradebook(tmp_path / "worker.db", {"new1": 2.0, "new2": 0.0})
    before = _digest(work / "gradebook.db")
    # the grading process is killed after the first student of the chunk was copied into the gradebook
    program = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(course.REPO)!r})
        from pathlib import Path
        from autograder import gradebook
        real, copied = gradebook._copy_submission, []
        def copy_then_die(*args):
            real(*args)
            copied.append(args[-1])
            if len(copied) == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        gradebook._copy_submission = copy_then_die
        gradebook.merge_into_gradebook(Path({str(tmp_path / 'worker.db')!r}), Path({str(work)!r}), "A", ["new1", "new2"])
    """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert out.returncode == -signal.SIGKILL, out.stderr
    assert [p.name for p in work.glob(".gradebook.db.*.tmp")], "the merge should have been working on a copy"
    assert _digest(work / "gradebook.db") == before, "the gradebook was changed in place"
    assert gradebook_scores(work, "A")[0] == {"old": {"test_x": (1.0, 2.0)}}
    # the next merge starts again from the intact gradebook
    assert merge_into_gradebook(tmp_path / "worker.db", work, "A", ["new1", "new2"]) == {}
    assert gradebook_scores(work, "A")[0] == {"old": {"test_x": (1.0, 2.0)}, "new1": {"test_x": (2.0, 2.0)},
                                             "new2": {"test_x": (0.0, 2.0)}}


def test_a_failed_update_leaves_the_gradebook_and_no_temporary_file(tmp_path):
    _gradebook(tmp_path / "gradebook.db", {"old": 1.0})
    before = _digest(tmp_path / "gradebook.db")

    def fail(db):
        _gradebook(db, {"half": 2.0})
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        update_gradebook(tmp_path, fail)
    assert _digest(tmp_path / "gradebook.db") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gradebook.db"]
