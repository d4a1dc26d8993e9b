"""Hostile submissions at intake and in the outputs (issue 14): the batch always finishes, nothing is lost, output is safe.

Every kind of broken or malicious zip, folder and notebook is built here and given to ``intake`` and
``prepare_notebook`` directly (no kernel, fast): each student with a problem needs attention with the
reason, the others are unaffected. The export, the feedback and the report are checked for spreadsheet
formulas, paths outside their folder and HTML that would run. One end-to-end ``grade`` run (two notebooks
through nbgrader) checks that the batch goes on and that a student whose grading was killed is not
exported as a plain 0.
"""

import csv
import json
import os
import stat
import zipfile
from pathlib import Path

import nbformat
import pytest

from autograder import course, grade as grade_module, intake as intake_module
from autograder.feedback import feedback_html, write_feedback
from autograder.gradebook import gradebook_scores
from autograder.intake import Submission, ZipLimits, intake, prepare_notebook, valid_student_id
from autograder.results import ATTENTION, FLAGGED, GRADED, CellResult, StudentResult, spreadsheet_safe, write_table
from autograder.report import report_html
from notebook_tools import read, student_path

NAME = "02_loss_comparison"
NB = f"{NAME}.ipynb"


@pytest.fixture(scope="module")
def release_nb():
    return read(student_path(NAME))


@pytest.fixture(scope="module")
def good_text(release_nb):
    return nbformat.writes(release_nb)


