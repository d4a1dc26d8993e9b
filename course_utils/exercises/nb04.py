"""Exercises of notebook 04 (denoising in 2D)."""

import functools
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import embeddings, models, schedules, training, sampling
from ..grading import Build, CheckFailure, Exercise, Hint, built_outputs, jit_call, register
from .common import array as _array


def _embedding_case(rng):
    shape = [(), (7,), (3, 4)][rng.integers(3)]
    t = rng.integers(1, 1001, size=shape).astype(np.int32)
    return t, int(rng.choice([2, 8, 16, 32, 64]))


def _sin_cos(t, dim, frequencies, order=("sin", "cos")):
    angles = jnp.asarray(t, jnp.float32)[..., None] * frequencies
    parts = {"sin": jnp.sin(angles), "cos": jnp.cos(angles)}
    return jnp.concatenate([parts[order[0]], parts[order[1]]], axis=-1)


def _freq(dim, scale=None):
    half = dim // 2
    return jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (scale or half))


register(Exercise(
    name="sinusoidal_embedding",
    reference=embeddings.sinusoidal_embedding,
    make_case=_embedding_case,
    edge_cases=[(np.array([1, 2, 3], np.int32), 2), (np.array(0, np.int32), 8)],
    static_argnums=(1,),
    rtol=1e-4, atol=2e-4,  # sin of angles up to 1000 loses a few float32 digits
    hints=[
        Hint(lambda t, d: _sin_cos(t, d, _freq(d), ("cos", "sin")), "the sines come first, then the cosines."),
        Hint(lambda t, d: _sin_cos(t, d, 1 / _freq(d)), "the frequencies decrease: omega_i = 10000 ** (-i / (dim / 2)), with a minus sign."),
        Hint(lambda t, d: _sin_cos(t, d, _freq(d, scale=d)), "divide i by dim / 2 (the number of frequencies), not by dim."),
        Hint(lambda t, d: jnp.stack([jnp.sin(jnp.asarray(t, jnp.float32)[..., None] * _freq(d)),
                                     jnp.cos(jnp.asarray(t, jnp.float32)[..., None] * _freq(d))], axis=-1).reshape(jnp.shape(t) + (d,)),
             "put all the sines first and all the cosines after (concatenate), not interleaved."),
    ],
))


@functools.lru_cache(maxsize=None)
def _reference_model(seed):
    """A small MLPDenoiser with fixed random weights (three of them, made once: creating models is slow)."""
    return models.MLPDenoiser(dim=2, hidden=32, depth=2, time_dim=8, rngs=nnx.Rngs(int(seed) % 3))


@functools.lru_cache(maxsize=None)
def _reference_image_model(seed):
    return models.WidenNarrowMLP(widths=(16, 32), time_dim=8, rngs=nnx.Rngs(int(seed) % 3))


def _loss_case(rng):
    """A batch of 2D points, or (one case in three) a batch of 3x3 images with an image model."""
    # Few distinct shapes, so that the compiled function is reused between cases.
    T = int(rng.choice([10, 200]))
    betas = np.linspace(1e-3, rng.uniform(0.05, 0.3), T).astype(np.float32)
    alpha_bars = np.cumprod(1 - betas.astype(np.float64)).astype(np.float32)
    n = 8
    if rng.uniform() < 1 / 3:
        model, shape = _reference_image_model(int(rng.integers(3))), (n, 3, 3)
    else:
        model, shape = _reference_model(int(rng.integers(3))), (n, 2)
    return model, _array(rng, shape), rng.integers(1, T + 1, size=n).astype(np.int32), _array(rng, shape), alpha_bars


def _loss_with(make_x_t, target="noise", reduce=jnp.mean):
    def loss(model, x0, t, noise, alpha_bars):
        x_t = make_x_t(x0, t, noise, alpha_bars)
        goal = noise if target == "noise" else x0
        return reduce((goal - model(x_t, t)) ** 2)
    return loss


def _x_t(x0, t, noise, ab, shift=1, sqrt=True):
    a = ab[jnp.clip(t - shift, 0, ab.shape[0] - 1)].reshape((-1,) + (1,) * (x0.ndim - 1))
    return (jnp.sqrt(a) * x0 + jnp.sqrt(1 - a) * noise) if sqrt else (a * x0 + (1 - a) * noise)


register(Exercise(
    name="ddpm_loss",
    reference=training.ddpm_loss,
    make_case=_loss_case,
    module_argnums=(0,),
    rtol=1e-4, atol=1e-6,
    hints=[
        Hint(_loss_with(lambda x0, t, e, ab: _x_t(x0, t, e, ab, shift=0)), "off by one: alpha_bar_t is alpha_bars[t - 1] (time steps count from 1)."),
        Hint(_loss_with(lambda x0, t, e, ab: _x_t(x0, t, e, ab, sqrt=False)), "x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise: the square roots are missing."),
        Hint(_loss_with(lambda x0, t, e, ab: _x_t(x0, t, e, ab), target="x0"), "the network predicts the noise: compare its output with `noise`, not with x0."),
        Hint(_loss_with(lambda x0, t, e, ab: _x_t(x0, t, e, ab), reduce=jnp.sum), "average the squared errors (jnp.mean) instead of summing them."),
    ],
))


