#!/usr/bin/env python
"""Benchmark: the stars of notebook 04's optional section, trained and measured on the CPU.

    python benchmarks/point_sets.py             # full run: 1 training seed (--seeds N for more), 8 sampling keys
    python benchmarks/point_sets.py --quick     # smoke run (300 steps, 1 seed, 2 keys), writes *_quick.*

What the section runs, with its configuration (course_utils.point_sets: T, BETAS, TRAIN_STEPS,
BATCH_SIZE, N_TRAIN, LEARNING_RATE, N_POINTS, ARMS): star point clouds of 3, 5 and 7 arms
(random radius and rotation), a SetDenoiser (each point sees a mean-pooled embedding of its noisy
set and the class), trained with course_utils.guidance.train_conditional, sampled with DDPM
(sigma^2 = beta_tilde). For every training seed it records

  - the training time (wall clock, compilation included: what a student waits), with the machine's
    load average and the share of the CPU time that other processes took meanwhile
    (benchmarks/machine.CpuLoad);
  - the sampling time of one key (48 stars of 64 points, T steps);
  - per class, over the sampling keys (16 stars per class and key): the fraction of samples whose
    recovered number of arms is the asked-for one, and the aligned energy distance to real stars,
    with the floor (real against real) and the ceiling (noise against real), means and standard
    deviations over keys.

Writes benchmarks/results/point_sets.{json,md}.
"""

import datetime
import os
import platform
import sys
import time
from pathlib import Path

from machine import CpuLoad, cpu_info, save_results

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def timed(fn):
    """(result, wall seconds, load average over the last minute at the end, share of CPU time of others)."""
    import jax

    with CpuLoad() as load:
        start = time.perf_counter()
        result = fn()
        jax.block_until_ready(result)
        seconds = time.perf_counter() - start
    return result, seconds, os.getloadavg()[0], load.others


def run(seeds, n_keys, steps):
    import jax
    import numpy as np
    from flax import nnx

    from course_utils import point_sets as ps

    schedule = ps.star_schedule()
    sets, labels = ps.star_dataset(jax.random.key(0), ps.N_TRAIN)
    runs = []
    for seed in range(seeds):
        model = ps.SetDenoiser(rngs=nnx.Rngs(seed))
        opt = nnx.Optimizer(model, ps.optimizer(steps), wrt=nnx.Param)
        losses, first, load_first, others_first = timed(lambda: ps.train(
            model, sets, labels, schedule.alpha_bars, steps=steps, key=jax.random.key(100 + seed),
            batch_size=ps.BATCH_SIZE, optimizer=opt, progress=False))
        asked = jax.numpy.repeat(jax.numpy.arange(len(ps.ARMS)), 16)
        _, sample_first, _, _ = timed(lambda: ps.sample(model, jax.random.key(7), asked, schedule))
        _, sample_again, _, _ = timed(lambda: ps.sample(model, jax.random.key(8), asked, schedule))
        report, quality_seconds, load_quality, _ = timed(lambda: ps.star_quality(
            model, schedule, jax.random.key(300 + seed), n_per_class=16, n_keys=n_keys))
        runs.append(dict(
            seed=seed, steps=steps,
            train_seconds=first, train_load=load_first, train_others=others_first,
            loss_first100=float(np.mean(losses[:100])), loss_last100=float(np.mean(losses[-100:])),
            sample_first_seconds=sample_first, sample_again_seconds=sample_again,
            quality_seconds=quality_seconds, quality_load=load_quality,
            **{name: report[name].tolist() for name in ("accuracy", "energy", "floor", "noise")},
            lines=report["lines"]))
        print(f"seed {seed}: trained {steps} steps in {first:.1f} s (load {load_first:.1f})",
              *report["lines"], sep="\n  ", flush=True)
    return runs


