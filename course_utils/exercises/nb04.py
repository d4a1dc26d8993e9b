"""Exercises of notebook 04 (denoising in 2D)."""

import functools
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import embeddings, models, schedules, training, sampling
from ..grading import (Build, CheckFailure, Exercise, Hint, built_outputs, compare, dependency_lines, describe_value, jit_call,
                       register)
from . import parts
from .common import array as _array, kept_trajectory
from .kinds import StepSetup, train_step_exercise


def _embedding_case(rng):
    if rng.uniform() < 0.4:
        # Small steps and dim = 4 (frequencies 1 and 0.01): the angles stay small, so that a slip in the frequencies
        # can be named (at angles ~1e4 float32 sines of two ways of writing the same frequency disagree).
        return rng.integers(0, 3, size=(6,)).astype(np.int32), 4
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
        Hint(lambda t, d: _sin_cos(t, d, 10000.0 ** (-jnp.linspace(0.0, 1.0, d // 2))),
             "the exponent is i / (dim / 2) for i = 0, ..., dim/2 - 1 (jnp.arange(dim // 2)), not jnp.linspace(0, 1, dim / 2)."),
    ],
))


@functools.lru_cache(maxsize=None)
def _reference_model(seed):
    """A small stand-in noise predictor with fixed random weights (three of them, made once: creating models is slow).
    Not the course's MLPDenoiser: that is an exercise of this notebook, which the grading kernel must not be handed."""
    return parts.TrialMLP(size=2, hidden=32, rngs=nnx.Rngs(int(seed) % 3))


@functools.lru_cache(maxsize=None)
def _reference_image_model(seed):
    return parts.TrialMLP(size=9, hidden=32, rngs=nnx.Rngs(int(seed) % 3))


def _loss_case(rng):
    """A batch of 2D points, or (one case in three) a batch of 3x3 images with an image model."""
    # Few distinct shapes, so that the compiled function is reused between cases.
    T = int(rng.choice([10, 200]))
    betas = np.linspace(1e-3, rng.uniform(0.05, 0.3), T).astype(np.float32)
    alpha_bars = np.cumprod(1 - betas.astype(np.float64)).astype(np.float32)
    n = 8
    if rng.uniform() < 1 / 3:
        model, shape = _loss_model("image", int(rng.integers(3))), (n, 3, 3)
    else:
        model, shape = _loss_model("points", int(rng.integers(3))), (n, 2)
    return model, _array(rng, shape), rng.integers(1, T + 1, size=n).astype(np.int32), _array(rng, shape), alpha_bars


@functools.lru_cache(maxsize=None)
def _loss_model(kind, seed):
    net = _reference_image_model(seed) if kind == "image" else _reference_model(seed)
    return parts.TimeSensitive(net)


def _loss_with(make_x_t, target="noise", reduce=jnp.mean, model_t=lambda t: t):
    def loss(model, x0, t, noise, alpha_bars):
        x_t = make_x_t(x0, t, noise, alpha_bars)
        goal = noise if target == "noise" else x0
        return reduce((goal - model(x_t, model_t(t))) ** 2)
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
        Hint(_loss_with(lambda x0, t, e, ab: _x_t(x0, t, e, ab), model_t=lambda t: t - 1),
             "call the model with the time step t itself: only the index into alpha_bars is t - 1."),
        Hint(_loss_with(lambda x0, t, e, ab: _x_t(x0, t, e, ab, shift=0), model_t=lambda t: t - 1),
             "off by one: keep t for the model and use alpha_bars[t - 1] for alpha_bar_t (you shifted both by one)."),
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


# ---------------------------------------------------------------- the whole sampler: sample


def _sample_case(rng):
    """A short schedule, noise sigmas between sqrt(beta_tilde) and sqrt(beta) (never zero at t = 1, so that
    adding noise at the last step shows), a batch of 8 points and its pre-drawn noises."""
    T = int(rng.choice([6, 30]))
    schedule = schedules.make_schedule(np.linspace(1e-3, rng.uniform(0.05, 0.3), T).astype(np.float32))
    mix = rng.uniform(0.3, 1.0)
    sigmas = np.sqrt(mix * np.asarray(schedule.betas) + (1 - mix) * np.asarray(schedule.posterior_variances))
    n = 8
    return (_reference_model(int(rng.integers(3))), _array(rng, (n, 2)), _array(rng, (T, n, 2)),
            np.asarray(schedule.betas), np.asarray(schedule.alpha_bars), sigmas.astype(np.float32))