def _step_case(rng):
    T = int(rng.choice([10, 200]))
    schedule = schedules.make_schedule(np.linspace(1e-3, rng.uniform(0.05, 0.3), T).astype(np.float32))
    sigmas = np.asarray(jnp.sqrt(schedule.posterior_variances if rng.uniform() < 0.5 else schedule.betas))
    n = 8
    return (_reference_model(int(rng.integers(3))), _array(rng, (n, 2)), np.int32(rng.integers(1, T + 1)),
            _array(rng, (n, 2)), np.asarray(schedule.betas), np.asarray(schedule.alpha_bars), sigmas)


def _step_with(alpha=lambda b, ab: 1 - b, shift=1, noise_scale=lambda s: s, sign=-1):
    def step(model, x, t, z, betas, alpha_bars, sigmas):
        i = jnp.clip(t - shift, 0, betas.shape[0] - 1)
        eps = model(x, jnp.full((x.shape[0],), t))
        b, ab = betas[i], alpha_bars[i]
        return (x + sign * b / jnp.sqrt(1 - ab) * eps) / jnp.sqrt(alpha(b, ab)) + noise_scale(sigmas[i]) * z
    return step


register(Exercise(
    name="ddpm_step",
    reference=sampling.ddpm_step,
    make_case=_step_case,
    module_argnums=(0,),
    rtol=1e-4, atol=1e-5,
    hints=[
        Hint(_step_with(shift=0), "off by one: the coefficients of step t are betas[t - 1], alpha_bars[t - 1], sigmas[t - 1]."),
        Hint(_step_with(alpha=lambda b, ab: ab), "divide by sqrt(alpha_t) = sqrt(1 - beta_t), not sqrt(alpha_bar_t)."),
        Hint(_step_with(noise_scale=lambda s: s**2), "sigmas holds standard deviations: add sigma_t * z, not sigma_t ** 2 * z."),
        Hint(_step_with(noise_scale=lambda s: 0.0 * s), "the noise term sigma_t * z is missing."),
        Hint(_step_with(sign=+1), "subtract the predicted noise from x_t, do not add it."),
    ],
))


def _apply(model, x, t):
    return model(x, t)


def _denoiser_trials(edge_cases):
    """For dim = 2 and 3: a batch, the same batch at other steps, and moved points (to see that both are used)."""
    trials = []
    for dim in (2, 3):
        x = np.asarray(np.random.default_rng(dim).standard_normal((5, dim)), np.float32)
        t = np.array([1, 10, 50, 100, 200], np.int32)
        trials.append(Build(kwargs=(("dim", dim),), inputs=((x, t), (x, t + 37), (x + 1.0, t)), forward=_apply))
    return trials


def _judge_denoiser(ex, trials, results):
    """``MLPDenoiser(dim, rngs=...)``: maps (N, dim) points and (N,) steps to (N, dim), uses both, and is trainable."""
    problems = []
    n_params = 0
    for trial, record in zip(trials, results):
        dim = dict(trial.kwargs)["dim"]
        out, other_t, other_x = (np.asarray(o) for o in built_outputs(ex, trial, record, ["x", "t"]))
        if out.shape != (5, dim):
            problems.append(f"with dim = {dim}, a batch x of shape (5, {dim}) must give shape (5, {dim}), got {out.shape}")
            continue
        if not np.issubdtype(out.dtype, np.floating) or not np.all(np.isfinite(out)):
            problems.append("the output contains NaN or infinite values")
            continue
        if other_t.shape == out.shape and np.allclose(other_t, out, atol=1e-6):
            problems.append("the output does not change with t: feed the time embedding into the network")
        if other_x.shape == out.shape and np.allclose(other_x, out, atol=1e-6):
            problems.append("the output does not change with x: feed the noisy point into the network")
        n_params = record.get("n_params") if isinstance(record.get("n_params"), int) else 0
        if n_params < 1000:
            problems.append(f"the network has only {n_params} parameters: use hidden layers (e.g. 3 of width 128)")
    if problems:
        raise CheckFailure(f"{ex.name}: " + "\n".join(dict.fromkeys(problems)))
    return f"maps (N, dim) points and (N,) time steps to (N, dim) noise predictions, using both ({n_params} parameters for dim = 3)."


register(Exercise(name="MLPDenoiser", reference=None, trials=_denoiser_trials, judge=_judge_denoiser,
                  reference_class=models.MLPDenoiser))
