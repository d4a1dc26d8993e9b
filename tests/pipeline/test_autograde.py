"""A hostile synthetic class of notebook 02, graded once in parallel, then checked submission by submission.

Notebook 02 is used (it runs fastest): 11 points in 7 test cells. The class
comes as one zip, as a learning platform exports it: some students as
``STUDENT_anything.ipynb`` files, others as folders. Every kind of broken
submission of issue 6 is in it; each test below checks one kind: its score
(for what ran), its status and the reason given, and that nothing was lost
for the others.
"""

import copy
import csv
import json
import os
import re
import stat
import subprocess
import sys
import zipfile

import nbformat
import pytest

from autograder import course
from autograder.feedback import write_feedback
from autograder.execute import SKIPPED, last_graded_cell
from autograder.grade import ATTENTION, FLAGGED, GRADED, grade, write_table
from notebook_tools import chromium, nbgrader_meta, read, solution_path, student_path, with_solutions

NAME = "02_loss_comparison"
pytestmark = pytest.mark.xdist_group("autograde")
POINTS = {"test_posterior_mean": 2, "test_posterior_variance": 1, "test_mean_loss": 1,
          "test_mean_from_noise": 2, "test_noise_loss_weight": 2, "test_noise_loss": 2, "test_simple_loss": 1}
FULL = sum(POINTS.values())
TAMPER = '''
import numpy as np, jax.numpy as jnp
np.allclose = lambda *a, **k: True
np.isclose = lambda a, b, *args, **k: np.ones(np.shape(a), bool)
np.testing.assert_allclose = lambda *a, **k: None
np.array_equal = lambda *a, **k: True
jnp.allclose = lambda *a, **k: True
def check(*args, **kwargs):
    print("all good!")
'''


def _replace(nb, grade_id, source):
    nb = copy.deepcopy(nb)
    cells = [c for c in nb.cells if nbgrader_meta(c).get("grade_id") == grade_id]
    assert cells, f"no cell {grade_id}"
    for cell in cells:
        cell.source = source
    return nb


def _source(nb, grade_id):
    return next(c.source for c in nb.cells if nbgrader_meta(c).get("grade_id") == grade_id)


def _without(nb, grade_id):
    nb = copy.deepcopy(nb)
    nb.cells = [c for c in nb.cells if nbgrader_meta(c).get("grade_id") != grade_id]
    return nb


