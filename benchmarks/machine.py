"""What the benchmarks share: the machine's load, its CPU, timed calls, and worker processes.

Kept free of JAX and PyTorch imports, so that a PyTorch worker never imports JAX
(running JAX first in a process slows PyTorch on this machine).
"""

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUIET_THRESHOLD = 0.10
"""Rounds in which other processes took this share of the CPUs or more count as disturbed."""


class CpuLoad:
    """Share of the machine's CPU time that other processes and the hypervisor took during a block.

    From /proc/stat (all CPUs) and this process's own CPU time:
    others = (busy jiffies - ours) / all jiffies, steal = stolen / all jiffies.
    """

    HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @staticmethod
    def _read():
        try:
            with open("/proc/stat") as f:
                x = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        x += [0] * (8 - len(x))
        user, nice, system, idle, iowait, irq, softirq, steal = x
        return sum(x), sum(x) - idle - iowait - steal, steal, time.process_time()

    def __enter__(self):
        self.start = self._read()
        return self

    def __exit__(self, *exc):
        end = self._read()
        if self.start is None or end is None:
            self.others = self.steal = None
            return
        total = max(end[0] - self.start[0], 1)
        ours = (end[3] - self.start[3]) * self.HZ
        self.others = max(0.0, (end[1] - self.start[1] - ours) / total)
        self.steal = (end[2] - self.start[2]) / total


def wait_until_quiet(max_seconds, threshold=0.10, window=2.0):
    """Wait (at most max_seconds) until other processes use under `threshold` of the CPUs."""
    deadline = time.monotonic() + max_seconds
    while True:
        with CpuLoad() as load:
            time.sleep(window)
        if load.others is None or load.others < threshold:
            return True
        if time.monotonic() > deadline:
            print(f"  still busy (other processes {100 * load.others:.0f} %), going on", flush=True)
            return False
        print(f"  waiting for a quiet machine: other processes use {100 * load.others:.0f} % of the CPUs", flush=True)


def cpu_info():
    model, flags, count = "unknown", set(), 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and model == "unknown":
                    model = value
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "processor":
                    count += 1
    except OSError:
        pass
    return dict(model=model, logical_cpus=count or os.cpu_count(),
                avx2="avx2" in flags, avx512f="avx512f" in flags)


def measure(fn, block):
    """One timed call: wall and process-CPU seconds, minor page faults, and the machine's load meanwhile."""
    gc.collect()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    with CpuLoad() as load:
        c0, w0 = time.process_time(), time.perf_counter()
        block(fn())
        w1, c1 = time.perf_counter(), time.process_time()
    f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    return dict(wall=w1 - w0, cpu=c1 - c0, faults=f1 - f0, others=load.others, steal=load.steal)


def run_rounds(run_round, rounds, quiet_seconds, others):
    """Run ``run_round(i)`` for ``rounds`` rounds; return ``(kept, discarded)``, both lists of rounds.

    ``others(round)`` is the share of the CPUs that other processes took during
    the round (None where unknown); a round is quiet below QUIET_THRESHOLD.
    With ``quiet_seconds`` > 0, wait for a quiet machine before each round and
    keep going until ``rounds`` rounds were quiet or the time budget is spent
    (and at least ``rounds`` rounds ran); then keep the quiet rounds, and the
    least busy others where there are too few, in the order they ran.
    """
    def is_quiet(rd):
        return others(rd) is not None and others(rd) < QUIET_THRESHOLD

    deadline = time.monotonic() + quiet_seconds
    done = []
    while True:
        n_quiet = sum(map(is_quiet, done))
        if quiet_seconds <= 0:
            if len(done) >= rounds:
                return done, []
        else:
            left = deadline - time.monotonic()
            if n_quiet >= rounds or (left <= 0 and len(done) >= rounds):
                break
            if left > 0:
                wait_until_quiet(left)
        done.append(run_round(len(done)))
    kept = sorted(sorted(range(len(done)), key=lambda j: (not is_quiet(done[j]), others(done[j]) or 0))[:rounds])
    return [done[j] for j in kept], [done[j] for j in range(len(done)) if j not in kept]


