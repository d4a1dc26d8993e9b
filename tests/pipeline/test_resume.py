"""A grading process that dies is resumed by running the same command again (issue 14, item 3).

Fast (the default suite): ``grade`` runs with nbgrader's ``autograde`` replaced by a stand-in that writes
the grades and the graded notebook as nbgrader would (``fake_autograde``), in a process that kills itself
with SIGKILL while the second chunk is being graded; ``grade`` is then run again. Everything else (intake,
``generate_assignment``, the merges, the journal WORKDIR/progress_ASSIGNMENT.json, resuming) is the real
code. Further tests start from copies of that course directory with the grading itself (``run_autograde``)
replaced by a recorder of who would be graded. The gradebook is written only by the grading process,
through a copy put in place with ``os.replace``: a process killed in the middle of a merge leaves the
previous gradebook as it was.

Slow (``-m slow``): the same end to end with nbgrader and the sandboxed kernels, ``python -m autograder
grade`` on two submissions of notebook 02 killed with all its processes as soon as its journal records a
finished student, then the same command again.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from autograder import course, grade as grade_module
from autograder.grade import ATTENTION, GRADED, gradebook_scores, load_results, progress_path
from notebook_tools import nbgrader_meta, processes_mentioning, read, solution_path, student_path, with_solutions

NAME = "02_loss_comparison"
NB = f"{NAME}.ipynb"
pytestmark = pytest.mark.xdist_group("autograde")


def _class() -> dict:
    correct = with_solutions(read(student_path(NAME)), read(solution_path(NAME)))
    slip = nbformat.from_dict(json.loads(json.dumps(correct)))
    cell = next(c for c in slip.cells if nbgrader_meta(c).get("grade_id") == "simple_loss")
    cell.source = "def simple_loss(eps, eps_theta):\n    return jnp.mean((eps - eps_theta) ** 2)\n"
    return {"alice": correct, "bob": slip}


EXPECTED = {"alice": 11, "bob": 10}


def _write_class(folder: Path) -> Path:
    for student, nb in _class().items():
        (folder / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, folder / student / NB)
    return folder


def _command(subs: Path, work: Path, *extra: str) -> list[str]:
    """``python -m autograder grade ...`` with one student per chunk (``pool.MIN_CHUNK = 1``: a class of two would
    otherwise be one chunk, and there would be no finished chunk to kill the run after)."""
    program = ("import sys; from autograder import pool; pool.MIN_CHUNK = 1; "
               "from autograder.__main__ import main; sys.exit(main())")
    return [sys.executable, "-c", program, "grade", NAME, str(subs), "--workdir", str(work), "--workers", "1",
            "--no-compile-cache", *extra]


def _finished(work: Path) -> dict:
    try:
        return json.loads(progress_path(work, NAME).read_text())["finished"]
    except (OSError, ValueError, KeyError):
        return {}


def _autograded(work: Path, student: str) -> Path:
    return work / "autograded" / student / NAME / NB


FAKE_SCORES = {"alice": {}, "bob": {"test_simple_loss": 0.0}}  # {student: {test cell: score}}; the rest full marks


def fake_autograde(real, kill_at_call: int | None = None):
    """``course.nbgrader`` with ``autograde`` replaced: every student in the course directory's submitted/ gets
    the scores of FAKE_SCORES in its gradebook and its notebook copied to autograded/, as nbgrader would do.
    At call number ``kill_at_call`` (1, 2, ...) the process kills itself instead."""
    from nbgrader.api import Gradebook, MissingEntry

    calls = []

    def nbgrader(workdir, *args, **kw):
        if args[0] != "autograde":
            return real(workdir, *args, **kw)
        calls.append(sorted(p.name for p in (Path(workdir) / "submitted").iterdir()))
        if len(calls) == kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)
        with Gradebook(f"sqlite:///{Path(workdir) / 'gradebook.db'}") as gb:
            cells = [c for c in gb.find_notebook(NAME, NAME).grade_cells if c.cell_type == "code"]
            for student in calls[-1]:
                gb.update_or_create_student(student)
                try:
                    gb.remove_submission(NAME, student)
                except MissingEntry:
                    pass
                gb.add_submission(NAME, student)
                for cell in cells:
                    grade = gb.find_grade(cell.name, NAME, NAME, student)
                    grade.auto_score = FAKE_SCORES.get(student, {}).get(cell.name, cell.max_score)
                gb.db.commit()
                target = Path(workdir) / "autograded" / student / NAME / NB
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(workdir) / "submitted" / student / NAME / NB, target)
        return subprocess.CompletedProcess(["nbgrader", *args], 0, f"fake autograde of {calls[-1]}\n", "")

    nbgrader.calls = calls
    return nbgrader


@pytest.fixture(scope="module")
def fake_resumed(tmp_path_factory):
    """Grade with the stand-in nbgrader, killed during the second chunk (one student per chunk), then again."""
    root = tmp_path_factory.mktemp("fake-resume")
    subs, work = _write_class(root / "subs"), root / "work"
    program = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(course.REPO)!r}, {str(course.REPO / 'tests')!r}, {str(Path(__file__).parent)!r}]
        from pathlib import Path
        from autograder import course, grade, pool
        import test_resume
        pool.MIN_CHUNK = 1  # one student per chunk: the run is killed in the second
        course.nbgrader = test_resume.fake_autograde(course.nbgrader, kill_at_call=2)
        grade.grade({NAME!r}, Path({str(subs)!r}), Path({str(work)!r}), course.Limits(), workers=1,
                    compile_cache=False)
    """)
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert out.returncode == -signal.SIGKILL, out.stdout + out.stderr
    finished = _finished(work)
    killed = {"finished": finished, "scores": gradebook_scores(work, NAME)[0],
              "mtimes": {s: _autograded(work, s).stat().st_mtime_ns for s in finished},
              "logs": {e["log"]: (work / "logs" / e["log"]).read_bytes() for e in finished.values()},
              "files": sorted(p.name for p in work.iterdir())}
    lines = []
    with pytest.MonkeyPatch.context() as mp:
        fake = fake_autograde(course.nbgrader)
        mp.setattr(grade_module.course, "nbgrader", fake)
        results = grade_module.grade(NAME, subs, work, course.Limits(), workers=1, compile_cache=False,
                                     log=lines.append)
    return {"subs": subs, "work": work, "killed": killed, "lines": lines, "calls": fake.calls,
            "results": {r.student: r for r in results}}


