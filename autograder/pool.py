"""The worker pool: ``nbgrader autograde`` in parallel, each kernel in its sandbox, merged after every chunk.

Workers (one per core by default) take students from a queue; each has a course directory of its own
(``WORKDIR/workers/RUN-K``, with a copy of the gradebook) and runs ``nbgrader autograde`` on a few students at a time
in it, with the limits of ``course.Limits`` (the kernels start through ``autograder/sandbox.py``; nbgrader's Execute
step is ``autograder/execute.py``). After each such chunk, the grading process (never a worker's nbgrader or
kernel) merges the chunk's grades into the main gradebook (:mod:`autograder.gradebook`), moves the autograded
notebooks next to it, as if one ``nbgrader autograde`` had graded everyone, and calls back ``grade`` (which records
the chunk in the journal, :mod:`autograder.journal`): :func:`run_autograde`.

Before the pool starts, :func:`warm_compile_cache` grades the solution once in a sandboxed kernel, filling the JAX
compilation cache that every kernel then reads by key only (sealed).
"""

import os
import shutil
import tempfile
import threading
import uuid
from pathlib import Path

import nbformat

from . import course, roles
from .execute import CompileOnly, last_cell_to_run
from .gradebook import merge_into_gradebook
from .results import cell_message, error_outputs
from .trees import clear_tree, copy_tree, remove_tree


