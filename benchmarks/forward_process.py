#!/usr/bin/env python
"""Benchmark: the forward diffusion process, from a numpy loop to lax.scan.

    python benchmarks/forward_process.py            # full run, writes the recorded results
    python benchmarks/forward_process.py --quick    # smoke run (N = 10^5, 2 rounds)
    python benchmarks/forward_process.py --quiet 540  # redo rounds disturbed by other processes

Diffuses N = 10^6 scalar samples x0 ~ N(3, 0.5^2) through T = 50 steps of
x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t with linear betas
0.02 .. 0.3, in every way the course discusses:

  numpy loop, eager JAX loop, a Python loop around a jitted step, lax.scan
  (course_utils.forward.diffuse, which returns all T+1 states, and a scan that
  keeps only x_T), and the closed form q_sample that jumps to x_T at once,

each once with all T x N normals drawn beforehand (not timed, the same numbers
for every method) and once with the noise drawn inside the loop. It also times
bulk draws of T x N normals with numpy and with JAX's key types, to say which
generator is fastest on this CPU.

The machine's speed drifts by +-30-50 % from minute to minute (mostly other
processes on its 2 vCPUs; each round records their share), so every round
runs every method once (in a rotated order), the tables show medians over the
rounds, and ratios are medians of the per-round ratios (both sides of a ratio
measured within the same minute).

Writes benchmarks/results/forward_process.{json,md} (--quick writes
forward_process_quick.{json,md}, so that a smoke run never overwrites the
recorded results). Exits with status 1 if a correctness check fails.
"""

import argparse
import datetime
import gc
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

from machine import QUIET_THRESHOLD, CpuLoad, cpu_info, fmt_ms, run_rounds, save_results

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from course_utils import forward, schedules

T = 50
BETA_START, BETA_END = 0.02, 0.3
X0_MEAN, X0_STD = 3.0, 0.5
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------- JAX kernels
# (defined at module level so that they are traced once; shapes are static)

forward_step = forward.forward_step.raw  # the course's step, without the argument checks


@jax.jit
def jit_step(x, betas, noises, t):
    """One step, the row of noise picked inside the jit (no eager copy of noises[t])."""
    return forward_step(x, betas[t], noises[t])


@jax.jit
def jit_step_keyed(x, betas, t, key):
    """One step that splits the key and draws its own noise; returns the new key too."""
    key, sub = jax.random.split(key)
    return forward_step(x, betas[t], jax.random.normal(sub, x.shape, x.dtype)), key


@jax.jit
def scan_final(x0, betas, noises):
    """lax.scan over the steps, keeping only x_T (no stacked output)."""
    def body(x, beta_and_noise):
        beta, noise = beta_and_noise
        return forward_step(x, beta, noise), None
    x_T, _ = lax.scan(body, x0, (betas, noises))
    return x_T


@jax.jit
def scan_stacked(x0, betas, noises):
    """lax.scan returning the stacked x_1..x_T, without diffuse's final concatenate with x_0."""
    def body(x, beta_and_noise):
        beta, noise = beta_and_noise
        x = forward_step(x, beta, noise)
        return x, x
    _, xs = lax.scan(body, x0, (betas, noises))
    return xs


@jax.jit
def scan_all_keyed(x0, betas, key):
    """Like course_utils.forward.diffuse (all T+1 states), noise drawn inside the scan."""
    def body(carry, beta):
        x, key = carry
        key, sub = jax.random.split(key)
        x = forward_step(x, beta, jax.random.normal(sub, x.shape, x.dtype))
        return (x, key), x
    _, xs = lax.scan(body, (x0, key), betas)
    return jnp.concatenate([x0[None], xs], axis=0)


@jax.jit
def scan_final_keyed(x0, betas, key):
    """lax.scan keeping only x_T, noise drawn inside the scan with a split key per step."""
    def body(carry, beta):
        x, key = carry
        key, sub = jax.random.split(key)
        return (forward_step(x, beta, jax.random.normal(sub, x.shape, x.dtype)), key), None
    (x_T, _), _ = lax.scan(body, (x0, key), betas)
    return x_T


def make_bulk_normal(shape):
    return jax.jit(lambda key: jax.random.normal(key, shape, jnp.float32))


# --------------------------------------------------------------------------- the methods