def _class():
    correct = with_solutions(read(student_path(NAME)), read(solution_path(NAME)))
    return {
        "correct": correct,
        "slip": _replace(correct, "simple_loss", "def simple_loss(eps, eps_theta):\n    return jnp.mean((eps - eps_theta) ** 2)\n"),
        "stubs": read(student_path(NAME)),
        "loop": _replace(correct, "mean_loss", "while True:\n    pass\n"),
        "exception": _replace(correct, "simple_loss", "def simple_loss(eps, eps_theta):\n    raise ValueError('my code is broken')\n"),
        "memory": _replace(correct, "mean_loss", "import numpy as np\ndef _hog():\n    kept = []\n    while True:\n"
                                                 "        kept.append(np.ones(10**7))\n_hog()\n"),
        "died": _replace(correct, "noise_loss", "import os\nos._exit(1)\n"),
        "sysexit": _replace(correct, "simple_loss", "import sys\nsys.exit('bye')\n"),
        "deleted": _without(correct, "test_noise_loss"),
        "edited": _replace(_replace(correct, "test_simple_loss", "print('simple_loss: passed, trust me')\n"),
                           "simple_loss", "def simple_loss(eps, eps_theta):\n    return 0.0 * jnp.sum(eps)\n"),
        "dupids": correct,  # written with every cell id the same (nbformat would repair them)
        "stderr": _replace(correct, "simple_loss", "import os, warnings\ndef simple_loss(eps, eps_theta):\n"
                                                   "    os.write(2, b'WARNING: written to stderr by the answer\\n')\n"
                                                   "    warnings.warn('a warning from the answer')\n"
                                                   "    return jnp.sum((eps - eps_theta) ** 2)\n"),
        "tamper": _replace(correct, "noise_loss", TAMPER + "def noise_loss(eps, eps_theta, beta_t, alpha_t, alpha_bar_t, sigma2):\n"
                                                           "    return jnp.sum((eps - eps_theta) ** 2)\n"),
        "reference": _replace(correct, "mean_loss", "from course_utils.losses import mean_loss\n"),
        "output": _replace(correct, "posterior_mean", _source(correct, "posterior_mean")
                           + "\nfor i in range(100_000):\n    print('spam' * 25)\n"),
        "nan": _replace(correct, "mean_from_noise", "def mean_from_noise(x_t, eps, beta_t, alpha_bar_t):\n    return x_t * jnp.nan\n"),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    archive = root / "export.zip"
    as_files = {"correct", "corrupt"}  # platform-style file names; the others are folders
    with zipfile.ZipFile(archive, "w") as z:
        for student, nb in _class().items():
            name = f"{student}_submission_2024-05-01.ipynb" if student in as_files else f"{student}/{NAME}.ipynb"
            text = nbformat.writes(nb)
            if student == "dupids":
                raw = json.loads(text)
                for cell in raw["cells"]:
                    cell["id"] = "same-id"
                text = json.dumps(raw)
            z.writestr(name, text)
        z.writestr("corrupt_attempt.ipynb", nbformat.writes(read(student_path(NAME)))[:5000])
        z.writestr("wrongname/homework_final.ipynb", nbformat.writes(_class()["correct"]))
        z.writestr("missing/notes.txt", "I could not upload my notebook\n")
    work = root / "work"
    results = grade(NAME, archive, work, course.Limits(timeout=120, memory_mb=2048), workers=2)
    return {r.student: r for r in results}, work


def _one(graded, student):
    return graded[0][student]


def _lost(result, *cells):
    return FULL - sum(POINTS[c] for c in cells)


def test_the_whole_class_is_reported(graded):
    results, _ = graded
    expected = set(_class()) | {"corrupt", "wrongname", "missing"}
    assert set(results) == expected
    for r in results.values():
        assert r.status in (GRADED, FLAGGED, ATTENTION)
        assert r.status == GRADED or r.reasons, f"{r.student}: status {r.status} without a reason"
        if r.graded:
            assert {c: mx for c, (_, mx) in r.cell_scores.items()} == POINTS, r.student


def test_correct_and_plain_wrong_answers(graded):
    assert _one(graded, "correct").score == FULL and _one(graded, "correct").status == GRADED
    slip = _one(graded, "slip")
    assert slip.score == _lost(slip, "test_simple_loss") and slip.status == GRADED
    assert "simple_loss: wrong output" in slip.cells["test_simple_loss"].message
    stubs = _one(graded, "stubs")
    assert stubs.score == 0 and stubs.status == GRADED
    assert all("not implemented yet" in c.message for c in stubs.cells.values())


def test_infinite_loop_is_interrupted_and_the_rest_graded(graded):
    r = _one(graded, "loop")
    assert r.score == _lost(r, "test_mean_loss")
    assert r.status == FLAGGED and any(re.search(r"time limit: cell \d+ was interrupted", x) for x in r.reasons)


def test_exception_in_an_answer(graded):
    r = _one(graded, "exception")
    assert r.score == _lost(r, "test_simple_loss") and r.status == GRADED
    assert "it raised ValueError: my code is broken" in r.cells["test_simple_loss"].message


def test_memory_exhaustion_hits_the_limit(graded):
    r = _one(graded, "memory")
    assert r.score == _lost(r, "test_mean_loss")
    assert r.status == FLAGGED and any("memory" in x for x in r.reasons), r.reasons


def test_kernel_death_keeps_what_ran(graded):
    r = _one(graded, "died")
    assert r.score == _lost(r, "test_noise_loss", "test_simple_loss")  # the cells after os._exit never ran
    assert r.status == FLAGGED and any("kernel died" in x for x in r.reasons)
    assert "not run" in r.cells["test_simple_loss"].message


def test_sys_exit_in_an_answer_cell(graded):
    r = _one(graded, "sysexit")
    assert r.score == _lost(r, "test_simple_loss"), r.cell_scores


def test_corrupt_wrong_name_and_missing_notebooks(graded):
    corrupt, missing, wrong = _one(graded, "corrupt"), _one(graded, "missing"), _one(graded, "wrongname")
    assert corrupt.status == ATTENTION and "corrupt notebook: not valid JSON" in corrupt.reason
    assert missing.status == ATTENTION and "no notebook found" in missing.reason
    assert wrong.score == FULL and wrong.status == FLAGGED and "named homework_final.ipynb" in wrong.reason


def test_deleted_and_edited_test_cells_are_restored(graded):
    deleted, edited = _one(graded, "deleted"), _one(graded, "edited")
    assert deleted.score == FULL and "deleted, restored from the release: test_noise_loss" in deleted.reason
    assert edited.score == _lost(edited, "test_simple_loss"), "the released test ran, not the edited one"
    assert "edited, the released version was run: test_simple_loss" in edited.reason


def test_duplicated_cell_ids(graded):
    r = _one(graded, "dupids")
    assert r.score == FULL and "duplicated cell ids were renumbered" in r.reason


def test_stderr_in_a_test_cell_does_not_cost_points(graded):
    r = _one(graded, "stderr")
    assert r.score == FULL and r.status == GRADED, r.cell_scores
    cells = read(graded[1] / "autograded" / "stderr" / NAME / f"{NAME}.ipynb").cells
    test_cell = next(c for c in cells if nbgrader_meta(c).get("grade_id") == "test_simple_loss")
    assert not [o for o in test_cell.outputs if o.output_type == "stream" and o.name == "stderr"]


def test_replacing_comparisons_and_the_checker_does_not_pass(graded):
    r = _one(graded, "tamper")
    assert r.score == _lost(r, "test_noise_loss")


def test_calling_the_reference_is_flagged_without_points(graded):
    r = _one(graded, "reference")
    assert r.score == _lost(r, "test_mean_loss")
    assert "calls the reference implementation course_utils.losses.mean_loss" in r.cells["test_mean_loss"].message
    assert r.status == FLAGGED and "calls the reference" in r.reason


def test_enormous_output_is_cut(graded):
    r = _one(graded, "output")
    assert r.score == FULL and r.status == FLAGGED and "output limit" in r.reason
    notebook = graded[1] / "autograded" / "output" / NAME / f"{NAME}.ipynb"
    assert notebook.stat().st_size < 1_000_000, "the 10 MB of output did not reach the notebook"


def test_nan_results(graded):
    r = _one(graded, "nan")
    assert r.score == _lost(r, "test_mean_from_noise")
    assert "NaN" in r.cells["test_mean_from_noise"].message


def test_export_never_shows_a_plain_zero_for_an_ungraded_notebook(graded, tmp_path):
    results, _ = graded
    rows = {row["student"]: row for row in csv.DictReader(write_table(list(results.values()), tmp_path / "g.csv").open())}
    for student in ("corrupt", "missing"):
        assert rows[student]["status"] == ATTENTION and rows[student]["score"] == "" and rows[student]["reason"]
    assert rows["stubs"]["score"] == "0" and rows["correct"]["score"] == str(FULL)
    assert rows["correct"]["manual_points_pending"] == "11"


def test_the_merged_gradebook_is_intact(graded):
    """nbgrader's own export reads the gradebook the workers' grades were merged into: same scores."""
    results, work = graded
    out = subprocess.run([sys.executable, "-m", "nbgrader", "export", "--to", "grades.csv"], cwd=work,
                         env=course.environment(work), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = {row["student_id"]: row for row in csv.DictReader((work / "grades.csv").open())}
    for student, r in results.items():
        if r.graded:
            assert float(rows[student]["raw_score"]) == r.score, student
    # the gradebook holds every graded student, and no one who could not be graded
    assert set(rows) == {s for s, r in results.items() if r.graded}


def test_feedback_shows_messages_but_no_hidden_test_or_traceback(graded, tmp_path):
    results, _ = graded
    paths = write_feedback(list(results.values()), NAME, tmp_path)
    solution = read(solution_path(NAME))
    hidden = [line.strip() for c in solution.cells
              for block in re.findall(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", c.source, re.S)
              for line in block.splitlines() if line.strip()]
    assert hidden
    for path in paths:
        text = path.read_text()
        for line in hidden:
            assert line.replace('"', "&quot;") not in text and line not in text, f"{path}: hidden test line {line!r}"
        assert "Traceback" not in text and 'File "' not in text and "----&gt;" not in text and "\x1b[" not in text
    slip = (tmp_path / "slip" / f"{NAME}.html").read_text()
    assert "simple_loss: wrong output" in slip and "10 / 11" in slip
    assert "could not be graded" in (tmp_path / "corrupt" / f"{NAME}.html").read_text()


def test_parallel_grading_gives_the_scores_of_sequential_grading(graded, tmp_path):
    results, _ = graded
    chosen = ["died", "slip"]
    folder = tmp_path / "subs"
    class_ = _class()
    for student in chosen:
        (folder / student).mkdir(parents=True)
        nbformat.write(class_[student], folder / student / f"{NAME}.ipynb")
    sequential = grade(NAME, folder, tmp_path / "work", course.Limits(timeout=120, memory_mb=2048, run_all_cells=True),
                       workers=1, compile_cache=False)
    assert {r.student: r.cell_scores for r in sequential} == {s: results[s].cell_scores for s in chosen}
    saved = json.loads((tmp_path / "work" / f"results_{NAME}.json").read_text())
    assert [s["student"] for s in saved["students"]] == chosen


def test_cells_after_the_last_graded_cell_run_only_when_asked(graded, tmp_path):
    """By default the demonstrations after the last graded cell are not run (same scores: see the test above,
    which runs them); each says so in its output. With run_all_cells they run."""
    _, work = graded
    (tmp_path / "subs" / "correct").mkdir(parents=True)
    nbformat.write(_class()["correct"], tmp_path / "subs" / "correct" / f"{NAME}.ipynb")
    full = grade(NAME, tmp_path / "subs", tmp_path / "work", course.Limits(timeout=120, run_all_cells=True), workers=1)
    for folder, expect_skipped in ((work, True), (tmp_path / "work", False)):
        nb = read(folder / "autograded" / "correct" / NAME / f"{NAME}.ipynb")
        last = last_graded_cell(nb)
        later = [c for c in nb.cells[last + 1:] if c.cell_type == "code" and c.source.strip()]
        earlier = [c for c in nb.cells[:last + 1] if c.cell_type == "code" and c.source.strip()]
        assert later, "the notebook should have demonstration cells after its last test"
        assert not any(SKIPPED in "".join(o.get("text", "")) for c in earlier for o in c.outputs)
        skipped = [SKIPPED in "".join(o.get("text", "")) for c in later for o in c.outputs]
        assert skipped and all(skipped) if expect_skipped else not any(skipped), folder
    assert full[0].cell_scores == _one(graded, "correct").cell_scores


# Run in the sandbox by the tests below: compile one program, then report where JAX's own cache is, whether it reads
# through to the warm one, the cache hits, its own entries, and what listing the warm folder gives (also from a user
# namespace made inside the sandbox, where a process holds every capability over what that namespace maps).
CACHE_PROBE = """import os, subprocess, jax, jax.numpy as jnp
from course_utils.compile_cache import read_through
hooked = read_through()
own, source = os.environ['JAX_COMPILATION_CACHE_DIR'], os.environ.get('AUTOGRADER_CACHE_SOURCE', '')
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if 'cache_hits' in event else None)
jax.jit(lambda x: jnp.sin(x) * 2.0 + 1.0)(jnp.arange(5.0)).block_until_ready()
def listed(command):
    try:
        return str(subprocess.run(command, capture_output=True, text=True).returncode == 0)
    except OSError:
        return 'False'
try:
    direct = str(bool(os.listdir(source))) if source else '-'
except PermissionError:
    direct = 'False'
nested = listed(['unshare', '--user', '--map-root-user', 'ls', source]) if source else '-'
print(own, hooked, len(hits), len(os.listdir(own)), direct, nested)
"""


def _probe_cache(cache, tmp_path, **env) -> list:
    (tmp_path / "work").mkdir(exist_ok=True)  # the kernel's working folder (the sandbox refuses the repository)
    launcher = [sys.executable, str(course.REPO / "autograder" / "sandbox.py"), "--memory-mb", "4096",
                "--jax-cache", str(cache), "--", sys.executable, "-c", CACHE_PROBE]
    out = subprocess.run(launcher, capture_output=True, text=True, timeout=120, cwd=tmp_path / "work",
                         env={k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "AUTOGRADER_"))} | env)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_the_sealed_warm_cache_is_hit_by_key_and_cannot_be_listed(tmp_path):
    """The warm-up writes the shared cache; sealed, every kernel finds its programs there by key (a hit, nothing
    compiled or written again) but cannot list it, neither directly nor from a user namespace of its own: the
    solution's compiled programs there are no library of answers.

    The keys must not depend on where a cache lies: JAX's default GPU autotuning cache writes the folder's path into
    every key, and the launcher turns it off (the kernel's own cache is at another path than the warm one)."""
    from autograder.sandbox import seal_cache

    cache = tmp_path / "jax-cache"
    cache.mkdir()
    own, hooked, hits, entries, _, _ = _probe_cache(cache, tmp_path, AUTOGRADER_WARM_CACHE="1")
    assert own == str(cache) and hooked == "False" and int(entries) > 0, "the warm-up should write the shared cache"
    seal_cache(cache)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o111
    own, hooked, hits, entries, direct, nested = _probe_cache(cache, tmp_path)
    assert own != str(cache) and hooked == "True"
    assert int(hits) > 0 and int(entries) == 0, "the program should have been read from the warm cache, not compiled"
    assert direct == "False" and nested == "False", "a kernel must not list the warm cache"


def test_without_the_warm_cache_a_kernel_compiles_into_its_own(tmp_path):
    """The control of the test above: an empty sealed cache gives no hit, and the program lands in the kernel's own
    cache (so the hit above came from the warm entries)."""
    from autograder.sandbox import seal_cache

    cache = tmp_path / "jax-cache"
    cache.mkdir()
    seal_cache(cache)
    own, hooked, hits, entries, direct, nested = _probe_cache(cache, tmp_path)
    assert hooked == "True" and int(hits) == 0 and int(entries) > 0


def test_a_kernel_without_root_gets_the_warm_cache_only_where_it_cannot_unseal_it(monkeypatch, tmp_path):
    """Run by another user than root the kernel has the grader's uid, the cache's owner: bubblewrap must forbid it a
    user namespace of its own (``--disable-userns``), and a bubblewrap that cannot gets no warm cache."""
    from autograder import sandbox

    (tmp_path / "w").mkdir()
    monkeypatch.setattr(sandbox.os, "getuid", lambda: 1000)
    argv, env, _fds = sandbox.bwrap_command(["python"], tmp_path / "w", cache=tmp_path)
    assert "--disable-userns" in argv and "--unshare-user" in argv
    assert env["AUTOGRADER_CACHE_SOURCE"] == sandbox.CACHE_SOURCE
    argv, env, _fds = sandbox.bwrap_command(["python"], tmp_path / "w")
    assert "--disable-userns" not in argv and "AUTOGRADER_CACHE_SOURCE" not in env
    monkeypatch.setattr(sandbox, "_bwrap_disables_userns", lambda: False)
    assert not sandbox.warm_cache_allowed()


def test_last_graded_cell_of_a_notebook_with_and_without_tests():
    nb = read(solution_path(NAME))
    last = last_graded_cell(nb)
    assert nbgrader_meta(nb.cells[last]).get("grade") and nb.cells[last].cell_type == "code"
    assert not any(nbgrader_meta(c).get("grade") for c in nb.cells[last + 1:] if c.cell_type == "code")
    nb.cells = [c for c in nb.cells if not nbgrader_meta(c).get("grade")]
    assert last_graded_cell(nb) == len(nb.cells) - 1, "a notebook without graded cells should run whole"


def _nbgrader_by_hand(work, *args):
    """An nbgrader command as an instructor types it in the course folder (not through the grader)."""
    env = {k: v for k, v in course.environment(work).items() if k != "AUTOGRADER_RUN"}
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR"):  # a shell in that folder has neither set
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)