def _sample_edge_cases():
    rng = np.random.default_rng(4052)
    cases = []
    # T = 1 (one step, no noise at all), sigma^2 = beta_tilde (zero at t = 1), no noise (deterministic);
    # the shapes of the random cases where possible, so that the compiled functions are reused.
    for T, sigma in ((1, "beta"), (30, "beta_tilde"), (6, "zero")):
        schedule = schedules.make_schedule(np.linspace(1e-3, 0.2, T).astype(np.float32))
        sigmas = {"beta": np.sqrt(np.asarray(schedule.betas)),
                  "beta_tilde": np.sqrt(np.asarray(schedule.posterior_variances)),
                  "zero": np.zeros(T)}[sigma].astype(np.float32)
        n = 8
        cases.append((_reference_model(T), _array(rng, (n, 2)), _array(rng, (T, n, 2)),
                      np.asarray(schedule.betas), np.asarray(schedule.alpha_bars), sigmas))
    return cases


def _sample_with(times="down", shift=0, noise_at_1=False, z_order="by t", keep="x_T first"):
    """The reverse loop with one slip: the steps visited, the noise used, or the trajectory kept."""
    def run(model, x_T, zs, betas, alpha_bars, sigmas):
        zs, betas, alpha_bars, sigmas = (jnp.asarray(a) for a in (zs, betas, alpha_bars, sigmas))
        T = betas.shape[0]
        ts = (jnp.arange(T, 0, -1) if times == "down" else jnp.arange(1, T + 1)) - shift
        z_index = ts - 1 if z_order == "by t" else jnp.arange(T)     # "in order": zs[0] at the first step (t = T)

        def body(x, t_and_i):
            t, i = t_and_i
            z = zs[i] if noise_at_1 else jnp.where(t > 1, zs[i], 0.0)
            x_prev = sampling.ddpm_step(model, x, t, z, betas, alpha_bars, sigmas)
            return x_prev, (x if keep == "no x_0" else x_prev)

        x_last, xs = jax.lax.scan(body, x_T, (ts, z_index))
        return kept_trajectory(keep, x_T, x_last, xs)
    return run


register(Exercise(
    name="sample",
    reference=sampling.ddpm_sample,
    make_case=_sample_case,
    edge_cases=_sample_edge_cases,
    module_argnums=(0,),
    rtol=1e-4, atol=1e-5,
    requires=("scan", "while"),
    requires_message="loop over the time steps with jax.lax.scan (a Python for loop unrolls all T steps, "
                     "each with a call of the network, into one huge compiled program).",
    hints=[
        Hint(_sample_with(times="up"), "the reverse process runs backwards in time: t = T, T - 1, ..., 1 "
                                       "(jnp.arange(T, 0, -1)), not 1, ..., T."),
        Hint(_sample_with(shift=1), "off by one: the steps are t = T, ..., 1, and jnp.arange(T, 0, -1) gives exactly "
                                    "those; yours start at T - 1 and end at t = 0."),
        Hint(_sample_with(noise_at_1=True), "no noise at the last step: z = 0 when t = 1 (zs[0] is never used)."),
        Hint(_sample_with(z_order="in order"), "step t uses the noise zs[t - 1] (the same index as betas[t - 1]): "
                                               "scanning over zs in its stored order gives step T the noise zs[0]."),
        Hint(_sample_with(keep="x_0 only"), "return the whole trajectory x_T, ..., x_0 (shape (T + 1, N, 2)), not only "
                                            "the final x_0: scan's second output collects one entry per step."),
        Hint(_sample_with(keep="no x_T"), "the trajectory starts with x_T itself: put x_T in front of the T states "
                                          "that the scan collects (jnp.concatenate([x_T[None], xs]))."),
        Hint(_sample_with(keep="no x_0"), "the trajectory is missing x_0: collect the new state x_{t-1} in the scan "
                                          "body, not the state x_t it started from."),
        Hint(_sample_with(keep="reversed"), "the trajectory is in the order of the sampler: index 0 holds x_T and the "
                                            "last index x_0 (do not reverse it)."),
    ],
))


# ---------------------------------------------------------------- DDIM with its eta family: ddim_step


