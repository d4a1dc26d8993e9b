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
        model, shape = _loss_model("image", int(rng.integers(3))), (n, 3, 3)
    else:
        model, shape = _loss_model("points", int(rng.integers(3))), (n, 2)
    return model, _array(rng, shape), rng.integers(1, T + 1, size=n).astype(np.int32), _array(rng, shape), alpha_bars


class _TimeSensitive(nnx.Module):
    """A test model for ddpm_loss whose output depends strongly on t: with a plain small network the loss is
    dominated by the noise, and slips in t and in x_t gave losses equal to 2e-5."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x, t):
        out = self.net(x, t)
        phase = jnp.sin(0.9 * jnp.asarray(t, jnp.float32)).reshape((-1,) + (1,) * (out.ndim - 1))
        return out + 2.0 * phase * jnp.ones_like(out)


@functools.lru_cache(maxsize=None)
def _loss_model(kind, seed):
    net = _reference_image_model(seed) if kind == "image" else _reference_model(seed)
    return _TimeSensitive(net)


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


def _apply(model, x, t):
    return model(x, t)


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
        trials.append(Build(kwargs=(("dim", dim),), inputs=((x, t), (x, t + 37), (4.0 * x + 1.0, t)), forward=_apply,
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
    from ..grading import _compare, _dependency_lines, describe_value
    for trial, record in zip(trials, results):
        dim = dict(trial.kwargs)["dim"]
        def fail(lines):
            raise CheckFailure(f"{ex.name}: " + "\n".join(lines))
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
            problem = _compare(expected, got, 1e-4, 1e-5)
            if problem is None:
                continue
            swapped = np.asarray(jit_call(lambda x, t: _denoiser_forward(weights, x, t, order="emb_first"), (x, t)))
            if _compare(swapped, got, 1e-4, 1e-5) is None:
                continue  # [embedding, x] is as good as [x, embedding]
            lines = [f"wrong output with dim = {dim} on input {number} (the test gives your layers known weights, "
                     f"by their shapes): x of shape {x.shape}, t = {t.tolist()}.",
                     f"  expected: {describe_value(expected)}", f"  got:      {describe_value(got)}",
                     *("  " + p for p in problem)]
            for change, message in _DENOISER_SLIPS:
                variant = np.asarray(jit_call(lambda x, t: _denoiser_forward(weights, x, t, **change), (x, t)))
                if _compare(variant, got, 1e-4, 1e-5) is None:
                    lines.append(f"Likely slip: {message}")
                    break
            else:
                if isinstance(got, np.ndarray) and got.shape == expected.shape and np.all(got > -0.2785):
                    lines.append("Likely slip: the output is never below -0.28: is there an activation after the output "
                                 "layer? The predicted noise can be any real number.")
                lines.append("The exercise fixes the computation: concatenate x with sinusoidal_embedding(t, time_dim), "
                             "apply each hidden layer followed by jax.nn.silu, then the output layer with no activation.")
            lines += _dependency_lines(ex)
            fail(lines)
    return "the architecture of the exercise, with the right outputs for known weights (dim = 2 and 3)."


register(Exercise(name="MLPDenoiser", reference=None, trials=_denoiser_trials, judge=_judge_denoiser,
                  reference_class=models.MLPDenoiser, depends_on=("sinusoidal_embedding",)))
