"""The class report: one self-contained HTML page for the instructor.

For one assignment: how many submissions were graded, flagged or need
attention; the distribution of the total score and of every exercise's score
(plots, inline SVG drawn with matplotlib); the most frequent failure messages
of each exercise; and the list of submissions that need a look, with why.
"""

import collections
import html
import io
import re
from pathlib import Path

from .feedback import STYLE, exercise_of
from .grade import ATTENTION, FLAGGED, StudentResult


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
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
    e = html.escape
    graded = [r for r in results if r.status != ATTENTION]
    counts = collections.Counter(r.status for r in results)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(assignment)}: class report</title>",
             f"<style>{STYLE} .plots{{display:flex;flex-wrap:wrap;gap:1em}} svg.plot{{max-width:100%;height:auto}}</style>",
             f"</head><body><h1>{e(assignment)}: class report</h1>",
             f"<p id='summary'>{len(results)} submissions: {counts.get('graded', 0)} graded, "
             f"{counts.get(FLAGGED, 0)} graded and flagged, {counts.get(ATTENTION, 0)} need attention.</p>"]
    attention = [r for r in results if r.status != "graded"]
    parts.append("<h2>Submissions that need a look</h2>")
    if attention:
        parts.append("<table id='attention'><tr><th>student</th><th>status</th><th>score</th><th>why</th></tr>")
        for r in attention:
            score = f"{r.score:g} / {r.max_score:g}" if r.graded else "not graded"
            parts.append(f"<tr><td>{e(r.student)}</td><td>{e(r.status)}</td><td>{score}</td>"
                         f"<td>{'<br>'.join(e(x) for x in r.reasons)}</td></tr>")
        parts.append("</table>")
    else:
        parts.append("<p>None.</p>")
    if graded:
        max_total = max(r.max_score for r in graded)
        mean = sum(r.score for r in graded) / len(graded)
        parts.append(f"<h2>Scores</h2><p>Mean automatic score of the {len(graded)} graded submissions: "
                     f"{mean:.2f} / {max_total:g}.</p><div class='plots'>")
        parts.append(_histogram([r.score for r in graded], max_total, "total automatic score"))
        cells = list(graded[0].cells)
        for cell in cells:
            scores = [r.cells[cell].score for r in graded if cell in r.cells]
            parts.append(_histogram(scores, graded[0].cells[cell].max_score, exercise_of(cell)))
        parts.append("</div><h2>Most frequent failures</h2>")
        for cell in cells:
            failed = [r.cells[cell] for r in graded if cell in r.cells and r.cells[cell].score < r.cells[cell].max_score]
            n = sum(1 for r in graded if cell in r.cells)
            parts.append(f"<h3>{e(exercise_of(cell))}: {n - len(failed)} of {n} passed</h3>")
            if not failed:
                continue
            kinds = collections.Counter(failure_kind(c.message) for c in failed)
            parts.append("<table class='failures'><tr><th>submissions</th><th>message</th></tr>")
            for kind, count in kinds.most_common(top):
                parts.append(f"<tr><td>{count}</td><td><pre>{e(kind)}</pre></td></tr>")
            parts.append("</table>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(results: list[StudentResult], assignment: str, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(results, assignment))
    return path
