"""The results: each autograded notebook read back into a student's grade, saved, and exported as a table.

Each autograded notebook is read back (:func:`analyse`): the score and the checker's message of every test cell, and
why the submission needs a look (time limit, memory, dead kernel, output limit, the reference called instead of
computed). A student's status (:func:`student_result`) is ``graded``; ``flagged`` (graded, for what ran, with
reasons an instructor should read); or ``needs attention`` (not graded: the reason says why; exported with an empty
score, never as 0). The results are written to ``WORKDIR/results_ASSIGNMENT.json`` (:func:`save_results`), which
``feedback``, ``export`` and ``report`` read together with the gradebook (:func:`load_results`); ``export`` writes
them as a CSV table (:func:`write_table`).
"""

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from . import roles
from .atomic import write_atomically
from .execute import GRADER_ERROR, KERNEL_DIED, MALFORMED, NOT_RUN, OUTPUT_LIMIT
from .gradebook import gradebook_scores
from .intake import Submission
from .provenance import FLAG

GRADED, FLAGGED, ATTENTION = "graded", "flagged", "needs attention"
NOT_ISOLATED = "NOT ISOLATED: graded without the sandbox (--allow-unsandboxed)"


@dataclass
class CellResult:
    """The grade of one test cell."""

    score: float
    max_score: float
    message: str  # the checker's message, or the error's one line; "" when passed


@dataclass
class StudentResult:
    """The grade of one student: their status, the reasons for it, and every test cell's result."""

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


MAX_REASONS = 50  # reasons kept per student (each cut to REASON_CHARS characters): the results, export and pages stay small
REASON_CHARS = 2000


def bounded(reasons: list) -> list:
    """``reasons`` with each cut to REASON_CHARS characters and at most MAX_REASONS of them, saying what was cut."""
    from course_utils.grading import clip_message

    kept = [clip_message(str(r), REASON_CHARS) for r in reasons[:MAX_REASONS]]
    if len(reasons) > MAX_REASONS:
        kept.append(f"[... truncated: {len(reasons) - MAX_REASONS} more reasons not shown]")
    return kept


def _released_test_cells(release_nb) -> dict:
    """{grade_id: source} of the release's test cells."""
    return {roles.nbgrader_meta(c)["grade_id"]: c.source for c in release_nb.cells if roles.role(c) == roles.TEST}


def error_outputs(cell):
    """The error outputs of a cell."""
    return [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def cell_message(cell) -> str:
    """What a failed test cell says: the checker's message, or the error's one line (never a traceback)."""
    errors = error_outputs(cell)
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
        grade_id = roles.nbgrader_meta(cell).get("grade_id")
        for err in error_outputs(cell):
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
            cells[grade_id] = CellResult(score, max_score, cell_message(cell) if score < max_score else "")
    missing = [g for g in released if g not in cells]
    if missing:
        raise ValueError(f"the test cell(s) {', '.join(missing)} are not in the graded notebook")
    return cells, bounded(reasons)


def student_result(sub: Submission, workdir: Path, assignment: str, release_nb, scores: dict, unfinished: set,
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
    reasons = bounded(sub.notes + reasons)
    return StudentResult(sub.student, FLAGGED if reasons else GRADED, reasons, cells, manual_max, name)


def result_from_dict(data: dict) -> StudentResult:
    """A :class:`StudentResult` from what ``asdict`` made of one (the results file, the journal)."""
    data = dict(data)
    data["cells"] = {k: CellResult(**v) for k, v in data["cells"].items()}
    return StudentResult(**data)


def results_path(workdir: Path, assignment: str) -> Path:
    """WORKDIR/results_ASSIGNMENT.json: the results of the last ``grade`` run."""
    return Path(workdir) / f"results_{assignment}.json"


def save_results(results: list[StudentResult], workdir: Path, assignment: str, limits=None,
                 shard: tuple[int, int] | None = None) -> Path:
    """Write the results file of a grading run (atomically): the students' results, the limits (a
    ``course.Limits``) they were graded with and the shard they are (``autograder/shards.py``); return its path."""
    path = results_path(workdir, assignment)
    extra = {"shard": list(shard) if shard else None, "limits": asdict(limits) if limits is not None else None}
    write_atomically(path, json.dumps({"assignment": assignment, **extra, "students": [asdict(r) for r in results]},
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
    results = [result_from_dict(r) for r in data["students"]]
    if refresh_scores:
        scores, _ = gradebook_scores(Path(workdir), assignment)
        for r in results:
            _rescore(r, scores)
    return results


def _rescore(result: StudentResult, scores: dict) -> StudentResult:
    """``result`` with the scores the gradebook has now (``scores``, from :func:`gradebook_scores`: hand grading
    done since is included)."""
    for cell, value in result.cells.items():
        value.score, value.max_score = scores.get(result.student, {}).get(cell, (value.score, value.max_score))
    return result


def class_results(subs: list, finished: dict, workdir: Path, assignment: str, release_nb, merge_failed: dict,
                  logs: dict, sandboxed: bool) -> list[StudentResult]:
    """The result of every submission, sorted by student: from the journal (``finished``) for those graded by an
    earlier run, read back from the gradebook and the autograded notebooks for the others; every one says NOT
    ISOLATED when the kernels were not ``sandboxed``."""
    unfinished = set()
    scores, manual_max = gradebook_scores(workdir, assignment, unfinished)
    results = []
    for sub in subs:
        if sub.student in finished:
            results.append(_rescore(result_from_dict(finished[sub.student]["result"]), scores))
        else:
            results.append(student_result(sub, workdir, assignment, release_nb, scores, unfinished, manual_max,
                                          merge_failed, logs))
    if not sandboxed:
        for r in results:
            r.reasons.append(NOT_ISOLATED)
            r.status = FLAGGED if r.status == GRADED else r.status
    results.sort(key=lambda r: r.student)
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
