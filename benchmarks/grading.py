#!/usr/bin/env python
"""Benchmark: autograding a class of synthetic submissions, sequentially and in parallel.

    python benchmarks/grading.py                  # 100 submissions of notebook 04, 1 then 2 workers
    python benchmarks/grading.py --n 6 --quick    # smoke run, writes results/grading_quick.{json,md}

The class (made with ``autograder.demo``): 6 in 10 submissions complete and
right, 2 in 10 stopped after one to three exercises, 1 in 10 with a wrong
value in the last exercise, 1 in 10 untouched (the released stubs). Both runs
grade the same folder through ``autograder.grade.grade`` (the
``python -m autograder grade`` command), each in a fresh course directory, on
at most 2 cores (the process is pinned to 2 CPUs when the machine has more):
``--workers 1`` (sequential: one ``nbgrader autograde`` at a time) and
``--workers 2``. Both use the compilation cache that grade warms with the
solution notebook (its time is included in both). The scores of every test
cell of every student must be equal in the two runs.

Each run records its wall time, the load average before and after, and the
share of the machine's CPU time that other processes used meanwhile (from
/proc/stat, minus the CPU time of this process and its children): the machine
is shared, and a busy neighbour slows the parallel run more than the
sequential one. Writes benchmarks/results/grading.{json,md}.
"""

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import nbformat  # noqa: E402

from autograder import course  # noqa: E402
from autograder.demo import replace_answer, with_solutions  # noqa: E402
from autograder.grade import grade  # noqa: E402


def make_class(assignment: str, n: int, folder: Path) -> None:
    released = nbformat.read(course.NOTEBOOKS / assignment / f"{assignment}.ipynb", as_version=4)
    solution = nbformat.read(course.SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    correct = with_solutions(released, solution)
    for i in range(n):
        kind = i % 10
        if kind < 6:
            nb = correct
        elif kind < 8:
            nb = with_solutions(released, solution, keep=1 + i % 3)
        elif kind == 8:
            nb = replace_answer(correct, -1, "return args[0] * 0 + 1")
        else:
            nb = released
        (folder / f"s{i:03d}").mkdir(parents=True)
        nbformat.write(nb, folder / f"s{i:03d}" / f"{assignment}.ipynb")


def _busy_ticks() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def _own_cpu() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed_grade(assignment, folder, workdir, workers, timeout):
    ncpu = len(os.sched_getaffinity(0))
    load_before, busy0, own0, t0 = os.getloadavg(), _busy_ticks(), _own_cpu(), time.monotonic()
    warm = []

    def log(message):
        print(f"  [{workers} worker(s)] {message}", flush=True)
        if message.startswith("compilation cache warmed in"):
            warm.append(time.monotonic() - t0)

    results = grade(assignment, folder, workdir, course.Limits(timeout=timeout), workers=workers, log=log)
    wall = time.monotonic() - t0
    busy = (_busy_ticks() - busy0) / os.sysconf("SC_CLK_TCK")
    own = _own_cpu() - own0
    return results, {
        "workers": workers, "wall_s": round(wall, 1), "warm_up_s": round(warm[0], 1) if warm else 0.0, "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "own_cpu_s": round(own, 1), "others_cpu_share": round(max(0.0, busy - own) / (wall * os.cpu_count()), 3),
        "cpus_used": ncpu,
        "statuses": {s: sum(1 for r in results if r.status == s) for s in ("graded", "flagged", "needs attention")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="04_denoising_2d")
    parser.add_argument("--n", type=int, default=100, help="submissions (default 100)")
    parser.add_argument("--timeout", type=int, default=300, help="per-cell time limit (default 300)")
    parser.add_argument("--quick", action="store_true", help="write results/grading_quick.* instead")
    parser.add_argument("--parallel-first", action="store_true", help="run the parallel grading first")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    out_dir = REPO / "benchmarks" / "results"
    stem = "grading_quick" if args.quick else "grading"
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        make_class(args.assignment, args.n, tmp / "class")
        runs, scores = [], {}
        for workers in ([2, 1] if args.parallel_first else [1, 2]):
            print(f"grading {args.n} submissions of {args.assignment} with {workers} worker(s)", flush=True)
            results, run = timed_grade(args.assignment, tmp / "class", tmp / f"work{workers}", workers, args.timeout)
            scores[workers] = {r.student: r.cell_scores for r in results}
            runs.append(run)
            print(f"  {run}", flush=True)
            write_results(args, runs, scores, out_dir / stem)  # after each run: a run cut short keeps the first
    return 0 if len(scores) < 2 or scores[1] == scores[2] else 1


def write_results(args, runs, scores, stem: Path) -> None:
    by = {r["workers"]: r for r in runs}
    speedup = by[1]["wall_s"] / by[2]["wall_s"] if len(by) == 2 else None
    after = {w: r["wall_s"] - r["warm_up_s"] for w, r in by.items()}
    same = scores[1] == scores[2] if len(scores) == 2 else None
    data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "assignment": args.assignment, "n": args.n,
            "cpu": next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                         if l.startswith("model name")), platform.processor()),
            "cores": os.cpu_count(), "runs": runs, "speedup": speedup and round(speedup, 2), "same_scores": same}
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
    lines = [
        f"# Grading {args.n} submissions of {args.assignment}: sequential and parallel",
        "",
        f"Recorded {data['date']} on {data['cpu']} ({data['cores']} cores) by `python benchmarks/grading.py"
        f"{' --n ' + str(args.n) if args.n != 100 else ''}{' --parallel-first' if args.parallel_first else ''}`. "
        f"Per-cell time limit {args.timeout} s.",
        "",
        "| workers | wall time | of which the warm-up (solution run once) | grading after the warm-up | load average before → after (1, 5, 15 min) | other processes' share of the CPU | statuses |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rest = r["wall_s"] - r["warm_up_s"]
        lines.append(f"| {r['workers']} | {r['wall_s'] / 60:.1f} min | {r['warm_up_s']:.0f} s | {rest / 60:.1f} min "
                     f"({rest / args.n:.1f} s per submission) | "
                     f"{r['load_before']} → {r['load_after']} | {r['others_cpu_share']:.0%} | {r['statuses']} |")
    lines.append("")
    if 2 in by:
        lines.append(f"- {'PASS' if by[2]['wall_s'] < 600 else 'FAIL'}: parallel grading of {args.n} submissions "
                     f"under 10 minutes ({by[2]['wall_s'] / 60:.1f} min)")
    if speedup is not None:
        lines += [f"- {'PASS' if speedup >= 1.7 else 'FAIL'}: speed-up of at least 1.7x on 2 cores ({speedup:.2f}x; "
                  f"{after[1] / after[2]:.2f}x after the warm-up, which both runs pay once)",
                  f"- {'PASS' if same else 'FAIL'}: the same score in every test cell of every submission, "
                  "sequentially and in parallel"]
    else:
        lines.append("- the other run did not finish: no speed-up measured")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
