"""Intake: from a folder or a zip of submissions to one checked notebook per student, ready for nbgrader.

The submissions are a folder or a zip file. Each student is either a folder ``<student>/`` holding the notebook
(anywhere inside, ideally named ``ASSIGNMENT.ipynb``), or a notebook file named ``<student>_<anything>.ipynb`` /
``<student>.ipynb`` at the top level (as learning platforms export them). From a zip only the notebooks are
unpacked, within :class:`ZipLimits`, never outside the folder or as a link; an entry that is refused makes its
student "needs attention". Student ids are checked (:func:`valid_student_id`) before any is used in a path
(:func:`intake`).

Every notebook is then checked before nbgrader sees it (:func:`prepare_notebook`): unreadable JSON, not a notebook,
malformed cells or nbgrader metadata, no notebook, or several notebooks mean "needs attention" with the reason.
Every cell gets its role from the release, never from the submission's metadata (``autograder/roles.py``: matched
by cell id, grade_id or position; a test or read-only cell gets the release's source, a deleted test cell is put
back); added code cells, deleted, moved or re-roled cells, edited test cells, duplicated cell ids (renumbered;
missing ids are normal) and a wrong file name are noted.
"""

import json
import re
import stat
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import roles
from .trees import clear_tree, walk_tree

_STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
MAX_NOTEBOOK_BYTES = 50 * 2**20
MAX_STUDENT_ID = 128  # characters


@dataclass(frozen=True)
class ZipLimits:
    """What a zip of submissions may unpack to. Only notebooks are unpacked (nothing else is graded); an entry
    over a limit is not unpacked, and its student needs attention with the reason (see README, "Limits")."""

    max_file_bytes: int = MAX_NOTEBOOK_BYTES  # one notebook
    max_total_bytes: int = 2 * 2**30  # all the notebooks together
    max_entries: int = 20_000  # entries read from the zip (files and folders); the rest are not unpacked


@dataclass
class Submission:
    """One student's submission: their notebook, or the problem that keeps it from being graded."""

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
    """A size in MiB (or bytes, under one MiB), for messages."""
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


_NBGRADER_FIELDS = {"grade_id": (str,), "grade": (bool,), "solution": (bool,), "locked": (bool,), "task": (bool,),
                    "points": (int, float), "schema_version": (int,), "checksum": (str,), "cell_type": (str,)}


def _type(value) -> str:
    """What a JSON value is, in words."""
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
