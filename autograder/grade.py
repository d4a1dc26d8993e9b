"""Autograde a class's submissions with nbgrader: in parallel, within limits, every problem reported.

``grade`` is the sequence of the steps below, each in a module of its own (``docs/grading-flow.md`` follows one
submission through them, with a diagram):

1. Intake (``autograder/intake.py``): the folder or zip of submissions becomes one checked notebook per student,
   within limits; what cannot be graded is "needs attention", with the reason. Every cell gets its role from the
   release (``autograder/roles.py``).
2. The course directory gets the assignment (``generate_assignment``), and the resume journal
   (``autograder/journal.py``) says which students an earlier run already graded completely.
3. The worker pool (``autograder/pool.py``) warms a JAX compilation cache by grading the solution once (sealed:
   every kernel reads it by key only, so no submission can change what another one runs, nor load the
   solution's compiled programs as a library of answers), then runs ``nbgrader autograde`` in parallel, every
   kernel in its sandbox (``autograder/sandbox.py``, ``autograder/execute.py``). After each chunk the grading process merges the chunk's grades into the gradebook
   (``autograder/gradebook.py``, one atomic replace) and records the students completely graded in the journal.
4. The results (``autograder/results.py``): each autograded notebook is read back (the score and the checker's
   message of every test cell, and why a submission needs a look), saved to ``WORKDIR/results_ASSIGNMENT.json``
   for ``feedback``, ``export`` and ``report``, and exported as a table.

Resuming: a kill at any moment leaves the gradebook, the journal and the results file each old or new and whole.
The same ``grade`` command run again keeps every student the journal lists whose notebook is byte-identical, whose
autograded notebook is in place and whose grades are in the gradebook, if the assignment, the limits and the
grading code are unchanged (``run_key``), and grades everyone else (``restart`` grades everyone).

Statuses: ``graded``; ``flagged`` (graded, for what ran, with reasons an instructor should read); ``needs
attention`` (not graded: the reason says why; exported with an empty score, never as 0).

The names of the steps' modules that the commands and the tests use are importable from here too.
"""

import os
import time
from dataclasses import replace
from pathlib import Path

import nbformat

from . import course, shards
from .gradebook import gradebook_scores, merge_gradebook, merge_into_gradebook, update_gradebook
from .intake import MAX_NOTEBOOK_BYTES, Submission, ZipLimits, intake, prepare_notebook, valid_student_id
from .journal import (load_progress, progress_path, prune, resumable, run_key, save_progress, submission_digests,
                      entry)
from .pool import progress, run_autograde, warm_compile_cache
from .results import (ATTENTION, FLAGGED, GRADED, MAX_REASONS, NOT_ISOLATED, REASON_CHARS, CellResult,
                      StudentResult, analyse, class_results, load_results, results_path, save_results,
                      spreadsheet_safe, student_result, write_table)
from .trees import remove_tree

__all__ = ["grade", "ATTENTION", "FLAGGED", "GRADED", "NOT_ISOLATED", "MAX_REASONS", "REASON_CHARS", "CellResult",
           "StudentResult", "Submission", "ZipLimits", "MAX_NOTEBOOK_BYTES", "intake", "prepare_notebook",
           "valid_student_id", "analyse", "load_results", "results_path", "save_results", "spreadsheet_safe",
           "write_table", "gradebook_scores", "merge_gradebook", "merge_into_gradebook", "update_gradebook",
           "progress_path", "run_key", "run_autograde", "warm_compile_cache"]


