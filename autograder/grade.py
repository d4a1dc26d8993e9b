"""Autograde a class's submissions with nbgrader: in parallel, within limits, every problem reported.

Flow of ``grade()``:

1. Intake (``intake``): the submissions are a folder or a zip file. Each
   student is either a folder ``<student>/`` holding the notebook (anywhere
   inside, ideally named ``ASSIGNMENT.ipynb``), or a notebook file named
   ``<student>_<anything>.ipynb`` / ``<student>.ipynb`` at the top level (as
   learning platforms export them). Every notebook is checked before nbgrader
   sees it: unreadable JSON, not a notebook, no notebook, or several
   notebooks mean "needs attention" with the reason; duplicated cell ids are
   renumbered, and deleted or edited test cells, and a wrong file name, are
   noted (nbgrader restores the test cells from the release).
2. The course directory gets the assignment (``generate_assignment``) and a
   warm JAX compilation cache, made by running the solution notebook once
   (which also proves that the solution passes in the grading environment).
   Every kernel starts from a private copy of that cache, so no submission
   can change what another one runs.
3. Workers (one per core by default) take students from a queue; each has a
   course directory of its own (a copy of the gradebook) and runs
   ``nbgrader autograde`` on a few students at a time in it, with the limits of
   ``course.Limits`` (see ``autograder/sandbox.py`` and ``autograder/execute.py``).
4. The workers' grades are merged into the one gradebook of the course
   directory through nbgrader's API, and their autograded notebooks moved
   next to it, as if one ``nbgrader autograde`` had graded everyone.
5. Each autograded notebook is read back (``analyse``): the score and the
   checker's message of every test cell, and why the submission needs a
   look (time limit, memory, dead kernel, output limit, the reference called
   instead of computed). The results are written to
   ``WORKDIR/results_ASSIGNMENT.json``, which ``feedback``, ``export`` and
   ``report`` read together with the gradebook.

Statuses: ``graded``; ``flagged`` (graded, for what ran, with reasons an
instructor should read); ``needs attention`` (not graded: the reason says
why; exported with an empty score, never as 0).
"""

import csv
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nbformat

from . import course
from .execute import KERNEL_DIED, NOT_RUN, OUTPUT_LIMIT, last_cell_to_run

GRADED, FLAGGED, ATTENTION = "graded", "flagged", "needs attention"
_STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
MAX_NOTEBOOK_BYTES = 50 * 2**20
NOT_ISOLATED = "NOT ISOLATED: graded without the sandbox (--allow-unsandboxed)"


@dataclass
class CellResult:
    score: float
    max_score: float
    message: str  # the checker's message, or the error's one line; "" when passed


@dataclass
class StudentResult:
    student: str
    status: str  # GRADED, FLAGGED or ATTENTION
    reasons: list = field(default_factory=list)  # why flagged / why not graded
    cells: dict = field(default_factory=dict)  # test cell grade_id -> CellResult
    manual_max: float = 0.0
    notebook: str = ""  # the file the notebook came from, relative to the submissions

    @property
    def graded(self) -> bool:
        return self.status != ATTENTION

    @property
    def score(self) -> float:
        return sum(c.score for c in self.cells.values())

    @property
    def max_score(self) -> float:
        return sum(c.max_score for c in self.cells.values())

    @property
    def cell_scores(self) -> dict:
        return {name: (c.score, c.max_score) for name, c in self.cells.items()}

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


# ---------------------------------------------------------------- intake

@dataclass
class Submission:
    student: str
    path: Path | None  # the student's notebook file as submitted
    problem: str = ""  # set when it cannot be graded
    notes: list = field(default_factory=list)