def _ddim_case(rng):
    """A step t -> t_prev: to 0 (one case in four), to t - 1 (one in two), or strided; eta 0, 1 or (mostly) in between."""
    T = int(rng.choice([10, 100]))
    alpha_bars = np.cumprod(1 - np.linspace(1e-3, rng.uniform(0.05, 0.3) * 10 / np.sqrt(T), T)).astype(np.float32)
    t = int(rng.integers(2, T + 1))
    kind = rng.uniform()
    t_prev = 0 if kind < 0.25 else t - 1 if kind < 0.75 else int(rng.integers(1, t))
    eta = float(rng.choice([0.0, 1.0, rng.uniform(0.2, 0.9)], p=[0.2, 0.2, 0.6]))
    n = 8
    return (_reference_model(int(rng.integers(3))), _array(rng, (n, 2)), np.int32(t), np.int32(t_prev),
            alpha_bars, np.float32(eta), _array(rng, (n, 2)))


def _ddim_edge_cases():
    rng = np.random.default_rng(4053)
    alpha_bars = np.cumprod(1 - np.linspace(1e-4, 0.08, 100)).astype(np.float32)
    cases = []
    for t, t_prev, eta in ((1, 0, 1.0), (100, 0, 1.0), (100, 99, 1.0), (50, 49, 0.0), (100, 80, 0.5), (30, 1, 1.0)):
        cases.append((_reference_model(t), _array(rng, (8, 2)), np.int32(t), np.int32(t_prev), alpha_bars,
                      np.float32(eta), _array(rng, (8, 2))))
    return cases


def _ddim_with(shift=1, prev_zero=True, x0_power=0.5, sigma="eq16", direction="with sigma", noise=True):
    """The DDIM step with one slip."""
    def step(model, x_t, t, t_prev, alpha_bars, eta, z):
        alpha_bars = jnp.asarray(alpha_bars)
        last = alpha_bars.shape[0] - 1
        eps = model(x_t, jnp.full((x_t.shape[0],), t))
        ab_t = alpha_bars[jnp.clip(t - shift, 0, last)]
        ab_index = alpha_bars[jnp.clip(t_prev - shift, 0, last)] if shift == 0 else alpha_bars[t_prev - 1]
        ab_prev = jnp.where(t_prev > 0, ab_index, 1.0) if prev_zero else ab_index
        x0_hat = (x_t - jnp.sqrt(1 - ab_t) * eps) / ab_t**x0_power
        ratio = (1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)
        s = {"eq16": eta * jnp.sqrt(ratio), "no eta": jnp.sqrt(ratio), "no sqrt": eta * ratio}[sigma]
        keep = 1 - ab_prev - (s**2 if direction == "with sigma" else 0.0)
        out = jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(jnp.maximum(keep, 0.0)) * eps
        return out + s * z if noise else out
    return step


register(Exercise(
    name="ddim_step",
    reference=sampling.ddim_step,
    make_case=_ddim_case,
    edge_cases=_ddim_edge_cases,
    module_argnums=(0,),
    rtol=1e-4, atol=1e-5,
    hints=[
        Hint(_ddim_with(sigma="no eta"), "sigma_t is multiplied by eta: eta = 0 gives the deterministic DDIM step, "
                                         "eta = 1 the DDPM-like one."),
        Hint(_ddim_with(sigma="no sqrt"), "sigma_t is a standard deviation: eta * sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) "
                                          "* sqrt(1 - alpha_bar_t / alpha_bar_prev); without the square roots it is "
                                          "(eta times) the variance."),
        Hint(_ddim_with(direction="without sigma"), "the direction term is sqrt(1 - alpha_bar_prev - sigma_t^2) * eps: "
                                                    "the noise sigma_t z takes its share of the variance."),
        Hint(_ddim_with(x0_power=1.0), "the predicted x_0 divides by sqrt(alpha_bar_t), not by alpha_bar_t."),
        Hint(_ddim_with(shift=0), "off by one: the alpha_bar of step t is alpha_bars[t - 1] (time steps count from 1), "
                                  "and the same for t_prev."),
        Hint(_ddim_with(prev_zero=False), "t_prev = 0 means alpha_bar = 1 (the clean data): alpha_bars[t_prev - 1] "
                                          "with t_prev = 0 wraps around to the last entry, alpha_bar_T. Use jnp.where."),
        Hint(_ddim_with(noise=False), "the noise term sigma_t * z is missing."),
    ],
))


