#!/usr/bin/env python
"""Benchmark: a 2D DDPM trained and sampled with JAX and with PyTorch eager, on the CPU.

    python benchmarks/ddpm_2d.py               # full run, writes the recorded results
    python benchmarks/ddpm_2d.py --quick       # smoke run (fewer steps, 2 rounds)
    python benchmarks/ddpm_2d.py --quiet 900   # redo rounds disturbed by other processes

The same network (course_utils.models.MLPDenoiser with its default sizes: the
point and a 32-wide sinusoidal embedding of t, three hidden layers of 128 with
SiLU, 2 outputs), the same loss (mean squared error of the predicted noise),
Adam (lr 1e-3), on the same 2D Swiss roll, trained at batch sizes 32, 128 and
1024 and sampled (5000 points, T = 200 DDPM steps) with

  JAX:     course_utils.training.train (the training loop compiled into one
           XLA loop) and a Python loop around a jitted step (nnx.split/merge +
           jax.jit); course_utils.sampling.sample (one lax.scan) and a Python
           loop around a jitted ddpm_step, on the same noise;
  PyTorch: the identical network in eager mode, started from the same weights,
           in its own process (running JAX first in a process slows PyTorch),
           once with the default allocator and once with
           MALLOC_MMAP_THRESHOLD_=1073741824 (PyTorch eager is sensitive to
           allocator churn on this machine).

It also measures, in the same run, the machine's matmul peak: a 2048 x 2048
float32 matmul in JAX, numpy and PyTorch, and reports each training and
sampling run's achieved GFLOP/s (matmul FLOPs only: a training step counts 3x
the forward matmul FLOPs, for the forward pass and the two backward matmuls)
as a fraction of the fastest of the three, measured in the same round.

Each framework runs in a worker process that stays alive for the whole run
(compiled once); this coordinating process sends the workers one timed call at
a time, every round in a rotated order, and keeps the medians over rounds;
ratios are medians of per-round ratios. Every timed call also records the share
of the machine's CPU time that other processes took; with --quiet SECONDS the
benchmark waits for a quiet machine before each round and redoes rounds in
which others took 10 % or more.

Writes benchmarks/results/ddpm_2d.{json,md} (--quick writes ddpm_2d_quick.*).
Needs PyTorch's CPU build (see benchmarks/README.md). Exits with status 1 if a
correctness check fails.
"""

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import QUIET_THRESHOLD, benchmark_parser, CpuLoad, Worker, cpu_info, fmt_ms, median_ratio, run_rounds, save_results, serve, wait_until_quiet

RESULTS_DIR = Path(__file__).resolve().parent / "results"

DIM, HIDDEN, DEPTH, TIME_DIM = 2, 128, 3, 32      # MLPDenoiser's defaults
T = 200                                           # diffusion steps (training and sampling)
BETA_START, BETA_END = 1e-4, 0.02                 # linear schedule (Ho et al. 2020)
N_DATA = 10_000                                   # Swiss roll points
N_SAMPLE = 5000                                   # points sampled
LEARNING_RATE = 1e-3
BATCHES = (32, 128, 1024)
MATMUL_N = 2048
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824"}
# Steps per timed call (about 0.1-0.5 s each on this machine), full run and --quick.
STEPS = {32: 1500, 128: 1000, 1024: 150}
STEPS_QUICK = {32: 200, 128: 100, 1024: 20}
WARMUP_STEPS = 300                                # per batch size, before any timing


def forward_matmul_flops(batch):
    """FLOPs of the network's matmuls for one forward pass of `batch` points (2 per multiply-add)."""
    sizes = [DIM + TIME_DIM] + [HIDDEN] * DEPTH + [DIM]
    return 2 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def train_step_flops(batch):
    """Forward + backward: the backward pass does two matmuls per forward one (input and weight gradients)."""
    return 3 * forward_matmul_flops(batch)


def sampling_flops(n=N_SAMPLE, steps=T):
    return steps * forward_matmul_flops(n)


# --------------------------------------------------------------------------- JAX worker

