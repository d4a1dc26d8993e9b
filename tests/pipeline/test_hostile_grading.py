"""Submissions that attack the checker, graded for real: none earns a point its answers do not.

The verdict of every test is made in the grader's process (autograder/execute.py); the kernel only runs the
answers on inputs the grader draws. Each submission below is notebook 02 with some answers wrong or missing
and one way of tampering with the checker that used to score full marks when the checker ran in the kernel:
patching its module, replacing it in sys.modules, rewriting the test cells with an IPython input
transformer, emitting an execute_result (nbgrader's partial credit) from inside an answer, reading the
checker's stack frames, forging the kernel's reply, calling the reference through ``__wrapped__`` or exec.
Each must get exactly the score an honest grading of its answers gets, and be flagged when its source
reaches for the checker or the interpreter.
"""

import copy
import re

import pytest

from autograder import course
from autograder.grade import FLAGGED, GRADED, grade
from notebook_tools import (nbgrader_meta, processes_mentioning, read, solution_path, student_path, thread_holder,
                            with_solutions, disk_filler, disk_filled)

NAME = "02_loss_comparison"
pytestmark = pytest.mark.xdist_group("hostile-grading")
POINTS = {"test_posterior_mean": 2, "test_posterior_variance": 1, "test_mean_loss": 1,
          "test_mean_from_noise": 2, "test_noise_loss_weight": 2, "test_noise_loss": 2, "test_simple_loss": 1}
FULL = sum(POINTS.values())
WRONG_SIMPLE = "def simple_loss(eps, eps_theta):\n    return jnp.mean((eps - eps_theta) ** 2)\n"

PATCH_CHECKER = '''
import course_utils.grading as g
g.verdict = lambda request, outcome: (True, f"{request.name}: passed")
g.judge = lambda request, outcome: f"{request.name}: passed"
g.compare = g.values.compare = lambda *a, **k: None
g.check = lambda *a, **k: print("passed")
g.registry._REGISTRY.clear()
'''
FAKE_MODULE = '''
import sys, types, json
fake = types.ModuleType("course_utils.grading")
def serve(payload, get_fn):
    from IPython.display import display
    display({"application/x-course-check+json": json.dumps({"body": {"str": "passed"}, "arrays": ""})}, raw=True)
fake.serve = fake.check = serve
sys.modules["course_utils.grading"] = fake
import course_utils
course_utils.grading = fake
'''
TRANSFORMER = '''
def _rewrite(lines):
    text = "".join(lines)
    return ["print('passed')\\n"] if ("check(" in text or "serve(" in text) else lines
get_ipython().input_transformers_post.append(_rewrite)
'''
DISPLAYHOOK = '''import sys
def simple_loss(eps, eps_theta):
    sys.displayhook("1.0")
    return 0.0 * jnp.sum(eps)
'''
FRAMES = '''import sys
def simple_loss(eps, eps_theta):
    frame = sys._getframe()
    while frame is not None:
        for key in ("expected", "reference", "exp"):
            if key in frame.f_locals:
                return frame.f_locals[key]
        frame = frame.f_back
    return 0.0 * jnp.sum(eps)
'''
FORGED_REPLY = '''import base64, io, json
import numpy as np
from IPython.display import display
def simple_loss(eps, eps_theta):
    results = [{"dict": [["out", {"float": 0.0}]]}] * 5
    empty = io.BytesIO()
    np.savez(empty)
    display({"application/x-course-check+json": json.dumps(
        {"body": {"dict": [["results", {"seq": results, "type": "list"}], ["calls", {"dict": []}]]},
         "arrays": base64.b64encode(empty.getvalue()).decode()})}, raw=True)
    return 0.0 * jnp.sum(eps)
'''
# Forged replies: a reply nested 200,000 levels deep, one of 350,000 values (whose message and feedback once
# weighed 36 MB), one whose array inflates to 1 GiB, and an exception message of 30 MB.
DEEP_REPLY = '''import json
from IPython.display import display
def simple_loss(eps, eps_theta):
    display({"application/x-course-check+json": '{"body": ' + '{"seq": [' * 200_000 + "]}" * 200_000 + ', "arrays": ""}'},
            raw=True)
    return 0.0 * jnp.sum(eps)
'''
MANY_OBJECTS = '''import base64, io, json
import numpy as np
from IPython.display import display
def simple_loss(eps, eps_theta):
    empty = io.BytesIO()
    np.savez(empty)
    many = {"seq": [{"str": "x" * 100}] * 350_000, "type": "list"}  # 40 MB of text
    results = [{"dict": [["out", many]]}]
    display({"application/x-course-check+json": json.dumps(
        {"body": {"dict": [["results", {"seq": results, "type": "list"}], ["calls", {"dict": []}]]},
         "arrays": base64.b64encode(empty.getvalue()).decode()})}, raw=True)
    return 0.0 * jnp.sum(eps)
'''
INFLATING = '''import base64, io, json, zipfile
from IPython.display import display
def simple_loss(eps, eps_theta):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("a0.npy", "w", force_zip64=True) as member:
            member.write(b"\\x93NUMPY\\x01\\x00v\\x00{'descr': '<f8', 'fortran_order': False, 'shape': (134217728,), }"
                         + b" " * 53 + b"\\n")
            for _ in range(1024):
                member.write(bytes(2**20))
    results = [{"dict": [["out", {"array": "a0"}]]}] * 5
    display({"application/x-course-check+json": json.dumps(
        {"body": {"dict": [["results", {"seq": results, "type": "list"}], ["calls", {"dict": []}]]},
         "arrays": base64.b64encode(out.getvalue()).decode()})}, raw=True)
    return 0.0 * jnp.sum(eps)
'''
WRAPPED = "simple_loss = cu.losses.simple_loss.__wrapped__\n"
EXEC = 'exec("from course_utils import losses as L\\nsimple_loss = L.simple_loss.raw")\n'
HARMLESS = "import os, sys\nimport numpy as np\n"