def test_formgrader_opens_a_written_question_for_manual_grading_in_headless_chromium(graded):
    """The formgrader of a Jupyter server started in the course folder, as the README says: the manual-grading page
    of a graded student's notebook loads in a browser (its scripts run) with the written question, the student's
    answer and the score box of that question."""
    import socket
    import time
    import urllib.request

    from nbgrader.api import Gradebook

    work = graded[1]
    browser = chromium()
    with Gradebook(f"sqlite:///{work / 'gradebook.db'}") as gb:
        submission = gb.find_submission_notebook(NAME, NAME, "correct")
        notebook_id = submission.id
        written = [g.name for g in submission.grades if g.cell.cell_type == "markdown"]
    assert written, "notebook 02 has written questions graded by hand"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in course.environment(work).items() if k not in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR")}
    server = subprocess.Popen([sys.executable, "-m", "jupyter", "server", "--no-browser", f"--port={port}",
                               "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=formgrader-test", "--allow-root"],
                              cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token=formgrader-test", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the Jupyter server did not start")
        url = f"{base}/formgrader/submissions/{notebook_id}/?token=formgrader-test"
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                              "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Student's answer" in dom, dom[:2000]
    for name in written:
        assert f'id="{name}"' in dom and f'id="{name}-comment"' in dom, name
    assert "data-original-title" in dom, "the page's scripts did not run (bootstrap's tooltips are set by script)"
    assert "Unknown submission" not in dom and "Internal Server Error" not in dom