def jax_worker(cfg):
    """Build, compile and check every JAX method; return (methods, info). Writes the shared inputs to cfg['dir']."""

    import jax
    import jaxlib
    import numpy as np
    from flax import nnx

    from course_utils import data as cdata
    from course_utils import models, sampling, schedules, training

    steps = {int(k): v for k, v in cfg["steps"].items()}
    work = Path(cfg["dir"])
    schedule = schedules.make_schedule(schedules.linear_betas(T, BETA_START, BETA_END))
    alpha_bars = schedule.alpha_bars
    sigmas = sampling.reverse_sigmas(schedule, "beta_tilde")
    data = cdata.points_2d("swiss_roll", jax.random.key(0), N_DATA)[0]
    x_T = jax.random.normal(jax.random.key(1), (N_SAMPLE, DIM))
    sample_key = jax.random.key(2)

    def new_model():
        return models.MLPDenoiser(DIM, HIDDEN, DEPTH, TIME_DIM, rngs=nnx.Rngs(0))

    # The shared inputs: data, initial weights, schedule, x_T, and a probe batch for the identity check.
    m0 = new_model()
    layers = [*m0.hidden, m0.out]
    probe_x = jax.random.normal(jax.random.key(3), (64, DIM))
    probe_t = jax.random.randint(jax.random.key(4), (64,), 1, T + 1)
    probe_noise = jax.random.normal(jax.random.key(5), (64, DIM))
    probe_loss = training.ddpm_loss(m0, probe_x, probe_t, probe_noise, alpha_bars)
    np.savez(work / "shared.npz", data=np.asarray(data), x_T=np.asarray(x_T),
             betas=np.asarray(schedule.betas), alpha_bars=np.asarray(alpha_bars), sigmas=np.asarray(sigmas),
             probe_x=np.asarray(probe_x), probe_t=np.asarray(probe_t), probe_noise=np.asarray(probe_noise),
             probe_eps=np.asarray(m0(probe_x, probe_t)), probe_loss=np.asarray(probe_loss),
             **{f"w{i}": np.asarray(layer.kernel[...]) for i, layer in enumerate(layers)},
             **{f"b{i}": np.asarray(layer.bias[...]) for i, layer in enumerate(layers)})

    # --- training: the course's compiled loop (train), and a Python loop around a jitted step
    tx = training.adam(LEARNING_RATE)

    def draw_batch(key, batch):
        k_index, k_t, k_noise = jax.random.split(key, 3)
        x0 = data[jax.random.randint(k_index, (batch,), 0, N_DATA)]
        return x0, jax.random.randint(k_t, (batch,), 1, T + 1), jax.random.normal(k_noise, x0.shape)

    def make_step(graphdef, batch):
        def step(state, key, i):
            model, optimizer = nnx.merge(graphdef, state)
            x0, t, noise = draw_batch(jax.random.fold_in(key, i), batch)
            loss, grads = nnx.value_and_grad(training.ddpm_loss)(model, x0, t, noise, alpha_bars)
            optimizer.update(model, grads)
            return nnx.state((model, optimizer)), loss
        return jax.jit(step, donate_argnums=0)

    methods, info = {}, dict(warmup_losses={})
    counter = [10]

    def next_key():
        counter[0] += 1
        return jax.random.key(counter[0])

    for batch in BATCHES:
        n = steps[batch]
        model = new_model()
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

        def run_train(model=model, opt=opt, batch=batch, n=n):
            return training.train(model, data, alpha_bars, steps=n, key=next_key(), batch_size=batch,
                                  optimizer=opt, progress=False)

        losses = training.train(model, data, alpha_bars, steps=WARMUP_STEPS, key=jax.random.key(100 + batch),
                                batch_size=batch, optimizer=opt, progress=False)
        run_train()
        info["warmup_losses"][f"jax/{batch}"] = dict(first50=float(np.mean(losses[:50])),
                                                     last100=float(np.mean(losses[-100:])))
        methods[f"train_scan/{batch}"] = (run_train, n)

        loop_model = new_model()
        graphdef, state = nnx.split((loop_model, nnx.Optimizer(loop_model, tx, wrt=nnx.Param)))
        step = make_step(graphdef, batch)
        holder = [state]

        def run_loop(step=step, holder=holder, n=n):
            state, key = holder[0], next_key()
            for i in range(n):
                state, loss = step(state, key, i)
            holder[0] = state
            return loss

        for _ in range(2):
            run_loop()
        methods[f"train_loop/{batch}"] = (run_loop, n)

    # --- sampling: course_utils.sampling.sample (one lax.scan) and a Python loop of jitted steps
    sample_model = models.MLPDenoiser(DIM, HIDDEN, DEPTH, TIME_DIM, rngs=nnx.Rngs(0))
    training.train(sample_model, data, alpha_bars, steps=500, key=jax.random.key(7), batch_size=128,
                   optimizer=tx, progress=False)
    graphdef, state = nnx.split(sample_model)

    @jax.jit
    def jit_ddpm_step(state, x, i, noises, schedule, sigmas):
        model = nnx.merge(graphdef, state)
        return sampling.ddpm_step(model, x, T - i, noises[i], schedule.betas, schedule.alpha_bars, sigmas)

    def run_sample_scan():
        return sampling.sample(sample_model, x_T, sample_key, schedule, sigma="beta_tilde")

    def run_sample_loop():
        noises = jax.random.normal(sample_key, (T,) + x_T.shape).at[-1].set(0.0)   # as sample() draws them
        x = x_T
        for i in range(T):
            x = jit_ddpm_step(state, x, i, noises, schedule, sigmas)
        return x

    out_scan = np.asarray(run_sample_scan())
    out_loop = np.asarray(run_sample_loop())
    info["sample_scan_vs_loop_max_abs_diff"] = float(np.max(np.abs(out_scan - out_loop)))
    info["sample_stats"] = dict(mean=out_scan.mean(0).tolist(), std=out_scan.std(0).tolist(),
                                data_mean=np.asarray(data).mean(0).tolist(), data_std=np.asarray(data).std(0).tolist())
    methods["sample_scan"] = (run_sample_scan, 1)
    methods["sample_loop"] = (run_sample_loop, 1)

    # --- matmul peak
    a = jax.random.normal(jax.random.key(8), (MATMUL_N, MATMUL_N))
    b = jax.random.normal(jax.random.key(9), (MATMUL_N, MATMUL_N))
    matmul = jax.jit(lambda a, b: a @ b)
    a_np, b_np = np.asarray(a), np.asarray(b)
    reps = cfg["matmul_reps"]

    def run_matmul_jax():
        for _ in range(reps):
            out = matmul(a, b)
            out.block_until_ready()
        return out

    def run_matmul_numpy():
        for _ in range(reps):
            out = a_np @ b_np
        return out

    run_matmul_jax(), run_matmul_numpy()
    methods["matmul_jax"] = (run_matmul_jax, reps)
    methods["matmul_numpy"] = (run_matmul_numpy, reps)

    import flax
    import optax
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:                                      # informative only
        blas = "unknown"
    info["versions"] = dict(jax=jax.__version__, jaxlib=jaxlib.__version__, flax=flax.__version__,
                            optax=optax.__version__, numpy=np.__version__, numpy_blas=blas,
                            backend=jax.default_backend(), xla_flags=os.environ.get("XLA_FLAGS", ""))

    def block(out):
        jax.block_until_ready(out)

    return methods, info, block