_DENOISER = dict(hidden=128, depth=3, time_dim=32)  # the constructor's defaults, as the text gives them


def _denoiser_weights(dim):
    """Known weights for the text's architecture, by shape: layer names are the student's choice, so every
    parameter of a shape gets the same array (all the (hidden, hidden) kernels one matrix, all the hidden biases
    one vector); the function is then fixed whatever the names and the order of creation."""
    h, e = _DENOISER["hidden"], _DENOISER["time_dim"]
    rng = np.random.default_rng(400 + dim)
    def normal(*shape, scale):
        return np.asarray(rng.standard_normal(shape) * scale, np.float32)
    return {(dim + e, h): normal(dim + e, h, scale=1.5 / np.sqrt(dim + e)), (h, h): normal(h, h, scale=1.5 / np.sqrt(h)),
            (h, dim): normal(h, dim, scale=1.0 / np.sqrt(h)), (h,): normal(h, scale=0.3), (dim,): normal(dim, scale=0.3)}


def _denoiser_forward(weights, x, t, act=jax.nn.silu, final=lambda z: z, order="x_first"):
    """The text's MLP on the weights of :func:`_denoiser_weights`, with optional slips (for the messages)."""
    h, e, depth = _DENOISER["hidden"], _DENOISER["time_dim"], _DENOISER["depth"]
    dim = x.shape[-1]
    emb = embeddings.sinusoidal_embedding.raw(t, e)
    z = jnp.concatenate([x, emb] if order == "x_first" else [emb, x], axis=-1)
    z = act(z @ weights[(dim + e, h)] + weights[(h,)])
    for _ in range(depth - 1):
        z = act(z @ weights[(h, h)] + weights[(h,)])
    return final(z @ weights[(h, dim)] + weights[(dim,)])


def _denoiser_trials(edge_cases):
    """For dim = 2 and 3: the student's model with known weights (by shape), on a batch, the same batch at other
    steps, and points far out (where an activation after the output layer shows)."""
    trials = []
    for dim in (2, 3):
        x = np.asarray(np.random.default_rng(dim).standard_normal((5, dim)), np.float32)
        t = np.array([1, 10, 50, 100, 200], np.int32)
        fill = tuple((shape, array) for shape, array in _denoiser_weights(dim).items())
        trials.append(Build(kwargs=(("dim", dim),), inputs=((x, t), (x, t + 37), (4.0 * x + 1.0, t)), forward=parts.apply_model,
                            fill=fill))
    return trials


_DENOISER_SLIPS = [
    (dict(final=jax.nn.silu), "no activation after the output layer: the predicted noise can be any real number."),
    (dict(final=jax.nn.relu), "no activation after the output layer: the predicted noise can be any real number."),
    (dict(final=jnp.tanh), "no activation after the output layer: the predicted noise can be any real number."),
    (dict(act=jax.nn.relu), "the hidden layers use the SiLU activation (jax.nn.silu), not ReLU."),
    (dict(act=jnp.tanh), "the hidden layers use the SiLU activation (jax.nn.silu), not tanh."),
    (dict(act=jax.nn.gelu), "the hidden layers use the SiLU activation (jax.nn.silu), not GELU."),
    (dict(act=lambda z: z), "the activation jax.nn.silu after each hidden layer is missing."),
    (dict(act=jax.nn.relu, final=jax.nn.relu), "use SiLU after each hidden layer, and no activation after the output layer."),
]


def _expected_shapes(dim):
    h, e, depth = _DENOISER["hidden"], _DENOISER["time_dim"], _DENOISER["depth"]
    return [(dim + e, h), (h,)] + [(h, h), (h,)] * (depth - 1) + [(h, dim), (dim,)]