def save_results(out_dir, stem, res, write_markdown, checks=None):
    """Write ``res`` to OUT_DIR/STEM.json and, through ``write_markdown(path)``, to STEM.md; print the latter.

    Returns the exit status: 1 when one of ``checks`` (name -> {"ok": bool, ...}) failed, else 0.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(res, indent=1) + "\n")
    write_markdown(md_path)
    print(md_path.read_text())
    print(f"wrote {json_path} and {md_path}")
    failed = [name for name, check in (checks or {}).items() if not check["ok"]]
    if failed:
        print("correctness checks FAILED: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def benchmark_parser(doc, results_dir, quick_help, workers=None):
    """The options every benchmark takes: --quick, --rounds, --out-dir, --quiet, and the hidden worker ones."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 7, or 2 with --quick)")
    p.add_argument("--out-dir", type=Path, default=results_dir)
    p.add_argument("--quiet", type=float, default=0, metavar="SECONDS",
                   help="spend up to SECONDS waiting for a quiet machine and redoing rounds during which other "
                        "processes used >= 10 %% of the CPUs (default 0: keep every round)")
    p.add_argument("--worker", choices=workers, help=argparse.SUPPRESS)
    p.add_argument("--worker-config", help=argparse.SUPPRESS)
    return p


def serve(setup, one_shot=False):
    """The worker side: time calls asked for on stdin, one JSON object per line on stdout, until "quit".

    ``setup()`` returns (methods, info, block): ``methods`` maps a name to
    (function, units), ``block`` waits for a function's result. With
    ``one_shot``, ``setup()`` returns one JSON-serialisable result, written once.
    """
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                       # anything else printed to stdout goes to stderr
    sys.stdout = sys.stderr
    if one_shot:
        proto.write(json.dumps(setup()) + "\n")
        return 0
    t0 = time.perf_counter()
    methods, info, block = setup()
    info["setup_seconds"] = time.perf_counter() - t0
    info["methods"] = {name: units for name, (_, units) in methods.items()}
    proto.write(json.dumps(dict(ready=True, info=info)) + "\n")
    for line in sys.stdin:
        msg = json.loads(line)
        if msg["cmd"] == "quit":
            break
        fn, units = methods[msg["name"]]
        proto.write(json.dumps(dict(measure(fn, block), units=units)) + "\n")
    return 0


class Worker:
    """A benchmark script run as a worker process (``script --worker KIND``), timed one call at a time."""

    def __init__(self, script, kind, label, cfg, env_extra=None):
        env = dict(os.environ, **(env_extra or {}))
        env.setdefault("TQDM_DISABLE", "1")
        self.label = label
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(script).resolve()), "--worker", kind, "--worker-config", json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1)
        self.info = None

    def wait_ready(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} died during setup (exit status {self.proc.wait()})")
        self.info = json.loads(line)["info"]
        return self.info

    def time(self, name):
        self.proc.stdin.write(json.dumps(dict(cmd="time", name=name)) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.label} died while timing {name} (exit status {self.proc.wait()})")
        return json.loads(line)

    def close(self):
        try:
            self.proc.stdin.write(json.dumps(dict(cmd="quit")) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def median_ratio(wall, num, den):
    """Median over rounds of wall[num][r] / wall[den][r] (both measured in the same round)."""
    per_round = [a / b for a, b in zip(wall[num], wall[den])]
    return dict(median=statistics.median(per_round), min=min(per_round), max=max(per_round),
                per_round=per_round)


def fmt_ms(x):
    return f"{x:,.0f}" if x >= 100 else (f"{x:,.1f}" if x >= 10 else f"{x:.2f}")
