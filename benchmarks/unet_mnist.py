#!/usr/bin/env python
"""Benchmark: notebook 06's MNIST U-Net, a train step and a guided sampling step, JAX against PyTorch eager on the CPU.

    python benchmarks/unet_mnist.py               # full run (7 rounds), writes the recorded results
    python benchmarks/unet_mnist.py --quick       # smoke run (2 rounds), writes unet_mnist_quick.*
    python benchmarks/unet_mnist.py --quiet 900   # redo rounds disturbed by other processes

The network is course_utils.unet.UNet with CPU_CONFIG (channels 16/32/64/64,
four residual blocks per path, self-attention at 7 x 7, time and class
embeddings); PyTorch runs an identical network (same layers, same parameter
count, checked) in eager mode. Timed, on the same random 28 x 28 images:

  train/B   one Adam step on a batch of B (B = 64, 128): the loss of
            course_utils.guidance.conditional_loss;
  sample    one guided sampling step for 100 images (two forward passes,
            conditional and unconditional, as in classifier-free guidance).

JAX runs in several worker processes, one per setting:

  jax       the course's code on one CPU device: the step compiled by
            course_utils.config.jit (XLA's own convolutions instead of
            YNNPACK's) with course_utils.unet.GroupNorm;
  jax_plain the same network as plain flax code: jax.jit with XLA's default
            options and flax.nnx.GroupNorm;
  jax_2dev  the course's code on the CPU split into two devices (one per
            core), data parallel (what notebook 06 and the training script do);
  jax_loop  the course's step run twice inside one compiled loop (lax.fori_loop),
            as course_utils.training runs small models: reported per step.

PyTorch runs with its default allocator and with MALLOC_MMAP_THRESHOLD_ set
(see benchmarks/README.md). The machine's matmul peak (2048 x 2048 float32 in
JAX) is measured in the same rounds, and each step's achieved GFLOP/s (XLA's
count of the step's FLOPs, convolutions included) is reported as a fraction of it.

Each worker stays alive for the whole run; every round times each call once,
in a rotated order; results are medians over rounds, and ratios medians of
per-round ratios. Writes benchmarks/results/unet_mnist.{json,md}.
"""

import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from machine import benchmark_parser, Worker, cpu_info, fmt_ms, median_ratio, run_rounds, save_results, serve

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BATCHES = (64, 128)
N_SAMPLE = 100
T = 200
MATMUL_N = 2048
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "1073741824"}
JAX_SETTINGS = {
    "jax": dict(devices=1, plain=False, loop=False),
    "jax_plain": dict(devices=1, plain=True, loop=False),
    "jax_2dev": dict(devices=2, plain=False, loop=False),
    "jax_loop": dict(devices=1, plain=False, loop=True),
}


# --------------------------------------------------------------------------- JAX worker