def write_markdown(res):
    def markdown(path):
        import numpy as np

        arms = res["config"]["ARMS"]
        c = res["config"]
        L = ["# Stars: a set-conditioned diffusion model on the CPU\n",
             f"`python benchmarks/point_sets.py{' --quick' if res['quick'] else ''}` on {res['date']}: "
             f"{res['cpu']['model']}, {res['cpu']['logical_cpus']} logical CPUs; jax {res['versions']['jax']}, "
             f"flax {res['versions']['flax']}, Python {res['versions']['python']}. Load average (1 min) is "
             "given next to every time: this machine was shared with other sessions, so the times are upper "
             "bounds for an idle 2-core machine.\n",
             f"Configuration (course_utils.point_sets): {len(arms)} classes of {arms} arms, {c['N_TRAIN']} training "
             f"stars per class of {c['N_POINTS']} points, T = {c['T']} linear betas {c['BETAS'][0]}..{c['BETAS'][1]}, "
             f"{res['runs'][0]['steps']} Adam steps of {c['BATCH_SIZE']} stars, learning rate {c['LEARNING_RATE']} "
             "with cosine decay; DDPM sampling with sigma^2 = beta_tilde.\n",
             "## Time\n",
             "| seed | train (with compilation) | sample 48 stars (1st call, again) | sample + measure all keys |",
             "|---:|---:|---:|---:|"]
        for r in res["runs"]:
            L.append(f"| {r['seed']} | {r['train_seconds']:.1f} s (load {r['train_load']:.1f}, others "
                     f"{100 * (r['train_others'] or 0):.0f} %) | {r['sample_first_seconds']:.2f} s, "
                     f"{r['sample_again_seconds']:.2f} s | {r['quality_seconds']:.1f} s (load {r['quality_load']:.1f}) |")
        L += ["", "## Quality, per class\n",
              f"Means +- standard deviations over {res['n_keys']} sampling keys (16 stars per class and key). "
              "Accuracy: the fraction of samples whose dominant angular mode is the asked-for number of arms "
              "(real stars: 1.000). Energy distance: the aligned points of the 16 samples of a class against those "
              "of 16 fresh real stars of the class; floor: real against real; ceiling: standard normal noise "
              "against real.\n",
              "| seed | arms | accuracy | energy distance | floor | noise | final loss |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["runs"]:
            for k, a in enumerate(arms):
                col = lambda name: np.asarray(r[name])[:, k]  # noqa: E731
                ms = lambda x, f=".4f": f"{x.mean():{f}} +- {x.std(ddof=1) if len(x) > 1 else 0:{f}}"  # noqa: E731
                L.append(f"| {r['seed']} | {a} | {ms(col('accuracy'), '.3f')} | {ms(col('energy'))} | {ms(col('floor'))} | "
                         f"{ms(col('noise'))} | {r['loss_last100']:.4f} |")
        L += ["", "Raw numbers: `" + path.stem + ".json`."]
        path.write_text("\n".join(L) + "\n")
    return markdown


def main():
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="300 steps, 1 seed, 2 sampling keys; writes *_quick.*")
    p.add_argument("--seeds", type=int, default=None, help="training seeds (default 1)")
    p.add_argument("--keys", type=int, default=None, help="sampling keys per seed (default 8, 2 with --quick)")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = p.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    import flax
    import jax

    from course_utils import point_sets as ps

    seeds = args.seeds or 1
    n_keys = args.keys or (2 if args.quick else 8)
    steps = 300 if args.quick else ps.TRAIN_STEPS
    runs = run(seeds, n_keys, steps)
    res = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), quick=args.quick,
               cpu=cpu_info(), n_keys=n_keys,
               versions=dict(jax=jax.__version__, flax=flax.__version__, python=platform.python_version()),
               config={name: getattr(ps, name) for name in
                       ("ARMS", "N_POINTS", "N_TRAIN", "T", "BETAS", "TRAIN_STEPS", "BATCH_SIZE", "LEARNING_RATE")},
               runs=runs)
    return save_results(args.out_dir, "point_sets_quick" if args.quick else "point_sets", res, write_markdown(res))


if __name__ == "__main__":
    sys.exit(main())