# --------------------------------------------------------------------------- PyTorch worker

def torch_worker(cfg):
    import math

    import numpy as np
    import torch
    from torch import nn

    steps = {int(k): v for k, v in cfg["steps"].items()}
    shared = np.load(Path(cfg["dir"]) / "shared.npz")
    data = torch.from_numpy(shared["data"])
    alpha_bars = torch.from_numpy(shared["alpha_bars"])
    x_T = torch.from_numpy(shared["x_T"])
    betas64 = shared["betas"].astype(np.float64)
    ab64 = shared["alpha_bars"].astype(np.float64)
    # x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sigma_t z, as Python floats
    c_eps = [float(np.float32(b / np.sqrt(1 - a))) for b, a in zip(betas64, ab64)]
    c_x = [float(np.float32(1 / np.sqrt(1 - b))) for b in betas64]
    sig = [float(s) for s in shared["sigmas"]]
    gen = torch.Generator().manual_seed(0)

    class MLPDenoiser(nn.Module):
        """course_utils.models.MLPDenoiser in PyTorch: [x, sin(t w), cos(t w)] -> 3 x (Linear, SiLU) -> Linear."""

        def __init__(self):
            super().__init__()
            sizes = [DIM + TIME_DIM] + [HIDDEN] * DEPTH
            self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
            self.out = nn.Linear(HIDDEN, DIM)
            half = TIME_DIM // 2
            self.register_buffer("frequencies",
                                 torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half))

        def forward(self, x, t):
            angles = t.to(torch.float32)[:, None] * self.frequencies
            h = torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)
            for layer in self.hidden:
                h = nn.functional.silu(layer(h))
            return self.out(h)

    def new_model():
        net = MLPDenoiser()
        with torch.no_grad():                       # the JAX model's initial weights (flax: x @ W, torch: x @ W.T)
            for i, layer in enumerate([*net.hidden, net.out]):
                layer.weight.copy_(torch.from_numpy(shared[f"w{i}"]).T)
                layer.bias.copy_(torch.from_numpy(shared[f"b{i}"]))
        return net

    def ddpm_loss(net, x0, t, noise):
        ab = alpha_bars[t - 1].unsqueeze(1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        return ((noise - net(x_t, t)) ** 2).mean()

    info = dict(warmup_losses={})
    net0 = new_model()
    with torch.no_grad():
        px, pt, pn = (torch.from_numpy(shared[k]) for k in ("probe_x", "probe_t", "probe_noise"))
        eps = net0(px, pt).numpy()
        loss = float(ddpm_loss(net0, px, pt, pn))
    info["identity"] = dict(eps_max_abs_diff=float(np.max(np.abs(eps - shared["probe_eps"]))),
                            loss=loss, jax_loss=float(shared["probe_loss"]))

    def make_trainer(batch):
        net = new_model()
        opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)

        def run(n):
            losses = []
            for _ in range(n):
                x0 = data[torch.randint(0, N_DATA, (batch,), generator=gen)]
                t = torch.randint(1, T + 1, (batch,), generator=gen)
                noise = torch.randn(batch, DIM, generator=gen)
                loss = ddpm_loss(net, x0, t, noise)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
            return torch.stack(losses)
        return run, net

    methods = {}
    sample_net = None
    for batch in BATCHES:
        run, net = make_trainer(batch)
        losses = run(WARMUP_STEPS).numpy()
        info["warmup_losses"][f"torch/{batch}"] = dict(first50=float(losses[:50].mean()),
                                                       last100=float(losses[-100:].mean()))
        methods[f"train/{batch}"] = ((lambda run=run, n=steps[batch]: run(n)), steps[batch])
        if batch == 128:
            sample_net = net

    @torch.inference_mode()
    def run_sample():
        noises = torch.randn((T,) + tuple(x_T.shape), generator=gen)
        noises[-1] = 0
        x = x_T
        for i in range(T):
            t = T - i
            eps = sample_net(x, torch.full((N_SAMPLE,), t))
            x = (x - c_eps[t - 1] * eps) * c_x[t - 1] + sig[t - 1] * noises[i]
        return x

    run_sample()
    methods["sample"] = (run_sample, 1)

    a = torch.randn(MATMUL_N, MATMUL_N, generator=gen)
    b = torch.randn(MATMUL_N, MATMUL_N, generator=gen)
    reps = cfg["matmul_reps"]

    def run_matmul():
        for _ in range(reps):
            out = a @ b
        return out

    run_matmul()
    methods["matmul"] = (run_matmul, reps)
    info["versions"] = dict(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                            torch_interop_threads=torch.get_num_interop_threads(),
                            malloc_mmap_threshold=os.environ.get("MALLOC_MMAP_THRESHOLD_", ""),
                            torch_parallel_info=torch.__config__.parallel_info().splitlines()[:8])
    return methods, info, (lambda out: None)


def cold_worker(which):
    """In a fresh process: wall seconds of the first three calls of one JAX sampler (the first one compiles)."""
    import jax
    from flax import nnx

    from course_utils import models, sampling, schedules

    schedule = schedules.make_schedule(schedules.linear_betas(T, BETA_START, BETA_END))
    model = models.MLPDenoiser(DIM, HIDDEN, DEPTH, TIME_DIM, rngs=nnx.Rngs(0))
    x_T = jax.random.normal(jax.random.key(1), (N_SAMPLE, DIM)).block_until_ready()
    if which == "scan":
        def run(key):
            return sampling.sample(model, x_T, key, schedule)
    else:
        graphdef, state = nnx.split(model)

        @jax.jit
        def jit_ddpm_step(state, x, i, noises, schedule, sigmas):
            return sampling.ddpm_step(nnx.merge(graphdef, state), x, T - i, noises[i], schedule.betas,
                                      schedule.alpha_bars, sigmas)

        def run(key):
            sigmas = sampling.reverse_sigmas(schedule, "beta_tilde")
            noises = jax.random.normal(key, (T,) + x_T.shape).at[-1].set(0.0)
            x = x_T
            for i in range(T):
                x = jit_ddpm_step(state, x, i, noises, schedule, sigmas)
            return x
    calls = []
    for i in range(3):
        with CpuLoad() as load:
            t0 = time.perf_counter()
            run(jax.random.key(10 + i)).block_until_ready()
            wall = time.perf_counter() - t0
        calls.append(dict(wall=wall, others=load.others))
    return calls