def test_a_run_killed_after_a_chunk_resumes_where_it_stopped(fake_resumed):
    killed, work, lines = fake_resumed["killed"], fake_resumed["work"], fake_resumed["lines"]
    assert set(killed["finished"]) == {"alice"}, killed["finished"]
    assert killed["scores"] == {"alice": {c: (v, v) for c, v in _cell_points().items()}}, "the gradebook after the kill"
    assert "workers" in killed["files"] and not [f for f in killed["files"] if f.endswith(".tmp")]
    assert fake_resumed["calls"] == [["bob"]], "only the student not recorded as finished is graded again"
    assert any(l.startswith("resumed: 1 student(s) graded by an earlier run keep their results") for l in lines), lines
    assert _autograded(work, "alice").stat().st_mtime_ns == killed["mtimes"]["alice"], "alice was graded again"
    [(log, text)] = killed["logs"].items()
    assert (work / "logs" / log).read_bytes() == text
    results = fake_resumed["results"]
    assert {s: (r.status, r.score, r.max_score) for s, r in results.items()} == {
        s: (GRADED, score, 11) for s, score in EXPECTED.items()}
    assert {r.student: (r.status, r.score) for r in load_results(work, NAME)} == {
        s: (GRADED, score) for s, score in EXPECTED.items()}
    assert set(_finished(work)) == set(EXPECTED)
    assert not (work / "workers").exists() and not list(work.glob(".*.tmp*"))


