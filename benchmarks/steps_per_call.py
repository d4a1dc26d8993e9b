#!/usr/bin/env python
"""Benchmark: notebook 06's U-Net training, steps per second against the number of steps per compiled call.

    python benchmarks/steps_per_call.py                          # this machine's default backend
    python benchmarks/steps_per_call.py --config gpu --batch 128 --chunks 1 100 200
    python benchmarks/steps_per_call.py --profile /tmp/trace     # also a jax.profiler trace of one 100-step call

It trains course_utils' U-Net with course_utils.guidance.train_conditional (what
mnist.train_unet runs) on random 28 x 28 images, for each chunk size: one warm-up call of
``chunk`` steps (compilation), then ``--steps`` steps timed, for ``--rounds`` rounds in a
rotated order; reports the median steps/s per chunk size and its ratio to one step per call.
The goal (issue 13): on a GPU or TPU, 100 steps per call at least 4.5x one step per call,
which course_utils.config.steps_per_call makes the default there. Writes
benchmarks/results/steps_per_call_<backend>_<config>.{json,md}.
"""

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per chunk size and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from course_utils import guidance, mnist, schedules

    data = jax.random.uniform(jax.random.key(0), (4096, 28, 28, 1)) * 2 - 1
    labels = jnp.arange(4096) % 10
    alpha_bars = schedules.make_schedule(mnist.make_betas()).alpha_bars
    model = mnist.new_model(args.config)
    optimizers = {}

    def run(chunk, steps):
        opt = optimizers.get(chunk)
        if opt is None:
            opt = optimizers[chunk] = nnx.Optimizer(model, mnist.optimizer_for(10_000), wrt=nnx.Param)
        start = time.perf_counter()
        losses = guidance.train_conditional(model, data, labels, alpha_bars, steps=steps, key=jax.random.key(steps),
                                            batch_size=args.batch, optimizer=opt, progress=False, chunk=chunk)
        jax.block_until_ready(nnx.state(model))
        assert np.all(np.isfinite(losses))
        return time.perf_counter() - start

    for chunk in args.chunks:
        run(chunk, chunk)                                   # compile
    per_chunk = {chunk: [] for chunk in args.chunks}
    for r in range(args.rounds):
        order = args.chunks[r % len(args.chunks):] + args.chunks[:r % len(args.chunks)]
        for chunk in order:
            steps = max(chunk, args.steps // chunk * chunk)
            per_chunk[chunk].append(steps / run(chunk, steps))
    if args.profile:
        with jax.profiler.trace(str(args.profile)):
            run(100, 100)
    device = jax.devices()[0]
    base = statistics.median(per_chunk[args.chunks[0]])
    result = {
        "date": datetime.date.today().isoformat(), "backend": jax.default_backend(), "device": str(device.device_kind),
        "jax": jax.__version__, "config": args.config, "batch": args.batch, "rounds": args.rounds,
        "steps_per_second": {str(c): {"median": statistics.median(v), "min": min(v), "max": max(v)} for c, v in per_chunk.items()},
        "ratio_to_first": {str(c): statistics.median(v) / base for c, v in per_chunk.items()},
    }
    lines = [f"# U-Net training: steps per compiled call ({result['backend']}, {result['device']}, {result['date']})", "",
             f"jax {result['jax']}, {args.config} configuration, batch {args.batch}, {args.rounds} rounds "
             f"(median, min-max over rounds)", "",
             "| steps per call | steps/s | ms per step | vs. {} per call |".format(args.chunks[0]), "|---|---|---|---|"]
    for c in args.chunks:
        s = result["steps_per_second"][str(c)]
        lines.append(f"| {c} | {s['median']:.1f} ({s['min']:.1f}-{s['max']:.1f}) | {1000 / s['median']:.1f} | "
                     f"{result['ratio_to_first'][str(c)]:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_save:
        stem = RESULTS_DIR / f"steps_per_call_{result['backend']}_{args.config}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        stem.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