def worker_main(kind, cfg):
    """Serve timed calls over stdin/stdout until told to quit (see machine.serve)."""
    if kind.startswith("cold_"):
        return serve(lambda: cold_worker(kind[5:]), one_shot=True)
    return serve(lambda: (jax_worker if kind == "jax" else torch_worker)(cfg))


# --------------------------------------------------------------------------- coordinator

def main(argv=None):
    p = benchmark_parser(__doc__, RESULTS_DIR, "fewer steps and 2 rounds (smoke run; writes *_quick files)", ["jax", "torch", "cold_scan", "cold_loop"])
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, json.loads(args.worker_config or "{}"))

    rounds = args.rounds or (2 if args.quick else 7)
    steps = STEPS_QUICK if args.quick else STEPS
    cmd = " ".join(["python", "benchmarks/ddpm_2d.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"2D DDPM benchmark, JAX vs PyTorch eager: batches {BATCHES}, steps per call {steps}, "
          f"sampling {N_SAMPLE} points x {T} steps, {rounds} rounds", flush=True)
    t_start = time.perf_counter()
    load_at_start = os.getloadavg()

    # First calls of the two JAX samplers, each in a fresh process (what a notebook cell pays once).
    cold = dict(scan=[], loop=[])
    for _ in range(1 if args.quick else 3):
        for which in ("scan", "loop"):
            if args.quiet > 0:
                wait_until_quiet(min(args.quiet, 120))
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", f"cold_{which}"],
                                 stdout=subprocess.PIPE, text=True, check=True).stdout
            cold[which].append(json.loads(out.strip().splitlines()[-1]))
    print("  first calls in fresh processes (s): " + "; ".join(
        f"{w} " + ", ".join(f"{c[0]['wall']:.2f}/{c[1]['wall']:.2f}" for c in cold[w]) for w in cold), flush=True)

    with tempfile.TemporaryDirectory(prefix="ddpm_2d_") as tmp:
        cfg_json = dict(dir=tmp, steps={str(k): v for k, v in steps.items()}, matmul_reps=2 if args.quick else 3)
        workers = {}
        try:
            # JAX first (it writes the shared inputs), then the two PyTorch workers, one at a time.
            workers["jax"] = Worker(__file__, "jax", "jax", cfg_json)
            info_jax = workers["jax"].wait_ready()
            print(f"  JAX worker ready ({info_jax['setup_seconds']:.0f} s: compiled and warmed up)", flush=True)
            workers["torch"] = Worker(__file__, "torch", "torch", cfg_json)
            workers["torch"].wait_ready()
            workers["torch_mmap"] = Worker(__file__, "torch", "torch_mmap", cfg_json, MMAP_ENV)
            workers["torch_mmap"].wait_ready()
            print("  PyTorch workers ready", flush=True)

            items = []     # (key, worker, method name in the worker)
            for batch in BATCHES:
                items += [(f"jax_train_scan/{batch}", "jax", f"train_scan/{batch}"),
                          (f"jax_train_loop/{batch}", "jax", f"train_loop/{batch}"),
                          (f"torch_train/{batch}", "torch", f"train/{batch}"),
                          (f"torch_mmap_train/{batch}", "torch_mmap", f"train/{batch}")]
            items += [("jax_sample_scan", "jax", "sample_scan"), ("jax_sample_loop", "jax", "sample_loop"),
                      ("torch_sample", "torch", "sample"), ("torch_mmap_sample", "torch_mmap", "sample"),
                      ("matmul_jax", "jax", "matmul_jax"), ("matmul_numpy", "jax", "matmul_numpy"),
                      ("matmul_torch", "torch", "matmul"), ("matmul_torch_mmap", "torch_mmap", "matmul")]

            def run_round(i):
                k = ((i % rounds) * len(items)) // rounds        # rotate the order from round to round
                order = items[k:] + items[:k]
                rd = dict(wall={}, cpu={}, faults={}, others={}, units={})
                t0 = time.perf_counter()
                for key, w, name in order:
                    m = workers[w].time(name)
                    rd["wall"][key], rd["cpu"][key], rd["faults"][key] = m["wall"], m["cpu"], m["faults"]
                    rd["others"][key], rd["units"][key] = m["others"], m["units"]
                    time.sleep(0.05)
                walls = [rd["wall"][k] for k, *_ in items]
                oth = [rd["others"][k] for k, *_ in items]
                rd["others_mean"] = (sum(o * w for o, w in zip(oth, walls)) / sum(walls)
                                     if all(o is not None for o in oth) else None)
                rd["others_max"] = max((o for o in oth if o is not None), default=None)
                rd["seconds"] = time.perf_counter() - t0
                print(f"  round {i + 1}: {rd['seconds']:.0f} s, other processes {100 * (rd['others_mean'] or 0):.0f} % "
                      f"of the CPUs (JAX train 1024 {1e3 * rd['wall']['jax_train_scan/1024'] / steps[1024]:.2f} "
                      f"ms/step, sample scan {rd['wall']['jax_sample_scan']:.2f} s, "
                      f"loop {rd['wall']['jax_sample_loop']:.2f} s)", flush=True)
                return rd

            done, busy = run_rounds(run_round, rounds, args.quiet, lambda rd: rd["others_mean"])
        finally:
            for w in workers.values():
                w.close()

    discarded = [dict(others=rd["others_mean"], wall_s=rd["wall"]) for rd in busy]
    keys = [k for k, *_ in items]
    wall = {k: [rd["wall"][k] for rd in done] for k in keys}
    units = {k: done[0]["units"][k] for k in keys}
    timings = {}
    for k in keys:
        w = wall[k]
        timings[k] = dict(median_s=statistics.median(w), min_s=min(w), max_s=max(w), rounds_s=w, units=units[k],
                          ms_per_unit=1e3 * statistics.median(w) / units[k],
                          cpu_per_wall=statistics.median(rd["cpu"][k] / rd["wall"][k] for rd in done),
                          minor_page_faults=statistics.median(rd["faults"][k] for rd in done),
                          others=[rd["others"][k] for rd in done])

    # Per-round derived quantities: best PyTorch per round, matmul peak per round, GFLOP/s and % of peak.
    R = len(done)
    best_torch = {}
    for what in [f"train/{b}" for b in BATCHES] + ["sample"]:
        a, b = f"torch_{what}", f"torch_mmap_{what}"
        best_torch[what] = [min(x, y) for x, y in zip(wall[a], wall[b])]
    mm_flops = 2 * MATMUL_N ** 3
    gflops_mm = {k: [mm_flops * units[k] / w / 1e9 for w in wall[k]]
                 for k in ("matmul_jax", "matmul_numpy", "matmul_torch", "matmul_torch_mmap")}
    peak = [max(gflops_mm[k][r] for k in gflops_mm) for r in range(R)]

    def flops_of(key):
        if "sample" in key:
            return sampling_flops()
        batch = int(key.rsplit("/", 1)[1])
        return units[key] * train_step_flops(batch)

    achieved = {}
    for k in keys:
        if k.startswith("matmul"):
            continue
        g = [flops_of(k) / w / 1e9 for w in wall[k]]
        frac = [x / pk for x, pk in zip(g, peak)]
        achieved[k] = dict(gflops=statistics.median(g), fraction_of_peak=statistics.median(frac),
                           fraction_per_round=frac)

    def ratio_vs_best_torch(what, jax_key):
        per_round = [t / j for t, j in zip(best_torch[what], wall[jax_key])]
        return dict(median=statistics.median(per_round), min=min(per_round), max=max(per_round), per_round=per_round)

    ratios = {}
    for b in BATCHES:
        for impl in ("scan", "loop"):
            ratios[f"jax_train_{impl}_vs_best_torch/{b}"] = ratio_vs_best_torch(f"train/{b}", f"jax_train_{impl}/{b}")
            ratios[f"jax_train_{impl}_vs_torch/{b}"] = median_ratio(wall, f"torch_train/{b}", f"jax_train_{impl}/{b}")
            ratios[f"jax_train_{impl}_vs_torch_mmap/{b}"] = median_ratio(wall, f"torch_mmap_train/{b}",
                                                                        f"jax_train_{impl}/{b}")
        ratios[f"torch_default_vs_mmap/{b}"] = median_ratio(wall, f"torch_train/{b}", f"torch_mmap_train/{b}")
        ratios[f"jax_train_loop_vs_scan/{b}"] = median_ratio(wall, "jax_train_loop/" + str(b), f"jax_train_scan/{b}")
    for impl in ("scan", "loop"):
        ratios[f"jax_sample_{impl}_vs_best_torch"] = ratio_vs_best_torch("sample", f"jax_sample_{impl}")
        ratios[f"jax_sample_{impl}_vs_torch"] = median_ratio(wall, "torch_sample", f"jax_sample_{impl}")
        ratios[f"jax_sample_{impl}_vs_torch_mmap"] = median_ratio(wall, "torch_mmap_sample", f"jax_sample_{impl}")
    ratios["torch_sample_default_vs_mmap"] = median_ratio(wall, "torch_sample", "torch_mmap_sample")
    ratios["jax_sample_scan_vs_loop"] = median_ratio(wall, "jax_sample_scan", "jax_sample_loop")

    # Goals.
    def speed_goal(b, target):
        r = ratios[f"jax_train_scan_vs_best_torch/{b}"]
        rl = ratios[f"jax_train_loop_vs_best_torch/{b}"]
        return dict(goal=f"training at batch {b}: JAX at least {target}x PyTorch eager in steps/s",
                    criterion=f"median per-round (faster PyTorch variant's time / course_utils.training.train's "
                              f"time) >= {target}",
                    value=r["median"], pass_=r["median"] >= target,
                    measured=(f"train (compiled loop) {1e3 / timings[f'jax_train_scan/{b}']['ms_per_unit']:,.0f} "
                              f"steps/s vs PyTorch {1e3 / timings[f'torch_train/{b}']['ms_per_unit']:,.0f} "
                              f"(mmap threshold: {1e3 / timings[f'torch_mmap_train/{b}']['ms_per_unit']:,.0f}): "
                              f"**{r['median']:.2f}x** the faster PyTorch (rounds {r['min']:.2f}-{r['max']:.2f}x); "
                              f"Python loop of jitted steps {rl['median']:.2f}x"))

    goals = {f"train_{b}": speed_goal(b, t) for b, t in ((32, 3), (128, 3), (1024, 1.5))}
    rs, rsl = ratios["jax_sample_scan_vs_best_torch"], ratios["jax_sample_loop_vs_best_torch"]
    goals["sample"] = dict(
        goal="sampling (5000 points, 200 steps): JAX at least 2x PyTorch eager",
        criterion="median per-round (faster PyTorch variant's time / course_utils.sampling.sample's time) >= 2",
        value=rs["median"], pass_=rs["median"] >= 2,
        measured=(f"sample (lax.scan) {timings['jax_sample_scan']['median_s'] * 1e3:,.0f} ms vs PyTorch "
                  f"{timings['torch_sample']['median_s'] * 1e3:,.0f} ms (mmap threshold: "
                  f"{timings['torch_mmap_sample']['median_s'] * 1e3:,.0f} ms): **{rs['median']:.2f}x** the faster "
                  f"PyTorch (rounds {rs['min']:.2f}-{rs['max']:.2f}x); Python loop of jitted steps "
                  f"{timings['jax_sample_loop']['median_s'] * 1e3:,.0f} ms, {rsl['median']:.2f}x"))
    f_train, f_sample = achieved["jax_train_scan/1024"], achieved["jax_sample_scan"]
    goals["peak"] = dict(
        goal="the large-batch runs reach 70 % or more of the measured matmul peak",
        criterion="median per-round (achieved matmul GFLOP/s / fastest 2048^2 matmul of the round) >= 0.70 for "
                  "training at batch 1024 (train) and for sampling 5000 points (sample)",
        value=min(f_train["fraction_of_peak"], f_sample["fraction_of_peak"]),
        pass_=min(f_train["fraction_of_peak"], f_sample["fraction_of_peak"]) >= 0.70,
        measured=(f"training at batch 1024 **{100 * f_train['fraction_of_peak']:.0f} %** "
                  f"({f_train['gflops']:.0f} GFLOP/s), sampling **{100 * f_sample['fraction_of_peak']:.0f} %** "
                  f"({f_sample['gflops']:.0f} GFLOP/s) of a peak of {statistics.median(peak):.0f} GFLOP/s"))
    rsc = ratios["jax_sample_scan_vs_loop"]
    goals["scan_not_slower"] = dict(
        goal="the scanned sampler is not slower than the Python loop of jitted steps",
        criterion="median per-round t(sample, lax.scan) / t(Python loop of jitted ddpm_step) <= 1.0",
        value=rsc["median"], pass_=rsc["median"] <= 1.0,
        measured=(f"scan / loop = **{rsc['median']:.2f}** (rounds {rsc['min']:.2f}-{rsc['max']:.2f}); "
                  f"{timings['jax_sample_scan']['median_s'] * 1e3:,.0f} ms vs "
                  f"{timings['jax_sample_loop']['median_s'] * 1e3:,.0f} ms"))
    for g in goals.values():
        g["pass"] = bool(g.pop("pass_"))

    # Correctness checks.
    info_t = workers["torch"].info
    info_tm = workers["torch_mmap"].info
    checks = {}
    d = info_jax["sample_scan_vs_loop_max_abs_diff"]
    checks["jax_sample_scan_equals_loop"] = dict(max_abs_diff=d, tol=1e-4, ok=d < 1e-4)
    for lbl, inf in (("torch", info_t), ("torch_mmap", info_tm)):
        idt = inf["identity"]
        checks[f"{lbl}_same_network"] = dict(
            eps_max_abs_diff=idt["eps_max_abs_diff"], loss=idt["loss"], jax_loss=idt["jax_loss"], tol=1e-4,
            ok=idt["eps_max_abs_diff"] < 1e-4 and abs(idt["loss"] - idt["jax_loss"]) < 1e-4 * max(1, idt["jax_loss"]))
    wl = dict(info_jax["warmup_losses"], **info_t["warmup_losses"])
    for b in BATCHES:
        j, t = wl[f"jax/{b}"], wl[f"torch/{b}"]
        checks[f"both_learn/{b}"] = dict(
            jax=j, torch=t,
            ok=j["last100"] < 0.9 * j["first50"] and t["last100"] < 0.9 * t["first50"]
            and abs(j["last100"] - t["last100"]) < 0.25 * max(j["last100"], t["last100"]))
    st = info_jax["sample_stats"]
    checks["samples_look_like_data"] = dict(
        **st, ok=all(abs(m - dm) < 0.25 and abs(s / ds - 1) < 0.25
                     for m, dm, s, ds in zip(st["mean"], st["data_mean"], st["std"], st["data_std"])))

    res = dict(
        meta=dict(
            date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            command=cmd, quick=args.quick, rounds=rounds, steps_per_call=steps, warmup_steps=WARMUP_STEPS,
            network=dict(model="course_utils.models.MLPDenoiser", dim=DIM, hidden=HIDDEN, depth=DEPTH,
                         time_dim=TIME_DIM, activation="SiLU", optimizer=f"Adam(lr={LEARNING_RATE})",
                         forward_matmul_flops_per_point=forward_matmul_flops(1)),
            schedule=dict(T=T, linear_betas=[BETA_START, BETA_END], sampling_sigma="beta_tilde"),
            data=f"Swiss roll, {N_DATA} points", n_sample=N_SAMPLE, matmul_n=MATMUL_N,
            jax_versions=info_jax["versions"], torch_versions=info_t["versions"],
            torch_mmap_env=MMAP_ENV, python=platform.python_version(), cpu=cpu_info(), platform=platform.platform(),
            worker_setup_seconds=dict(jax=info_jax["setup_seconds"], torch=info_t["setup_seconds"],
                                      torch_mmap=info_tm["setup_seconds"]),
            total_seconds=round(time.perf_counter() - t_start, 1), loadavg_at_start=load_at_start,
            quiet_budget_s=args.quiet, quiet_threshold=QUIET_THRESHOLD, rounds_discarded_as_busy=len(discarded),
            other_processes_cpu_fraction_per_round=[rd["others_mean"] for rd in done],
            other_processes_cpu_fraction_max_per_round=[rd["others_max"] for rd in done],
        ),
        units="seconds per timed call (wall clock) unless named ms_per_unit; a unit is a training step, "
              "a whole sampling run, or one matmul",
        timings=timings,
        matmul_gflops=dict({k: statistics.median(v) for k, v in gflops_mm.items()},
                           peak_median=statistics.median(peak), peak_per_round=peak),
        achieved=achieved,
        ratios=ratios,
        goals=goals,
        checks=checks,
        cold_start=dict(
            note="first three calls of each JAX sampler in a fresh process (the first one compiles), wall seconds",
            scan=cold["scan"], loop=cold["loop"],
            first_call_median=dict(scan=statistics.median(c[0]["wall"] for c in cold["scan"]),
                                   loop=statistics.median(c[0]["wall"] for c in cold["loop"])),
            third_call_median=dict(scan=statistics.median(c[2]["wall"] for c in cold["scan"]),
                                   loop=statistics.median(c[2]["wall"] for c in cold["loop"]))),
        discarded_rounds=discarded,
    )
    stem = "ddpm_2d_quick" if args.quick else "ddpm_2d"
    return save_results(args.out_dir, stem, res, lambda path: write_markdown(path, res, cmd), checks)


