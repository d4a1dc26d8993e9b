#!/usr/bin/env python
"""Benchmark: autograding a class of synthetic submissions of notebook 04 with 2 workers (or 1 and 2).

    python benchmarks/grading.py                    # 100 submissions, 2 workers: results/grading_2_workers.{json,md}
    python benchmarks/grading.py --workers 1 2      # 1 worker, then 2 (the speed-up): results/grading.{json,md}
    python benchmarks/grading.py --n 6 --quick      # smoke run, writes results/grading_*quick.* (git-ignored)

The class (from the released notebook and the solutions, ``make_class``): 4 in
10 complete and right; 4 in 10 with one slip (one of eight: the embedding's
sines and cosines swapped or its frequencies spaced over ``dim``, ReLU for
SiLU, the loss indexed at t or summed, the step's missing square root, no
noise, sigma indexed at t), 1 in 10 with two slips in different exercises,
1 in 10 untouched (the released stubs) or stopped after one to three
exercises. The slips vary with the student, so every exercise is failed by
someone. Each run grades the same folder through
``autograder.grade.grade`` (the ``python -m autograder grade`` command), in a
fresh course directory, on at most 2 cores (the process is pinned to 2 CPUs
when the machine has more), with the compilation cache that grade warms with
the released notebook (its time is included). With 1 and 2 workers, the
scores of every test cell of every student must be equal in the two runs.

Each run records its wall time, the time per submission, the statuses, the
load average before and after, and the share of the machine's CPU time that
other processes used meanwhile (sampled from /proc: every process but this
one, its descendants and the sandboxed kernels, which run detached; class
``OthersCPU``): the machine is shared, and a busy neighbour slows the parallel
run more than the sequential one. It checks that every complete
and right submission gets full marks and every other one less. The commit
measured is recorded (with "+ changes" when autograder/ or course_utils/
differ from it).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import nbformat  # noqa: E402

from autograder import course  # noqa: E402
from autograder.demo import with_solutions  # noqa: E402
from autograder.grade import grade  # noqa: E402

# (exercise, what the solution says, the slip): applied to the solution's source of that exercise.
SLIPS = [
    ("sinusoidal_embedding", "[jnp.sin(angles), jnp.cos(angles)]", "[jnp.cos(angles), jnp.sin(angles)]"),
    ("sinusoidal_embedding", "jnp.arange(half, dtype=jnp.float32) / half)", "jnp.arange(half, dtype=jnp.float32) / dim)"),
    ("MLPDenoiser", "jax.nn.silu(layer(h))", "jax.nn.relu(layer(h))"),
    ("ddpm_loss", "alpha_bars[t - 1].reshape", "alpha_bars[t].reshape"),
    ("ddpm_loss", "jnp.mean((noise - model(x_t, t)) ** 2)", "jnp.sum((noise - model(x_t, t)) ** 2)"),
    ("ddpm_step", "/ jnp.sqrt(1 - alpha_bar_t) * eps", "/ (1 - alpha_bar_t) * eps"),
    ("ddpm_step", "mean + sigmas[t - 1] * z", "mean + 0 * z"),
    ("ddpm_step", "mean + sigmas[t - 1] * z", "mean + sigmas[t] * z"),
]


def _with_slips(nb, slips):
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for exercise, right, wrong in slips:
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == exercise)
        assert right in cell.source, f"{exercise}: {right!r} is not in the solution"
        cell.source = cell.source.replace(right, wrong)
    return nb


def make_class(assignment: str, n: int, folder: Path) -> dict:
    """Write ``n`` submissions into ``folder``; return {student: what it holds ("right", or the slips)}."""
    released = nbformat.read(course.NOTEBOOKS / assignment / f"{assignment}.ipynb", as_version=4)
    solution = nbformat.read(course.SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    correct = with_solutions(released, solution)
    what = {}
    for i in range(n):
        kind, student = i % 10, f"s{i:03d}"
        if kind < 4 or assignment != "04_denoising_2d":
            nb, what[student] = correct, "right"
        elif kind < 8:
            slip = SLIPS[(i // 10 + kind) % len(SLIPS)]
            nb, what[student] = _with_slips(correct, [slip]), f"slip: {slip[2]}"
        elif kind == 8:
            first = SLIPS[(i // 10) % len(SLIPS)]
            second = next(s for k in range(1, len(SLIPS)) if (s := SLIPS[(i // 10 + 3 * k) % len(SLIPS)])[0] != first[0])
            nb, what[student] = _with_slips(correct, [first, second]), f"slips: {first[2]}; {second[2]}"
        elif (i // 10) % 2 == 0:
            nb, what[student] = released, "untouched"
        else:
            keep = 1 + (i // 20) % 3
            nb, what[student] = with_solutions(released, solution, keep=keep), f"first {keep} answer(s) only"
        (folder / student).mkdir(parents=True)
        nbformat.write(nb, folder / student / f"{assignment}.ipynb")
    return what


def measured_commit() -> str:
    """The commit of the code measured, with "+ changes" when autograder/ or course_utils/ differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "autograder", "course_utils"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + changes" if dirty else "")


