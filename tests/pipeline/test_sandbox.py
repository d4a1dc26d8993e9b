"""The bubblewrap sandbox of every grading kernel (``autograder/sandbox.py``), started directly.

Each test runs ``python autograder/sandbox.py --memory-mb N -- python -c CODE`` (the bwrap command a kernel
gets, with a small program in place of ipykernel) in a student's working folder, ``class/alice``, next to
another student's folder, ``class/bob``. One test at the end grades a correct submission of notebook 02
through ``grade`` to show that nbgrader's kernels start and are reached in the sandbox.
"""

import json
import os
import sys
import textwrap
import time
import uuid
from pathlib import Path
import subprocess

import nbformat
import pytest

from autograder import course, sandbox
from autograder.grade import GRADED, NOT_ISOLATED, grade
from notebook_tools import (processes_mentioning, read, solution_path, student_path, thread_holder, with_solutions,
                            disk_filler, disk_filled)

LAUNCHER = course.REPO / "autograder" / "sandbox.py"
PREFIX = "import json, os, sys\n"


@pytest.fixture
def alice(tmp_path):
    (tmp_path / "class" / "bob").mkdir(parents=True)
    (tmp_path / "class" / "bob" / "answers.ipynb").write_text("bob's notebook")
    folder = tmp_path / "class" / "alice"
    folder.mkdir()
    (folder / "notebook.ipynb").write_text("alice's notebook")
    return folder


def run(folder: Path, code: str, *options: str, extra=(), timeout=120) -> subprocess.CompletedProcess:
    """Run ``code`` in the sandbox with ``folder`` as the working folder; its last line of stdout is JSON."""
    command = [sys.executable, str(LAUNCHER), "--memory-mb", "2048", *options, "--",
               sys.executable, "-c", PREFIX + textwrap.dedent(code), *extra]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=timeout)


def result(folder: Path, code: str, *options: str, **kw):
    out = run(folder, code, *options, **kw)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_self_test_passes_here():
    assert sandbox.sandbox_problem() == "", "bubblewrap must be installed and working (.ci/run installs it)"


def test_solutions_autograder_and_the_rest_of_the_repository_are_not_visible(alice):
    repo = str(course.REPO)
    seen = result(alice, f"""
        repo = {repo!r}
        names = ["solutions", "autograder", "tests", ".git", "README.md", "pyproject.toml", "notebooks"]
        print(json.dumps({{"exists": [n for n in names if os.path.exists(os.path.join(repo, n))],
                          "listing": sorted(os.listdir(repo))}}))
    """)
    assert seen["exists"] == []
    venv = Path(sys.prefix).resolve()
    allowed = {"course_utils"} | ({venv.relative_to(course.REPO).parts[0]} if course.REPO in venv.parents else set())
    assert set(seen["listing"]) <= allowed, seen["listing"]


def test_another_students_folder_is_not_visible(alice):
    seen = result(alice, """
        print(json.dumps({"class": sorted(os.listdir("..")), "bob": os.path.exists("../bob/answers.ipynb"),
                          "own": open("notebook.ipynb").read()}))
    """)
    assert seen == {"class": ["alice"], "bob": False, "own": "alice's notebook"}


def test_tmp_is_private_and_holds_only_the_way_to_bound_folders(alice, tmp_path):
    marker = Path("/tmp") / f"sandbox-marker-{uuid.uuid4().hex}"
    marker.write_text("outside")
    try:
        seen = result(alice, f"""
            listing = sorted(os.listdir("/tmp"))
            open("/tmp/inside", "w").write("x")
            print(json.dumps({{"marker": os.path.exists({str(marker)!r}), "listing": listing}}))
        """)
    finally:
        marker.unlink()
    assert seen["marker"] is False
    assert not Path("/tmp/inside").exists() or Path("/tmp/inside").read_text() != "x"
    bound = [alice.resolve(), *sandbox.python_folders(sys.executable)]
    ways = {p.relative_to("/tmp").parts[0] for p in bound if Path("/tmp") in p.parents}
    assert set(seen["listing"]) <= ways, f"/tmp in the sandbox holds {seen['listing']}, expected only {ways}"


def test_home_is_a_fresh_empty_folder_not_the_real_one(alice):
    real = Path.home()
    seen = result(alice, f"""
        home = os.environ["HOME"]
        before = os.listdir(home)
        open(os.path.join(home, ".config-test"), "w").write("x")
        real = {str(real)!r}
        print(json.dumps({{"home": home, "before": before,
                          "real": sorted(os.listdir(real)) if os.path.isdir(real) else None}}))
    """)
    assert seen["home"] != str(real) and seen["before"] == []
    assert not (real / ".config-test").exists()
    # the real home holds at most the way to a bound folder (here: a Python installed under it)
    ways = {p.relative_to(real).parts[0] for p in sandbox.python_folders(sys.executable) if real in p.parents}
    assert seen["real"] is None or set(seen["real"]) <= ways, seen["real"]