def _replace(nb, grade_id, source):
    nb = copy.deepcopy(nb)
    (cell,) = [c for c in nb.cells if nbgrader_meta(c).get("grade_id") == grade_id]
    cell.source = source
    return nb


def _source(nb, grade_id):
    return next(c.source for c in nb.cells if nbgrader_meta(c).get("grade_id") == grade_id)


def _class():
    correct = with_solutions(read(student_path(NAME)), read(solution_path(NAME)))
    stubs = read(student_path(NAME))
    wrong_simple = _replace(correct, "simple_loss", WRONG_SIMPLE)
    first = _source(correct, "posterior_mean")
    return {  # student: (notebook, expected score, expected status, text expected in the reasons)
        "honest": (correct, FULL, GRADED, ""),
        "harmless": (_replace(correct, "posterior_mean", HARMLESS + first), FULL, GRADED, ""),
        "patcher": (_replace(wrong_simple, "posterior_mean", first + PATCH_CHECKER), FULL - 1, FLAGGED, "course_utils.grading"),
        "fakemodule": (_replace(stubs, "posterior_mean", FAKE_MODULE), 0, FLAGGED, "sys.modules"),
        "transformer": (_replace(stubs, "posterior_mean", TRANSFORMER), 0, FLAGGED, "IPython reads cells"),
        "displayhook": (_replace(correct, "simple_loss", DISPLAYHOOK), FULL - 1, FLAGGED, "display hook"),
        "frames": (_replace(correct, "simple_loss", FRAMES), FULL - 1, FLAGGED, "stack frames"),
        "forged": (_replace(correct, "simple_loss", FORGED_REPLY), FULL - 1, FLAGGED, "IPython"),
        "wrapped": (_replace(correct, "simple_loss", WRAPPED), FULL - 1, FLAGGED, "calls the reference"),
        "exec": (_replace(correct, "simple_loss", EXEC), FULL - 1, FLAGGED, "calls `exec`"),
        "many": (_replace(correct, "simple_loss", MANY_OBJECTS), FULL - 1, FLAGGED, "IPython"),
    }


WORKDIRS = {}  # fixture: its course directory


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    import nbformat

    root = tmp_path_factory.mktemp("hostile")
    submissions = root / "submissions"
    expected = _class()
    for student, (nb, *_rest) in expected.items():
        (submissions / student).mkdir(parents=True)
        nbformat.write(nb, submissions / student / f"{NAME}.ipynb")
    results = grade(NAME, submissions, root / "work", course.Limits(timeout=120, memory_mb=2048), workers=2)
    WORKDIRS["graded"] = root / "work"
    return {r.student: r for r in results}, expected


@pytest.mark.parametrize("student", list(_class()))
def test_tampering_earns_nothing_and_is_flagged(graded, student):
    results, expected = graded
    _nb, score, status, reason = expected[student]
    result = results[student]
    assert result.max_score == FULL
    assert result.score == score, {k: (c.score, c.message[:200]) for k, c in result.cells.items()}
    assert result.status == status, result.reasons
    assert reason in result.reason, result.reasons