def _busy_ticks() -> int:
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]  # all but idle and iowait


def _processes() -> dict:
    """{(pid, start time): (parent pid, CPU ticks, command line)} of every process now."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (name) "
        table[(int(entry.name), int(fields[19]))] = (int(fields[1]), int(fields[11]) + int(fields[12]), cmdline)
    return table


class OthersCPU:
    """The CPU time of processes that are not this benchmark's, sampled from /proc twice a second.

    This process's own work is itself, its descendants, and the sandboxed kernels, which run detached (a session of
    their own) and are recognised by their command line naming the course directory or its runtime folder.
    resource.getrusage cannot count them. A process that lives less than half a second between two samples is
    missed, so the share is a lower bound."""

    def __init__(self, markers):
        self.markers, self.stop, self.ticks = tuple(markers), threading.Event(), 0
        self.last = {key: cpu for key, (_, cpu, _) in _processes().items()}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        me = os.getpid()
        while not self.stop.wait(0.5):
            table = _processes()
            parent = {pid: ppid for (pid, _), (ppid, _, _) in table.items()}

            def ours(pid, cmdline):
                if any(m in cmdline for m in self.markers):
                    return True
                for _ in range(64):
                    if pid == me:
                        return True
                    if pid not in parent or pid <= 1:
                        return False
                    pid = parent[pid]
                return False

            for key, (_, cpu, cmdline) in table.items():
                if not ours(key[0], cmdline):
                    self.ticks += cpu - self.last.get(key, 0)
                self.last[key] = cpu

    def seconds(self) -> float:
        self.stop.set()
        self.thread.join()
        return self.ticks / os.sysconf("SC_CLK_TCK")


def timed_grade(assignment, folder, workdir, workers, timeout):
    ncpu = len(os.sched_getaffinity(0))
    from autograder.course import runtime_dir

    others = OthersCPU([str(Path(workdir).resolve()), str(runtime_dir(workdir))])
    load_before, busy0, t0 = os.getloadavg(), _busy_ticks(), time.monotonic()
    warm = []

    def log(message):
        print(f"  [{workers} worker(s)] {message}", flush=True)
        if message.startswith("compilation cache warmed in"):
            warm.append(time.monotonic() - t0)

    results = grade(assignment, folder, workdir, course.Limits(timeout=timeout), workers=workers, log=log)
    wall = time.monotonic() - t0
    busy = (_busy_ticks() - busy0) / os.sysconf("SC_CLK_TCK")
    other = others.seconds()
    return results, {
        "workers": workers, "wall_s": round(wall, 1), "warm_up_s": round(warm[0], 1) if warm else 0.0, "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "busy_cpu_s": round(busy, 1), "others_cpu_share": round(other / (wall * os.cpu_count()), 3),
        "cpus_used": ncpu,
        "statuses": {s: sum(1 for r in results if r.status == s) for s in ("graded", "flagged", "needs attention")},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", default="04_denoising_2d")
    parser.add_argument("--n", type=int, default=100, help="submissions (default 100)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2],
                        help="one run per number of workers, in this order (default: 2; `1 2` for the speed-up)")
    parser.add_argument("--timeout", type=int, default=300, help="per-cell time limit (default 300)")
    parser.add_argument("--quick", action="store_true", help="write results/grading*_quick.* instead")
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    out_dir = REPO / "benchmarks" / "results"
    stem = "grading" if sorted(args.workers) == [1, 2] else "grading_" + "_".join(map(str, args.workers)) + "_workers"
    stem += "_quick" if args.quick else ""
    commit = measured_commit()
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        what = make_class(args.assignment, args.n, tmp / "class")
        runs, scores = [], {}
        for workers in args.workers:
            print(f"grading {args.n} submissions of {args.assignment} with {workers} worker(s) at {commit}", flush=True)
            results, run = timed_grade(args.assignment, tmp / "class", tmp / f"work{workers}", workers, args.timeout)
            scores[workers] = {r.student: r.cell_scores for r in results}
            run["wrong_scores"] = [r.student for r in results
                                   if r.graded and (what[r.student] == "right") != (r.score == r.max_score)
                                   or not r.graded]
            runs.append(run)
            print(f"  {run}", flush=True)
            write_results(args, commit, runs, scores, out_dir / stem)  # after each run: a run cut short keeps the first
    same = len(set(json.dumps(s, sort_keys=True) for s in scores.values())) <= 1
    return 0 if same and not any(r["wrong_scores"] for r in runs) else 1


def write_results(args, commit, runs, scores, stem: Path) -> None:
    by = {r["workers"]: r for r in runs}
    speedup = by[1]["wall_s"] / by[2]["wall_s"] if 1 in by and 2 in by else None
    after = {w: r["wall_s"] - r["warm_up_s"] for w, r in by.items()}
    same = len(set(json.dumps(s, sort_keys=True) for s in scores.values())) == 1 if len(scores) > 1 else None
    data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
            "assignment": args.assignment, "n": args.n,
            "cpu": next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                         if l.startswith("model name")), platform.processor()),
            "cores": os.cpu_count(), "runs": runs, "speedup": speedup and round(speedup, 2), "same_scores": same}
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1))
    options = (f"{' --n ' + str(args.n) if args.n != 100 else ''}"
               f"{' --workers ' + ' '.join(map(str, args.workers)) if args.workers != [2] else ''}"
               f"{' --timeout ' + str(args.timeout) if args.timeout != 300 else ''}{' --quick' if args.quick else ''}")
    lines = [
        f"# Grading {args.n} submissions of {args.assignment} with {' and '.join(map(str, args.workers))} worker(s)",
        "",
        f"Recorded {data['date']} on {data['cpu']} ({data['cores']} cores) by `python benchmarks/grading.py{options}`, "
        f"at commit {commit}. Per-cell time limit {args.timeout} s.",
        "",
        "| workers | wall time | per submission | of which the warm-up (solution run once) | grading after the warm-up | load average before → after (1, 5, 15 min) | other processes' share of the CPU | statuses |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rest = r["wall_s"] - r["warm_up_s"]
        lines.append(f"| {r['workers']} | {r['wall_s'] / 60:.1f} min | {r['wall_s'] / args.n:.1f} s | "
                     f"{r['warm_up_s']:.0f} s | {rest / 60:.1f} min ({rest / args.n:.1f} s per submission) | "
                     f"{r['load_before']} → {r['load_after']} | {r['others_cpu_share']:.0%} | {r['statuses']} |")
    lines.append("")
    if 2 in by:
        lines.append(f"- {'PASS' if by[2]['wall_s'] < 600 else 'FAIL'}: grading {args.n} submissions with 2 workers "
                     f"in at most 10 minutes ({by[2]['wall_s'] / 60:.1f} min)")
    for r in runs:
        wrong = r["wrong_scores"]
        lines.append(f"- {'FAIL' if wrong else 'PASS'}: with {r['workers']} worker(s), full marks for every complete "
                     f"and right submission and fewer for every other one"
                     + (f" (not so for {', '.join(wrong[:10])}{' ...' if len(wrong) > 10 else ''})" if wrong else ""))
    if speedup is not None:
        lines += [f"- {'PASS' if speedup >= 1.7 else 'FAIL'}: speed-up of at least 1.7x on 2 cores ({speedup:.2f}x; "
                  f"{after[1] / after[2]:.2f}x after the warm-up, which both runs pay once)"]
    if same is not None:
        lines.append(f"- {'PASS' if same else 'FAIL'}: the same score in every test cell of every submission in every run")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