def _shape_problems(dim, shapes):
    """Why the student's parameters do not have the shapes of the text's architecture (one sentence each)."""
    h, e, depth = _DENOISER["hidden"], _DENOISER["time_dim"], _DENOISER["depth"]
    kernels = [tuple(s) for s in shapes if len(s) == 2]
    expected = _expected_shapes(dim)
    listed = ", ".join(str(tuple(s)) for s in shapes) or "none"
    lines = [f"with dim = {dim} and the default sizes (hidden = {h}, depth = {depth}, time_dim = {e}) its parameters "
             f"have the shapes {listed}; the architecture of the exercise has {', '.join(map(str, expected))}."]
    firsts = [k for k in kernels if k[1] == h and k[0] not in (h,)]
    if (dim + 1, h) in kernels:
        lines.append("The first layer takes dim + 1 inputs: feed it x concatenated with the embedding "
                     "sinusoidal_embedding(t, time_dim), not the raw t.")
    elif (dim, h) in kernels:
        lines.append("The first layer takes only x: concatenate x with the time embedding sinusoidal_embedding(t, time_dim) "
                     "(dim + time_dim inputs).")
    elif firsts and (dim + e, h) not in kernels:
        lines.append(f"The first layer must take dim + time_dim = {dim + e} inputs (x and the time embedding), "
                     f"it takes {firsts[0][0]}.")
    if not any(k[1] == dim for k in kernels):
        lines.append(f"The output layer must have dim = {dim} outputs.")
    if any(len(s) == 2 and s[0] == s[1] != h for s in shapes) or any(len(s) == 1 and s[0] not in (h, dim) for s in shapes):
        lines.append(f"Use the constructor's arguments: hidden layers of width `hidden` ({h}).")
    return lines


def _judge_denoiser(ex, trials, results):
    """``MLPDenoiser(dim, rngs=...)``: the architecture of the text (shapes, parameter count), then its outputs with
    known weights against the text's MLP: x concatenated with the sinusoidal embedding, SiLU, no final activation."""
    for trial, record in zip(trials, results):
        dim = dict(trial.kwargs)["dim"]
        def fail(lines):
            raise CheckFailure(f"{ex.name}: " + "\n".join(lines))
        if isinstance(record, dict) and ("build_error" in record or "state_error" in record):
            built_outputs(ex, trial, record, ["x", "t"])  # not implemented yet, or the constructor raised
        if isinstance(record, dict) and "fill_error" in record:
            info = record["fill_error"] if isinstance(record["fill_error"], dict) else {}
            shapes = [s for s in info.get("shapes", []) if isinstance(s, list)][:200]
            fail(["the layers differ from the exercise's: " + _shape_problems(dim, shapes)[0], *_shape_problems(dim, shapes)[1:]])
        n_expected = sum(int(np.prod(s)) for s in _expected_shapes(dim))
        n_params = record.get("n_params") if isinstance(record, dict) and isinstance(record.get("n_params"), int) else -1
        if n_params != n_expected:
            h, depth = _DENOISER["hidden"], _DENOISER["depth"]
            fail([f"with dim = {dim} the network has {n_params} parameters; the exercise's architecture (depth = {depth} "
                  f"hidden nnx.Linear layers of width {h}, then an output layer) has {n_expected}.",
                  "Create exactly `depth` hidden layers (the first takes dim + time_dim inputs) and one output layer."])
        outputs = built_outputs(ex, trial, record, ["x", "t"])
        weights = {tuple(shape): jnp.asarray(a) for shape, a in trial.fill}
        for number, ((x, t), got) in enumerate(zip(trial.inputs, outputs), start=1):
            expected = np.asarray(jit_call(lambda x, t: _denoiser_forward(weights, x, t), (x, t)))
            problem = compare(expected, got, 1e-4, 1e-5)
            if problem is None:
                continue
            swapped = np.asarray(jit_call(lambda x, t: _denoiser_forward(weights, x, t, order="emb_first"), (x, t)))
            if compare(swapped, got, 1e-4, 1e-5) is None:
                continue  # [embedding, x] is as good as [x, embedding]
            lines = [f"wrong output with dim = {dim} on input {number} (the test gives your layers known weights, "
                     f"by their shapes): x of shape {x.shape}, t = {t.tolist()}.",
                     f"  expected: {describe_value(expected)}", f"  got:      {describe_value(got)}",
                     *("  " + p for p in problem)]
            for change, message in _DENOISER_SLIPS:
                variant = np.asarray(jit_call(lambda x, t: _denoiser_forward(weights, x, t, **change), (x, t)))
                if compare(variant, got, 1e-4, 1e-5) is None:
                    lines.append(f"Likely slip: {message}")
                    break
            else:
                if isinstance(got, np.ndarray) and got.shape == expected.shape and np.all(got > -0.2785):
                    lines.append("Likely slip: the output is never below -0.28: is there an activation after the output "
                                 "layer? The predicted noise can be any real number.")
                lines.append("The exercise fixes the computation: concatenate x with sinusoidal_embedding(t, time_dim), "
                             "apply each hidden layer followed by jax.nn.silu, then the output layer with no activation.")
            lines += dependency_lines(ex)
            fail(lines)
    return "the architecture of the exercise, with the right outputs for known weights (dim = 2 and 3)."


