"""The resume journal: who is completely graded, so that a run killed or repeated grades only the others.

After each chunk of students is merged into the gradebook, ``WORKDIR/progress_ASSIGNMENT.json`` records who is
completely graded (grades in the main gradebook, graded notebook in place, result saved), with a digest of their
submitted notebook (:func:`entry`; written atomically). The same ``grade`` command run again in that WORKDIR keeps
every student the journal lists whose notebook is byte-identical, whose autograded notebook is in place and whose
grades are in the gradebook (:func:`resumable`), if the assignment, the limits and the grading code are unchanged
(:func:`run_key`), and grades everyone else.
"""

import hashlib
import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

from . import course
from .atomic import write_atomically
from .gradebook import gradebook_scores
from .intake import Submission
from .results import result_from_dict
from .trees import remove_tree


PROGRESS_VERSION = 1


def progress_path(workdir: Path, assignment: str) -> Path:
    """The journal of a ``grade`` run: who is completely graded (see ``grade``)."""
    return Path(workdir) / f"progress_{assignment}.json"


def sha256(data: bytes) -> str:
    """The SHA-256 digest of ``data``, in hex."""
    return hashlib.sha256(data).hexdigest()


def submission_digest(sub: Submission) -> str:
    """What identifies a submission for resuming: its notebook's bytes and where it was found."""
    name = str(sub.path.relative_to(sub.path.parents[1]))
    return sha256(name.encode() + b"\0" + sub.path.read_bytes())


def run_key(assignment: str, limits: course.Limits) -> str:
    """A digest of everything besides the submission that decides a grade: the assignment's source (solution,
    tests, hidden tests), the limits and sandbox setting, and the code of ``autograder`` and ``course_utils``.
    A journal made under another key is not resumed: everyone is graded again."""
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
    """Write the journal (atomically): the students in ``finished`` are completely graded under ``key``."""
    write_atomically(progress_path(workdir, assignment),
                     json.dumps({"version": PROGRESS_VERSION, "assignment": assignment, "key": key,
                                 "finished": finished}, indent=1).encode())


def resumable(previous: dict, digests: dict, workdir: Path, assignment: str) -> dict:
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
            same = autograded.is_file() and sha256(autograded.read_bytes()) == entry.get("autograded")
            result_from_dict(entry["result"])
        except Exception:  # noqa: BLE001 - a damaged entry: that student is graded again
            continue
        if same and student in scores and student not in unfinished:
            kept[student] = entry
    return kept


def submission_digests(subs: list) -> dict:
    """{student: :func:`submission_digest`} of the submissions that can be graded; one whose notebook cannot be read
    gets that as its problem."""
    found = {}
    for sub in subs:
        if not sub.problem:
            try:
                found[sub.student] = submission_digest(sub)
            except OSError as exc:
                sub.problem = f"the notebook could not be read ({type(exc).__name__}: {exc})"
    return found


def entry(digest: str, autograded: Path, log: str, result) -> dict:
    """The journal's entry of a student completely graded: their submission's digest, their autograded notebook's,
    the log of their chunk and their result."""
    return {"submission": digest, "autograded": sha256(Path(autograded).read_bytes()), "log": log,
            "result": asdict(result)}


def prune(workdir: Path, finished: dict) -> None:
    """Remove the autograded notebooks and the logs of an earlier run that the journal does not keep."""
    kept_logs = {e.get("log") for e in finished.values()}
    for path in (workdir / "autograded").iterdir() if (workdir / "autograded").is_dir() else []:
        if path.name not in finished:
            remove_tree(path)
    for path in (workdir / "logs").iterdir() if (workdir / "logs").is_dir() else []:
        if path.name not in kept_logs:
            path.unlink(missing_ok=True)