def build_methods(N, seed=0):
    """Return (methods, data). methods: name -> dict(fn, group, label, final)."""
    rng = np.random.default_rng(seed)
    x0_np = (X0_MEAN + X0_STD * rng.standard_normal(N, dtype=np.float32)).astype(np.float32)
    noise_np = rng.standard_normal((T, N), dtype=np.float32)   # all T x N normals, drawn once
    eps_np = rng.standard_normal(N, dtype=np.float32)           # the closed form's single draw

    betas = schedules.linear_betas(T, BETA_START, BETA_END)     # float32, shape (T,)
    alpha_bar_T = schedules.alpha_bars(betas)[-1]
    betas_np = np.asarray(betas)
    alpha_bar_T_np = np.float32(alpha_bar_T)

    x0 = jnp.asarray(x0_np)
    noise = jnp.array(noise_np)    # the same numbers as noise_np, as a JAX array
    eps = jnp.asarray(eps_np)
    jax.block_until_ready((x0, noise, eps))

    loop_rng = np.random.default_rng(seed + 1)
    key = jax.random.key(seed + 1)

    # --- 1. numpy Python loop
    def numpy_loop_pre():
        x = x0_np
        for t in range(T):
            b = betas_np[t]
            x = np.sqrt(1 - b) * x + np.sqrt(b) * noise_np[t]
        return x

    def numpy_loop_in():
        x = x0_np
        for t in range(T):
            b = betas_np[t]
            x = np.sqrt(1 - b) * x + np.sqrt(b) * loop_rng.standard_normal(N, dtype=np.float32)
        return x

    a_np, s_np = np.sqrt(1 - betas_np), np.sqrt(betas_np)

    def numpy_inplace_pre():
        x, tmp = x0_np.copy(), np.empty_like(x0_np)
        for t in range(T):
            np.multiply(noise_np[t], s_np[t], out=tmp)
            x *= a_np[t]
            x += tmp
        return x

    def numpy_inplace_in():
        x, tmp = x0_np.copy(), np.empty_like(x0_np)
        for t in range(T):
            loop_rng.standard_normal(dtype=np.float32, out=tmp)
            tmp *= s_np[t]
            x *= a_np[t]
            x += tmp
        return x

    # --- 2. eager JAX Python loop (every jnp op dispatched on its own; noise[t] is a copy)
    def eager_pre():
        x = x0
        for t in range(T):
            b = betas[t]
            x = jnp.sqrt(1 - b) * x + jnp.sqrt(b) * noise[t]
        return x

    def eager_in():
        x, k = x0, key
        for t in range(T):
            k, sub = jax.random.split(k)
            b = betas[t]
            x = jnp.sqrt(1 - b) * x + jnp.sqrt(b) * jax.random.normal(sub, (N,), jnp.float32)
        return x

    # --- 3. Python loop calling a jitted single step
    def jit_loop_pre():
        x = x0
        for t in range(T):
            x = jit_step(x, betas, noise, t)
        return x

    def jit_loop_in():
        x, k = x0, key
        for t in range(T):
            x, k = jit_step_keyed(x, betas, t, k)
        return x

    # --- 4. lax.scan: all T+1 states (the course's diffuse) and final state only
    def scan_all_pre():
        return forward.diffuse(x0, betas, noise)

    def scan_stacked_pre():
        return scan_stacked(x0, betas, noise)

    def scan_all_in():
        return scan_all_keyed(x0, betas, key)

    def scan_final_pre():
        return scan_final(x0, betas, noise)

    def scan_final_in():
        return scan_final_keyed(x0, betas, key)

    def scan_final_in_nonpart():
        with jax.threefry_partitionable(False):
            return scan_final_keyed(x0, betas, key)

    # --- 5. closed form, straight to x_T
    def closed_pre():
        return forward.q_sample(x0, alpha_bar_T, eps)

    def closed_in():
        return forward.q_sample(x0, alpha_bar_T, jax.random.normal(key, (N,), jnp.float32))

    def numpy_closed_pre():
        return np.sqrt(alpha_bar_T_np) * x0_np + np.sqrt(1 - alpha_bar_T_np) * eps_np

    def numpy_closed_in():
        e = loop_rng.standard_normal(N, dtype=np.float32)
        return np.sqrt(alpha_bar_T_np) * x0_np + np.sqrt(1 - alpha_bar_T_np) * e

    # --- generators: T x N normals in bulk
    bulk = make_bulk_normal((T, N))
    gen_rng = np.random.default_rng(seed + 2)
    keys = {impl: jax.random.key(seed + 3, impl=impl) for impl in ("threefry2x32", "rbg", "unsafe_rbg")}

    def gen_numpy():
        return gen_rng.standard_normal((T, N), dtype=np.float32)

    def gen_threefry():
        return bulk(keys["threefry2x32"])

    def gen_threefry_nonpart():
        with jax.threefry_partitionable(False):
            return bulk(keys["threefry2x32"])

    def gen_rbg():
        return bulk(keys["rbg"])

    def gen_unsafe_rbg():
        return bulk(keys["unsafe_rbg"])

    last = lambda out: out[-1]   # diffuse returns (T+1, N): x_T is the last row
    ident = lambda out: out
    M = {}

    def add(name, fn, group, label, final=ident):
        M[name] = dict(fn=fn, group=group, label=label, final=final)

    add("numpy_loop/pre", numpy_loop_pre, "pre", "1. numpy loop")
    add("numpy_loop/in", numpy_loop_in, "in", "1. numpy loop")
    add("numpy_loop_inplace/pre", numpy_inplace_pre, "pre", "1b. numpy loop, in place (out=)")
    add("numpy_loop_inplace/in", numpy_inplace_in, "in", "1b. numpy loop, in place (out=)")
    add("jax_eager_loop/pre", eager_pre, "pre", "2. eager JAX loop")
    add("jax_eager_loop/in", eager_in, "in", "2. eager JAX loop")
    add("jax_jit_step_loop/pre", jit_loop_pre, "pre", "3. Python loop, jitted step")
    add("jax_jit_step_loop/in", jit_loop_in, "in", "3. Python loop, jitted step")
    add("jax_scan_all_states/pre", scan_all_pre, "pre", "4a. lax.scan, all T+1 states (forward.diffuse)", last)
    add("jax_scan_all_states/in", scan_all_in, "in", "4a. lax.scan, all T+1 states (forward.diffuse)", last)
    add("jax_scan_stacked_no_concat/pre", scan_stacked_pre, "pre_extra",
        "4a'. lax.scan, stacked x_1..x_T, no concatenate", last)
    add("jax_scan_final_only/pre", scan_final_pre, "pre", "4b. lax.scan, final state only")
    add("jax_scan_final_only/in", scan_final_in, "in", "4b. lax.scan, final state only")
    add("jax_scan_final_only/in_nonpartitionable", scan_final_in_nonpart, "in_extra",
        "4b. lax.scan, final state only, threefry_partitionable=False")
    add("jax_closed_form/pre", closed_pre, "pre", "5. closed form q_sample (JAX)")
    add("jax_closed_form/in", closed_in, "in", "5. closed form q_sample (JAX)")
    add("numpy_closed_form/pre", numpy_closed_pre, "pre", "5b. closed form (numpy)")
    add("numpy_closed_form/in", numpy_closed_in, "in", "5b. closed form (numpy)")
    add("gen/numpy_default_rng", gen_numpy, "gen", "numpy default_rng().standard_normal(float32)")
    add("gen/jax_threefry", gen_threefry, "gen", "jax.random.normal, key(0) (threefry2x32, default)")
    add("gen/jax_threefry_nonpartitionable", gen_threefry_nonpart, "gen",
        "jax.random.normal, threefry2x32 with jax_threefry_partitionable=False")
    add("gen/jax_rbg", gen_rbg, "gen", 'jax.random.normal, key(0, impl="rbg")')
    add("gen/jax_unsafe_rbg", gen_unsafe_rbg, "gen", 'jax.random.normal, key(0, impl="unsafe_rbg")')

    data = dict(x0_np=x0_np, noise_np=noise_np, alpha_bar_T=float(alpha_bar_T), betas_np=betas_np)
    return M, data