def test_the_checkers_messages_are_the_graders(graded):
    """The message of a failed test is the grader's, whatever the kernel displayed."""
    results, _ = graded
    assert results["displayhook"].cells["test_simple_loss"].message.startswith("simple_loss: wrong output")
    assert results["forged"].cells["test_simple_loss"].message.startswith("simple_loss: wrong output")
    assert "malformed" in results["fakemodule"].cells["test_posterior_mean"].message
    assert results["transformer"].cells["test_posterior_mean"].message.startswith("posterior_mean: the test could not run")


def test_a_reply_of_350000_values_fails_its_check_and_the_feedback_stays_small(graded):
    """Once a 40 MB reply made a 36 MB checker message, feedback page and graded notebook: now it is a malformed
    reply (that check fails, with the reason), and every output stays small."""
    from autograder.feedback import write_feedback
    from autograder.grade import load_results

    results, _ = graded
    message = results["many"].cells["test_simple_loss"].message
    assert "malformed" in message and "more than" in message and len(message) < 1000, message[:500]
    work = WORKDIRS["graded"]
    pages = write_feedback(load_results(work, NAME), NAME, work / "feedback")
    assert len(pages) == len(results) and max(p.stat().st_size for p in pages) < 50_000
    assert (work / "autograded" / "many" / NAME / f"{NAME}.ipynb").stat().st_size < 1_000_000


# ------------------------------------------------------------------ attacks on the answer key, classmates and the grader
# The full set (slow: another graded class). Each attacker has correct answers, so its honest score is full
# marks; the classmates graded beside it must keep theirs, and nothing secret may reach any output.

READER = '''
import os
_found = []
for _top in ("/", os.path.expanduser("~"), "/tmp", "..", "../..", "../../..", "../../../.."):
    try:
        for _root, _dirs, _files in os.walk(_top):
            for _f in _files:
                if _f.endswith((".db", ".ipynb", ".py")) and len(_found) < 2000:
                    try:
                        with open(os.path.join(_root, _f), errors="replace") as _h:
                            _text = _h.read(200_000)
                        if "seed=" + "201" in _text or "*Model " + "answer.*" in _text:  # a hidden test, a model answer
                            _found.append(_text)
                    except OSError:
                        pass
            if len(_dirs) > 200:
                _dirs[:] = _dirs[:200]
    except OSError:
        pass
print("LEAKED" if _found else "nothing found", *_found[:3])
'''
KILLER = '''
import os, signal
for _pid in range(1, 400):
    if _pid != os.getpid():
        try:
            os.kill(_pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
'''
VANDAL = '''
import os, glob
for _pattern in ("../../*/*/*.ipynb", "../../../*.db", "../../../../*.db", os.path.expanduser("~") + "/*",
                 "/tmp/*", "/tmp/*/*", "/tmp/*/*/*", "../../../.jupyter/data/kernels/*/kernel.json"):
    for _path in glob.glob(_pattern):
        try:
            with open(_path, "w") as _h:
                _h.write("vandalised")
        except OSError:
            pass
'''
FORKER = '''
import os, time
for _ in range(50):
    try:
        if os.fork() == 0:
            time.sleep(20)
            for _path in ("../../../gradebook.db", "../../../../gradebook.db"):
                try:
                    open(_path, "w").write("x")
                except OSError:
                    pass
            os._exit(0)
    except OSError:
        break
'''


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    import nbformat

    root = tmp_path_factory.mktemp("attacks")
    correct = with_solutions(read(student_path(NAME)), read(solution_path(NAME)))
    first = _source(correct, "posterior_mean")
    notebooks = {"alice": correct, "bob": correct, "carol": correct,
                 "reader": _replace(correct, "posterior_mean", first + READER),
                 "vandal": _replace(correct, "posterior_mean", first + VANDAL),
                 "killer": _replace(correct, "posterior_mean", first + KILLER),
                 "forker": _replace(correct, "posterior_mean", first + FORKER)}
    for student, nb in notebooks.items():
        (root / "submissions" / student).mkdir(parents=True)
        nbformat.write(nb, root / "submissions" / student / f"{NAME}.ipynb")
    work = root / "work"
    results = grade(NAME, root / "submissions", work, course.Limits(timeout=120, memory_mb=2048), workers=2)
    return {r.student: r for r in results}, work