def _unpack(zip_path: Path, dest: Path) -> Path:
    """Extract ``zip_path`` into ``dest`` (no path may leave it); return the folder that holds the submissions."""
    if not zipfile.is_zipfile(zip_path):
        raise SystemExit(f"grade: SUBMISSIONS {zip_path} is a file but not a zip archive")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            parts = Path(info.filename).parts
            if info.is_dir() or info.filename.startswith("/") or ".." in parts or "__MACOSX" in parts:
                continue
            if info.file_size > MAX_NOTEBOOK_BYTES:
                continue  # reported as "no notebook" for that student, if it was the only one
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, target.open("wb") as out:
                shutil.copyfileobj(src, out)
    # An export that wraps the per-student folders in one folder: look inside it.
    entries = list(dest.iterdir())
    while len(entries) == 1 and entries[0].is_dir() and all(p.is_dir() for p in entries[0].iterdir()):
        dest = entries[0]
        entries = list(dest.iterdir())
    return dest


def _notebooks_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts and p.is_file())


def _student_of_file(path: Path) -> str:
    """``alice_anything.ipynb`` -> ``alice``; ``alice.ipynb`` -> ``alice``."""
    return path.stem.split("_", 1)[0] if "_" in path.stem else path.stem


def intake(submissions: Path, assignment: str, unpack_to: Path) -> list[Submission]:
    """One ``Submission`` per student found in the folder or zip ``submissions``."""
    submissions = Path(submissions)
    if not submissions.exists():
        raise SystemExit(f"grade: SUBMISSIONS {submissions} does not exist (expected a folder or a zip file)")
    root = _unpack(submissions, unpack_to) if submissions.is_file() else submissions
    found: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and not entry.name.startswith((".", "__")):
            found.setdefault(entry.name, []).extend(_notebooks_in(entry) or [None])
        elif entry.suffix == ".ipynb":
            found.setdefault(_student_of_file(entry), []).append(entry)
    result = []
    for student, paths in sorted(found.items()):
        paths = [p for p in paths if p is not None]
        if not _STUDENT_ID.match(student):
            result.append(Submission(student, None, f"'{student}' is not a valid student id (letters, digits, _ . @ - only)"))
            continue
        if not paths:
            result.append(Submission(student, None, f"no notebook found (expected {assignment}.ipynb)"))
            continue
        named = [p for p in paths if p.name == f"{assignment}.ipynb"]
        if len(paths) > 1 and len(named) != 1:
            listed = ", ".join(str(p.relative_to(root)) for p in paths)
            result.append(Submission(student, None, f"several notebooks and none clearly {assignment}.ipynb: {listed}"))
            continue
        path = named[0] if named else paths[0]
        sub = Submission(student, path)
        if path.parent == root:
            pass  # a platform export: the file name carries the student, not the assignment
        elif path.name != f"{assignment}.ipynb":
            sub.notes.append(f"the notebook was named {path.name}, not {assignment}.ipynb")
        result.append(sub)
    return result


def _released_test_cells(release_nb) -> dict:
    return {c.metadata["nbgrader"]["grade_id"]: c.source for c in release_nb.cells
            if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata["nbgrader"].get("solution")}