def write_markdown(path, res, cmd):
    t, a, r, meta = res["timings"], res["achieved"], res["ratios"], res["meta"]
    jv, tv = meta["jax_versions"], meta["torch_versions"]
    ot = [x for x in meta["other_processes_cpu_fraction_per_round"] if x is not None]
    L = ["# 2D DDPM: JAX against PyTorch eager on the CPU\n"]
    L.append(
        f"`{cmd}` on {meta['date']}: {meta['cpu']['model']}, {meta['cpu']['logical_cpus']} logical CPUs "
        f"(AVX2 {'yes' if meta['cpu']['avx2'] else 'no'}, AVX-512 {'yes' if meta['cpu']['avx512f'] else 'no'}); "
        f"jax {jv['jax']}, flax {jv['flax']}, optax {jv['optax']}, numpy {jv['numpy']} ({jv['numpy_blas']}), "
        f"torch {tv['torch']} ({tv['torch_threads']} threads). "
        f"{meta['rounds']} interleaved rounds; times are medians over rounds, ratios medians of per-round ratios. "
        + (f"Share of the machine's CPU time taken by other processes during each round: "
           f"{', '.join(f'{100 * x:.0f} %' for x in ot)}"
           + (f" ({meta['rounds_discarded_as_busy']} busier rounds were discarded and redone)"
              if meta["rounds_discarded_as_busy"] else "")
           + ". This machine's speed drifts by +-30-50 % from minute to minute: treat differences under "
             "about 25 % as noise unless the rounds were quiet." if ot else "") + "\n")
    L.append("Network: course_utils.models.MLPDenoiser (2 + 32 sinusoidal -> 128 -> 128 -> 128 -> 2, SiLU), "
             f"{meta['network']['forward_matmul_flops_per_point']:,} matmul FLOPs per point forward; training "
             "counts 3x that per point (forward, input gradients, weight gradients). DDPM with T = 200 linear "
             "betas 1e-4..0.02; Adam, lr 1e-3; Swiss roll data. PyTorch runs the identical network from the same "
             "initial weights, in its own process.\n")
    L.append("## Goals\n")
    for g in res["goals"].values():
        L.append(f"- **{'PASS' if g['pass'] else 'FAIL'}**: {g['goal']} -- {g['measured']}")
    L.append("")
    L.append("\"The faster PyTorch\" is, round by round, the faster of PyTorch with the default allocator and with "
             "`MALLOC_MMAP_THRESHOLD_=1073741824`.\n")

    L.append("## Training: steps per second\n")
    L.append("| batch | method | ms/step | steps/s | vs PyTorch | vs PyTorch (mmap) | GFLOP/s | % of peak | CPU/wall |")
    L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for b in BATCHES:
        rows = [("JAX `training.train` (compiled loop)", f"jax_train_scan/{b}", "scan"),
                ("JAX Python loop, jitted step", f"jax_train_loop/{b}", "loop"),
                ("PyTorch eager", f"torch_train/{b}", None),
                ("PyTorch eager, mmap threshold", f"torch_mmap_train/{b}", None)]
        for label, k, impl in rows:
            ms = t[k]["ms_per_unit"]
            vs = (f"{r[f'jax_train_{impl}_vs_torch/{b}']['median']:.2f}x | "
                  f"{r[f'jax_train_{impl}_vs_torch_mmap/{b}']['median']:.2f}x") if impl else " | "
            L.append(f"| {b} | {label} | {ms:.3f} | {1e3 / ms:,.0f} | {vs} | {a[k]['gflops']:.1f} "
                     f"| {100 * a[k]['fraction_of_peak']:.0f} % | {t[k]['cpu_per_wall']:.2f} |")
    L.append("")
    L.append("## Sampling: 5000 points, 200 DDPM steps\n")
    L.append("| method | ms | vs PyTorch | vs PyTorch (mmap) | GFLOP/s | % of peak | CPU/wall |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for label, k, impl in (("JAX `sampling.sample` (lax.scan)", "jax_sample_scan", "scan"),
                           ("JAX Python loop, jitted `ddpm_step`", "jax_sample_loop", "loop"),
                           ("PyTorch eager", "torch_sample", None),
                           ("PyTorch eager, mmap threshold", "torch_mmap_sample", None)):
        vs = (f"{r[f'jax_sample_{impl}_vs_torch']['median']:.2f}x | "
              f"{r[f'jax_sample_{impl}_vs_torch_mmap']['median']:.2f}x") if impl else " | "
        L.append(f"| {label} | {fmt_ms(t[k]['median_s'] * 1e3)} | {vs} | {a[k]['gflops']:.1f} "
                 f"| {100 * a[k]['fraction_of_peak']:.0f} % | {t[k]['cpu_per_wall']:.2f} |")
    L.append("")
    L.append("Both JAX samplers draw all the noise in one call first (as `sample` does) and give the same points.\n")
    cs = res["cold_start"]
    L.append("### The scanned sampler against the Python loop\n")
    L.append("First calls in fresh processes, one process per entry (seconds, and in brackets the share of the "
             "CPUs that other processes took meanwhile; the first call compiles; medians in bold):\n")
    L.append("| sampler | 1st call | 2nd call | 3rd call |")
    L.append("|---|---:|---:|---:|")
    for w, label in (("scan", "`sampling.sample` (lax.scan)"), ("loop", "Python loop, jitted `ddpm_step`")):
        runs = cs[w]
        col = lambda j: ", ".join(f"{c[j]['wall']:.2f} ({100 * (c[j]['others'] or 0):.0f} %)" for c in runs)
        L.append(f"| {label} | {col(0)} **{statistics.median(c[0]['wall'] for c in runs):.2f}** | {col(1)} "
                 f"| {col(2)} **{statistics.median(c[2]['wall'] for c in runs):.2f}** |")
    rsc = r["jax_sample_scan_vs_loop"]
    L.append("")
    L.append(f"In the interleaved rounds above (steady state, compiled) the scan takes "
             f"{rsc['median']:.2f}x the loop's time (rounds {rsc['min']:.2f}-{rsc['max']:.2f}x). "
             "A single first call costs about twice a steady-state one, for both samplers, and the scan runs "
             "on both cores (CPU/wall above): when another process holds one core it slows about 2x "
             "(see benchmarks/README.md).\n")
    L.append(f"## Matmul peak: {MATMUL_N} x {MATMUL_N} float32\n")
    L.append("| implementation | GFLOP/s | CPU/wall |")
    L.append("|---|---:|---:|")
    for label, k in (("JAX (XLA)", "matmul_jax"), (f"numpy ({jv['numpy_blas']})", "matmul_numpy"),
                     ("PyTorch", "matmul_torch"), ("PyTorch, mmap threshold", "matmul_torch_mmap")):
        L.append(f"| {label} | {res['matmul_gflops'][k]:.0f} | {t[k]['cpu_per_wall']:.2f} |")
    L.append("")
    L.append(f"Peak (the fastest of these, round by round; median over rounds): "
             f"**{res['matmul_gflops']['peak_median']:.0f} GFLOP/s**. \"% of peak\" above is the median over rounds "
             "of the run's GFLOP/s divided by that round's peak.\n")
    L.append("## Interpretation\n")
    b32, b1024 = t["torch_mmap_train/32"], t["jax_train_scan/1024"]
    L.append(
        f"- Small batches are dispatch-bound: PyTorch eager spends about "
        f"{min(t['torch_train/32']['ms_per_unit'], b32['ms_per_unit']):.1f} ms per step at batch 32 "
        f"({a['torch_train/32']['gflops']:.0f} GFLOP/s: it launches every operator of the forward pass, the "
        "backward pass and Adam's per-parameter updates from Python), where JAX's compiled loop runs the whole step, Adam included, without leaving "
        f"XLA ({t['jax_train_scan/32']['ms_per_unit'] * 1e3:.0f} us per step). The Python loop around a jitted "
        "step adds the dispatch of one call per step.")
    L.append(
        f"- At batch 1024 the work is matmuls, and both frameworks use fast kernels for them: the gap "
        f"narrows to {r['jax_train_scan_vs_best_torch/1024']['median']:.2f}x, and JAX's step runs at "
        f"{100 * a['jax_train_scan/1024']['fraction_of_peak']:.0f} % of the matmul peak "
        f"({b1024['ms_per_unit']:.2f} ms per step). What it loses (jax.profiler, benchmarks/README.md): "
        "the backward pass's input-gradient products (dY W^T) run at about 60 % of the forward products' speed "
        "in YNNPACK, the weight gradient of the 2-wide output layer goes to Eigen, and the non-matmul "
        "work (sin and cos of the time embedding, SiLU and its gradient) is about a quarter of the step.")
    L.append(
        f"- Sampling evaluates the network forward only, on 5000 points: "
        f"{100 * a['jax_sample_scan']['fraction_of_peak']:.0f} % of the peak. Its matmuls run close to the "
        "peak; SiLU (three layers of 5000 x 128) and the time embedding's sin and cos take about 30 % of "
        "each step, and PyTorch computes the same.")
    L.append("- Both frameworks use both cores; a time measured while another process held a core is about "
             "2x too slow, so read the per-round shares of other processes above before trusting a row.\n")
    L.append("## Correctness checks\n")
    bad = [k for k, c in res["checks"].items() if not c["ok"]]
    L.append(f"{len(res['checks']) - len(bad)}/{len(res['checks'])} passed: the scanned and the looped JAX samplers "
             "give the same points on the same noise; PyTorch's network gives JAX's noise prediction and loss on "
             "the same inputs and weights (so it is the same network); during the warm-up both frameworks' losses "
             "fall and end within 25 % of each other at every batch size; the sampled points have the data's mean "
             "and spread." + (f" FAILED: {', '.join(bad)}" if bad else "") + "\n")
    L.append("Raw numbers (every round, CPU times, page faults, per-round ratios): `" + path.stem + ".json`.")
    path.write_text("\n".join(L) + "\n")


if __name__ == "__main__":
    sys.exit(main())