def _cell_points() -> dict:
    return {"test_posterior_mean": 2.0, "test_posterior_variance": 1.0, "test_mean_loss": 1.0,
            "test_mean_from_noise": 2.0, "test_noise_loss_weight": 2.0, "test_noise_loss": 2.0, "test_simple_loss": 1.0}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Grade, kill the grading process after its first recorded student, grade again with the same command."""
    root = tmp_path_factory.mktemp("resume")
    subs, work = _write_class(root / "subs"), root / "work"
    started = time.monotonic()
    proc = subprocess.Popen(_command(subs, work), cwd=course.REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        while not _finished(work) and proc.poll() is None and time.monotonic() - started < 600:
            time.sleep(0.1)
        assert proc.poll() is None, f"grading ended before it could be killed:\n{proc.communicate()[0]}"
        os.killpg(proc.pid, signal.SIGKILL)  # the grading process and its nbgrader, in the middle of a chunk
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 30
    while processes_mentioning(str(work)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left_running = processes_mentioning(str(work))
    killed = {
        "finished": _finished(work),
        "scores": gradebook_scores(work, NAME)[0],  # the gradebook is readable after the kill
        "mtimes": {s: _autograded(work, s).stat().st_mtime_ns for s in _finished(work)},
        "logs": {e["log"]: (work / "logs" / e["log"]).read_bytes() for e in _finished(work).values()},
        "left_running": left_running,
    }
    out = subprocess.run(_command(subs, work), cwd=course.REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    return {"root": root, "subs": subs, "work": work, "killed": killed, "stdout": out.stdout,
            "results": {r.student: r for r in load_results(work, NAME)}}


@pytest.mark.slow
def test_a_killed_run_is_resumed_without_grading_the_finished_students_again(resumed):
    killed, work = resumed["killed"], resumed["work"]
    assert killed["finished"] and set(killed["finished"]) < set(EXPECTED), killed["finished"]
    assert killed["left_running"] == [], "processes of the killed run were still running"
    for student, entry in killed["finished"].items():
        assert killed["scores"][student], "a student recorded as finished has no grades in the gradebook"
        assert entry["result"]["status"] == GRADED
    line = next(l for l in resumed["stdout"].splitlines() if l.startswith("resumed:"))
    assert f"resumed: {len(killed['finished'])} student(s) graded by an earlier run keep their results" in line, line
    for student, mtime in killed["mtimes"].items():
        assert _autograded(work, student).stat().st_mtime_ns == mtime, f"{student} was graded again"
    for name, text in killed["logs"].items():
        assert (work / "logs" / name).read_bytes() == text, f"the log {name} of a resumed student was changed"
    regraded = set(EXPECTED) - set(killed["finished"])
    assert f"{len(EXPECTED)} submissions, {len(regraded)} to grade" in resumed["stdout"]


@pytest.mark.slow
def test_the_resumed_run_has_every_result_right(resumed):
    results, work = resumed["results"], resumed["work"]
    assert {s: (r.status, r.score, r.max_score) for s, r in results.items()} == {
        s: (GRADED, score, 11) for s, score in EXPECTED.items()}
    assert "simple_loss: wrong output" in results["bob"].cells["test_simple_loss"].message
    scores, _ = gradebook_scores(work, NAME)
    assert {s: sum(v for v, _ in scores[s].values()) for s in EXPECTED} == EXPECTED
    assert set(_finished(work)) == set(EXPECTED)
    for student in EXPECTED:
        assert _autograded(work, student).exists()
    leftovers = [p.name for p in work.iterdir() if p.name.endswith(".tmp") or ".tmp-" in p.name]
    assert leftovers == [] and not (work / "workers").exists()


@pytest.fixture
def copy_of(fake_resumed, tmp_path, monkeypatch):
    """A copy of the resumed course directory and its submissions; ``run_autograde`` replaced by a recorder."""
    subs, work = tmp_path / "subs", tmp_path / "work"
    shutil.copytree(fake_resumed["subs"], subs)
    shutil.copytree(fake_resumed["work"], work, symlinks=True)
    graded = []

    def recorder(workdir, assignment, students, *args, **kwargs):
        graded.append(list(students))
        return {}, {}

    monkeypatch.setattr(grade_module, "run_autograde", recorder)
    lines = []

    def run(**kw):
        graded.clear()
        lines.clear()
        results = grade_module.grade(NAME, subs, work, course.Limits(**kw.pop("limits", {})), workers=1,
                                     compile_cache=False, log=lines.append, **kw)
        return {r.student: r for r in results}, (graded[0] if graded else []), lines

    return subs, work, run


def test_a_finished_run_run_again_grades_nobody(copy_of, fake_resumed):
    _, work, run = copy_of
    results, graded, lines = run()
    assert graded == [] and any("resumed: 2 student(s)" in l for l in lines), lines
    assert {s: r.score for s, r in results.items()} == EXPECTED
    assert {s: r.cells for s, r in results.items()} == {s: r.cells for s, r in fake_resumed["results"].items()}


def test_a_changed_or_late_notebook_is_graded_and_the_others_resumed(copy_of):
    subs, work, run = copy_of
    nb = read(subs / "bob" / NB)
    nb.cells[0].source += " "  # one byte more
    nbformat.write(nb, subs / "bob" / NB)
    shutil.copytree(subs / "alice", subs / "dave")
    _, graded, lines = run()
    assert sorted(graded) == ["bob", "dave"], lines
    assert not (work / "autograded" / "bob").exists(), "the changed student's old graded notebook was kept"
    assert set(_finished(work)) == {"alice"}
    assert any("resumed: 1 student(s)" in l and "1 of its others changed" in l for l in lines), lines


def test_a_damaged_graded_notebook_or_missing_grades_are_graded_again(copy_of):
    from nbgrader.api import Gradebook

    _, work, run = copy_of
    _autograded(work, "alice").write_text("{")
    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gb:
        gb.remove_submission(NAME, "bob")
    _, graded, _ = run()
    assert sorted(graded) == ["alice", "bob"]


def test_restart_grades_everyone_again(copy_of):
    _, work, run = copy_of
    _, graded, lines = run(restart=True)
    assert sorted(graded) == sorted(EXPECTED) and "--restart: everyone is graded again" in lines
    assert list((work / "autograded").iterdir()) == [] if (work / "autograded").exists() else True
    assert _finished(work) == {}


def test_other_limits_grade_everyone_again(copy_of):
    _, _, run = copy_of
    _, graded, lines = run(limits={"timeout": 60})
    assert sorted(graded) == sorted(EXPECTED)
    assert any("other settings" in l and "everyone is graded again" in l for l in lines), lines


def test_the_command_has_restart(capsys):
    from autograder.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["grade", "--help"])
    assert exit_.value.code == 0 and "--restart" in capsys.readouterr().out
