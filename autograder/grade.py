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
   mean "needs attention" with the reason; duplicated cell ids are
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
import stat
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import nbformat

from . import course
from .execute import GRADER_ERROR, KERNEL_DIED, NOT_RUN, OUTPUT_LIMIT, last_cell_to_run
from .provenance import FLAG

GRADED, FLAGGED, ATTENTION = "graded", "flagged", "needs attention"
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
        shutil.rmtree(dest)
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
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        for name in sorted(files):
            path = Path(top) / name
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


def _nbgrader_meta(cell) -> dict:
    """A cell's nbgrader metadata, or {} when it has none (or it is not a dict)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
    return nbgrader if isinstance(nbgrader, dict) else {}


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
        sub.problem = f"corrupt notebook: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
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
    raw_ids = [c.get("id") for c in raw["cells"]]
    ids = [c.get("id") for c in cells]
    if len(set(map(str, raw_ids))) != len(raw_ids) or len(set(ids)) != len(ids):
        for cell in cells:  # nbformat may have repaired them already; make sure
            cell["id"] = uuid.uuid4().hex[:8]
        sub.notes.append("duplicated cell ids were renumbered")
    released = _released_test_cells(release_nb)
    present = {_nbgrader_meta(c).get("grade_id"): c.source for c in cells if c.get("cell_type") == "code"}
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
        log = f"{chunk[0]}{f'+{len(chunk) - 1}' if len(chunk) > 1 else ''}.log"
        try:
            shutil.rmtree(clone / "submitted", ignore_errors=True)
            for student in chunk:
                shutil.copytree(main / "submitted" / student, clone / "submitted" / student)
            result = course.nbgrader(clone, "autograde", assignment, "--create", "--force", check=False)
            text = result.stdout + result.stderr
        except Exception:  # noqa: BLE001 - these students need attention (no grades); the others go on
            import traceback

            text = f"ERROR grading {', '.join(repr(s) for s in chunk)}:\n{traceback.format_exc()}"
        (main / "logs" / log).write_text(text)
        with lock:
            logs.update({student: (clone, log) for student in chunk})


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
    merged into WORKDIR's gradebook and autograded/; return {student: the name of its log in WORKDIR/logs} and
    {student: why its grades could not be merged}."""
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
    failed = {}
    for clone in clones:
        shutil.rmtree(course.runtime_dir(clone), ignore_errors=True)
        mine = [s for s, (c, _) in logs.items() if c == clone]
        try:
            failed |= merge_gradebook(clone / "gradebook.db", workdir / "gradebook.db", assignment, mine)
        except Exception as exc:  # noqa: BLE001 - the worker's gradebook is unreadable: its students need attention
            failed |= {s: f"its worker's gradebook could not be read ({type(exc).__name__}: {exc})" for s in mine}
        for student in mine:
            if student in failed:
                continue
            graded = clone / "autograded" / student
            target = workdir / "autograded" / student
            if target.exists():
                shutil.rmtree(target)
            if graded.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(graded), str(target))
    shutil.rmtree(workdir / "workers", ignore_errors=True)
    return {student: log for student, (_, log) in logs.items()}, failed


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
    return cells, reasons


def gradebook_scores(workdir: Path, assignment: str, unfinished: set | None = None) -> tuple[dict, float]:
    """{student: {test cell: (score, max)}} from the gradebook (manual scores included), and the written questions' points.

    A student with a test cell that has neither an automatic nor a manual score (nbgrader was killed or crashed
    before it saved the grades) is added to ``unfinished``, when given.
    """
    from nbgrader.api import Gradebook

    scores = {}
    with Gradebook(f"sqlite:///{workdir / 'gradebook.db'}") as gb:
        nb = gb.find_notebook(assignment, assignment)
        manual_max = sum(c.max_score for c in nb.grade_cells if c.cell_type == "markdown")
        for sub in gb.find_assignment(assignment).submissions:
            for snb in sub.notebooks:
                code = [g for g in snb.grades if g.cell.cell_type == "code"]
                scores[sub.student.id] = {g.name: (float(g.score or 0.0), float(g.max_score)) for g in code}
                if unfinished is not None and any(g.auto_score is None and g.manual_score is None for g in code):
                    unfinished.add(sub.student.id)
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

    subs = intake(submissions, assignment, workdir / "intake", warn=lambda message: log(f"warning: {message}"))
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
        logs, merge_failed = run_autograde(workdir, assignment, students, workers, limits, jax_cache)
        shutil.rmtree(workdir / "scratch", ignore_errors=True)
    else:
        logs, merge_failed = {}, {}
    shutil.rmtree(course.runtime_dir(workdir), ignore_errors=True)  # Jupyter's runtime folder (kernel sockets), in /tmp
    unfinished = set()
    scores, manual_max = gradebook_scores(workdir, assignment, unfinished)
    results = []
    for sub in subs:
        name = str(sub.path.relative_to(sub.path.parents[1])) if sub.path else ""
        autograded = workdir / "autograded" / sub.student / assignment / f"{assignment}.ipynb"
        log_file = workdir / "logs" / logs.get(sub.student, "missing.log")
        see = f" (see {log_file.relative_to(workdir)})"
        if sub.problem:
            results.append(StudentResult(sub.student, ATTENTION, [sub.problem], notebook=name))
        elif sub.student in merge_failed:
            results.append(StudentResult(sub.student, ATTENTION, [merge_failed[sub.student] + see], notebook=name))
        elif not autograded.exists() or sub.student not in scores:
            lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
            errors = [l for l in lines if "ERROR" in l and f"'{sub.student}'" in l][-1:]
            results.append(StudentResult(sub.student, ATTENTION,
                                         ["nbgrader could not grade it" + (f": {errors[0]}" if errors else "") + see],
                                         notebook=name))
        elif sub.student in unfinished:
            results.append(StudentResult(sub.student, ATTENTION, ["grading did not finish: a test cell has no score "
                                                                  "(nbgrader was killed or crashed)" + see],
                                         notebook=name))
        else:
            try:
                cells, reasons = analyse(autograded, release_nb, scores[sub.student])
            except Exception as exc:  # noqa: BLE001 - an unreadable graded notebook needs a look, the batch goes on
                results.append(StudentResult(sub.student, ATTENTION, [f"the graded notebook could not be read back "
                                                                      f"({type(exc).__name__}: {exc})" + see],
                                             notebook=name))
                continue
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