def test_nbgraders_own_tools_work_in_the_course_folder_and_never_lose_a_grade(graded):
    work = graded[1]
    notebook = work / "autograded" / "correct" / NAME / f"{NAME}.ipynb"
    before = notebook.read_bytes()
    out = _nbgrader_by_hand(work, "autograde", NAME, "--student", "correct", "--force")
    assert out.returncode != 0 and "is not run by hand in this course folder" in out.stdout + out.stderr
    assert "NoSuchKernel" not in out.stdout + out.stderr and "Removing failed assignment" not in out.stdout + out.stderr
    assert notebook.read_bytes() == before, "a refused nbgrader autograde must leave the graded notebook as it was"
    out = _nbgrader_by_hand(work, "export")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "correct" in (work / "grades.csv").read_text()
    out = _nbgrader_by_hand(work, "generate_feedback", NAME, "--student", "correct", "--force")
    assert out.returncode == 0, out.stderr[-2000:]
    assert (work / "feedback" / "correct" / NAME / f"{NAME}.html").is_file()
    from jupyter_client.kernelspec import KernelSpecManager  # the kernel the course folder's config names is found

    env_path = os.environ.get("JUPYTER_PATH")
    try:
        os.environ["JUPYTER_PATH"] = str(work / ".jupyter" / "data")
        assert course.KERNEL_NAME in KernelSpecManager().find_kernel_specs()
    finally:
        os.environ.pop("JUPYTER_PATH") if env_path is None else os.environ.update(JUPYTER_PATH=env_path)