register(Exercise(name="MLPDenoiser", reference=None, trials=_denoiser_trials, judge=_judge_denoiser,
                  reference_class=models.MLPDenoiser, depends_on=("sinusoidal_embedding",)))


# ---------------------------------------------------------------- one optimisation step: train_step (a kind of its own)


def _step_batches(rng, n_steps, shape=(16, 2), T=20):
    betas = np.linspace(1e-3, rng.uniform(0.1, 0.3), T)
    alpha_bars = np.cumprod(1 - betas).astype(np.float32)
    return [(_array(rng, shape), rng.integers(1, T + 1, size=shape[0]).astype(np.int32), _array(rng, shape), alpha_bars)
            for _ in range(n_steps)]


def _step_variant(gradient=lambda g: g, update=True, report="before", loss=None):
    """The training step with one slip: in the gradient passed on, the update, the loss returned, or the loss itself."""
    def train_step(model, optimizer, x0, t, noise, alpha_bars):
        loss_fn = loss or training.ddpm_loss
        value, grads = nnx.value_and_grad(loss_fn)(model, x0, t, noise, alpha_bars)
        if update:
            optimizer.update(model, jax.tree.map(gradient, grads))
        return training.ddpm_loss(model, x0, t, noise, alpha_bars) if report == "after" else value
    return train_step


def _x0_target_loss(model, x0, t, noise, alpha_bars):
    ab = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
    return jnp.mean((x0 - model(jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise, t)) ** 2)


def _swapped_loss(model, x0, t, noise, alpha_bars):
    return training.ddpm_loss(model, noise, t, x0, alpha_bars)


register(train_step_exercise(
    "train_step", training.train_step,
    setups=[StepSetup(parts.step_mlp, parts.adam, _step_batches, "Adam, learning rate 0.01"),
            StepSetup(parts.step_mlp, parts.sgd_momentum, _step_batches, "SGD with momentum 0.9", seed=1)],
    # Hidden runs from other weights and batches of the same shapes: the compiled steps are reused.
    edge_setups=[StepSetup(parts.step_mlp, parts.adam, _step_batches, "Adam, other weights", seed=2),
                 StepSetup(parts.step_mlp, parts.sgd_momentum, _step_batches, "SGD with momentum, other weights", seed=3)],
    hints=[
        Hint(_step_variant(gradient=jnp.negative), "gradient ascent: the parameters moved up the slope. Pass the gradient "
             "of the loss to optimizer.update as it is (the optax update already subtracts it): do not negate it, and "
             "differentiate the loss, not -loss."),
        Hint(_step_variant(update=False), "the parameters never change: after computing the gradient, call "
             "optimizer.update(model, grads), which updates the model's parameters and the optimizer's state in place."),
        Hint(_step_variant(gradient=jnp.zeros_like), "the gradient is zero, so the optimizer's updates change nothing: "
             "the function you differentiate ignores its argument (it uses `model` from outside, a stale copy). "
             "Differentiate with respect to the model it receives: nnx.value_and_grad(ddpm_loss)(model, x0, t, noise, "
             "alpha_bars), or lambda m: ddpm_loss(m, ...)."),
        Hint(_step_variant(report="after"), "return the loss computed before the update (the value that "
             "nnx.value_and_grad returns with the gradient), not the loss of the updated model."),
        Hint(_step_variant(loss=_x0_target_loss), "the network predicts the noise: the loss compares its output with "
             "`noise`, not with x0 (use your ddpm_loss)."),
        Hint(_step_variant(loss=_swapped_loss), "ddpm_loss takes (model, x0, t, noise, alpha_bars): x0 and noise are "
             "swapped in your call."),
    ],
    depends_on=("ddpm_loss",),
    rtol=1e-4, atol=1e-6, seed=407,
))