def prepare_notebook(sub: Submission, release_nb, target: Path) -> None:
    """Check the notebook of ``sub``, repair what can be repaired, write it to ``target``; set ``sub.problem`` if it cannot be graded."""
    size = sub.path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        sub.problem = f"the notebook is {size / 2**20:.0f} MiB (more than {MAX_NOTEBOOK_BYTES // 2**20} MiB)"
        return
    text = sub.path.read_bytes().decode("utf-8", errors="replace")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        sub.problem = f"corrupt notebook: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        return
    try:
        nb = nbformat.reads(text, as_version=4)
        cells = nb.cells
        assert isinstance(cells, list)
    except Exception as exc:  # noqa: BLE001 - anything nbformat cannot read
        sub.problem = f"not a Jupyter notebook: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        return
    raw_ids = [c.get("id") for c in raw.get("cells", []) if isinstance(c, dict)]
    ids = [c.get("id") for c in cells]
    if len(set(raw_ids)) != len(raw_ids) or len(set(ids)) != len(ids):
        for cell in cells:  # nbformat may have repaired them already; make sure
            cell["id"] = uuid.uuid4().hex[:8]
        sub.notes.append("duplicated cell ids were renumbered")
    released = _released_test_cells(release_nb)
    present = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in cells
               if c.get("cell_type") == "code"}
    deleted = [g for g in released if g not in present]
    edited = [g for g in released if g in present and present[g].strip() != released[g].strip()]
    if deleted:
        sub.notes.append(f"test cell(s) deleted, restored from the release: {', '.join(deleted)}")
    if edited:
        sub.notes.append(f"test cell(s) edited, the released version was run: {', '.join(edited)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


# ---------------------------------------------------------------- running nbgrader in parallel

def _clone_workdir(main: Path, clone: Path, assignment: str, limits: course.Limits, jax_cache: Path | None) -> None:
    """A worker's course directory: the main one's source, release and gradebook, its own config and kernel spec."""
    if clone.exists():
        shutil.rmtree(clone)
    clone.mkdir(parents=True)
    for name in ("source", "release"):
        shutil.copytree(main / name / assignment, clone / name / assignment)
    shutil.copy2(main / "gradebook.db", clone / "gradebook.db")
    course.write_config(clone, limits, jax_cache)


def _worker(main: Path, clone: Path, assignment: str, todo: list, lock: threading.Lock, workers: int,
            logs: dict) -> None:
    """Grade students taken from ``todo`` in the course directory ``clone``, a few at a time.

    Each ``nbgrader autograde`` call grades everyone in the clone's submitted/ (so the students of the
    previous call are taken out first); a call takes about 1/(2 * workers) of what is left, at most 8,
    so that nbgrader's start-up is paid once per several students and the workers finish together.
    """
    while True:
        with lock:
            take = min(8, max(1, len(todo) // (2 * workers)))
            chunk, todo[:] = todo[:take], todo[take:]
        if not chunk:
            return
        shutil.rmtree(clone / "submitted", ignore_errors=True)
        for student in chunk:
            shutil.copytree(main / "submitted" / student, clone / "submitted" / student)
        result = course.nbgrader(clone, "autograde", assignment, "--create", "--force", check=False)
        log = f"{chunk[0]}{f'+{len(chunk) - 1}' if len(chunk) > 1 else ''}.log"
        (main / "logs" / log).write_text(result.stdout + result.stderr)
        with lock:
            logs.update({student: (clone, log) for student in chunk})


def merge_gradebook(source_db: Path, target_db: Path, assignment: str, students: list[str]) -> None:
    """Copy the submissions of ``students`` (scores, comments, flags, timestamps) from one gradebook to another."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{source_db}") as src, Gradebook(f"sqlite:///{target_db}") as dst:
        for student in students:
            try:
                sub = src.find_submission(assignment, student)
            except MissingEntry:
                continue
            dst.update_or_create_student(student)
            try:
                dst.remove_submission(assignment, student)
            except MissingEntry:
                pass
            dst.add_submission(assignment, student, timestamp=sub.timestamp)
            for nb in sub.notebooks:
                target_nb = dst.find_submission_notebook(nb.name, assignment, student)
                target_nb.flagged = nb.flagged
                target_nb.late_submission_penalty = nb.late_submission_penalty
                for grade in nb.grades:
                    g = dst.find_grade(grade.name, nb.name, assignment, student)
                    g.auto_score, g.manual_score = grade.auto_score, grade.manual_score
                    g.extra_credit, g.needs_manual_grade = grade.extra_credit, grade.needs_manual_grade
                for comment in nb.comments:
                    c = dst.find_comment(comment.name, nb.name, assignment, student)
                    c.auto_comment, c.manual_comment = comment.auto_comment, comment.manual_comment
            dst.db.commit()


def warm_compile_cache(workdir: Path, assignment: str, limits: course.Limits) -> str:
    """Run the solution notebook once with the sandbox kernel, filling WORKDIR/jax-cache; return "" or what failed."""
    from nbclient import NotebookClient
    from traitlets.config import Config

    cache = workdir / "jax-cache"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir()
    nb = nbformat.read(workdir / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    nb.cells = nb.cells[:last_cell_to_run(nb, limits.run_all_cells) + 1]  # compile what grading will run
    scratch = Path(tempfile.mkdtemp(prefix="warm-", dir=workdir / "scratch"))
    env = course.environment(workdir) | {"AUTOGRADER_WARM_CACHE": "1"}
    saved = dict(os.environ)
    os.environ.update(env)  # the kernel (and the kernel spec lookup) use this process's environment
    try:
        config = Config()
        for key, value in course.kernel_transport(workdir).items():
            setattr(config.KernelManager, key, value)
        client = NotebookClient(nb, config=config, timeout=limits.timeout, kernel_name=course.KERNEL_NAME,
                                allow_errors=True, resources={"metadata": {"path": str(scratch)}})
        client.execute()
    except Exception as exc:  # noqa: BLE001 - a failed warm-up only costs speed
        return f"{type(exc).__name__}: {exc}"
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(scratch, ignore_errors=True)
    failed = [c.metadata.get("nbgrader", {}).get("grade_id", i) for i, c in enumerate(nb.cells)
              if any(o.output_type == "error" for o in c.get("outputs", []))]
    return f"the solution notebook failed in cells {failed}" if failed else ""


def run_autograde(workdir: Path, assignment: str, students: list[str], workers: int, limits: course.Limits,
                  jax_cache: Path | None = None) -> dict:
    """``nbgrader autograde`` of ``students`` (already in WORKDIR/submitted) by ``workers`` parallel workers,
    merged into WORKDIR's gradebook and autograded/; return {student: the name of its log in WORKDIR/logs}."""
    (workdir / "logs").mkdir(exist_ok=True)
    clones = []
    for k in range(min(workers, len(students))):
        clone = workdir / "workers" / str(k)
        _clone_workdir(workdir, clone, assignment, limits, jax_cache)
        clones.append(clone)
    todo, lock, logs = list(students), threading.Lock(), {}
    threads = [threading.Thread(target=_worker, args=(workdir, clone, assignment, todo, lock, len(clones), logs))
               for clone in clones]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for clone in clones:
        shutil.rmtree(course.runtime_dir(clone), ignore_errors=True)
        mine = [s for s, (c, _) in logs.items() if c == clone]
        merge_gradebook(clone / "gradebook.db", workdir / "gradebook.db", assignment, mine)
        for student in mine:
            graded = clone / "autograded" / student
            target = workdir / "autograded" / student
            if target.exists():
                shutil.rmtree(target)
            if graded.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(graded), str(target))
    shutil.rmtree(workdir / "workers", ignore_errors=True)
    return {student: log for student, (_, log) in logs.items()}


# ---------------------------------------------------------------- reading the results back

def _error_outputs(cell):
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _message(cell) -> str:
    """What a failed test cell says: the checker's message, or the error's one line (never a traceback)."""
    errors = _error_outputs(cell)
    if not errors:
        return ""
    err = errors[0]
    if err.get("ename") in ("CheckFailure", NOT_RUN, KERNEL_DIED, "CellTimeoutError"):
        return err.get("evalue", "").strip()
    first = (err.get("evalue") or "").strip().splitlines()
    return f"{err.get('ename')}: {first[0] if first else ''}".strip()


def analyse(autograded: Path, release_nb, gradebook_scores: dict) -> tuple[dict, list[str]]:
    """Per test cell results and the reasons to flag, from one autograded notebook."""
    nb = nbformat.read(autograded, as_version=4)
    released = _released_test_cells(release_nb)
    cells, reasons = {}, []
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        for err in _error_outputs(cell):
            ename, evalue = err.get("ename", ""), err.get("evalue", "")
            if ename == "CellTimeoutError":
                reasons.append(f"time limit: cell {number} was interrupted")
            elif ename == KERNEL_DIED:
                reasons.append(f"the kernel died in cell {number} (os._exit, a crash or the memory limit); later cells were not run")
            elif ename == "MemoryError" or "RESOURCE_EXHAUSTED" in evalue:
                reasons.append(f"memory limit: cell {number} ran out of memory")
            elif ename == NOT_RUN and "time limit" in evalue and not any("notebook's time limit" in r for r in reasons):
                reasons.append("the notebook's time limit was reached; later cells were not run")
            elif ename == "CheckFailure" and "calls the reference" in evalue:
                reasons.append(f"{grade_id}: {evalue.strip().splitlines()[0]}")
        if any(OUTPUT_LIMIT in "".join(o.get("text", "")) for o in cell.get("outputs", [])):
            reasons.append(f"output limit: the output of cell {number} was cut")
        if grade_id in released:
            score, max_score = gradebook_scores[grade_id]
            cells[grade_id] = CellResult(score, max_score, _message(cell) if score < max_score else "")
    return cells, reasons


def gradebook_scores(workdir: Path, assignment: str) -> tuple[dict, float]:
    """{student: {test cell: (score, max)}} from the gradebook (manual scores included), and the written questions' points."""
    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook(f"sqlite:///{workdir / 'gradebook.db'}") as gb:
        nb = gb.find_notebook(assignment, assignment)
        manual_max = sum(c.max_score for c in nb.grade_cells if c.cell_type == "markdown")
        for sub in gb.find_assignment(assignment).submissions:
            for snb in sub.notebooks:
                scores[sub.student.id] = {g.name: (float(g.score or 0.0), float(g.max_score))
                                          for g in snb.grades if g.cell.cell_type == "code"}
    return scores, manual_max


# ---------------------------------------------------------------- the command

def results_path(workdir: Path, assignment: str) -> Path:
    return Path(workdir) / f"results_{assignment}.json"


def grade(assignment: str, submissions: Path, workdir: Path, limits: course.Limits = course.Limits(),
          workers: int | None = None, compile_cache: bool = True, log=print,
          allow_unsandboxed: bool = False) -> list[StudentResult]:
    """Autograde every submission of ``assignment``; return one result per student (sorted by id).

    The kernels run in the bubblewrap sandbox (``autograder/sandbox.py``); where it is unavailable grading
    stops, unless ``allow_unsandboxed``: then every line logged and every result says NOT ISOLATED.
    """
    course.check_assignment(assignment)
    from .sandbox import sandbox_problem

    problem = sandbox_problem() if limits.sandbox else "the sandbox was turned off"
    if problem:
        if not allow_unsandboxed:
            raise SystemExit(f"grade: the kernels cannot be sandboxed: {problem}. Install bubblewrap, or pass "
                             "--allow-unsandboxed to grade without isolation (every grade is then marked NOT ISOLATED)")
        limits = replace(limits, sandbox=False)
        log = (lambda message, _log=log: _log(f"[{NOT_ISOLATED}] {message}"))
        log(f"the kernels are not sandboxed: {problem}")
    workers = workers or os.cpu_count() or 1
    if workers < 1:
        raise ValueError(f"grade: `workers` must be at least 1, got {workers}")
    workdir = Path(workdir).resolve()
    for stale in ("submitted", "autograded", "logs", "workers", "scratch"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    jax_cache = workdir / "jax-cache" if compile_cache else None
    (workdir / "scratch").mkdir(parents=True)
    workdir = course.prepare_workdir(workdir, assignment, limits, jax_cache)
    course.nbgrader(workdir, "generate_assignment", assignment, "--force")
    release_nb = nbformat.read(workdir / "release" / assignment / f"{assignment}.ipynb", as_version=4)

    subs = intake(submissions, assignment, workdir / "intake")
    for sub in subs:
        if not sub.problem:
            prepare_notebook(sub, release_nb, workdir / "submitted" / sub.student / assignment / f"{assignment}.ipynb")
    students = [s.student for s in subs if not s.problem]
    log(f"{len(subs)} submissions, {len(students)} to grade with {min(workers, max(len(students), 1))} worker(s); "
        f"{'sandboxed (bubblewrap)' if limits.sandbox else 'NOT sandboxed'}, "
        f"network {'isolated' if course.network_isolated(workdir) else 'NOT isolated'}")
    if students:
        started = time.monotonic()
        if compile_cache:
            problem = warm_compile_cache(workdir, assignment, limits)
            if problem:
                log(f"warning: warming the compilation cache: {problem}")
            log(f"compilation cache warmed in {time.monotonic() - started:.0f} s")
        logs = run_autograde(workdir, assignment, students, workers, limits, jax_cache)
        shutil.rmtree(workdir / "scratch", ignore_errors=True)
    else:
        logs = {}
    shutil.rmtree(course.runtime_dir(workdir), ignore_errors=True)  # Jupyter's runtime folder (kernel sockets), in /tmp
    scores, manual_max = gradebook_scores(workdir, assignment)
    results = []
    for sub in subs:
        name = str(sub.path.relative_to(sub.path.parents[1])) if sub.path else ""
        autograded = workdir / "autograded" / sub.student / assignment / f"{assignment}.ipynb"
        if sub.problem:
            results.append(StudentResult(sub.student, ATTENTION, [sub.problem], notebook=name))
        elif not autograded.exists() or sub.student not in scores:
            log_file = workdir / "logs" / logs.get(sub.student, "missing.log")
            lines = log_file.read_text().splitlines() if log_file.exists() else []
            errors = [l for l in lines if "ERROR" in l and f"'{sub.student}'" in l][-1:]
            results.append(StudentResult(sub.student, ATTENTION,
                                         ["nbgrader could not grade it" + (f": {errors[0]}" if errors else "") +
                                          f" (see {log_file.relative_to(workdir)})"], notebook=name))
        else:
            cells, reasons = analyse(autograded, release_nb, scores[sub.student])
            reasons = sub.notes + reasons
            results.append(StudentResult(sub.student, FLAGGED if reasons else GRADED, reasons, cells, manual_max, name))
    if not limits.sandbox:
        for r in results:
            r.reasons.append(NOT_ISOLATED)
            r.status = FLAGGED if r.status == GRADED else r.status
    results.sort(key=lambda r: r.student)
    save_results(results, workdir, assignment)
    return results


def save_results(results: list[StudentResult], workdir: Path, assignment: str) -> Path:
    path = results_path(workdir, assignment)
    path.write_text(json.dumps({"assignment": assignment, "students": [asdict(r) for r in results]}, indent=1))
    return path


def load_results(workdir: Path, assignment: str, refresh_scores: bool = True) -> list[StudentResult]:
    """The results of the last ``grade`` run in ``workdir``, with scores re-read from the gradebook
    (so that hand grading done since, in formgrader, is included)."""
    path = results_path(workdir, assignment)
    if not path.exists():
        raise SystemExit(f"no grading results in {workdir}: run `python -m autograder grade {assignment} SUBMISSIONS "
                         f"--workdir {workdir}` first")
    data = json.loads(path.read_text())
    results = []
    for r in data["students"]:
        r["cells"] = {k: CellResult(**v) for k, v in r["cells"].items()}
        results.append(StudentResult(**r))
    if refresh_scores:
        scores, _ = gradebook_scores(Path(workdir), assignment)
        for r in results:
            for cell, result in r.cells.items():
                result.score, result.max_score = scores.get(r.student, {}).get(cell, (result.score, result.max_score))
    return results


def write_table(results: list[StudentResult], path: Path) -> Path:
    """The export: one row per student with status, reason, total, maximum and every test cell's score.

    A submission that could not be graded has an empty score and the status
    "needs attention", never a 0.
    """
    cells = sorted({c for r in results for c in r.cells})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "status", "reason", "score", "max_score", "manual_points_pending", *cells])
        for r in results:
            writer.writerow([
                r.student, r.status, r.reason,
                f"{r.score:g}" if r.graded else "", f"{r.max_score:g}" if r.graded else "",
                f"{r.manual_max:g}" if r.graded else "",
                *(f"{r.cells[c].score:g}" if c in r.cells else "" for c in cells),
            ])
    return path