def jax_worker(cfg):
    import jax

    if cfg["devices"] > 1:
        jax.config.update("jax_num_cpu_devices", cfg["devices"])
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from course_utils import config, mnist, unet
    from course_utils.guidance import conditional_loss, guided_eps
    from course_utils.training import data_parallel_shardings

    if cfg["plain"]:
        unet.GroupNorm = nnx.GroupNorm
    jit = jax.jit if cfg["plain"] else (lambda f: config.jit(f).jitted())
    schedule = mnist.make_schedule(mnist.make_betas("cosine"))
    model = mnist.new_model("cpu")
    n_params = sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    rng = np.random.default_rng(0)
    methods, flops = {}, {}

    def one_step(state, x0, t, y, noise):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(conditional_loss)(model, x0, t, noise, schedule.alpha_bars, y)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    def looped(state, x0, t, y, noise):
        return jax.lax.fori_loop(0, 2, lambda i, c: one_step(c[0], x0, t, y, noise), (state, jnp.float32(0)))

    for batch in BATCHES:
        x0 = jnp.asarray(rng.uniform(-1, 1, (batch, 28, 28, 1)), jnp.float32)
        noise = jnp.asarray(rng.normal(size=x0.shape), jnp.float32)
        t = jnp.asarray(rng.integers(1, T + 1, batch), jnp.int32)
        y = jnp.asarray(rng.integers(-1, 10, batch), jnp.int32)
        sharding, replicated = data_parallel_shardings(batch)
        if sharding is not None:
            x0, noise, t, y = jax.device_put((x0, noise, t, y), sharding)
            state = jax.device_put(state, replicated)
        step = jit(looped if cfg["loop"] else one_step)
        flops[f"train/{batch}"] = step.lower(state, x0, t, y, noise).compile().cost_analysis()["flops"]
        args = (state, x0, t, y, noise)
        step(*args)  # compile and warm up
        methods[f"train/{batch}"] = ((lambda step=step, args=args: step(*args)[1]), 2 if cfg["loop"] else 1)

    x = jnp.asarray(rng.normal(size=(N_SAMPLE, 28, 28, 1)), jnp.float32)
    labels = jnp.asarray(np.arange(N_SAMPLE) % 10, jnp.int32)
    model_graph, model_state = nnx.split(model)

    def sample_step(model_state, x, labels):
        return guided_eps(nnx.merge(model_graph, model_state), x, jnp.full((N_SAMPLE,), 100), labels, 2.0)

    sample_step = jit(sample_step)

    flops["sample"] = sample_step.lower(model_state, x, labels).compile().cost_analysis()["flops"]
    sample_step(model_state, x, labels)
    methods["sample"] = (lambda: sample_step(model_state, x, labels), 1)

    a = jnp.asarray(rng.normal(size=(MATMUL_N, MATMUL_N)), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    matmul(a)
    methods["matmul"] = (lambda: matmul(a), 1)
    flops["matmul"] = 2.0 * MATMUL_N ** 3
    info = dict(parameters=n_params, flops=flops, devices=len(jax.devices()), jax=jax.__version__)
    return methods, info, jax.block_until_ready


# --------------------------------------------------------------------------- PyTorch worker

def torch_unet():
    """The same network as course_utils.unet.UNet(CPU_CONFIG), in PyTorch (channels first)."""
    import math

    import torch
    import torch.nn.functional as F
    from torch import nn

    def groups(c):
        return 8 if c % 8 == 0 else 1

    class Residual(nn.Module):
        def __init__(self, cin, cout, e):
            super().__init__()
            self.n1, self.c1 = nn.GroupNorm(groups(cin), cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.p = nn.Linear(e, cout)
            self.n2, self.c2 = nn.GroupNorm(groups(cout), cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

        def forward(self, x, e):
            h = self.c1(F.silu(self.n1(x))) + self.p(F.silu(e))[:, :, None, None]
            h = self.c2(F.silu(self.n2(h)))
            return h + (x if self.skip is None else self.skip(x))

    class Attention(nn.Module):
        def __init__(self, c, heads=4):
            super().__init__()
            self.h, self.n, self.qkv, self.o = heads, nn.GroupNorm(groups(c), c), nn.Linear(c, 3 * c), nn.Linear(c, c)

        def forward(self, x):
            n, c, h, w = x.shape
            d = c // self.h
            tokens = self.n(x).flatten(2).transpose(1, 2)
            q, k, v = self.qkv(tokens).reshape(n, h * w, 3, self.h, d).permute(2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1) @ v
            return x + self.o(a.transpose(1, 2).reshape(n, h * w, c)).transpose(1, 2).reshape(n, c, h, w)

    class UNet(nn.Module):
        def __init__(self, c=(16, 32, 64, 64), att=(False, False, True, True), e=128, classes=10):
            super().__init__()
            self.c, self.classes = c, classes
            self.time_in, self.time_out = nn.Linear(c[0], e), nn.Linear(e, e)
            self.label = nn.Linear(classes + 1, e, bias=False)
            self.conv_in = nn.Conv2d(1, c[0], 3, padding=1)
            ins, above = (c[0],) + c[:-1], c[1:] + (c[3],)
            self.down = nn.ModuleList([Residual(ins[i], c[i], e) for i in range(4)])
            self.down_att = nn.ModuleList([Attention(c[i]) if att[i] else nn.Identity() for i in range(4)])
            self.m1, self.ma, self.m2 = Residual(c[3], c[3], e), Attention(c[3]), Residual(c[3], c[3], e)
            self.up = nn.ModuleList([Residual(above[i] + c[i], c[i], e) for i in range(4)])
            self.up_att = nn.ModuleList([Attention(c[i]) if att[i] else nn.Identity() for i in range(4)])
            self.norm_out, self.conv_out = nn.GroupNorm(groups(c[0]), c[0]), nn.Conv2d(c[0], 1, 3, padding=1)

        def forward(self, x, t, y):
            half = self.c[0] // 2
            angles = t.float()[:, None] * torch.exp(-math.log(10000.0) * torch.arange(half) / half)
            e = self.time_out(F.silu(self.time_in(torch.cat([angles.sin(), angles.cos()], -1))))
            e = e + self.label(F.one_hot(torch.where(y < 0, self.classes, y), self.classes + 1).float())
            h, skips = self.conv_in(x), []
            for i in range(4):
                h = self.down_att[i](self.down[i](h, e))
                skips.append(h)
                h = F.avg_pool2d(h, 2) if i < 2 else h
            h = self.m2(self.ma(self.m1(h, e)), e)
            for i in reversed(range(4)):
                h = F.interpolate(h, scale_factor=2, mode="nearest") if i < 2 else h
                h = self.up_att[i](self.up[i](torch.cat([h, skips[i]], 1), e))
            return self.conv_out(F.silu(self.norm_out(h)))

    return UNet()


def torch_worker(cfg):
    import numpy as np
    import torch

    torch.manual_seed(0)
    model = torch_unet()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    rng = np.random.default_rng(0)
    methods = {}
    for batch in BATCHES:
        x0 = torch.tensor(rng.uniform(-1, 1, (batch, 1, 28, 28)), dtype=torch.float32)
        noise = torch.randn_like(x0)
        t = torch.tensor(rng.integers(1, T + 1, batch))
        y = torch.tensor(rng.integers(-1, 10, batch))
        ab = torch.rand(batch)[:, None, None, None]

        def step(x0=x0, noise=noise, t=t, y=y, ab=ab):
            optimizer.zero_grad()
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
            loss = ((model(x_t, t, y) - noise) ** 2).mean()
            loss.backward()
            optimizer.step()
            return loss

        step()
        methods[f"train/{batch}"] = (step, 1)
    x = torch.randn(N_SAMPLE, 1, 28, 28)
    labels = torch.arange(N_SAMPLE) % 10
    steps_t = torch.full((N_SAMPLE,), 100)

    def sample():
        with torch.no_grad():
            return 3.0 * model(x, steps_t, labels) - 2.0 * model(x, steps_t, torch.full_like(labels, -1))

    sample()
    a = torch.randn(MATMUL_N, MATMUL_N)
    methods["sample"] = (sample, 1)
    methods["matmul"] = (lambda: a @ a, 1)
    info = dict(parameters=sum(p.numel() for p in model.parameters()), threads=torch.get_num_threads(),
                torch=torch.__version__)
    return methods, info, lambda result: None


# --------------------------------------------------------------------------- coordinator

def main(argv=None):
    p = benchmark_parser(__doc__, RESULTS_DIR, "2 rounds (smoke run; writes *_quick files)", None)
    args = p.parse_args(argv)
    if args.worker:
        if args.worker.startswith("torch"):
            return serve(lambda: torch_worker({}))
        return serve(lambda: jax_worker(JAX_SETTINGS[args.worker]))

    rounds = args.rounds or (2 if args.quick else 7)
    cmd = " ".join(["python", "benchmarks/unet_mnist.py", *(sys.argv[1:] if argv is None else argv)])
    print(f"MNIST U-Net benchmark, JAX vs PyTorch eager: {rounds} rounds", flush=True)
    t_start, load_at_start = time.perf_counter(), os.getloadavg()
    workers = {}
    try:
        for name in JAX_SETTINGS:
            workers[name] = Worker(__file__, name, name, {})
            workers[name].wait_ready()
            print(f"  {name} ready ({workers[name].info['setup_seconds']:.0f} s)", flush=True)
        workers["torch"] = Worker(__file__, "torch", "torch", {})
        workers["torch"].wait_ready()
        workers["torch_mmap"] = Worker(__file__, "torch", "torch_mmap", {}, MMAP_ENV)
        workers["torch_mmap"].wait_ready()
        counts = {w.info["parameters"] for w in workers.values()}
        if len(counts) != 1:
            print(f"the networks differ: parameter counts {counts}", file=sys.stderr)
            return 1
        items = [(f"{w}:{m}", w, m) for w in workers for m in workers[w].info["methods"]
                 if not (m == "sample" and w == "jax_loop")]

        def run_round(i):
            k = ((i % rounds) * len(items)) // rounds  # rotate the order from round to round
            walls, others = {}, []
            for key, w, m in items[k:] + items[:k]:
                out = workers[w].time(m)
                walls[key] = out["wall"] / out["units"]
                others.append(out["others"] or 0.0)
            busy = statistics.mean(others)
            print(f"  round {i + 1}: other processes {100 * busy:.0f} %; jax train/128 "
                  f"{1e3 * walls['jax:train/128']:.0f} ms, torch {1e3 * walls['torch:train/128']:.0f} ms", flush=True)
            return dict(wall=walls, others=busy)

        results, busy_rounds = run_rounds(run_round, rounds, args.quiet, lambda rd: rd["others"])
        discarded = len(busy_rounds)
    finally:
        for w in workers.values():
            w.close()

    wall = {key: [r["wall"][key] for r in results] for key, *_ in items}
    median_ms = {key: 1e3 * statistics.median(v) for key, v in wall.items()}
    flops = workers["jax"].info["flops"]
    peak = {key: flops["matmul"] / statistics.median(wall[key]) / 1e9 for key in wall if key.endswith(":matmul")}
    best_peak = max(peak.values())
    ratios = {}
    for kind in [f"train/{b}" for b in BATCHES] + ["sample"]:
        for torch_name in ("torch", "torch_mmap"):
            for jax_name in JAX_SETTINGS:
                key = f"{jax_name}:{kind}"
                if key in wall:
                    ratios[f"{torch_name}/{key}"] = median_ratio(wall, f"{torch_name}:{kind}", key)
    gflops = {key: flops[key.split(":")[1]] / statistics.median(v) / 1e9 for key, v in wall.items()
              if not key.endswith(":matmul")}
    res = dict(
        meta=dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), command=cmd,
                  python=platform.python_version(), cpu=cpu_info(), load_at_start=load_at_start,
                  seconds=round(time.perf_counter() - t_start), rounds=rounds, rounds_discarded_as_busy=discarded,
                  others_per_round=[r["others"] for r in results],
                  workers={name: w.info for name, w in workers.items()}),
        median_ms=median_ms, matmul_gflops=peak, step_gflops=gflops,
        fraction_of_peak={key: g / best_peak for key, g in gflops.items()},
        speedup_over_torch={key: r["median"] for key, r in ratios.items()},
    )
    stem = "unet_mnist_quick" if args.quick else "unet_mnist"
    return save_results(args.out_dir, stem, res, lambda path: write_markdown(path, res))


def write_markdown(path, res):
    m, ms, sp, frac = res["meta"], res["median_ms"], res["speedup_over_torch"], res["fraction_of_peak"]
    lines = ["# MNIST U-Net: JAX vs PyTorch eager on the CPU\n",
             f"`{m['command']}` on {m['date']}: {m['cpu']['model']}, {m['cpu']['logical_cpus']} logical CPUs, "
             f"Python {m['python']}, {m['rounds']} rounds ({m['rounds_discarded_as_busy']} redone as disturbed); "
             f"other processes took {', '.join(f'{100 * o:.0f}' for o in m['others_per_round'])} % of the CPUs "
             f"in the rounds; load average at the start {m['load_at_start'][0]:.1f}.\n",
             f"Network: course_utils.unet.UNet(CPU_CONFIG), {m['workers']['jax']['parameters']:,} parameters "
             "(the PyTorch copy has the same count).\n",
             "| call | " + " | ".join(["jax", "jax_plain", "jax_2dev", "jax_loop", "torch", "torch_mmap"]) + " |",
             "|---|" + "---|" * 6]
    for kind in [f"train/{b}" for b in BATCHES] + ["sample"]:
        cells = [f"{fmt_ms(ms[f'{w}:{kind}'])} ms" if f"{w}:{kind}" in ms else "-"
                 for w in ("jax", "jax_plain", "jax_2dev", "jax_loop", "torch", "torch_mmap")]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    lines += ["", "Speed-up over PyTorch eager (median of per-round time ratios; > 1: JAX faster):", "",
              "| call | jax | jax_plain | jax_2dev | jax_loop |", "|---|---|---|---|---|"]
    for kind in [f"train/{b}" for b in BATCHES] + ["sample"]:
        for torch_name in ("torch", "torch_mmap"):
            cells = [f"{sp[f'{torch_name}/{w}:{kind}']:.2f}x" if f"{torch_name}/{w}:{kind}" in sp else "-"
                     for w in ("jax", "jax_plain", "jax_2dev", "jax_loop")]
            lines.append(f"| {kind} vs {torch_name} | " + " | ".join(cells) + " |")
    lines += ["", "Matmul peak (2048 x 2048 float32): " + ", ".join(
        f"{k.split(':')[0]} {v:.0f} GFLOP/s" for k, v in res["matmul_gflops"].items()) + ".", "",
        "Achieved, as a fraction of the best matmul peak (XLA's FLOP count of the step): " + ", ".join(
            f"{k} {100 * v:.0f} %" for k, v in frac.items()) + "."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
