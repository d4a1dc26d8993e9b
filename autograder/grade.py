"""Autograde a class's submissions with nbgrader: in parallel, within limits, every problem reported.

Flow of ``grade()``:

1. Intake (``intake``): the submissions are a folder or a zip file. Each
   student is either a folder ``<student>/`` holding the notebook (anywhere
   inside, ideally named ``ASSIGNMENT.ipynb``), or a notebook file named
   ``<student>_<anything>.ipynb`` / ``<student>.ipynb`` at the top level (as
   learning platforms export them). From a zip only the notebooks are
   unpacked, within ``ZipLimits``, never outside the folder or as a link; an
   entry that is refused makes its student "needs attention". Student ids are
   checked (``valid_student_id``) before any is used in a path. Every notebook
   is checked before nbgrader sees it: unreadable JSON, not a notebook,
   malformed cells or nbgrader metadata, no notebook, or several notebooks
   mean "needs attention" with the reason. Every cell gets its role from the
   release, never from the submission's metadata (``autograder/roles.py``:
   matched by cell id, grade_id or position; a test or read-only cell gets the
   release's source, a deleted test cell is put back); added code cells,
   deleted, moved or re-roled cells, edited test cells, duplicated cell ids
   (renumbered; missing ids are normal) and a wrong file name are noted.
2. The course directory gets the assignment (``generate_assignment``) and a
   warm JAX compilation cache, made by grading the solution notebook once
   (which also proves that the solution passes in the grading environment).
   Every kernel reads that cache by key only (sealed: it cannot list it) and
   writes a cache of its own, so no submission can change what another one
   runs, nor load the solution's compiled programs as a library of answers.
3. Workers (one per core by default) take students from a queue; each has a
   course directory of its own (``WORKDIR/workers/RUN-K``, with a copy of the
   gradebook) and runs ``nbgrader autograde`` on a few students at a time in
   it, with the limits of ``course.Limits`` (see ``autograder/sandbox.py`` and
   ``autograder/execute.py``).
4. After each such chunk, the grading process (never a worker's nbgrader or
   kernel) merges the chunk's grades into a copy of the course directory's
   gradebook through nbgrader's API and puts the copy in its place with
   ``os.replace`` (``update_gradebook``), moves the autograded notebooks next
   to it, as if one ``nbgrader autograde`` had graded everyone, and records the
   students completely graded in the journal ``WORKDIR/progress_ASSIGNMENT.json``
   (their result and a digest of their notebook; written the same way).
5. Each autograded notebook is read back (``analyse``): the score and the
   checker's message of every test cell, and why the submission needs a
   look (time limit, memory, dead kernel, output limit, the reference called
   instead of computed). The results are written to
   ``WORKDIR/results_ASSIGNMENT.json``, which ``feedback``, ``export`` and
   ``report`` read together with the gradebook.

Resuming: a kill at any moment leaves the gradebook, the journal and the
results file each old or new and whole. The same ``grade`` command run again
keeps every student the journal lists whose notebook is byte-identical, whose
autograded notebook is in place and whose grades are in the gradebook, if the
assignment, the limits and the grading code are unchanged (``run_key``), and
grades everyone else (``restart`` grades everyone).

Statuses: ``graded``; ``flagged`` (graded, for what ran, with reasons an
instructor should read); ``needs attention`` (not graded: the reason says
why; exported with an empty score, never as 0).
"""

import csv
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nbformat

from . import course, roles
from .execute import GRADER_ERROR, KERNEL_DIED, MALFORMED, NOT_RUN, OUTPUT_LIMIT, CompileOnly, last_cell_to_run
from .provenance import FLAG
from .trees import clear_tree, copy_tree, remove_tree, walk_tree

GRADED, FLAGGED, ATTENTION = "graded", "flagged", "needs attention"
# nbgrader's gradebook API makes SQLAlchemy warn that a new submission is "not in session" while it adds one (the
# submission is added all the same): three lines of noise per merge that say nothing to an instructor.
warnings.filterwarnings("ignore", message=r"Object of type <\w+> not in session", module="nbgrader")
_STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
MAX_NOTEBOOK_BYTES = 50 * 2**20
NOT_ISOLATED = "NOT ISOLATED: graded without the sandbox (--allow-unsandboxed)"
MAX_STUDENT_ID = 128  # characters


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

@dataclass(frozen=True)
class ZipLimits:
    """What a zip of submissions may unpack to. Only notebooks are unpacked (nothing else is graded); an entry
    over a limit is not unpacked, and its student needs attention with the reason (see README, "Limits")."""

    max_file_bytes: int = MAX_NOTEBOOK_BYTES  # one notebook
    max_total_bytes: int = 2 * 2**30  # all the notebooks together
    max_entries: int = 20_000  # entries read from the zip (files and folders); the rest are not unpacked


@dataclass
class Submission:
    student: str
    path: Path | None  # the student's notebook file as submitted
    problem: str = ""  # set when it cannot be graded
    notes: list = field(default_factory=list)