def _zip(path: Path, entries) -> Path:
    """A zip of ``entries``: (name, bytes or str) or (ZipInfo, bytes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            z.writestr(name, data)
    return path


def _intake(source, tmp_path, **kw):
    warnings = []
    subs = intake(source, NAME, tmp_path / "unpacked", warn=warnings.append, **kw)
    return {s.student: s for s in subs}, warnings


def _problem(subs, student):
    assert student in subs, f"{student!r} was lost: {sorted(subs)}"
    assert subs[student].path is None and subs[student].problem, f"{student}: no problem reported"
    return subs[student].problem


def _files_under(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------- zips

def test_a_clash_between_a_file_and_a_folder_is_one_students_problem(tmp_path, good_text):
    archive = _zip(tmp_path / "c.zip", [
        ("alice/" + NB, good_text),
        ("bob/" + NB, good_text), ("bob/" + NB + "/inner.ipynb", good_text),  # a file, then a folder of that name
        ("carol/x.ipynb/", b""), ("carol/x.ipynb", good_text),  # a folder, then a file of that name
    ])
    subs, _ = _intake(archive, tmp_path)
    assert subs["alice"].path is not None and not subs["alice"].problem
    assert "clashes with a file" in _problem(subs, "bob")
    assert "holds a folder of that name" in _problem(subs, "carol")


def test_an_entry_with_a_bad_crc_is_refused_and_the_rest_unpacked(tmp_path, good_text):
    archive = tmp_path / "crc.zip"
    marker = "MARKER-" * 20
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("alice/" + NB, good_text)
        z.writestr("bob/" + NB, good_text.replace('"cells": [', f'"x": "{marker}", "cells": [', 1))
    data = bytearray(archive.read_bytes())
    at = data.index(marker.encode())
    data[at] = ord("N")  # the stored bytes no longer match the CRC-32 of the entry
    archive.write_bytes(bytes(data))
    subs, _ = _intake(archive, tmp_path)
    assert not subs["alice"].problem
    problem = _problem(subs, "bob")
    assert "damaged in the zip" in problem and "CRC" in problem
    assert not (tmp_path / "unpacked" / "bob" / NB).exists(), "a partial file was left behind"


def test_a_zip_bomb_is_refused_entry_by_entry(tmp_path, good_text):
    archive = _zip(tmp_path / "bomb.zip", [("alice/" + NB, good_text),
                                           ("bomb/" + NB, b" " * (60 * 2**20))])  # 60 MiB of spaces, 60 KiB zipped
    assert archive.stat().st_size < 2**20
    subs, _ = _intake(archive, tmp_path)
    assert not subs["alice"].problem
    assert "is 60 MiB, more than 50 MiB" in _problem(subs, "bomb")
    assert not (tmp_path / "unpacked" / "bomb" / NB).exists()


def test_the_limit_on_the_total_unpacked_size(tmp_path, good_text):
    size = len(good_text.encode())
    entries = [(f"s{k}/{NB}", good_text) for k in range(5)]
    subs, _ = _intake(_zip(tmp_path / "t.zip", entries), tmp_path, limits=ZipLimits(max_total_bytes=3 * size))
    assert [s for s in sorted(subs) if not subs[s].problem] == ["s0", "s1", "s2"]
    for student in ("s3", "s4"):
        assert "unpack to more than" in _problem(subs, student) and "in all" in _problem(subs, student)


def test_the_limit_on_the_number_of_entries(tmp_path, good_text):
    entries = [("alice/" + NB, good_text)] + [(f"many/{k}.txt", "x") for k in range(200)]
    subs, _ = _intake(_zip(tmp_path / "n.zip", entries), tmp_path, limits=ZipLimits(max_entries=50))
    assert not subs["alice"].problem
    assert "holds 201 entries, more than 50" in _problem(subs, "many")


def test_symlink_entries_are_neither_created_nor_followed(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as z:
        info = zipfile.ZipInfo("mallory/" + NB)
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    subs, _ = _intake(archive, tmp_path)
    assert "symbolic link" in _problem(subs, "mallory")
    assert not any(p.is_symlink() for p in (tmp_path / "unpacked").rglob("*"))
    assert not (tmp_path / "unpacked" / "mallory" / NB).exists()


def test_absolute_paths_and_dot_dot_are_refused(tmp_path, good_text):
    archive = _zip(tmp_path / "trav.zip", [("alice/" + NB, good_text), ("../evil.ipynb", good_text),
                                           ("/tmp/evil_abs.ipynb", good_text),
                                           ("trudy/../../evil2.ipynb", good_text), ("C:/evil3.ipynb", good_text)])
    subs, warnings = _intake(archive, tmp_path)
    assert not subs["alice"].problem
    assert "leaves the submissions folder" in _problem(subs, "trudy")
    assert sum("leaves the submissions folder" in w for w in warnings) == 3, warnings  # they belong to no student
    assert not list(tmp_path.rglob("evil*.ipynb")) and not Path("/tmp/evil_abs.ipynb").exists()
    assert set(subs) == {"alice", "trudy"}


def test_an_entry_twice_and_backslash_paths(tmp_path, good_text):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("twice/" + NB, good_text)
        with pytest.warns(UserWarning):  # zipfile warns about the duplicate name
            z.writestr("twice/" + NB, "{}")
        z.writestr("dave\\" + NB, good_text)  # a Windows tool's separator
    subs, _ = _intake(archive, tmp_path)
    assert "holds it twice" in _problem(subs, "twice")
    assert subs["dave"].path is not None and subs["dave"].path.name == NB and not subs["dave"].problem


def test_an_encrypted_entry(tmp_path, good_text):
    archive = tmp_path / "enc.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("eve/" + NB, good_text)
        z.writestr("alice/" + NB, good_text)
    data = bytearray(archive.read_bytes())
    central = data.index(b"PK\x01\x02")  # eve's entry in the central directory: set its "encrypted" flag
    data[central + 8] |= 0x1
    archive.write_bytes(bytes(data))
    subs, _ = _intake(archive, tmp_path)
    assert "encrypted" in _problem(subs, "eve") and not subs["alice"].problem


def test_empty_zip_and_a_file_that_is_not_a_zip(tmp_path):
    subs, _ = _intake(_zip(tmp_path / "empty.zip", []), tmp_path)
    assert subs == {}
    fake = tmp_path / "fake.zip"
    fake.write_text("this is not a zip\n")
    with pytest.raises(SystemExit, match="not a zip archive"):
        _intake(fake, tmp_path)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(_zip(tmp_path / "whole.zip", [("a/" + NB, "x" * 5000)]).read_bytes()[:-30])
    with pytest.raises(SystemExit):
        _intake(truncated, tmp_path)


def test_an_oversized_entry_in_a_wrapped_export_is_not_lost(tmp_path, good_text):
    limits = ZipLimits(max_file_bytes=len(good_text.encode()))
    archive = _zip(tmp_path / "w.zip", [("export/alice/" + NB, good_text), ("export/big/" + NB, good_text + " " * 10),
                                        ("export/bob/" + NB, good_text)])
    subs, _ = _intake(archive, tmp_path, limits=limits)
    assert set(subs) == {"alice", "big", "bob"}
    assert not subs["alice"].problem and not subs["bob"].problem and "more than" in _problem(subs, "big")
    # a platform file at the top level, refused: its student is still there
    archive = _zip(tmp_path / "p.zip", [("alice_a.ipynb", good_text), ("carol_sub.ipynb", good_text + " " * 10)])
    subs, _ = _intake(archive, tmp_path, limits=limits)
    assert not subs["alice"].problem and "more than" in _problem(subs, "carol")


def test_only_notebooks_are_unpacked_and_ignored_files_are_reported(tmp_path, good_text):
    archive = _zip(tmp_path / "o.zip", [("alice/" + NB, good_text), ("alice/data.bin", b"\0" * 10000),
                                        ("notes/readme.txt", "no notebook"), ("index.html", "<html>"),
                                        ("__MACOSX/alice/._x.ipynb", "junk")])
    subs, warnings = _intake(archive, tmp_path)
    assert not (tmp_path / "unpacked" / "alice" / "data.bin").exists()
    assert "no notebook found" in _problem(subs, "notes")
    assert any("index.html" in w for w in warnings)
    assert set(subs) == {"alice", "notes"}


# ---------------------------------------------------------------- students and their notebooks

def test_two_notebooks_of_one_student_need_attention(tmp_path, good_text):
    archive = _zip(tmp_path / "two.zip", [("alice/" + NB, good_text), ("alice/old_attempt.ipynb", good_text),
                                          ("bob/" + NB, good_text), ("bob_upload.ipynb", good_text)])
    subs, _ = _intake(archive, tmp_path)
    assert "several notebooks" in _problem(subs, "alice") and "old_attempt.ipynb" in _problem(subs, "alice")
    assert "several notebooks" in _problem(subs, "bob")  # the same id twice: a folder and a platform file


@pytest.mark.parametrize("name", ["..", ".", "...", "=HYPERLINK(\"http://x\")", "-rf", "+1", "@cmd", "a b",
                                  "alice\n", "x" * 129, "café", ".hidden", "_x"])
def test_invalid_student_ids(name):
    assert not valid_student_id(name)


@pytest.mark.parametrize("name", ["alice", "a.b-c_d@uni.edu", "42", "x" * 128])
def test_valid_student_ids(name):
    assert valid_student_id(name)


def test_invalid_ids_from_a_folder_need_attention_and_are_never_paths(tmp_path, good_text):
    subs_dir = tmp_path / "subs"
    for folder in ("alice", "=cmd|' -C calc'!A0", "alice\n", "bad id"):
        (subs_dir / folder).mkdir(parents=True)
        (subs_dir / folder / NB).write_text(good_text)
    (subs_dir / ".._x.ipynb").write_text(good_text)  # the student id ".."
    (subs_dir / "-rf_x.ipynb").write_text(good_text)
    subs, _ = _intake(subs_dir, tmp_path)
    assert not subs["alice"].problem
    for student in ("=cmd|' -C calc'!A0", "alice\n", "bad id", "..", "-rf"):
        assert "not a valid student id" in _problem(subs, student)
    assert "'alice\\n'" in _problem(subs, "alice\n")  # shown escaped


def test_symlinks_in_a_folder_are_not_followed(tmp_path, good_text):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / NB).write_text(good_text)
    subs_dir = tmp_path / "subs"
    (subs_dir / "alice").mkdir(parents=True)
    (subs_dir / "alice" / NB).write_text(good_text)
    (subs_dir / "linkdir").symlink_to(outside, target_is_directory=True)
    (subs_dir / "bob").mkdir()
    (subs_dir / "bob" / NB).symlink_to(outside / NB)
    (subs_dir / "carol_x.ipynb").symlink_to(outside / NB)
    os.mkfifo(subs_dir / "bob" / "fifo.ipynb")
    subs, _ = _intake(subs_dir, tmp_path)
    assert not subs["alice"].problem
    assert "symbolic link: not followed" in _problem(subs, "linkdir")
    assert "symbolic link or not a file" in _problem(subs, "bob")
    assert "symbolic link" in _problem(subs, "carol")


def _prepared(tmp_path, release_nb, content) -> Submission:
    path = tmp_path / "in.ipynb"
    path.write_bytes(content if isinstance(content, bytes) else
                     (content if isinstance(content, str) else json.dumps(content)).encode())
    sub = Submission("alice", path)
    prepare_notebook(sub, release_nb, tmp_path / "out" / NB)
    assert bool(sub.problem) != (tmp_path / "out" / NB).exists()
    return sub


def _raw(good_text):
    return json.loads(good_text)


def _with_cell(good_text, change):
    raw = _raw(good_text)
    cell = next(c for c in raw["cells"] if c["cell_type"] == "code" and "nbgrader" in c["metadata"])
    change(cell)
    return raw


@pytest.mark.parametrize("kind, change, expected", [
    ("int source", lambda c: c.update(source=42), "source of cell"),
    ("list of ints as source", lambda c: c.update(source=[1, 2]), "source of cell"),
    ("no source", lambda c: c.pop("source"), "has no source"),
    ("grade_id a list", lambda c: c["metadata"]["nbgrader"].update(grade_id=["a", "b"]), "grade_id of cell"),
    ("grade_id a dict", lambda c: c["metadata"]["nbgrader"].update(grade_id={"a": 1}), "grade_id of cell"),
    ("nbgrader a string", lambda c: c["metadata"].update(nbgrader="yes"), "nbgrader metadata: in cell"),
    ("nbgrader a list", lambda c: c["metadata"].update(nbgrader=[1]), "nbgrader metadata: in cell"),
    ("nbgrader null", lambda c: c["metadata"].update(nbgrader=None), "nbgrader metadata: in cell"),
    ("points a string", lambda c: c["metadata"]["nbgrader"].update(points="9"), "points of cell"),
    ("grade an integer", lambda c: c["metadata"]["nbgrader"].update(grade=1), "grade of cell"),
    ("metadata a list", lambda c: c.update(metadata=[]), "metadata of cell"),
    ("unknown cell type", lambda c: c.update(cell_type="evil"), "cell type"),
    ("outputs a string", lambda c: c.update(outputs="x"), "not a valid Jupyter notebook"),
    ("execution_count a string", lambda c: c.update(execution_count="1"), "not a valid Jupyter notebook"),
])
def test_malformed_cells_and_nbgrader_metadata_need_attention(tmp_path, release_nb, good_text, kind, change, expected):
    sub = _prepared(tmp_path, release_nb, _with_cell(good_text, change))
    assert expected in sub.problem, (kind, sub.problem)


@pytest.mark.parametrize("content, expected", [
    ([1, 2, 3], "holds a list, not a notebook object"),
    ("null", "holds null"),
    ('"text"', "holds a string"),
    ({"cells": {"a": 1}, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, "cells are an object, not a list"),
    ({"cells": [1], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, "cell 1 is an integer"),
    ({"cells": [], "metadata": [], "nbformat": 4, "nbformat_minor": 5}, "its metadata is a list"),
    ({"cells": [], "metadata": {}, "nbformat": 99, "nbformat_minor": 0}, "not a valid Jupyter notebook"),
    ({"metadata": {}}, "cells are null"),
    ("", "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    (b"\xff\xfe\x00{garbage", "not valid JSON"),
])
def test_notebooks_that_are_not_notebooks_need_attention(tmp_path, release_nb, content, expected):
    sub = _prepared(tmp_path, release_nb, content)
    assert expected in sub.problem, sub.problem


def test_an_oversized_notebook_in_a_folder(tmp_path, release_nb, monkeypatch):
    monkeypatch.setattr(intake_module, "MAX_NOTEBOOK_BYTES", 1000)
    sub = _prepared(tmp_path, release_nb, "x" * 2000)
    assert "more than 1000 bytes" in sub.problem


def test_a_good_notebook_is_prepared(tmp_path, release_nb, good_text):
    sub = _prepared(tmp_path, release_nb, good_text)
    assert not sub.problem and not sub.notes


# ---------------------------------------------------------------- outputs

HOSTILE = "<script>alert('x')</script>"


def _results():
    cells = {"test_mean_loss": CellResult(0.0, 1.0, f"mean_loss: it raised ValueError: {HOSTILE} </pre><img src=x onerror=alert(1)>"),
             "test_noise_loss": CellResult(2.0, 2.0, "")}
    return [
        StudentResult("alice", FLAGGED, [f"the notebook was named {HOSTILE}.ipynb"], cells, 5.0, "alice/x.ipynb"),
        StudentResult(HOSTILE, ATTENTION, [f"{HOSTILE!r} is not a valid student id"]),
        StudentResult("..", ATTENTION, ["'..' is not a valid student id"]),
        StudentResult("=1+1", ATTENTION, ["=HYPERLINK(\"http://evil\")"]),
        StudentResult("bob", GRADED, [], {k: CellResult(v.max_score, v.max_score, "") for k, v in cells.items()}, 5.0),
    ]


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_spreadsheet_formulas_are_neutralised(text):
    assert spreadsheet_safe(text) == "'" + text
    assert spreadsheet_safe("alice") == "alice" and spreadsheet_safe("a=b") == "a=b"


def test_the_export_has_no_formula_and_no_plain_zero(tmp_path):
    path = write_table(_results(), tmp_path / "g.csv")
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        for key, value in row.items():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (key, value)
    by_id = {row["student"]: row for row in rows}
    assert by_id["'=1+1"]["reason"] == "'=HYPERLINK(\"http://evil\")" and by_id["'=1+1"]["score"] == ""
    assert by_id[".."]["status"] == ATTENTION and by_id[".."]["score"] == ""
    assert by_id["alice"]["score"] == "2" and by_id["bob"]["score"] == "3"


def test_feedback_is_escaped_and_stays_in_its_folder(tmp_path):
    out = tmp_path / "deep" / "feedback"
    logged = []
    paths = write_feedback(_results(), NAME, out, log=logged.append)
    assert sorted(p.parent.name for p in paths) == ["alice", "bob"]
    assert all(p.resolve().is_relative_to(out.resolve()) for p in paths)
    assert _files_under(tmp_path) == sorted(["deep", "deep/feedback", "deep/feedback/alice", "deep/feedback/bob",
                                             f"deep/feedback/alice/{NAME}.html", f"deep/feedback/bob/{NAME}.html"])
    assert len(logged) == 3 and all("not a valid student id" in line for line in logged)
    for result in _results():
        text = feedback_html(result, NAME)
        assert "<script" not in text and "<img" not in text
    assert "&lt;script&gt;" in paths[0].read_text()


def test_the_report_is_escaped():
    text = report_html(_results(), NAME)
    assert "<script" not in text and "<img" not in text
    # the student id, shown as text (jinja2 writes the quote as &#39;, html.escape as &#x27;: the same character)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text.replace("&#x27;", "&#39;")


# ---------------------------------------------------------------- the gradebook of a killed run

def test_a_test_cell_without_any_score_means_grading_did_not_finish(tmp_path):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        gb.add_assignment("A")
        gb.add_notebook("A", "A")
        gb.add_grade_cell("test_x", "A", "A", max_score=2, cell_type="code")
        gb.add_solution_cell("x", "A", "A")
        for student in ("done", "killed"):
            gb.add_student(student)
            gb.add_submission("A", student)
        gb.find_grade("test_x", "A", "A", "done").auto_score = 0.0
        gb.db.commit()
    unfinished = set()
    scores, _ = gradebook_scores(tmp_path, "A", unfinished)
    assert scores == {"done": {"test_x": (0.0, 2.0)}, "killed": {"test_x": (0.0, 2.0)}}
    assert unfinished == {"killed"}


# ---------------------------------------------------------------- one batch end to end

def test_a_hostile_batch_finishes_and_loses_nobody(tmp_path, good_text, monkeypatch):
    """Two notebooks go through nbgrader: ``stubs`` (graded) and ``killed``, whose grades are made to look as if
    nbgrader had been killed in the middle (no score saved). The rest never reach nbgrader."""
    archive = _zip(tmp_path / "class.zip", [
        ("stubs/" + NB, good_text), ("killed/" + NB, good_text),
        ("badmeta/" + NB, json.dumps(_with_cell(good_text, lambda c: c["metadata"].update(nbgrader=7)))),
        ("listnb/" + NB, "[1, 2]"), ("=evil_x.ipynb", good_text), ("two/" + NB, good_text), ("two/b.ipynb", good_text),
        ("../up.ipynb", good_text), ("big/" + NB, " " * (51 * 2**20)),
    ])
    real = course.nbgrader

    def nbgrader_killed_for_one(workdir, *args, **kw):
        result = real(workdir, *args, **kw)
        if args[0] == "autograde" and (Path(workdir) / "submitted" / "killed").exists():
            from nbgrader.api import Gradebook

            with Gradebook(f"sqlite:///{Path(workdir) / 'gradebook.db'}") as gb:
                gb.find_grade("test_mean_loss", NAME, NAME, "killed").auto_score = None
                gb.db.commit()
        return result

    monkeypatch.setattr(grade_module.course, "nbgrader", nbgrader_killed_for_one)
    logged = []
    results = grade_module.grade(NAME, archive, tmp_path / "work", course.Limits(timeout=120, memory_mb=2048),
                                 workers=1, compile_cache=False, log=logged.append)
    by_id = {r.student: r for r in results}
    assert set(by_id) == {"stubs", "killed", "badmeta", "listnb", "=evil", "two", "big"}
    assert by_id["stubs"].status == GRADED and by_id["stubs"].score == 0 and by_id["stubs"].max_score == 11
    for student, why in (("killed", "grading did not finish"), ("badmeta", "nbgrader metadata"),
                         ("listnb", "holds a list"), ("=evil", "not a valid student id"),
                         ("two", "several notebooks"), ("big", "more than 50 MiB")):
        assert by_id[student].status == ATTENTION and why in by_id[student].reason, (student, by_id[student].reason)
    assert any("leaves the submissions folder" in line for line in logged), logged
    rows = {row["student"]: row for row in csv.DictReader(write_table(results, tmp_path / "g.csv").open())}
    assert rows["killed"]["score"] == "" and rows["killed"]["status"] == ATTENTION
    assert rows["'=evil"]["score"] == "" and rows["stubs"]["score"] == "0"
    assert not (tmp_path / "work" / "up.ipynb").exists() and not (tmp_path / "up.ipynb").exists()