# --------------------------------------------------------------------------- timing

def _block(out):
    if isinstance(out, jax.Array):
        out.block_until_ready()
    return out


def time_once(fn):
    """Wall and process-CPU seconds and minor page faults of one call (waits for JAX's result)."""
    gc.collect()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    c0, w0 = time.process_time(), time.perf_counter()
    out = _block(fn())
    w1, c1 = time.perf_counter(), time.process_time()
    f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del out
    return w1 - w0, c1 - c0, f1 - f0


def median_ratio(wall, num, den):
    """Median over rounds of wall[num][r] / wall[den][r] (both measured in the same round)."""
    per_round = [a / b for a, b in zip(wall[num], wall[den])]
    return dict(median=statistics.median(per_round), min=min(per_round), max=max(per_round),
                per_round=per_round)


# --------------------------------------------------------------------------- checks

def run_checks(finals, shapes, data, N):
    """Same-noise methods must agree with the numpy loop; every x_T must have the right moments."""
    checks = {}
    ref = finals["numpy_loop/pre"]
    for name, x in finals.items():
        if name.endswith("/pre") and "closed_form" not in name:
            err = float(np.max(np.abs(x.astype(np.float64) - ref)))
            checks[f"same_noise_agrees/{name}"] = dict(max_abs_diff=err, tol=1e-4, ok=err < 1e-4)
    ab = data["alpha_bar_T"]
    mean = np.sqrt(ab) * X0_MEAN
    var = ab * X0_STD**2 + (1 - ab)
    for name, x in finals.items():
        if name.startswith("gen/"):
            continue
        m, s = float(np.mean(x, dtype=np.float64)), float(np.std(x, dtype=np.float64))
        tol_m, tol_s = 6 * np.sqrt(var / N), 6 * np.sqrt(var / (2 * N))
        checks[f"moments/{name}"] = dict(
            mean=m, expected_mean=float(mean), std=s, expected_std=float(np.sqrt(var)),
            ok=bool(abs(m - mean) < tol_m and abs(s - np.sqrt(var)) < tol_s))
    s = shapes["jax_scan_all_states/pre"]
    checks["diffuse_returns_all_states"] = dict(shape=list(s), ok=tuple(s) == (T + 1, N))
    return checks