@pytest.mark.slow
def test_attackers_and_their_classmates_keep_their_honest_grades(attacked):
    results, _ = attacked
    for student in ("alice", "bob", "carol", "reader", "vandal", "forker"):
        assert results[student].score == FULL, (student, results[student].reasons)
        assert results[student].status in (GRADED, FLAGGED), (student, results[student].reasons)
    assert results["alice"].status == results["bob"].status == results["carol"].status == GRADED


@pytest.mark.slow
def test_a_kernel_that_kills_every_process_it_can_see_kills_only_itself(attacked):
    """Its PID namespace holds only its own sandbox: the kernel dies (its own doing), nothing else does."""
    results, _ = attacked
    killer = results["killer"]
    assert killer.status == FLAGGED and "the kernel died in cell" in killer.reason, killer.reasons
    assert killer.score == 0
    assert len(results) == 7 and all(r.max_score == FULL for r in results.values())


@pytest.mark.slow
def test_nothing_secret_reaches_a_graded_notebook_or_the_results(attacked):
    """What the kernels printed (not the sources: these submissions were made from the solution notebook, model
    answers included) holds no hidden test and no model answer."""
    import nbformat

    results, work = attacked

    def printed(student):
        graded = nbformat.read(work / "autograded" / student / NAME / f"{NAME}.ipynb", as_version=4)
        return "".join(str(o.get("text", "")) + str(o.get("evalue", "")) + str(o.get("data", ""))
                       for c in graded.cells for o in c.get("outputs", []))

    assert "nothing found" in printed("reader") and "LEAKED" not in printed("reader")
    for student in results:
        text = printed(student)
        assert "*Model answer.*" not in text and "seed=201" not in text, student
    saved = (work / f"results_{NAME}.json").read_text()
    assert "*Model answer.*" not in saved and "seed=201" not in saved


@pytest.mark.slow
def test_the_gradebook_and_no_process_survive_the_attacks(attacked):
    import time

    from nbgrader.api import Gradebook

    results, work = attacked
    time.sleep(25)  # past the forked processes' delay
    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gb:
        assert len(gb.find_assignment(NAME).submissions) == len(results)
    assert not processes_mentioning(str(work))


# ------------------------------------------------------------------ attackers of their classmates, then victims
# Each attacker below has correct answers and attacks from its first answer cell; the victims come after them
# (ids sort after theirs), on the same two workers, while the thread hog still holds its threads. Every victim
# must score what honest grading gives it, and every output the grader writes must stay small.

THREAD_HOG = "\n" + thread_holder(600, "time.sleep(60)  # the other worker's kernels start meanwhile\n_hold.set()")
DEEP_TREES = '''
import os
for _base in (".", os.path.expanduser("~"), "/tmp", os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp")):
    try:
        _fd = os.open(_base, os.O_RDONLY)
        for _ in range(3000):
            os.mkdir("d", dir_fd=_fd)
            _next = os.open("d", os.O_RDONLY, dir_fd=_fd)
            os.close(_fd)
            _fd = _next
        os.symlink("/", "root-link", dir_fd=_fd)
        os.close(_fd)
    except OSError as _exc:
        print(_base, type(_exc).__name__)
'''
PLANTER = '''
import json, os
from ipykernel.connect import get_connection_file
_sockets = os.path.dirname(json.load(open(get_connection_file()))["ip"])
_planted = []
for _folder in (_sockets, os.path.dirname(_sockets), os.getcwd(), os.path.dirname(os.getcwd())):
    for _k in range(1, 8):
        try:
            os.mkdir(os.path.join(_folder, f"kernel-{_k}"))
            _planted.append(_folder)
        except OSError:
            pass
    for _mode in (0o000,):
        try:
            os.chmod(_folder, _mode)
            _planted.append(f"chmod {_folder}")
        except OSError:
            pass
os.chdir("/")
print("socket folder planted" if any(p.startswith(("chmod " + _sockets, _sockets)) for p in _planted) else "socket folder refused")
'''
FILLER = """
import json, os
from ipykernel.connect import get_connection_file
_sockets = os.path.dirname(json.load(open(get_connection_file()))["ip"])
""" + disk_filler('[("work", "."), ("home", os.path.expanduser("~")), ("tmp", "/tmp"), ("sockets", _sockets)]')
BIG_MESSAGE = '''
from IPython.display import display
display({"text/plain": "x" * (100 * 2**20)}, raw=True)  # one message past the grader's 80 MiB
print("after the big message")
'''
HUGE_ERROR = '''def simple_loss(eps, eps_theta):
    raise ValueError("x" * 30_000_000)
'''