def test_writing_outside_the_working_folder_fails(alice):
    targets = [str(course.REPO / "course_utils" / "planted.py"), str(Path(sys.prefix) / "planted"), "/etc/planted",
               "/planted", "/usr/planted", str(alice.parent / "bob" / "answers.ipynb"), str(alice.parent / "planted")]
    seen = result(alice, f"""
        written = []
        for path in {targets!r}:
            try:
                open(path, "w").write("x")
                written.append(path)
            except OSError:
                pass
        open("result.txt", "w").write("mine")
        written.append(open("result.txt").read())
        print(json.dumps(written))
    """)
    assert seen == ["mine"]  # its own folder is writable (a tmpfs: nothing it writes reaches the host's disk)
    assert not (alice / "result.txt").exists()
    assert (alice.parent / "bob" / "answers.ipynb").read_text() == "bob's notebook"
    assert not (course.REPO / "course_utils" / "planted.py").exists()


def test_the_network_is_off(alice):
    seen = result(alice, """
        import socket
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=3).close()
            reached = True
        except OSError:
            reached = False
        print(json.dumps({"reached": reached, "interfaces": [name for _, name in socket.if_nameindex()]}))
    """)
    assert seen == {"reached": False, "interfaces": ["lo"]}


def test_other_processes_are_not_visible_and_no_capability_is_held(alice):
    seen = result(alice, """
        pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
        status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
        print(json.dumps({"pids": pids, "me": os.getpid(), "parent": os.getppid(),
                          "caps": int(status["CapEff"], 16), "nnp": status["NoNewPrivs"].strip()}))
    """)
    assert seen["me"] in seen["pids"] and len(seen["pids"]) <= 2, seen  # bubblewrap's init (1) and the kernel
    assert seen["parent"] in (0, 1) and os.getpid() not in seen["pids"][2:]
    assert seen["caps"] == 0 and seen["nnp"] == "1"