# --------------------------------------------------------------------------- report

def write_markdown(path, res, cmd):
    t = res["timings_ms"]
    r = res["ratios"]
    meta = res["meta"]
    L = []
    L.append("# Forward process benchmark\n")
    L.append(f"`{cmd}` on {meta['date']}: {meta['cpu']['model']}, {meta['cpu']['logical_cpus']} logical CPUs, "
             f"jax {meta['jax']}, numpy {meta['numpy']}, backend {meta['jax_backend']}. "
             f"N = {meta['N']:,} samples, T = {meta['T']} steps, linear betas {BETA_START}..{BETA_END}, "
             f"{meta['rounds']} interleaved rounds; times are medians over rounds (ms, wall clock), "
             f"ratios are medians of per-round ratios. This machine's speed is known to drift by +-30-50 %, mostly "
             f"because other processes share its 2 vCPUs: treat differences under about 25 % as noise unless "
             f"the rounds were quiet."
             + (f" Share of the machine's CPU time taken by other processes during each round: "
                f"{', '.join(f'{100 * x:.0f} %' for x in ot)} "
                f"(hypervisor steal {100 * max(meta['steal_fraction_per_round']):.0f} % at most"
                + (f"; {meta['rounds_discarded_as_busy']} busier rounds were discarded and redone"
                   if meta["rounds_discarded_as_busy"] else "") + "); "
                "anything well above 0 % slows the multi-threaded JAX rows more than the one-core numpy rows."
                if (ot := [x for x in meta["other_processes_cpu_fraction_per_round"] if x is not None]) else "")
             + "\n")

    L.append("## Goals\n")
    for g in res["goals"].values():
        L.append(f"- **{'PASS' if g['pass'] else 'FAIL'}**: {g['goal']} -- {g['measured']}")
    cpu_ratio = t["numpy_loop/pre"]["cpu_median"] / t["jax_scan_final_only/pre"]["cpu_median"]
    L.append("")
    L.append(f"Per CPU-second the scan is {cpu_ratio:.1f}x the numpy loop: XLA runs the scan on "
             f"{t['jax_scan_final_only/pre']['cpu_per_wall']:.1f} cores (CPU/wall), numpy on one, so on a machine "
             "whose second core is busy with something else the wall-clock speedup shrinks towards this figure.\n")

    L.append("## Forward process, x_0 -> x_T\n")
    L.append("\"pre-drawn\": the T x N normals drawn before the clock starts (the same numbers for every method). "
             "\"noise inside\": numpy draws `rng.standard_normal(N)` each step; JAX splits the key each step and "
             "calls `jax.random.normal` (inside the jit / scan where there is one; the closed forms draw N normals once). "
             "Speedup = numpy loop time / method time, with the same kind of noise. "
             "Noise share = 1 - pre-drawn / noise inside. CPU/wall > 1 means more than one core was busy; "
             "page faults (minor, per call, pre-drawn) count the 4 KiB pages of fresh memory first touched.\n")
    L.append("| method | pre-drawn ms | speedup vs numpy loop | noise inside ms | speedup vs numpy loop | noise share "
             "| CPU/wall (pre) | page faults (pre) |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for base in res["method_order"]:
        pre, inn = f"{base}/pre", f"{base}/in"
        L.append(f"| {res['labels'][pre]} | {fmt_ms(t[pre]['median'])} | {r['speedup_vs_numpy_loop'][pre]['median']:.2f}x "
                 f"| {fmt_ms(t[inn]['median'])} | {r['speedup_vs_numpy_loop'][inn]['median']:.2f}x "
                 f"| {100 * r['noise_share'][base]['median']:.0f} % | {t[pre]['cpu_per_wall']:.2f} "
                 f"| {t[pre]['minor_page_faults']:,.0f} |")
    extra = "jax_scan_stacked_no_concat/pre"
    L.append(f"| {res['labels'][extra]} | {fmt_ms(t[extra]['median'])} | "
             f"{r['speedup_vs_numpy_loop'][extra]['median']:.2f}x | | | | {t[extra]['cpu_per_wall']:.2f} "
             f"| {t[extra]['minor_page_faults']:,.0f} |")
    extra = "jax_scan_final_only/in_nonpartitionable"
    L.append(f"| {res['labels'][extra]} | | | {fmt_ms(t[extra]['median'])} | "
             f"{r['speedup_vs_numpy_loop'][extra]['median']:.2f}x | | | |")
    L.append("")
    L.append("4a is `course_utils.forward.diffuse`: it returns all T+1 states, so it writes (T+1) x N floats "
             "(plus the copy made by its final concatenate); 4a' is the same scan without that concatenate. "
             "4b keeps only x_T, like the loops do. "
             "In 3 the row `noises[t]` is picked inside the jitted step; in 2, `noise[t]` is an eager slice (a copy). "
             "1b is the numpy loop with `out=` and in-place operators (no temporaries).\n")

    L.append("## Random generators: T x N = {:,} float32 normals in one call\n".format(meta["T"] * meta["N"]))
    L.append("| generator | ms | ms per 10^6 | relative to fastest | CPU/wall |")
    L.append("|---|---:|---:|---:|---:|")
    gens = sorted(res["generators"].items(), key=lambda kv: kv[1]["relative_to_fastest"])
    for name, g in gens:
        L.append(f"| {res['labels'][name]} | {fmt_ms(g['ms'])} | {g['ms_per_million']:.2f} | "
                 f"{g['relative_to_fastest']:.2f}x | {t[name]['cpu_per_wall']:.2f} |")
    L.append("")
    L.append(f"Fastest on this CPU: **{res['labels'][gens[0][0]]}**. "
             "Changing `jax_threefry_partitionable` or the key type changes the random numbers a key gives.\n")

    L.append("## Correctness checks\n")
    bad = [k for k, c in res["checks"].items() if not c["ok"]]
    L.append(f"{len(res['checks']) - len(bad)}/{len(res['checks'])} passed: every pre-drawn method gives the numpy "
             "loop's x_T (max abs difference < 1e-4); every x_T has the mean and standard deviation of "
             "q(x_T | x_0) within 6 standard errors; diffuse returns T+1 states."
             + (f" FAILED: {', '.join(bad)}" if bad else "") + "\n")
    L.append("Raw numbers (every round, CPU times, per-round ratios): `forward_process" +
             ("_quick" if meta["quick"] else "") + ".json`.")
    path.write_text("\n".join(L) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 10^5 and 2 rounds (smoke run; writes *_quick files)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 7, or 2 with --quick)")
    p.add_argument("--n", type=int, default=None, help="number of samples (default 10^6, or 10^5 with --quick)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--quiet", type=float, default=0, metavar="SECONDS",
                   help="spend up to SECONDS waiting for a quiet machine and redoing rounds during which other "
                        "processes used >= 10 %% of the CPUs (default 0: keep every round)")
    args = p.parse_args(argv)
    N = args.n or (10**5 if args.quick else 10**6)
    rounds = args.rounds or (2 if args.quick else 7)
    cmd = " ".join(["python", "benchmarks/forward_process.py", *(sys.argv[1:] if argv is None else argv)])

    print(f"forward process benchmark: N={N:,} T={T} rounds={rounds} backend={jax.default_backend()}", flush=True)
    t_start = time.perf_counter()
    load_at_start = os.getloadavg()
    M, data = build_methods(N)
    names = list(M)

    # Warm up: compile everything, keep the first result of each method for the checks.
    finals, shapes = {}, {}
    for name in names:
        out = _block(M[name]["fn"]())
        shapes[name] = tuple(out.shape)
        if not name.startswith("gen/"):
            finals[name] = np.asarray(M[name]["final"](out), dtype=np.float64)
        del out
        _block(M[name]["fn"]())
    print(f"  warm-up done in {time.perf_counter() - t_start:.1f} s", flush=True)

    def run_round(i):
        k = ((i % rounds) * len(names)) // rounds      # rotate the order from round to round
        order = names[k:] + names[:k]
        rd = dict(wall={}, cpu={}, faults={})
        t0, load = time.perf_counter(), CpuLoad()
        with load:
            for name in order:
                w, c, f = time_once(M[name]["fn"])
                rd["wall"][name], rd["cpu"][name], rd["faults"][name] = w * 1e3, c * 1e3, f
        rd.update(others=load.others, steal=load.steal, seconds=time.perf_counter() - t0)
        print(f"  round {i + 1}: {rd['seconds']:.1f} s, other processes {100 * (load.others or 0):.0f} % of the CPUs, "
              f"steal {100 * (load.steal or 0):.0f} % (numpy loop {rd['wall']['numpy_loop/pre']:.1f} ms, "
              f"scan final {rd['wall']['jax_scan_final_only/pre']:.1f} ms)", flush=True)
        return rd

    done, busy = run_rounds(run_round, rounds, args.quiet, lambda rd: rd["others"])
    discarded = [dict(others=rd["others"], wall_ms=rd["wall"]) for rd in busy]
    wall = {n: [rd["wall"][n] for rd in done] for n in names}
    cpu = {n: [rd["cpu"][n] for rd in done] for n in names}
    faults = {n: [rd["faults"][n] for rd in done] for n in names}
    others = [rd["others"] for rd in done]
    steal = [rd["steal"] for rd in done]

    timings = {}
    for n in names:
        med = statistics.median(wall[n])
        timings[n] = dict(median=med, min=min(wall[n]), max=max(wall[n]), rounds=wall[n],
                          cpu_median=statistics.median(cpu[n]),
                          cpu_per_wall=statistics.median(c / w for c, w in zip(cpu[n], wall[n])),
                          minor_page_faults=statistics.median(faults[n]))

    method_order = ["numpy_loop", "numpy_loop_inplace", "jax_eager_loop", "jax_jit_step_loop",
                    "jax_scan_all_states", "jax_scan_final_only", "jax_closed_form", "numpy_closed_form"]
    speedup = {}
    for n in names:
        if n.startswith("gen/"):
            continue
        base = "numpy_loop/pre" if M[n]["group"].startswith("pre") else "numpy_loop/in"
        speedup[n] = median_ratio(wall, base, n)
    noise_share = {}
    for b in method_order:
        per_round = [1 - p / i for p, i in zip(wall[f"{b}/pre"], wall[f"{b}/in"])]
        noise_share[b] = dict(median=statistics.median(per_round), min=min(per_round), max=max(per_round))
    ratios = dict(
        speedup_vs_numpy_loop=speedup,
        noise_share=noise_share,
        scan_final_vs_scan_all_states_pre=median_ratio(wall, "jax_scan_all_states/pre", "jax_scan_final_only/pre"),
        scan_stacked_no_concat_vs_diffuse_pre=median_ratio(wall, "jax_scan_all_states/pre",
                                                           "jax_scan_stacked_no_concat/pre"),
        jit_step_loop_vs_scan_final_pre=median_ratio(wall, "jax_jit_step_loop/pre", "jax_scan_final_only/pre"),
        eager_vs_jit_step_loop_pre=median_ratio(wall, "jax_eager_loop/pre", "jax_jit_step_loop/pre"),
        scan_final_vs_closed_form_pre=median_ratio(wall, "jax_scan_final_only/pre", "jax_closed_form/pre"),
        nonpartitionable_vs_default_threefry_in_scan=median_ratio(
            wall, "jax_scan_final_only/in", "jax_scan_final_only/in_nonpartitionable"),
    )

    n_normals = T * N
    gen_names = [n for n in names if n.startswith("gen/")]
    fastest = min(gen_names, key=lambda n: timings[n]["median"])
    generators = {n: dict(ms=timings[n]["median"], ms_per_million=timings[n]["median"] / (n_normals / 1e6),
                          relative_to_fastest=median_ratio(wall, n, fastest)["median"]) for n in gen_names}

    # Goals.
    g1 = speedup["jax_scan_final_only/pre"]
    g1_all = speedup["jax_scan_all_states/pre"]
    share = noise_share["jax_scan_final_only"]
    share_all = noise_share["jax_scan_all_states"]
    goals = {
        "scan_3x_numpy_loop": dict(
            goal="lax.scan at least 3x the numpy loop on the same (pre-drawn) noise",
            criterion="median per-round (numpy loop / scan keeping only x_T) >= 3, both on the pre-drawn noise",
            value=g1["median"], pass_=None,
            measured=(f"scan keeping only x_T is {g1['median']:.2f}x the numpy loop "
                      f"(rounds: {g1['min']:.2f}-{g1['max']:.2f}x); forward.diffuse, which also writes all "
                      f"T+1 states, is {g1_all['median']:.2f}x")),
        "rng_not_bottleneck": dict(
            goal="random generation is not the bottleneck in the course's kernels",
            criterion="drawing the noise takes less than half the time of the scan kernel that draws its own "
                      "noise: 1 - t(pre-drawn) / t(noise inside) < 0.5 for the scan keeping only x_T",
            value=share["median"], pass_=None,
            measured=(f"drawing the noise is {100 * share['median']:.0f} % of the scan's time "
                      f"({fmt_ms(timings['jax_scan_final_only/pre']['median'])} ms pre-drawn vs "
                      f"{fmt_ms(timings['jax_scan_final_only/in']['median'])} ms drawing inside; "
                      f"{100 * share_all['median']:.0f} % for forward.diffuse-style all states); "
                      f"fastest generator: {M[fastest]['label']} "
                      f"({generators[fastest]['ms_per_million']:.2f} ms per 10^6 normals)")),
    }
    goals["scan_3x_numpy_loop"]["pass"] = bool(g1["median"] >= 3)
    goals["rng_not_bottleneck"]["pass"] = bool(share["median"] < 0.5)
    for g in goals.values():
        del g["pass_"]

    checks = run_checks(finals, shapes, data, N)
    import jaxlib
    res = dict(
        meta=dict(
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            command=cmd, quick=args.quick, N=N, T=T, rounds=rounds,
            betas=dict(schedule="linear", start=BETA_START, end=BETA_END, alpha_bar_T=data["alpha_bar_T"]),
            x0=f"N({X0_MEAN}, {X0_STD}^2), float32",
            jax=jax.__version__, jaxlib=jaxlib.__version__, numpy=np.__version__,
            python=platform.python_version(), jax_backend=jax.default_backend(),
            jax_threefry_partitionable_default=bool(jax.config.jax_threefry_partitionable),
            xla_flags=os.environ.get("XLA_FLAGS", ""), cpu=cpu_info(), platform=platform.platform(),
            total_seconds=None, loadavg_at_start=load_at_start, quiet_budget_s=args.quiet,
            quiet_threshold=QUIET_THRESHOLD, rounds_discarded_as_busy=len(discarded),
            other_processes_cpu_fraction_per_round=others, steal_fraction_per_round=steal,
        ),
        units="ms (wall clock unless named cpu_*); minor_page_faults is a count per call",
        labels={n: M[n]["label"] for n in names},
        method_order=method_order,
        timings_ms=timings,
        ratios=ratios,
        generators=generators,
        goals=goals,
        checks=checks,
        discarded_rounds=discarded,
    )
    res["meta"]["total_seconds"] = round(time.perf_counter() - t_start, 1)

    stem = "forward_process_quick" if args.quick else "forward_process"
    return save_results(args.out_dir, stem, res, lambda path: write_markdown(path, res, cmd), checks)


if __name__ == "__main__":
    sys.exit(main())