def valid_student_id(student) -> bool:
    """Letters, digits and ``_ . @ -``, starting with a letter or digit (so never ``.``, ``..`` or only dots),
    at most 128 characters: safe as a file name, a folder name and a spreadsheet cell."""
    return (isinstance(student, str) and len(student) <= MAX_STUDENT_ID and _STUDENT_ID.fullmatch(student) is not None
            and student.strip(".") != "")


def _shown(text: str) -> str:
    """A name from a submission, quoted, with control characters escaped (for reasons and warnings)."""
    return ascii(text) if not text.isprintable() else repr(text)


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size} bytes"


def _unpack(zip_path: Path, dest: Path, limits: ZipLimits) -> tuple[Path, list[tuple[tuple, str]], list[str]]:
    """Extract the notebooks of ``zip_path`` into ``dest``; return the folder that holds the submissions,
    [(entry path parts, why that entry was not unpacked)] and the other files at its top level (not unpacked).

    No entry may leave ``dest`` (absolute paths and ``..`` are refused), none is written as a link or over
    another file, and an entry that is damaged or over a limit of ``limits`` is refused on its own.
    """
    if not zipfile.is_zipfile(zip_path):
        raise SystemExit(f"grade: SUBMISSIONS {zip_path} is a file but not a zip archive")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise SystemExit(f"grade: SUBMISSIONS {zip_path} is a damaged zip archive ({exc})") from None
    if dest.exists():
        clear_tree(dest)
    dest.mkdir(parents=True)
    refused, others, total = [], [], 0
    with archive:
        infos = archive.infolist()
        for index, info in enumerate(infos):
            name = info.filename.replace("\\", "/")
            parts = tuple(p for p in name.split("/") if p not in ("", "."))
            if not parts or "__MACOSX" in parts or ".ipynb_checkpoints" in parts:
                continue
            if index >= limits.max_entries:
                refused.append((parts, f"{_shown(name)} was not unpacked: the zip holds {len(infos)} entries, "
                                       f"more than {limits.max_entries}"))
                continue
            if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                owned = parts if not name.startswith("/") and re.match(r"^[A-Za-z]:", name) is None and parts[0] != ".." else ()
                refused.append((owned, f"{_shown(name)} was not unpacked: its path leaves the submissions folder"))
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                refused.append((parts, f"{_shown(name)} was not unpacked: it is a symbolic link"))
                continue
            is_notebook = not info.is_dir() and parts[-1].endswith(".ipynb")
            folder = dest.joinpath(*(parts if info.is_dir() else parts[:-1]))
            try:
                folder.mkdir(parents=True, exist_ok=True)  # a student with no notebook still appears
            except OSError as exc:
                refused.append((parts, f"{_shown(name)} was not unpacked: its folder clashes with a file "
                                       f"({type(exc).__name__})"))
                continue
            if not is_notebook:
                if not info.is_dir():
                    others.append(parts)
                continue  # only the notebook is graded: other files are not unpacked
            if info.flag_bits & 0x1:
                refused.append((parts, f"{_shown(name)} was not unpacked: it is encrypted"))
                continue
            if info.file_size > limits.max_file_bytes:
                refused.append((parts, f"{_shown(name)} was not unpacked: it is {_mib(info.file_size)}, more than "
                                       f"{_mib(limits.max_file_bytes)}"))
                continue
            if total + info.file_size > limits.max_total_bytes:
                refused.append((parts, f"{_shown(name)} was not unpacked: the zip's notebooks unpack to more than "
                                       f"{_mib(limits.max_total_bytes)} in all"))
                continue
            target = dest.joinpath(*parts)
            if target.exists() or target.is_symlink():
                what = "a folder of that name" if target.is_dir() else "it twice"
                refused.append((parts, f"{_shown(name)} was not unpacked: the zip holds {what}"))
                continue
            written = 0
            try:
                with archive.open(info) as src, target.open("xb") as out:
                    while chunk := src.read(2**20):
                        written += len(chunk)
                        if written > min(info.file_size, limits.max_file_bytes):
                            raise ValueError("it unpacks to more than its stated size")
                        out.write(chunk)
            except Exception as exc:  # noqa: BLE001 - a bad CRC, bad data, an unknown compression, a clash...
                target.unlink(missing_ok=True)
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                refused.append((parts, f"{_shown(name)} was not unpacked: it is damaged in the zip "
                                       f"({type(exc).__name__}{': ' + reason if reason else ''})"))
                continue
            total += written
    # An export that wraps the per-student folders in one folder: look inside it.
    root = dest
    while True:
        entries = list(root.iterdir())
        if len(entries) != 1 or not entries[0].is_dir():
            break
        inside = list(entries[0].iterdir())
        depth = len(entries[0].relative_to(dest).parts)
        refused_files_inside = any(len(p) == depth + 1 and p[:depth] == entries[0].relative_to(dest).parts
                                   for p, _ in refused)
        if not inside or not all(p.is_dir() for p in inside) or refused_files_inside:
            break
        root = entries[0]
    prefix = root.relative_to(dest).parts
    return (root, [(parts[len(prefix):], why) if parts[:len(prefix)] == prefix else ((), why) for parts, why in refused],
            ["/".join(parts) for parts in others if len(parts) <= len(prefix) + 1])