def test_a_background_process_dies_with_the_kernel(alice):
    marker = f"left-behind-{uuid.uuid4().hex}"
    out = run(alice, f"""
        import subprocess, time
        subprocess.Popen([sys.executable, "-c", "import time, sys; open('started', 'w').write('1'); time.sleep(600)",
                          {marker!r}], start_new_session=True)
        while not os.path.exists("started"):
            time.sleep(0.05)
        print("started")
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "started", "the background process should have started"
    deadline = time.monotonic() + 10
    while processes_mentioning(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(marker) == [], "a process the kernel started outlived it"


def test_the_memory_limit_holds(alice):
    seen = result(alice, """
        try:
            block = bytearray(3 * 2**30)
            outcome = "allocated"
        except MemoryError:
            outcome = "MemoryError"
        print(json.dumps(outcome))
    """)
    assert seen == "MemoryError"


def test_the_process_limit_holds(alice):
    seen = result(alice, """
        import time
        children = []
        try:
            for _ in range(200):
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                children.append(pid)
        except OSError:
            pass
        print(json.dumps(len(children)))
    """, "--processes", "40")
    assert seen < 40


def test_course_utils_and_jax_import(alice):
    seen = result(alice, """
        import course_utils, jax, jax.numpy as jnp
        print(json.dumps({"sum": float(jnp.arange(4.0).sum()), "where": course_utils.__file__}))
    """, timeout=300)
    assert seen["sum"] == 6.0
    assert Path(seen["where"]).resolve().parent.name == "course_utils"


def test_only_its_own_connection_file_and_socket_folder_are_shared(alice, tmp_path):
    runtime = tmp_path / "runtime"
    (runtime / "ipc").mkdir(parents=True)
    mine, other = runtime / "kernel-mine.json", runtime / "kernel-other.json"
    for path in (mine, other):
        path.write_text(json.dumps({"transport": "ipc", "ip": str(runtime / "ipc" / "kernel"), "key": path.stem}))
        path.chmod(0o600)  # as jupyter_client writes it
    (runtime / "ipc" / "kernel-3").write_text("stale")
    seen = result(alice, f"""
        mine = json.load(open({str(mine)!r}))
        try:
            open({str(mine)!r}, "w").write("x")
            rewritten = True
        except OSError:
            rewritten = False
        open({str(runtime / "ipc" / "kernel-1")!r}, "w").write("socket")
        print(json.dumps({{"key": mine["key"], "rewritten": rewritten, "other": os.path.exists({str(other)!r}),
                          "runtime": sorted(os.listdir({str(runtime)!r}))}}))
    """, extra=["-f", str(mine)])
    assert seen == {"key": "kernel-mine", "rewritten": False, "other": False, "runtime": ["ipc", "kernel-mine.json"]}
    assert sorted(os.listdir(runtime / "ipc")) == ["kernel-1"]  # a fresh folder: the stale kernel-3 was removed
    assert (runtime / "ipc" / "kernel-1").read_text() == "socket" and json.loads(mine.read_text())["key"] == "kernel-mine"


def test_the_repository_as_working_folder_is_refused():
    out = run(course.REPO, "print('ran')")
    assert out.returncode != 0 and "ran" not in out.stdout and "would expose the repository" in out.stderr


def test_grade_refuses_without_a_sandbox_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "sandbox_problem", lambda: "bubblewrap (bwrap) is not installed")
    (tmp_path / "subs" / "missing").mkdir(parents=True)
    (tmp_path / "subs" / "missing" / "notes.txt").write_text("no notebook")
    with pytest.raises(SystemExit, match="--allow-unsandboxed"):
        grade("02_loss_comparison", tmp_path / "subs", tmp_path / "work")
    lines = []
    results = grade("02_loss_comparison", tmp_path / "subs", tmp_path / "work", log=lines.append,
                    allow_unsandboxed=True)
    assert lines and all(NOT_ISOLATED in line for line in lines), lines
    assert all(NOT_ISOLATED in r.reason for r in results)
    assert not course.sandboxed(tmp_path / "work")
    spec = json.loads((tmp_path / "work" / ".jupyter" / "data" / "kernels" / course.KERNEL_NAME / "kernel.json").read_text())
    assert "--unsandboxed" in spec["argv"]


@pytest.mark.xdist_group("autograde")
def test_a_correct_submission_is_graded_in_the_sandbox(tmp_path):
    """nbgrader's kernels start in the sandbox and are reached over their ipc sockets; nothing is left running."""
    name = "02_loss_comparison"
    (tmp_path / "subs" / "correct").mkdir(parents=True)
    nbformat.write(with_solutions(read(student_path(name)), read(solution_path(name))),
                   tmp_path / "subs" / "correct" / f"{name}.ipynb")
    work = tmp_path / "work"
    lines = []
    results = grade(name, tmp_path / "subs", work, course.Limits(timeout=120), workers=1, log=lines.append)
    assert course.sandboxed(work) and "sandboxed (bubblewrap)" in lines[0]
    spec = json.loads((work / ".jupyter" / "data" / "kernels" / course.KERNEL_NAME / "kernel.json").read_text())
    assert "--unsandboxed" not in spec["argv"] and spec["interrupt_mode"] == "message"
    [r] = results
    assert (r.student, r.status, r.score, r.max_score) == ("correct", GRADED, 11, 11), r
    assert processes_mentioning(str(course.runtime_dir(work))) == []
    assert processes_mentioning(str(work / "workers")) == []  # the workers' kernels (WORKDIR/workers/RUN-K)


def test_a_kernel_holding_threads_does_not_stop_another_sandbox_from_starting_its_own(alice, tmp_path):
    """RLIMIT_NPROC counts each sandbox on its own (a user namespace per kernel, even when the grader is root and
    every kernel runs as nobody): a kernel holding its whole allowance of threads leaves the next kernel its own."""
    other = tmp_path / "class" / "carol"
    other.mkdir()
    hog = subprocess.Popen([sys.executable, str(LAUNCHER), "--memory-mb", "4096", "--processes", "300", "--",
                            sys.executable, "-c", thread_holder(400, "time.sleep(60)")],
                           cwd=alice, stdout=subprocess.PIPE, text=True)
    try:
        held = int(hog.stdout.readline().split()[-1])
        assert 250 < held < 300, held  # it holds all it may
        out = run(other, thread_holder(250), "--processes", "300")
        assert out.returncode == 0 and out.stdout.strip() == "threads held: 250", (out.stdout, out.stderr[-500:])
    finally:
        hog.kill()
        hog.wait()


def test_everything_a_kernel_can_write_is_size_limited_and_off_the_host_disk(alice):
    """Its working folder, HOME and /tmp are each a tmpfs of TMPFS_BYTES: writing past it fails (ENOSPC), and
    nothing reaches the host's folder. (Its socket folder takes no file once nbgrader has connected: see
    test_hostile_grading.py.)"""
    out = run(alice, disk_filler('[(f, f) for f in (".", os.environ["HOME"], "/tmp")]', files=8), timeout=300)
    assert out.returncode == 0, out.stderr
    seen = disk_filled(out.stdout)
    limit = sandbox.TMPFS_BYTES // 2**20
    assert len(seen) == 3 and all(limit - 2 <= mib <= limit for mib in seen.values()), seen
    assert sorted(p.name for p in alice.iterdir()) == ["notebook.ipynb"]