@pytest.fixture(scope="module")
def classmates(tmp_path_factory):
    import nbformat

    root = tmp_path_factory.mktemp("classmates")
    correct = with_solutions(read(student_path(NAME)), read(solution_path(NAME)))
    first = _source(correct, "posterior_mean")
    wrong_simple = _replace(correct, "simple_loss", WRONG_SIMPLE)
    notebooks = {  # student: (notebook, its honest score)
        "a-hog": (_replace(correct, "posterior_mean", first + THREAD_HOG), FULL),
        "b-deep": (_replace(correct, "posterior_mean", first + DEEP_TREES), FULL),
        "c-planter": (_replace(correct, "posterior_mean", first + PLANTER), FULL),
        "d-filler": (_replace(correct, "posterior_mean", first + FILLER), FULL),
        "e-deepreply": (_replace(correct, "simple_loss", DEEP_REPLY), FULL - 1),
        "f-many": (_replace(correct, "simple_loss", MANY_OBJECTS), FULL - 1),
        "g-inflating": (_replace(correct, "simple_loss", INFLATING), FULL - 1),
        "h-hugeerror": (_replace(correct, "simple_loss", HUGE_ERROR), FULL - 1),
        "i-bigmessage": (_replace(correct, "posterior_mean", first + BIG_MESSAGE), 0),  # it stops its own kernel
        "v1": (correct, FULL), "v2": (wrong_simple, FULL - 1), "v3": (correct, FULL), "v4": (correct, FULL),
    }
    for student, (nb, _score) in notebooks.items():
        (root / "submissions" / student).mkdir(parents=True)
        nbformat.write(nb, root / "submissions" / student / f"{NAME}.ipynb")
    work = root / "work"
    results = grade(NAME, root / "submissions", work, course.Limits(timeout=120, memory_mb=4096), workers=2)
    return {r.student: r for r in results}, {s: score for s, (_nb, score) in notebooks.items()}, work


@pytest.mark.slow
def test_victims_graded_after_attackers_on_the_same_workers_keep_their_honest_scores(classmates):
    results, honest, _work = classmates
    assert set(results) == set(honest)
    for student, score in honest.items():
        assert results[student].score == score, (student, results[student].reasons,
                                                 {k: c.message[:300] for k, c in results[student].cells.items()})
    for victim in ("v1", "v2", "v3", "v4"):
        assert results[victim].status == GRADED, (victim, results[victim].reasons)


@pytest.mark.slow
def test_the_attacks_were_contained(classmates):
    import nbformat

    results, _honest, work = classmates
    text = {s: (work / "autograded" / s / NAME / f"{NAME}.ipynb").read_text() for s in results}
    held = int(re.search(r"threads held: (\d+)", text["a-hog"]).group(1))
    assert held > 450, held  # it held (almost) all of its 512 while the others were graded
    assert "socket folder refused" in text["c-planter"]
    written = disk_filled("".join(o.get("text", "") for c in nbformat.reads(text["d-filler"], 4).cells
                                  for o in c.get("outputs", [])))
    assert written["sockets"] == 0 and written["work"] <= 256 and written["tmp"] <= 256, written  # a 256 MiB tmpfs each
    assert written["home"] <= 256, written  # the warm cache is read where it lies: HOME holds the kernel's own only
    assert not list(work.glob("**/fill-*")) and not (work / "workers").exists()


@pytest.mark.slow
def test_forged_replies_fail_their_check_with_a_clear_message_and_every_output_stays_small(classmates):
    from autograder.feedback import write_feedback
    from autograder.grade import load_results

    results, _honest, work = classmates
    for student in ("e-deepreply", "f-many", "g-inflating"):
        message = results[student].cells["test_simple_loss"].message
        assert "malformed" in message and len(message) < 1000, (student, message[:500])
    assert "ValueError" in results["h-hugeerror"].cells["test_simple_loss"].message
    big = results["i-bigmessage"]
    assert big.status == FLAGGED and "larger than the grader reads (80 MiB)" in big.reason, big.reasons
    assert all(c.score == 0 and "not run" in c.message for c in big.cells.values())
    pages = write_feedback(load_results(work, NAME), NAME, work / "feedback")
    assert max(p.stat().st_size for p in pages) < 200_000
    for student in results:
        assert (work / "autograded" / student / NAME / f"{NAME}.ipynb").stat().st_size < 2_000_000, student
    assert (work / f"results_{NAME}.json").stat().st_size < 1_000_000