def _notebooks_in(folder: Path) -> tuple[list[Path], list[Path]]:
    """The notebooks anywhere in ``folder`` (links not followed), and the notebook names that are links."""
    notebooks, links = [], []
    for top, dirs, files in walk_tree(folder):
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        for name in sorted(files):
            path = top / name
            if name.endswith(".ipynb"):
                (links if path.is_symlink() else notebooks if path.is_file() else links).append(path)
    return notebooks, links


def _student_of_file(path: Path) -> str:
    """``alice_anything.ipynb`` -> ``alice``; ``alice.ipynb`` -> ``alice``."""
    return path.stem.split("_", 1)[0] if "_" in path.stem else path.stem


def _owner(parts: tuple) -> str | None:
    """The student a path inside the submissions folder belongs to, if any."""
    if len(parts) >= 2:
        return parts[0]
    if len(parts) == 1 and parts[0].endswith(".ipynb"):
        return _student_of_file(Path(parts[0]))
    return None


def intake(submissions: Path, assignment: str, unpack_to: Path, limits: ZipLimits = ZipLimits(),
           warn=lambda message: None) -> list[Submission]:
    """One ``Submission`` per student found in the folder or zip ``submissions``.

    Whatever is wrong with one student's files makes that student's ``problem`` (needs attention); what
    belongs to no student (a file at the top level that is not a notebook, a zip entry outside every
    student's folder) is reported through ``warn``.
    """
    submissions = Path(submissions)
    if not submissions.exists():
        raise SystemExit(f"grade: SUBMISSIONS {submissions} does not exist (expected a folder or a zip file)")
    refused, ignored = [], []
    if submissions.is_file():
        root, refused, ignored = _unpack(submissions, Path(unpack_to), limits)
    else:
        root = submissions
    found: dict[str, list[Path]] = {}
    problems: dict[str, list[str]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name == "__MACOSX":
            continue
        if entry.is_symlink():
            student = _student_of_file(entry) if entry.name.endswith(".ipynb") else entry.name
            found.setdefault(student, [])
            problems.setdefault(student, []).append(f"{_shown(entry.name)} is a symbolic link: not followed")
        elif entry.is_dir():
            notebooks, links = _notebooks_in(entry)
            found.setdefault(entry.name, []).extend(notebooks)
            for link in links:
                problems.setdefault(entry.name, []).append(
                    f"{_shown(str(link.relative_to(root)))} is a symbolic link or not a file: not followed")
        elif entry.suffix == ".ipynb" and entry.is_file():
            found.setdefault(_student_of_file(entry), []).append(entry)
        else:
            ignored.append(entry.name)
    for parts, why in refused:
        student = _owner(parts)
        if student is None:
            warn(why)
        else:
            found.setdefault(student, [])
            problems.setdefault(student, []).append(why)
    if ignored:
        warn(f"not a student's folder or notebook, ignored: {', '.join(_shown(n) for n in ignored[:10])}"
             + (f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""))
    result = []
    for student, paths in sorted(found.items()):
        if not valid_student_id(student):
            result.append(Submission(student, None, "; ".join(
                [f"{_shown(student)} is not a valid student id (letters, digits and _ . @ -, starting with a letter "
                 f"or digit, at most {MAX_STUDENT_ID} characters)", *problems.get(student, [])])))
            continue
        if student in problems:
            result.append(Submission(student, None, "; ".join(problems[student])))
            continue
        if not paths:
            result.append(Submission(student, None, f"no notebook found (expected {assignment}.ipynb)"))
            continue
        if len(paths) > 1:
            listed = ", ".join(_shown(str(p.relative_to(root))) for p in paths)
            result.append(Submission(student, None, f"several notebooks ({listed}): which one to grade is not clear"))
            continue
        path = paths[0]
        sub = Submission(student, path)
        if path.parent == root:
            pass  # a platform export: the file name carries the student, not the assignment
        elif path.name != f"{assignment}.ipynb":
            sub.notes.append(f"the notebook was named {path.name}, not {assignment}.ipynb")
        result.append(sub)
    return result


_nbgrader_meta = roles.nbgrader_meta


def _released_test_cells(release_nb) -> dict:
    return {_nbgrader_meta(c)["grade_id"]: c.source for c in release_nb.cells
            if c.cell_type == "code" and _nbgrader_meta(c).get("grade") and not _nbgrader_meta(c).get("solution")}


_NBGRADER_FIELDS = {"grade_id": (str,), "grade": (bool,), "solution": (bool,), "locked": (bool,), "task": (bool,),
                    "points": (int, float), "schema_version": (int,), "checksum": (str,), "cell_type": (str,)}


def _type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
            bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _structure_problem(raw) -> str:
    """What makes parsed JSON unusable as a notebook for grading, or ""."""
    if not isinstance(raw, dict):
        return f"not a Jupyter notebook: the file holds {_type(raw)}, not a notebook object"
    if not isinstance(raw.get("cells"), list):
        return f"not a Jupyter notebook: its cells are {_type(raw.get('cells'))}, not a list"
    if not isinstance(raw.get("metadata", {}), dict):
        return f"not a Jupyter notebook: its metadata is {_type(raw['metadata'])}, not an object"
    for number, cell in enumerate(raw["cells"], start=1):
        if not isinstance(cell, dict):
            return f"malformed notebook: cell {number} is {_type(cell)}, not an object"
        if cell.get("cell_type") not in ("code", "markdown", "raw"):
            return f"malformed notebook: cell {number} has the cell type {_shown(str(cell.get('cell_type')))}"
        if "source" not in cell:
            return f"malformed notebook: cell {number} has no source"
        source = cell["source"]
        if not (isinstance(source, str) or isinstance(source, list) and all(isinstance(s, str) for s in source)):
            return f"malformed notebook: the source of cell {number} is {_type(source)}, not text"
        meta = cell.get("metadata", {})
        if not isinstance(meta, dict):
            return f"malformed notebook: the metadata of cell {number} is {_type(meta)}, not an object"
        if "nbgrader" not in meta:
            continue
        nbgrader = meta["nbgrader"]
        if not isinstance(nbgrader, dict):
            return f"malformed nbgrader metadata: in cell {number} it is {_type(nbgrader)}, not an object"
        for key, types in _NBGRADER_FIELDS.items():
            value = nbgrader.get(key)
            if key in nbgrader and not (isinstance(value, types) and (bool in types or not isinstance(value, bool))):
                return f"malformed nbgrader metadata: {key} of cell {number} is {_type(value)}"
    return ""


def prepare_notebook(sub: Submission, release_nb, target: Path) -> None:
    """Check the notebook of ``sub``, repair what can be repaired, write it to ``target``; set ``sub.problem`` if
    it cannot be graded. Never raises for anything in the notebook: the problem says what is wrong."""
    try:
        _prepare_notebook(sub, release_nb, target)
    except Exception as exc:  # noqa: BLE001 - whatever a hostile notebook does, the batch goes on
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        sub.problem = f"the notebook could not be prepared for grading ({type(exc).__name__}{': ' + first if first else ''})"


def _prepare_notebook(sub: Submission, release_nb, target: Path) -> None:
    size = sub.path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        sub.problem = f"the notebook is {_mib(size)} (more than {_mib(MAX_NOTEBOOK_BYTES)})"
        return
    text = sub.path.read_bytes().decode("utf-8", errors="replace")
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        sub.problem = f"corrupt notebook: not valid JSON ({exc.msg}: line {exc.lineno}, column {exc.colno})"
        return
    except (ValueError, RecursionError) as exc:
        sub.problem = f"corrupt notebook: not valid JSON ({type(exc).__name__})"
        return
    problem = _structure_problem(raw)
    if problem:
        sub.problem = problem
        return
    try:
        nb = nbformat.reads(text, as_version=4)
        cells = nb.cells
        assert isinstance(cells, list)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - anything nbformat cannot read
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        sub.problem = f"not a valid Jupyter notebook: {first}"
        return
    # Ids as the file has them: nbformat invents ids where a notebook has none (nbformat 4.0-4.4, Colab) and
    # repairs duplicates. Missing ids are normal (cells are matched by grade_id and position); duplicated are not.
    raw_ids = [c.get("id") for c in raw["cells"]]
    present = [i for i in raw_ids if i is not None]
    sub.notes += roles.apply_release_roles(cells, raw_ids, release_nb)
    if len(set(map(str, present))) != len(present):
        sub.notes.append("duplicated cell ids were renumbered")
    seen = set()
    for cell in cells:  # nbformat may have repaired them already; make sure (a test cell put back has the release's)
        if nb.nbformat_minor < 5:
            cell.pop("id", None)
        elif not isinstance(cell.get("id"), str) or cell["id"] in seen:
            cell["id"] = uuid.uuid4().hex[:8]
        seen.add(cell.get("id"))
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


# ---------------------------------------------------------------- running nbgrader in parallel

def _clone_workdir(main: Path, clone: Path, assignment: str, limits: course.Limits, jax_cache: Path | None) -> None:
    """A worker's course directory: the main one's source, release and gradebook, its own config and kernel spec."""
    clear_tree(clone)
    clone.mkdir(parents=True)
    for name in ("source", "release"):
        copy_tree(main / name / assignment, clone / name / assignment)
    shutil.copy2(main / "gradebook.db", clone / "gradebook.db")
    course.write_config(clone, limits, jax_cache, course.course_build_path(main, assignment))


def _worker(main: Path, clone: Path, assignment: str, todo: list, lock: threading.Lock, workers: int,
            logs: dict, record: "_Recorder") -> None:
    """Grade students taken from ``todo`` in the course directory ``clone``, a few at a time.

    Each ``nbgrader autograde`` call grades everyone in the clone's submitted/ (so the students of the
    previous call are taken out first); a call takes about 1/(2 * workers) of what is left, at most 8,
    so that nbgrader's start-up is paid once per several students and the workers finish together.
    After each call the chunk's grades are merged into the main gradebook and recorded (``record``), so
    that a grading process killed later loses only the chunks still running.
    """
    while not record.stop.is_set():
        with lock:
            take = min(8, max(1, len(todo) // (2 * workers)))
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


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError:
        pass  # a file system that cannot sync a folder: the rename is still atomic
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a process killed meanwhile) sees the old file or the new
    one, never a part: a temporary file next to it, synced, then renamed over it (``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent, directory=True)


def update_gradebook(workdir: Path, update):
    """Apply ``update(path)`` to a copy of WORKDIR/gradebook.db (a new file if there is none yet) and put the
    copy in its place with ``os.replace``; return what ``update`` returned.

    The main gradebook is only ever changed this way, by the grading process: a process killed at any moment
    leaves either the old gradebook or the new one, complete (SQLite keeps everything in the one file between
    transactions). The workers' nbgrader writes only the gradebooks of their own course directories.
    """
    main = Path(workdir) / "gradebook.db"
    tmp = main.with_name(f".gradebook.db.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if main.exists():
            shutil.copyfile(main, tmp)
        result = update(tmp)
        _fsync(tmp)
        os.replace(tmp, main)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)
    _fsync(main.parent, directory=True)
    return result


def merge_into_gradebook(source_db: Path, workdir: Path, assignment: str, students: list[str]) -> dict:
    """``merge_gradebook`` from a worker's gradebook into WORKDIR's, atomically (``update_gradebook``); return
    {student: why its grades could not be merged}."""
    def merge(target: Path) -> dict:
        try:
            return merge_gradebook(source_db, target, assignment, students)
        except Exception as exc:  # noqa: BLE001 - the worker's gradebook is unreadable: its students need attention
            return {s: f"its worker's gradebook could not be read ({type(exc).__name__}: {exc})" for s in students}

    return update_gradebook(workdir, merge)


def merge_gradebook(source_db: Path, target_db: Path, assignment: str, students: list[str]) -> dict:
    """Copy the submissions of ``students`` (scores, comments, flags, timestamps) from one gradebook to another;
    return {student: why it could not be copied} (those have no grades in the target)."""
    from nbgrader.api import Gradebook, MissingEntry

    failed = {}
    with Gradebook(f"sqlite:///{source_db}") as src, Gradebook(f"sqlite:///{target_db}") as dst:
        for student in students:
            try:
                sub = src.find_submission(assignment, student)
            except MissingEntry:
                continue
            try:
                _copy_submission(src, dst, sub, assignment, student)
            except Exception as exc:  # noqa: BLE001 - reported for this student, the others are merged
                dst.db.rollback()
                try:
                    dst.remove_submission(assignment, student)
                except Exception:  # noqa: BLE001
                    dst.db.rollback()
                failed[student] = f"its grades could not be merged into the gradebook ({type(exc).__name__}: {exc})"
    return failed


def _copy_submission(src, dst, sub, assignment: str, student: str) -> None:
    from nbgrader.api import MissingEntry

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


def progress(total: int, what: str):
    """A progress bar on the terminal (stderr), none where the output is not a terminal (logs, CI, tests)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=what, unit="", disable=None, leave=False)


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
    failed = [f"{_nbgrader_meta(c).get('grade_id', i)} ({_message(c)})" for i, c in enumerate(nb.cells)
              if (e := _error_outputs(c)) and e[0].get("ename") not in _SKIPPED_WHILE_GRADING]
    return f"the solution failed in cells {'; '.join(failed)}" if failed else ""


def _runs(nb, limits: course.Limits) -> int:
    """How many runs in the kernel grading ``nb`` takes: each code cell up to the last one run, a test cell once per
    check."""
    cells = [c for c in nb.cells[:last_cell_to_run(nb, limits.run_all_cells) + 1] if c.cell_type == "code" and c.source.strip()]
    return sum(max(1, c.source.count("check(")) if _nbgrader_meta(c).get("grade") and not _nbgrader_meta(c).get("solution")
               else 1 for c in cells)


# What a cell of the course raises where it needs a reference that is withheld while grading: every kernel skips it.
_SKIPPED_WHILE_GRADING = ("ReferenceWithheld", "CellSkipped")


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


# ---------------------------------------------------------------- reading the results back

def _error_outputs(cell):
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def _message(cell) -> str:
    """What a failed test cell says: the checker's message, or the error's one line (never a traceback)."""
    errors = _error_outputs(cell)
    if not errors:
        return ""
    err = errors[0]
    from course_utils.grading import clip_message

    if err.get("ename") in ("CheckFailure", NOT_RUN, KERNEL_DIED, "CellTimeoutError"):
        return clip_message(str(err.get("evalue", "")).strip())
    first = str(err.get("evalue") or "").strip().splitlines()
    return clip_message(f"{str(err.get('ename'))[:200]}: {first[0] if first else ''}".strip(), 2000)


def analyse(autograded: Path, release_nb, gradebook_scores: dict) -> tuple[dict, list[str]]:
    """Per test cell results and the reasons to flag, from one autograded notebook."""
    nb = nbformat.read(autograded, as_version=4)
    released = _released_test_cells(release_nb)
    cells, reasons = {}, []
    for number, cell in enumerate(nb.cells, start=1):
        if cell.cell_type != "code":
            continue
        grade_id = _nbgrader_meta(cell).get("grade_id")
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
            elif ename == MALFORMED:
                reasons.append(f"cell {number}: {evalue}")
            elif ename == "CheckFailure" and "calls the reference" in evalue:
                reasons.append(f"{grade_id}: {evalue.strip().splitlines()[0]}")
        if any(OUTPUT_LIMIT in "".join(o.get("text", "")) for o in cell.get("outputs", [])):
            reasons.append(f"output limit: the output of cell {number} was cut")
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) if out.get("output_type") == "stream" else ""
            if text.startswith(FLAG):  # written by the grader after the cell ran (autograder/provenance.py)
                reasons.append(f"cell {number}: {text[len(FLAG):].strip().rstrip(']')}")
            elif out.get("output_type") == "error" and out.get("ename") == GRADER_ERROR:
                reasons.append(f"{grade_id}: {out.get('evalue', '').strip()}")
        if grade_id in released:
            score, max_score = gradebook_scores[grade_id]
            cells[grade_id] = CellResult(score, max_score, _message(cell) if score < max_score else "")
    missing = [g for g in released if g not in cells]
    if missing:
        raise ValueError(f"the test cell(s) {', '.join(missing)} are not in the graded notebook")
    return cells, _bounded(reasons)


MAX_REASONS = 50  # reasons kept per student (each cut to REASON_CHARS characters): the results, export and pages stay small
REASON_CHARS = 2000


def _bounded(reasons: list) -> list:
    """``reasons`` with each cut to REASON_CHARS characters and at most MAX_REASONS of them, saying what was cut."""
    from course_utils.grading import clip_message

    kept = [clip_message(str(r), REASON_CHARS) for r in reasons[:MAX_REASONS]]
    if len(reasons) > MAX_REASONS:
        kept.append(f"[... truncated: {len(reasons) - MAX_REASONS} more reasons not shown]")
    return kept


def gradebook_scores(workdir: Path, assignment: str, unfinished: set | None = None,
                     students=None) -> tuple[dict, float]:
    """{student: {test cell: (score, max)}} from the gradebook (manual scores included), and the written questions' points.

    A student with a test cell that has neither an automatic nor a manual score (nbgrader was killed or crashed
    before it saved the grades) is added to ``unfinished``, when given. ``students``: only these (default: all).
    """
    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook(f"sqlite:///{workdir / 'gradebook.db'}") as gb:
        nb = gb.find_notebook(assignment, assignment)
        manual_max = sum(c.max_score for c in nb.grade_cells if c.cell_type == "markdown")
        for sub in gb.find_assignment(assignment).submissions:
            if students is not None and sub.student.id not in students:
                continue
            for snb in sub.notebooks:
                code = [g for g in snb.grades if g.cell.cell_type == "code"]
                scores[sub.student.id] = {g.name: (float(g.score or 0.0), float(g.max_score)) for g in code}
                if unfinished is not None and any(g.auto_score is None and g.manual_score is None for g in code):
                    unfinished.add(sub.student.id)
    return scores, manual_max


# ---------------------------------------------------------------- the command

def results_path(workdir: Path, assignment: str) -> Path:
    return Path(workdir) / f"results_{assignment}.json"


PROGRESS_VERSION = 1


def progress_path(workdir: Path, assignment: str) -> Path:
    """The journal of a ``grade`` run: who is completely graded (see ``grade``)."""
    return Path(workdir) / f"progress_{assignment}.json"


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def submission_digest(sub: Submission) -> str:
    """What identifies a submission for resuming: its notebook's bytes and where it was found."""
    name = str(sub.path.relative_to(sub.path.parents[1]))
    return _sha256(name.encode() + b"\0" + sub.path.read_bytes())


def run_key(assignment: str, limits: course.Limits) -> str:
    """A digest of everything besides the submission that decides a grade: the assignment's source (solution,
    tests, hidden tests), the limits and sandbox setting, and the code of ``autograder`` and ``course_utils``.
    A journal made under another key is not resumed: everyone is graded again."""
    import hashlib
    import importlib.util

    digest = hashlib.sha256(json.dumps({"version": PROGRESS_VERSION, "assignment": assignment,
                                        "limits": asdict(limits)}, sort_keys=True).encode())
    spec = importlib.util.find_spec("course_utils")
    roots = [course.SOLUTIONS / assignment, course.REPO / "autograder"]
    roots += [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and ("__pycache__" not in path.parts and ".ipynb_checkpoints" not in path.parts
                                   and (root.parent == course.SOLUTIONS or path.suffix == ".py")):
                digest.update(f"{path.relative_to(root)}\0{path.stat().st_size}\0".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def load_progress(workdir: Path, assignment: str, key: str) -> tuple[dict, str]:
    """The students an earlier run recorded as completely graded ({student: entry}), and why none can be
    resumed ("" when the journal is usable)."""
    path = progress_path(workdir, assignment)
    if not path.exists():
        return {}, ""
    try:
        data = json.loads(path.read_text())
        finished = data["finished"]
        assert isinstance(finished, dict)
    except Exception as exc:  # noqa: BLE001 - an unreadable journal: grade everyone again
        return {}, f"the journal {path.name} could not be read ({type(exc).__name__})"
    if data.get("version") != PROGRESS_VERSION or data.get("key") != key:
        return {}, ("the earlier run graded with other settings, another version of the assignment or of the "
                    "grading code")
    return finished, ""


def save_progress(workdir: Path, assignment: str, key: str, finished: dict) -> None:
    write_atomically(progress_path(workdir, assignment),
                     json.dumps({"version": PROGRESS_VERSION, "assignment": assignment, "key": key,
                                 "finished": finished}, indent=1).encode())


def _result_from_dict(data: dict) -> StudentResult:
    data = dict(data)
    data["cells"] = {k: CellResult(**v) for k, v in data["cells"].items()}
    return StudentResult(**data)


def _student_result(sub: Submission, workdir: Path, assignment: str, release_nb, scores: dict, unfinished: set,
                    manual_max: float, merge_failed: dict, logs: dict) -> StudentResult:
    """The result of one submission, from the gradebook (``scores``) and its autograded notebook."""
    name = str(sub.path.relative_to(sub.path.parents[1])) if sub.path else ""
    autograded = workdir / "autograded" / sub.student / assignment / f"{assignment}.ipynb"
    log_file = workdir / "logs" / logs.get(sub.student, "missing.log")
    see = f" (see {log_file.relative_to(workdir)})"
    if sub.problem:
        return StudentResult(sub.student, ATTENTION, [sub.problem], notebook=name)
    if sub.student in merge_failed:
        return StudentResult(sub.student, ATTENTION, [merge_failed[sub.student] + see], notebook=name)
    if not autograded.exists() or sub.student not in scores:
        lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
        errors = [l for l in lines if "ERROR" in l and f"'{sub.student}'" in l][-1:]
        return StudentResult(sub.student, ATTENTION,
                             ["nbgrader could not grade it" + (f": {errors[0]}" if errors else "") + see], notebook=name)
    if sub.student in unfinished:
        return StudentResult(sub.student, ATTENTION, ["grading did not finish: a test cell has no score "
                                                      "(nbgrader was killed or crashed)" + see], notebook=name)
    try:
        cells, reasons = analyse(autograded, release_nb, scores[sub.student])
    except Exception as exc:  # noqa: BLE001 - an unreadable graded notebook needs a look, the batch goes on
        return StudentResult(sub.student, ATTENTION, [f"the graded notebook could not be read back "
                                                      f"({type(exc).__name__}: {exc})" + see], notebook=name)
    reasons = _bounded(sub.notes + reasons)
    return StudentResult(sub.student, FLAGGED if reasons else GRADED, reasons, cells, manual_max, name)


def _resumable(previous: dict, digests: dict, workdir: Path, assignment: str) -> dict:
    """The entries of ``previous`` whose student was completely graded from the same submission: the same
    digest, the autograded notebook in place and unchanged, every test cell scored in the main gradebook."""
    candidates = {s: e for s, e in previous.items() if isinstance(e, dict) and s in digests
                  and e.get("submission") == digests[s]}
    if not candidates or not (Path(workdir) / "gradebook.db").exists():
        return {}
    unfinished = set()
    try:
        scores, _ = gradebook_scores(workdir, assignment, unfinished, students=set(candidates))
    except Exception:  # noqa: BLE001 - an unreadable gradebook: grade everyone again
        return {}
    kept = {}
    for student, entry in candidates.items():
        autograded = Path(workdir) / "autograded" / student / assignment / f"{assignment}.ipynb"
        try:
            same = autograded.is_file() and _sha256(autograded.read_bytes()) == entry.get("autograded")
            _result_from_dict(entry["result"])
        except Exception:  # noqa: BLE001 - a damaged entry: that student is graded again
            continue
        if same and student in scores and student not in unfinished:
            kept[student] = entry
    return kept


def grade(assignment: str, submissions: Path, workdir: Path, limits: course.Limits = course.Limits(),
          workers: int | None = None, compile_cache: bool = True, log=print,
          allow_unsandboxed: bool = False, restart: bool = False) -> list[StudentResult]:
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
    key = run_key(assignment, limits)
    previous, not_resumed = ({}, "") if restart else load_progress(workdir, assignment, key)
    for stale in ("submitted", "workers", "scratch"):
        remove_tree(workdir / stale)
    for leftover in workdir.glob(".*.tmp*") if workdir.exists() else []:
        leftover.unlink(missing_ok=True)  # a temporary gradebook, journal or results file of a killed run
    if not previous:
        for stale in ("autograded", "logs"):
            remove_tree(workdir / stale)
    jax_cache = workdir / "jax-cache" if compile_cache else None
    (workdir / "scratch").mkdir(parents=True, exist_ok=True)  # exists only if a killed run's could not be removed
    workdir = course.prepare_workdir(workdir, assignment, limits, jax_cache)
    update_gradebook(workdir, lambda db: course.nbgrader(workdir, "generate_assignment", assignment, "--force",
                                                        f"--CourseDirectory.db_url=sqlite:///{db}"))
    release_nb = nbformat.read(workdir / "release" / assignment / f"{assignment}.ipynb", as_version=4)

    subs = intake(submissions, assignment, workdir / "intake", warn=lambda message: log(f"warning: {message}"))
    for sub in subs:
        if not sub.problem:
            prepare_notebook(sub, release_nb, workdir / "submitted" / sub.student / assignment / f"{assignment}.ipynb")
    digests = {}
    for sub in subs:
        if not sub.problem:
            try:
                digests[sub.student] = submission_digest(sub)
            except OSError as exc:
                sub.problem = f"the notebook could not be read ({type(exc).__name__}: {exc})"
    finished = _resumable(previous, digests, workdir, assignment)
    save_progress(workdir, assignment, key, finished)  # from here on, the journal lists only what is kept
    if previous:
        kept_logs = {e.get("log") for e in finished.values()}
        for path in (workdir / "autograded").iterdir() if (workdir / "autograded").is_dir() else []:
            if path.name not in finished:
                remove_tree(path)
        for path in (workdir / "logs").iterdir() if (workdir / "logs").is_dir() else []:
            if path.name not in kept_logs:
                path.unlink(missing_ok=True)
    students = [s.student for s in subs if not s.problem and s.student not in finished]
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
    by_id = {s.student: s for s in subs}

    def record(chunk: list[str], chunk_log: str, failed: dict) -> None:
        """After a chunk is merged: each student completely graded goes into the journal."""
        unfinished = set()
        scores, manual_max = gradebook_scores(workdir, assignment, unfinished, students=set(chunk))
        for student in chunk:
            result = _student_result(by_id[student], workdir, assignment, release_nb, scores, unfinished, manual_max,
                                     failed, {student: chunk_log})
            if result.status == ATTENTION:
                continue  # tried again by the next run
            autograded = workdir / "autograded" / student / assignment / f"{assignment}.ipynb"
            finished[student] = {"submission": digests[student], "autograded": _sha256(autograded.read_bytes()),
                                 "log": chunk_log, "result": asdict(result)}
        save_progress(workdir, assignment, key, finished)
        graded_bar.update(len(chunk))

    graded_bar = progress(len(students), "grading")
    if students:
        started = time.monotonic()
        if compile_cache:
            log("warming the compilation cache: grading the solution once...")
            problem = warm_compile_cache(workdir, assignment, limits)
            if problem:
                log(f"warning: warming the compilation cache: {problem}")
            log(f"compilation cache warmed in {time.monotonic() - started:.0f} s")
        logs, merge_failed = run_autograde(workdir, assignment, students, workers, limits, jax_cache, on_chunk=record)
        remove_tree(workdir / "scratch")
    else:
        logs, merge_failed = {}, {}
    graded_bar.close()
    remove_tree(course.runtime_dir(workdir))  # Jupyter's runtime folder (kernel sockets), in /tmp
    unfinished = set()
    scores, manual_max = gradebook_scores(workdir, assignment, unfinished)
    results = []
    for sub in subs:
        if sub.student in finished:
            result = _result_from_dict(finished[sub.student]["result"])
            for cell, value in result.cells.items():  # hand grading done since is included
                value.score, value.max_score = scores.get(sub.student, {}).get(cell, (value.score, value.max_score))
            results.append(result)
        else:
            results.append(_student_result(sub, workdir, assignment, release_nb, scores, unfinished, manual_max,
                                           merge_failed, logs))
    if not limits.sandbox:
        for r in results:
            r.reasons.append(NOT_ISOLATED)
            r.status = FLAGGED if r.status == GRADED else r.status
    results.sort(key=lambda r: r.student)
    save_results(results, workdir, assignment)
    return results


def save_results(results: list[StudentResult], workdir: Path, assignment: str) -> Path:
    path = results_path(workdir, assignment)
    write_atomically(path, json.dumps({"assignment": assignment, "students": [asdict(r) for r in results]},
                                      indent=1).encode())
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


def spreadsheet_safe(text: str) -> str:
    """``text`` as a spreadsheet shows it and never runs it: a cell that begins with = + - @, a tab or a carriage
    return (a formula, or what a spreadsheet may read as one) gets a leading single quote."""
    return "'" + text if text.startswith(("=", "+", "-", "@", "\t", "\r")) else text


def write_table(results: list[StudentResult], path: Path) -> Path:
    """The export: one row per student with status, reason, total, maximum and every test cell's score.

    A submission that could not be graded has an empty score and the status
    "needs attention", never a 0. Text cells (ids, reasons, cell names) go through ``spreadsheet_safe``;
    the scores are numbers this code wrote.
    """
    cells = sorted({c for r in results for c in r.cells})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "status", "reason", "score", "max_score", "manual_points_pending",
                         *map(spreadsheet_safe, cells)])
        for r in results:
            writer.writerow([
                spreadsheet_safe(r.student), spreadsheet_safe(r.status), spreadsheet_safe(r.reason),
                f"{r.score:g}" if r.graded else "", f"{r.max_score:g}" if r.graded else "",
                f"{r.manual_max:g}" if r.graded else "",
                *(f"{r.cells[c].score:g}" if c in r.cells else "" for c in cells),
            ])
    return path