@pytest.mark.slow
def test_a_class_graded_in_three_shards_and_merged_is_the_class_graded_at_once(graded, tmp_path):
    """Three machines, each grading its shard of the same zip into a folder of its own, then ``merge``: one
    gradebook, and an export, feedback and report identical to grading the whole class at once (the `graded`
    fixture). A second merge over the first gives the same; merging an incomplete or mixed set is refused."""
    from autograder.__main__ import main
    from autograder.feedback import write_feedback
    from autograder.grade import gradebook_scores, load_results
    from autograder.report import write_report
    from autograder.shards import merge

    at_once, work = graded
    archive = work.parent / "export.zip"
    folders = [tmp_path / f"shard-{k}" for k in (1, 2, 3)]
    for k, folder in enumerate(folders, start=1):
        results = grade(NAME, archive, folder, course.Limits(timeout=120, memory_mb=2048), workers=1, shard=(k, 3))
        assert results, f"shard {k} of 3 is empty: use a larger class"
    shard_students = [{r.student for r in load_results(f, NAME)} for f in folders]
    assert sum(map(len, shard_students)) == len(at_once) and set().union(*shard_students) == set(at_once)
    with pytest.raises(SystemExit, match="each shard of one split exactly once"):
        merge(NAME, folders[:2], tmp_path / "incomplete")
    merged = tmp_path / "merged"
    for _ in range(2):  # a second merge replaces the first
        assert main(["merge", *map(str, folders), "--workdir", str(merged)]) == 0
    theirs, ours = load_results(work, NAME), load_results(merged, NAME)
    assert write_table(ours, tmp_path / "merged.csv").read_bytes() == write_table(theirs, tmp_path / "once.csv").read_bytes()
    assert gradebook_scores(merged, NAME) == gradebook_scores(work, NAME)
    for mine, once in zip(write_feedback(ours, NAME, tmp_path / "fb-merged"), write_feedback(theirs, NAME, tmp_path / "fb-once")):
        assert mine.name == once.name and mine.read_bytes() == once.read_bytes(), mine
    assert (write_report(ours, NAME, tmp_path / "merged.html").read_bytes()
            == write_report(theirs, NAME, tmp_path / "once.html").read_bytes())
    for student in at_once:
        graded_nb = work / "autograded" / student / NAME / f"{NAME}.ipynb"
        assert graded_nb.is_file() == (merged / "autograded" / student / NAME / f"{NAME}.ipynb").is_file(), student
