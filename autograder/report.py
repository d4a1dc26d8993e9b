"""The class report: one self-contained HTML page for the instructor.

For one assignment: how many submissions were graded, flagged or need
attention; the distribution of the total score and of every exercise's score
(plots, inline SVG drawn with matplotlib); the most frequent failure messages
of each exercise; and the list of submissions that need a look, with why.
"""

import collections
import io
import re
from pathlib import Path

from .feedback import exercise_of
from .results import ATTENTION, FLAGGED, GRADED, StudentResult
from .pages import render, trusted


def _svg(fig) -> str:
    import matplotlib
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "class-report"}):  # the same page for the same grades: ids from content
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):].replace("<svg", "<svg class='plot'", 1)


def _histogram(values, max_score: float, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.4))
    steps = sorted({0.0, max_score, *values})
    counts = [sum(1 for v in values if v == s) for s in steps]
    ax.bar([f"{s:g}" for s in steps], counts, color="#4c72b0")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("points")
    ax.set_ylabel("submissions")
    ax.yaxis.get_major_locator().set_params(integer=True)
    return _svg(fig)


def failure_kind(message: str) -> str:
    """A message reduced to what is common to students who made the same mistake.

    The likely slip when the checker named one, else the first line with
    numbers and quoted values blanked (the input differs between students).
    """
    slips = [line for line in message.splitlines() if line.startswith("Likely slip:")]
    if slips:
        return slips[0]
    lines = message.splitlines()
    first = lines[0] if lines else ""
    if "wrong output" in first and len(lines) > 1:  # the kind of error is in the detail lines
        detail = [l.strip() for l in lines if l.strip().startswith(("wrong shape", "wrong dtype", "it returned"))
                  or "NaN" in l or "values are wrong" in l]
        first = detail[0] if detail else first
    return re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "#", first)


def report_html(results: list[StudentResult], assignment: str, top: int = 3) -> str:
    graded = [r for r in results if r.status != ATTENTION]
    counts = collections.Counter(r.status for r in results)
    scores = None
    if graded:
        max_total = max(r.max_score for r in graded)
        cells = list(graded[0].cells)
        plots = [_histogram([r.score for r in graded], max_total, "total automatic score")]
        exercises = []
        for cell in cells:
            plots.append(_histogram([r.cells[cell].score for r in graded if cell in r.cells],
                                    graded[0].cells[cell].max_score, exercise_of(cell)))
            failed = [r.cells[cell] for r in graded if cell in r.cells and r.cells[cell].score < r.cells[cell].max_score]
            n = sum(1 for r in graded if cell in r.cells)
            kinds = collections.Counter(failure_kind(c.message) for c in failed).most_common(top)
            exercises.append({"name": exercise_of(cell), "n": n, "passed": n - len(failed), "kinds": kinds})
        scores = {"n": len(graded), "mean": sum(r.score for r in graded) / len(graded), "max_total": max_total,
                  "plots": [trusted(p) for p in plots], "exercises": exercises}
    return render("report.html.j2", assignment=assignment, n=len(results),
                  counts={"graded": counts.get(GRADED, 0), "flagged": counts.get(FLAGGED, 0),
                          "attention": counts.get(ATTENTION, 0)},
                  attention=[r for r in results if r.status != GRADED], scores=scores)


def write_report(results: list[StudentResult], assignment: str, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(results, assignment))
    return path