def progress(total: int, what: str):
    """A progress bar on the terminal (stderr), none where the output is not a terminal (logs, CI, tests)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit="", disable=None, leave=False)


def _clone_workdir(main: Path, clone: Path, assignment: str, limits: course.Limits, jax_cache: Path | None) -> None:
    """A worker's course directory: the main one's source, release and gradebook, its own config and kernel spec."""
    clear_tree(clone)
    clone.mkdir(parents=True)
    for name in ("source", "release"):
        copy_tree(main / name / assignment, clone / name / assignment)
    shutil.copy2(main / "gradebook.db", clone / "gradebook.db")
    course.write_config(clone, limits, jax_cache, course.course_build_path(main, assignment))


MAX_CHUNK = 16
MIN_CHUNK = 4


def chunk_size(left: int, workers: int) -> int:
    """How many of the ``left`` students the next ``nbgrader autograde`` call grades: a share 1/(2 * workers) of
    them (rounded up), so that the workers finish together, but at most :data:`MAX_CHUNK` (a grading process killed
    loses its running chunks only) and at least :data:`MIN_CHUNK` (or all that are left): every call pays
    nbgrader's start-up and the checker's per-process work (about 10 s on 2 cores), which one student per call at
    the end of a class would pay again and again."""
    share = -(-left // (2 * max(1, workers)))
    return min(left, MAX_CHUNK, max(MIN_CHUNK, share))


def _worker(main: Path, clone: Path, assignment: str, todo: list, lock: threading.Lock, workers: int,
            logs: dict, record: "_Recorder") -> None:
    """Grade students taken from ``todo`` in the course directory ``clone``, a few at a time.

    Each ``nbgrader autograde`` call grades everyone in the clone's submitted/ (so the students of the
    previous call are taken out first); a call takes :func:`chunk_size` of what is left.
    After each call the chunk's grades are merged into the main gradebook and recorded (``record``), so
    that a grading process killed later loses only the chunks still running.
    """
    while not record.stop.is_set():
        with lock:
            take = chunk_size(len(todo), workers)
            chunk, todo[:] = todo[:take], todo[take:]
            if chunk:
                log = _free_log_name(main / "logs", f"{chunk[0]}{f'+{len(chunk) - 1}' if len(chunk) > 1 else ''}")
        if not chunk:
            return
        try:
            clear_tree(clone / "submitted")
            for student in chunk:
                copy_tree(main / "submitted" / student, clone / "submitted" / student)
            result = course.nbgrader(clone, "autograde", assignment, "--create", "--force", check=False)
            text = result.stdout + result.stderr
        except Exception:  # noqa: BLE001 - these students need attention (no grades); the others go on
            import traceback

            text = f"ERROR grading {', '.join(repr(s) for s in chunk)}:\n{traceback.format_exc()}"
        (main / "logs" / log).write_text(text)
        with lock:
            logs.update({student: (clone, log) for student in chunk})
        record(clone, chunk, log)


def _free_log_name(folder: Path, stem: str) -> str:
    """``stem.log``, or ``stem-2.log``, ... when a log of that name is kept from an earlier run; reserved at once."""
    name, k = f"{stem}.log", 1
    while True:
        try:
            (folder / name).open("x").close()
            return name
        except FileExistsError:
            k += 1
            name = f"{stem}-{k}.log"


class _Recorder:
    """Merges a worker's finished chunk into the main gradebook, moves its graded notebooks into place and calls
    ``on_chunk``, one chunk at a time, in the grading process. An error here is the grader's, not a student's:
    it stops the workers (after their current chunk) and ``run_autograde`` raises it."""

    def __init__(self, workdir: Path, assignment: str, on_chunk=None):
        self.workdir, self.assignment, self.on_chunk = workdir, assignment, on_chunk
        self.lock, self.stop, self.errors, self.failed = threading.Lock(), threading.Event(), [], {}

    def __call__(self, clone: Path, chunk: list[str], log: str) -> None:
        with self.lock:
            if self.errors:
                return
            try:
                failed = merge_into_gradebook(clone / "gradebook.db", self.workdir, self.assignment, chunk)
                self.failed |= failed
                for student in chunk:
                    if student in failed:
                        continue
                    graded = clone / "autograded" / student
                    target = self.workdir / "autograded" / student
                    if remove_tree(target):  # what cannot be removed is moved aside, never graded over
                        target.rename(target.with_name(f".stale-{uuid.uuid4().hex[:8]}-{student}"))
                    if graded.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.move(str(graded), str(target))
                if self.on_chunk is not None:
                    self.on_chunk(chunk, log, failed)
            except BaseException as exc:  # noqa: BLE001 - raised again by run_autograde, in the main thread
                self.errors.append(exc)
                self.stop.set()


def run_autograde(workdir: Path, assignment: str, students: list[str], workers: int, limits: course.Limits,
                  jax_cache: Path | None = None, on_chunk=None) -> dict:
    """``nbgrader autograde`` of ``students`` (already in WORKDIR/submitted) by ``workers`` parallel workers,
    merged into WORKDIR's gradebook and autograded/ after each chunk; return {student: the name of its log in
    WORKDIR/logs} and {student: why its grades could not be merged}.

    ``on_chunk(students, log, failed)`` is called in this process after each chunk is merged and its notebooks
    moved, one chunk at a time (``grade`` records its progress there). The workers' course directories are
    WORKDIR/workers/RUN-K, new for every run: an nbgrader left running by a grading process that was killed
    cannot write into the next run's.
    """
    (workdir / "logs").mkdir(exist_ok=True)
    run = uuid.uuid4().hex[:8]
    clones = []
    for k in range(min(workers, len(students))):
        clone = workdir / "workers" / f"{run}-{k}"
        _clone_workdir(workdir, clone, assignment, limits, jax_cache)
        clones.append(clone)
    todo, lock, logs = list(students), threading.Lock(), {}
    record = _Recorder(workdir, assignment, on_chunk)
    threads = [threading.Thread(target=_worker, args=(workdir, clone, assignment, todo, lock, len(clones), logs,
                                                      record))
               for clone in clones]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:  # Ctrl-C: the workers stop after their current chunk, which is still recorded
        record.stop.set()
        raise
    for clone in clones:
        remove_tree(course.runtime_dir(clone))
    if record.errors:
        raise record.errors[0]
    remove_tree(workdir / "workers")
    return {student: log for student, (_, log) in logs.items()}, record.failed


def warm_compile_cache(workdir: Path, assignment: str, limits: course.Limits) -> str:
    """Grade the solution once with the sandbox kernel, filling WORKDIR/jax-cache, then seal it; return "" or what
    failed.

    The solution, test cells and hidden tests included, graded as a student's notebook is (``LimitedExecute``): the
    cache then holds every program a right answer's kernel compiles, the checks' included, so a right answer is
    compiled once per class. Those are the solution's compiled programs: the cache is sealed (``seal_cache``: its
    folder cannot be listed) and every grading kernel reads it by key only, the hash of a program it compiles
    itself, so it finds an answer there only by being compiled to it (``course_utils/compile_cache.py``). Errors
    only cost speed; they are reported."""
    from traitlets.config import Config

    from .sandbox import seal_cache, unseal_cache

    cache = workdir / "jax-cache"
    unseal_cache(cache)
    problems = remove_tree(cache)
    if problems:
        return f"the previous cache could not be removed ({problems[0]})"
    cache.mkdir()
    nb = nbformat.read(workdir / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    scratch = Path(tempfile.mkdtemp(prefix="warm-", dir=workdir / "scratch"))
    env = course.environment(workdir) | {"AUTOGRADER_WARM_CACHE": "1"}
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel (and the kernel spec lookup) use this process's environment
    try:
        config = Config()
        for key, value in course.kernel_transport(workdir).items():
            setattr(config.KernelManager, key, value)
        config.Execute.kernel_name = course.KERNEL_NAME
        config.Execute.timeout = limits.timeout
        config.LimitedExecute.run_all_cells = limits.run_all_cells
        bar = progress(_runs(nb, limits), "warming the compilation cache (grading the solution)")
        executor = CompileOnly(config=config)
        executor.progress = bar.update
        try:
            nb, _ = executor.preprocess(nb, {"metadata": {"path": str(scratch / f"{assignment}.ipynb")}})
        finally:
            bar.close()
    except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs speed
        return f"{type(exc).__name__}: {exc}"
    finally:
        os.environ.clear()
        os.environ.update(saved)
        remove_tree(scratch)
        try:
            seal_cache(cache)
        except OSError as exc:
            remove_tree(cache)  # a cache that cannot be sealed is not given to the kernels
            return f"the cache could not be sealed ({exc}); grading goes on without it"
    failed = [f"{roles.nbgrader_meta(c).get('grade_id', i)} ({cell_message(c)})" for i, c in enumerate(nb.cells)
              if (e := error_outputs(c)) and e[0].get("ename") not in _SKIPPED_WHILE_GRADING]
    return f"the solution failed in cells {'; '.join(failed)}" if failed else ""


def _runs(nb, limits: course.Limits) -> int:
    """How many runs in the kernel grading ``nb`` takes: each code cell up to the last one run, a test cell once per
    check."""
    cells = [c for c in nb.cells[:last_cell_to_run(nb, limits.run_all_cells) + 1] if c.cell_type == "code" and c.source.strip()]
    return sum(max(1, c.source.count("check(")) if roles.role(c) == roles.TEST else 1 for c in cells)


# What a cell of the course raises where it needs a reference that is withheld while grading: every kernel skips it.
_SKIPPED_WHILE_GRADING = ("ReferenceWithheld", "CellSkipped")