def grade(assignment: str, submissions: Path, workdir: Path, limits: course.Limits = course.Limits(),
          workers: int | None = None, compile_cache: bool = True, log=print,
          allow_unsandboxed: bool = False, restart: bool = False, shard: tuple[int, int] | None = None
          ) -> list[StudentResult]:
    """Autograde every submission of ``assignment``; return one result per student (sorted by id).

    The kernels run in the bubblewrap sandbox (``autograder/sandbox.py``); where it is unavailable grading
    stops, unless ``allow_unsandboxed``: then every line logged and every result says NOT ISOLATED.

    Resuming: after each chunk of students is merged into the gradebook, WORKDIR/progress_ASSIGNMENT.json
    records who is completely graded (grades in the main gradebook, graded notebook in place, result saved),
    with a digest of their submitted notebook. Run again in the same WORKDIR (after the grading process was
    killed, or with late submissions added), ``grade`` keeps those students' results and grades everyone else,
    provided the assignment, the limits and the grading code are unchanged (``run_key``). ``restart``
    grades everyone again. Students who needed attention are always tried again.
    """
    course.check_assignment(assignment)
    limits, log = _isolation(limits, allow_unsandboxed, log)
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"grade: `workers` must be at least 1, got {workers}")
    workdir = Path(workdir).resolve()
    key = run_key(assignment, limits)
    previous, not_resumed = ({}, "") if restart else load_progress(workdir, assignment, key)
    workdir, jax_cache = _course_directory(workdir, assignment, limits, compile_cache, keep_graded=bool(previous))
    release_nb = nbformat.read(workdir / "release" / assignment / f"{assignment}.ipynb", as_version=4)

    # 1. intake
    subs = intake(submissions, assignment, workdir / "intake", warn=lambda message: log(f"warning: {message}"))
    if shard is not None:  # this machine's share of the class (autograder/shards.py)
        everyone = len(subs)
        subs = [sub for sub in subs if shards.in_shard(sub.student, shard)]
        log(f"shard {shard[0]}/{shard[1]}: {len(subs)} of the {everyone} submissions")
    for sub in subs:
        if not sub.problem:
            prepare_notebook(sub, release_nb, workdir / "submitted" / sub.student / assignment / f"{assignment}.ipynb")

    # 2. the journal: who an earlier run graded completely
    digests = submission_digests(subs)
    finished = resumable(previous, digests, workdir, assignment)
    save_progress(workdir, assignment, key, finished)  # from here on, the journal lists only what is kept
    if previous:
        prune(workdir, finished)
    students = [s.student for s in subs if not s.problem and s.student not in finished]
    _log_start(log, subs, students, workers, limits, workdir, restart, previous, finished, not_resumed)
    by_id = {s.student: s for s in subs}

    def record(chunk: list[str], chunk_log: str, failed: dict) -> None:
        """After a chunk is merged into the gradebook: each student completely graded goes into the journal."""
        unfinished = set()
        scores, manual_max = gradebook_scores(workdir, assignment, unfinished, students=set(chunk))
        for student in chunk:
            result = student_result(by_id[student], workdir, assignment, release_nb, scores, unfinished, manual_max,
                                    failed, {student: chunk_log})
            if result.status == ATTENTION:
                continue  # tried again by the next run
            autograded = workdir / "autograded" / student / assignment / f"{assignment}.ipynb"
            finished[student] = entry(digests[student], autograded, chunk_log, result)
        save_progress(workdir, assignment, key, finished)
        graded_bar.update(len(chunk))

    # 3. the worker pool, merging into the gradebook and recording in the journal after every chunk
    graded_bar = progress(len(students), "grading")
    if students:
        if compile_cache:
            _warm(workdir, assignment, limits, log)
        logs, merge_failed = run_autograde(workdir, assignment, students, workers, limits, jax_cache, on_chunk=record)
        remove_tree(workdir / "scratch")
    else:
        logs, merge_failed = {}, {}
    graded_bar.close()
    remove_tree(course.runtime_dir(workdir))  # Jupyter's runtime folder (kernel sockets), in /tmp

    # 4. the results
    results = class_results(subs, finished, workdir, assignment, release_nb, merge_failed, logs, limits.sandbox)
    save_results(results, workdir, assignment, limits=limits, shard=shard)
    return results


def _isolation(limits: course.Limits, allow_unsandboxed: bool, log):
    """(the limits, the log function) to grade with: sandboxed when the sandbox works, else (only when allowed)
    without it, with every line logged marked NOT ISOLATED."""
    from .sandbox import sandbox_problem

    problem = sandbox_problem() if limits.sandbox else "the sandbox was turned off"
    if problem:
        if not allow_unsandboxed:
            raise SystemExit(f"grade: the kernels cannot be sandboxed: {problem}. Install bubblewrap, or pass "
                             "--allow-unsandboxed to grade without isolation (every grade is then marked NOT ISOLATED)")
        limits = replace(limits, sandbox=False)
        log = (lambda message, _log=log: _log(f"[{NOT_ISOLATED}] {message}"))
        log(f"the kernels are not sandboxed: {problem}")
    return limits, log


def _course_directory(workdir: Path, assignment: str, limits: course.Limits, compile_cache: bool, keep_graded: bool):
    """Clear what a killed or earlier run left in ``workdir`` (its autograded notebooks and logs only when
    ``keep_graded`` is false), make it nbgrader's course directory with the assignment generated into its gradebook;
    return (the course directory, the JAX cache folder or None)."""
    for stale in ("submitted", "workers", "scratch"):
        remove_tree(workdir / stale)
    for leftover in workdir.glob(".*.tmp*") if workdir.exists() else []:
        leftover.unlink(missing_ok=True)  # a temporary gradebook, journal or results file of a killed run
    if not keep_graded:
        for stale in ("autograded", "logs"):
            remove_tree(workdir / stale)
    jax_cache = workdir / "jax-cache" if compile_cache else None
    (workdir / "scratch").mkdir(parents=True, exist_ok=True)  # exists only if a killed run's could not be removed
    workdir = course.prepare_workdir(workdir, assignment, limits, jax_cache)
    update_gradebook(workdir, lambda db: course.nbgrader(workdir, "generate_assignment", assignment, "--force",
                                                        f"--CourseDirectory.db_url=sqlite:///{db}"))
    return workdir, jax_cache


def _warm(workdir: Path, assignment: str, limits: course.Limits, log) -> None:
    """Warm the compilation cache by grading the solution once, saying how long it took and what failed."""
    started = time.monotonic()
    log("warming the compilation cache: grading the solution once...")
    problem = warm_compile_cache(workdir, assignment, limits)
    if problem:
        log(f"warning: warming the compilation cache: {problem}")
    log(f"compilation cache warmed in {time.monotonic() - started:.0f} s")


def _log_start(log, subs, students, workers, limits, workdir, restart, previous, finished, not_resumed) -> None:
    """The lines that say what this run grades, how, and what it kept from an earlier run."""
    log(f"{len(subs)} submissions, {len(students)} to grade with {min(workers, max(len(students), 1))} worker(s); "
        f"{'sandboxed (bubblewrap)' if limits.sandbox else 'NOT sandboxed'}, "
        f"network {'isolated' if course.network_isolated(workdir) else 'NOT isolated'}")
    if restart:
        log("--restart: everyone is graded again")
    elif previous or not_resumed:
        log(f"resumed: {len(finished)} student(s) graded by an earlier run keep their results"
            + (f" ({len(previous) - len(finished)} of its others changed or were not completely recorded)"
               if len(previous) > len(finished) else "")
            + (f"; {not_resumed}: everyone is graded again" if not_resumed else ""))
