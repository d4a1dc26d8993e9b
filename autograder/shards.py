"""A class graded on several machines: deterministic shards of the submissions, and their course folders merged.

``grade ASSIGNMENT SUBMISSIONS --shard K/N --workdir shard-K`` grades the K-th of N shards (every machine is given
all the submissions and keeps its own share, so no one has to split them by hand); ``merge shard-1 ... shard-N
--workdir grading`` makes one course folder of them: one gradebook (nbgrader's, so formgrader and ``nbgrader
export`` see the whole class), the graded notebooks, the logs, the results and the resume journal, from which
``export``, ``feedback`` and ``report`` write what grading the class at once would have written.

A student's shard depends on the student's id alone (a hash of it), not on who else submitted: a late submission
joins the same shard whenever it comes, and a shard can be graded again on its own.
"""

import hashlib
import json
from pathlib import Path

from . import course
from .gradebook import merge_into_gradebook, update_gradebook
from .journal import progress_path, run_key, save_progress
from .results import result_from_dict, results_path, save_results
from .trees import clear_tree, copy_tree, remove_tree


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N), with 1 <= K <= N."""
    try:
        k, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"a shard is K/N with whole numbers (for example 2/5), got {text!r}") from None
    if not 1 <= k <= n:
        raise ValueError(f"a shard K/N needs 1 <= K <= N, got {text!r}")
    return k, n


def shard_of(student: str, n: int) -> int:
    """The shard (1 to ``n``) of ``student``: from a hash of the id alone."""
    return int(hashlib.sha256(student.encode("utf-8", "surrogatepass")).hexdigest()[:16], 16) % n + 1


def in_shard(student: str, shard: tuple[int, int] | None) -> bool:
    return shard is None or shard_of(student, shard[1]) == shard[0]


def _read_results(folder: Path, assignment: str) -> dict:
    path = results_path(folder, assignment)
    if not path.is_file():
        raise SystemExit(f"merge: {folder} has no grading results of {assignment} (run `grade ... --shard K/N "
                         f"--workdir {folder}` there first)")
    return json.loads(path.read_text())


def merge(assignment: str, folders: list[Path], workdir: Path, log=print) -> list:
    """Merge the course folders of ``assignment`` graded as shards 1..N into ``workdir``; return the results.

    Refused (``SystemExit``, nothing written) unless the folders are every shard of one split exactly once, graded
    with the same limits and the same code and assignment (the resume journal's key), and ``workdir`` is none of
    them. What ``workdir`` held of an earlier merge or grading of this assignment is replaced."""
    folders = [Path(f).resolve() for f in folders]
    workdir = Path(workdir).resolve()
    if workdir in folders or any(f in workdir.parents for f in folders):
        raise SystemExit(f"merge: the merged folder {workdir} must not be one of the shards' folders, nor inside one")
    data = {f: _read_results(f, assignment) for f in folders}
    shards = {f: tuple(d.get("shard") or ()) for f, d in data.items()}
    if any(len(s) != 2 for s in shards.values()):
        raise SystemExit("merge: " + ", ".join(str(f) for f, s in shards.items() if len(s) != 2)
                         + " was not graded as a shard (grade --shard K/N)")
    n = {s[1] for s in shards.values()}
    ks = sorted(s[0] for s in shards.values())
    if len(n) != 1 or ks != list(range(1, next(iter(n)) + 1)):
        raise SystemExit(f"merge: the folders hold shards {', '.join(f'{k}/{m}' for k, m in sorted(shards.values()))}; "
                         f"merge needs each shard of one split exactly once")
    limits = {json.dumps(d.get("limits"), sort_keys=True) for d in data.values()}
    if len(limits) != 1 or None in (d.get("limits") for d in data.values()):
        raise SystemExit("merge: the shards were graded with different limits")
    limits = course.Limits(**next(iter(data.values()))["limits"])
    key = run_key(assignment, limits)
    for folder in folders:
        journal = progress_path(folder, assignment)
        shard_key = json.loads(journal.read_text()).get("key") if journal.is_file() else None
        if shard_key != key:
            raise SystemExit(f"merge: {folder} was graded with another version of the assignment or of the grading "
                             f"code than this one: grade that shard again with this version")
    students = [s["student"] for d in data.values() for s in d["students"]]
    if len(set(students)) != len(students):
        raise SystemExit("merge: a student is in two shards (the folders were not graded from one split)")

    for stale in ("autograded", "logs", "submitted", "workers", "scratch"):
        remove_tree(workdir / stale)
    for stale in (workdir / "gradebook.db", progress_path(workdir, assignment)):
        stale.unlink(missing_ok=True)
    workdir = course.prepare_workdir(workdir, assignment, limits)
    update_gradebook(workdir, lambda db: course.nbgrader(workdir, "generate_assignment", assignment, "--force",
                                                        f"--CourseDirectory.db_url=sqlite:///{db}"))
    results, finished = [], {}
    (workdir / "logs").mkdir(exist_ok=True)
    for folder in sorted(folders, key=lambda f: shards[f]):
        mine = [s["student"] for s in data[folder]["students"]]
        failed = merge_into_gradebook(folder / "gradebook.db", workdir, assignment, mine)
        if failed:
            raise SystemExit(f"merge: the gradebook of {folder} could not be merged: {next(iter(failed.values()))}")
        for student in mine:
            graded = folder / "autograded" / student
            if graded.is_dir():
                target = workdir / "autograded" / student
                clear_tree(target)
                copy_tree(graded, target)
        for log_file in sorted((folder / "logs").glob("*.log")) if (folder / "logs").is_dir() else []:
            target = workdir / "logs" / log_file.name
            if target.exists():
                raise SystemExit(f"merge: two shards have a log named {log_file.name}")
            target.write_bytes(log_file.read_bytes())
        results += [result_from_dict(s) for s in data[folder]["students"]]
        journal = progress_path(folder, assignment)
        finished.update(json.loads(journal.read_text()).get("finished", {}))
        log(f"shard {shards[folder][0]}/{shards[folder][1]}: {len(mine)} submission(s) from {folder}")
    results.sort(key=lambda r: r.student)
    save_results(results, workdir, assignment, limits=limits)
    save_progress(workdir, assignment, key, {s: e for s, e in finished.items() if s in set(students)})
    log(f"merged {len(results)} submission(s) of {len(folders)} shard(s) into {workdir}")
    return results
