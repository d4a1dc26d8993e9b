"""Exercises of notebook 05 (classifier-free guidance on two-pixel images).

``drop_labels`` takes a PRNG key: the cases pass raw ``uint32[2]`` keys
(``jax.random.PRNGKey``), which print as numbers in messages. The reference
draws one uniform per label with ``jax.random.bernoulli(key, p_uncond, y.shape)``,
and the exercise text asks for exactly that call, so that the same key gives
the same labels. ``TwoPixelUNet`` is tested by running the student's class with
the weights of the reference model and comparing the outputs.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import embeddings, guidance, models, schedules
from ..grading import Build, CheckFailure, Exercise, Hint, built_outputs, compare, describe_value, jit_call, register
from . import parts
from .common import array as _array, guided_step_with, kept_trajectory
from .kinds import StepSetup, train_step_exercise


# ---------------------------------------------------------------- gaussian_fourier_embedding


def _fourier_case(rng):
    shape = [(), (7,), (3, 4)][rng.integers(3)]
    t = np.asarray(rng.uniform(0.0, 1.0, size=shape), np.float32)
    W = np.asarray(rng.normal(0, rng.uniform(1, 8), size=int(rng.choice([1, 4, 8, 16]))), np.float32)
    return t, W


def _fourier_with(scale=2 * jnp.pi, order=("sin", "cos"), interleave=False):
    def embedding(t, W):
        angles = scale * jnp.asarray(t, jnp.float32)[..., None] * W
        parts = {"sin": jnp.sin(angles), "cos": jnp.cos(angles)}
        if interleave:
            return jnp.stack([parts["sin"], parts["cos"]], axis=-1).reshape(angles.shape[:-1] + (-1,))
        return jnp.concatenate([parts[order[0]], parts[order[1]]], axis=-1)
    return embedding


register(Exercise(
    name="gaussian_fourier_embedding",
    reference=embeddings.gaussian_fourier_embedding,
    make_case=_fourier_case,
    edge_cases=[(np.array([0.0, 0.5, 1.0], np.float32), np.array([1.0, -2.0], np.float32)),
                (np.array(0.25, np.float32), np.array([3.0], np.float32))],
    rtol=1e-4, atol=2e-5,
    hints=[
        Hint(_fourier_with(scale=1.0), "the angles are 2 pi W t: the factor 2 pi is missing."),
        Hint(_fourier_with(order=("cos", "sin")), "the sines come first, then the cosines."),
        Hint(_fourier_with(interleave=True), "put all the sines first and all the cosines after (concatenate), not interleaved."),
        Hint(_fourier_with(scale=jnp.pi), "the angles are 2 pi W t, not pi W t."),
        Hint(lambda t, W: _fourier_with()(t, 1 / W), "multiply by W (the angles are 2 pi W t), do not divide by it."),
    ],
))


# ---------------------------------------------------------------- drop_labels


def _drop_case(rng):
    n = int(rng.choice([8, 32]))
    key = np.asarray(jax.random.PRNGKey(int(rng.integers(2**31))))
    y = np.asarray(rng.integers(0, int(rng.choice([2, 10])), size=n), np.int32)
    return key, y, np.float32(rng.uniform(0.2, 0.8))


def _drop_with(keep_when_drawn=False, fill=embeddings.NO_LABEL, prob=lambda p: p, shape=jnp.shape):
    def drop(key, y, p_uncond):
        mask = jax.random.bernoulli(key, prob(p_uncond), shape(y))
        return jnp.where(mask, y, fill) if keep_when_drawn else jnp.where(mask, fill, y)
    return drop


register(Exercise(
    name="drop_labels",
    reference=guidance.drop_labels,
    make_case=_drop_case,
    edge_cases=[(np.asarray(jax.random.PRNGKey(5)), np.arange(10, dtype=np.int32) % 2, np.float32(0.0)),
                (np.asarray(jax.random.PRNGKey(6)), np.arange(10, dtype=np.int32) % 2, np.float32(1.0))],
    rtol=0.0, atol=0.0,
    hints=[
        Hint(_drop_with(keep_when_drawn=True), "the mask is reversed: a label is dropped (set to -1) where "
                                               "bernoulli(key, p_uncond) is True, so that a fraction p_uncond is dropped."),
        Hint(_drop_with(fill=0), "a dropped label becomes -1 (\"no label\"), not 0: 0 is a real class."),
        Hint(_drop_with(prob=lambda p: 1 - p), "a label is dropped with probability p_uncond: bernoulli(key, p_uncond, y.shape), not 1 - p_uncond."),
        Hint(_drop_with(shape=lambda y: ()), "draw one value per label, bernoulli(key, p_uncond, y.shape): with a single draw "
                                            "all the labels are dropped or none."),
        Hint(lambda key, y, p: jnp.full_like(y, embeddings.NO_LABEL), "only a fraction p_uncond of the labels is dropped "
                                                                    "(where the mask is True); keep the others."),
    ],
))


# ---------------------------------------------------------------- guided_eps


@functools.lru_cache(maxsize=None)
def _reference_unet(seed):
    """A small stand-in conditional noise predictor with fixed random weights (made once per seed: creating models is
    slow). Not the course's TwoPixelUNet: that is an exercise of this notebook, which the grading kernel must not get."""
    return parts.TrialConditionalNet(rngs=nnx.Rngs(int(seed) % 3))


def _guided_case(rng):
    n = 8
    model = _reference_unet(int(rng.integers(3)))
    x = np.asarray(rng.normal(size=(n, 2)), np.float32)
    t = rng.integers(1, 51, size=n).astype(np.int32)
    y = rng.integers(0, 2, size=n).astype(np.int32)
    return model, x, t, y, np.float32(rng.uniform(0.5, 4.0))


def _guided_with(kind):
    def guided(model, x_t, t, y, w):
        cond = model(x_t, t, y)
        uncond = model(x_t, t, jnp.full(jnp.shape(y), 0 if kind == "zero" else -1, jnp.int32))
        if kind == "swapped":
            return (w + 1) * uncond - w * cond
        if kind == "no_plus_one":
            return w * cond + (1 - w) * uncond
        if kind == "plus":
            return (w + 1) * cond + w * uncond
        if kind == "cond_only":
            return (w + 1) * cond
        return (w + 1) * cond - w * uncond
    return guided


register(Exercise(
    name="guided_eps",
    reference=guidance.guided_eps,
    make_case=_guided_case,
    module_argnums=(0,),
    rtol=1e-4, atol=1e-5,
    edge_cases=lambda: [(_reference_unet(0), np.zeros((4, 2), np.float32), np.array([1, 10, 25, 50], np.int32),
                         np.array([0, 1, 0, 1], np.int32), np.float32(0.0)),
                        (_reference_unet(1), np.ones((4, 2), np.float32), np.array([50, 50, 1, 1], np.int32),
                         np.array([1, 1, 0, 0], np.int32), np.float32(3.0))],
    hints=[
        Hint(_guided_with("swapped"), "the conditional prediction gets the weight (w + 1) and the unconditional one -w, not the other way round."),
        Hint(_guided_with("no_plus_one"), "that is w eps(y) + (1 - w) eps(none), another convention: this course uses "
                                          "(w + 1) eps(x, t, y) - w eps(x, t, none), so that w = 0 is the plain conditional model."),
        Hint(_guided_with("zero"), "the unconditional prediction uses the label -1 (\"no label\"), not 0 (a real class)."),
        Hint(_guided_with("plus"), "subtract w times the unconditional prediction: (w + 1) eps(y) - w eps(none)."),
        Hint(_guided_with("cond_only"), "the unconditional prediction is missing: (w + 1) eps(x, t, y) - w eps(x, t, none)."),
    ],
))


# ---------------------------------------------------------------- TwoPixelUNet


def _unet_variant(kind):
    """The reference forward pass with one known slip (for the messages of the check below)."""
    def forward(model, x, t, y):
        emb = model.embed(t, y)
        act = (lambda z: z) if kind == "no_silu" else jax.nn.silu
        add = (lambda z, d: z) if kind == "no_embedding" else (lambda z, d: z + d(emb)[:, None, :])
        block = (lambda z, d, norm: norm(act(add(z, d)))) if kind == "norm_after" else (lambda z, d, norm: act(norm(add(z, d))))
        h = x[:, :, None]
        h1 = block(model.conv1(h), model.dense1, model.norm1)
        h2 = block(model.conv2(h1), model.dense2, model.norm2)
        h = block(model.tconv2(h2), model.dense3, model.norm3)
        skips = [h, h1, x[:, None, :]]
        if kind == "skip_order":
            skips = [h1, h, x[:, None, :]]
        if kind == "no_input_skip":
            skips = [h, h1, jnp.zeros_like(x[:, None, :])]
        return model.tconv1(jnp.concatenate(skips, axis=-1))[:, 0, :]
    return forward


_UNET_SLIPS = [
    ("no_silu", "the SiLU activations are missing: each of the first three blocks ends with jax.nn.silu."),
    ("no_embedding", "the blocks do not add the embedding: add self.denseK(emb)[:, None, :] to each conv's output, before the norm."),
    ("norm_after", "the order in a block is conv + dense(emb), then GroupNorm, then SiLU (you applied SiLU before the norm)."),
    ("skip_order", "concatenate in the order [decoder 1's output, encoder 1's output (h1), the input pixels]."),
    ("no_input_skip", "the skip of the input pixels is missing: concatenate x[:, None, :] too (the last layer takes 2 c_1 + 2 channels)."),
]


def _unet_cases():
    rng = np.random.default_rng(505)
    cases = []
    for n in (8, 8, 8):  # one shape: one compilation
        x = np.asarray(rng.normal(size=(n, 2)), np.float32)
        t = rng.integers(1, 51, size=n).astype(np.int32)
        y = rng.integers(-1, 2, size=n).astype(np.int32)
        cases.append((x, t, y))
    return cases


def _unet_trials(edge_cases):
    """The student's class with the reference's weights (T = 50, seed 0) on three batches."""
    reference = models.TwoPixelUNet(T=50, rngs=nnx.Rngs(0))
    return [Build(kwargs=(("T", 50),), state=nnx.state(reference), inputs=tuple(_unet_cases()), forward=parts.apply_conditional)]


def _judge_unet(ex, trials, results):
    """``TwoPixelUNet(T, ..., rngs=...)``: the student's __call__ against the reference, with the same weights."""
    (trial,), (record,) = trials, results
    reference = models.TwoPixelUNet(T=50, rngs=nnx.Rngs(0))
    nnx.update(reference, trial.state)
    outputs = built_outputs(ex, trial, record, ["x", "t", "y"])
    for number, ((x, t, y), got) in enumerate(zip(trial.inputs, outputs), start=1):
        expected = np.asarray(jit_call(parts.apply_conditional, (reference, x, t, y), (), (0,)))
        problem = compare(expected, got, 1e-4, 1e-5)
        if problem is None:
            continue
        lines = [f"{ex.name}: wrong output on test input {number}: x of shape {x.shape}, t = {t.tolist()}, y = {y.tolist()}.",
                 f"  expected: {describe_value(expected)}", f"  got:      {describe_value(got)}", *("  " + p for p in problem)]
        for kind, message in _UNET_SLIPS:
            variant = np.asarray(_unet_variant(kind)(reference, jnp.asarray(x), jnp.asarray(t), jnp.asarray(y)))
            if compare(variant, got, 1e-4, 1e-5) is None:
                lines.append(f"Likely slip: {message}")
        raise CheckFailure("\n".join(lines))
    return "maps (N, 2) images, (N,) steps and (N,) labels to (N, 2) noise predictions, exactly as the reference does."


register(Exercise(name="TwoPixelUNet", reference=None, trials=_unet_trials, judge=_judge_unet,
                  reference_class=models.TwoPixelUNet))


# ---------------------------------------------------------------- guided_sample


def _guided_sample_case(rng):
    """Notebook 04's sampler cases (short schedules, sigmas between sqrt(beta_tilde) and sqrt(beta), never zero at
    t = 1) with labels 0 and 1 and a guidance weight that changes the prediction. One T for all of them: each T is
    a compilation of a loop of U-Net calls, for the answer and for the reference."""
    T = 12
    schedule = schedules.make_schedule(np.linspace(1e-3, rng.uniform(0.05, 0.3), T).astype(np.float32))
    mix = rng.uniform(0.3, 1.0)
    sigmas = np.sqrt(mix * np.asarray(schedule.betas) + (1 - mix) * np.asarray(schedule.posterior_variances))
    n = 8
    return (_reference_unet(int(rng.integers(3))), _array(rng, (n, 2)), _array(rng, (T, n, 2)),
            rng.integers(0, 2, size=n).astype(np.int32), np.float32(rng.uniform(0.5, 3.0)),
            np.asarray(schedule.betas), np.asarray(schedule.alpha_bars), sigmas.astype(np.float32))


def _guided_sample_edge_cases():
    rng = np.random.default_rng(4054)
    cases = []
    # T = 1 (one step, no noise), sigma^2 = beta_tilde (zero at t = 1), w = 0 (the plain conditional model),
    # "no label" everywhere (guidance changes nothing); the random cases' shapes, to reuse their compilations.
    for T, sigma, w, labels in ((1, "beta", 2.0, (0, 1)), (12, "beta_tilde", 0.0, (0, 1)), (12, "beta", 1.5, (-1,))):
        schedule = schedules.make_schedule(np.linspace(1e-3, 0.2, T).astype(np.float32))
        sigmas = np.sqrt(np.asarray(schedule.betas if sigma == "beta" else schedule.posterior_variances))
        n = 8
        cases.append((_reference_unet(T), _array(rng, (n, 2)), _array(rng, (T, n, 2)),
                      rng.choice(labels, size=n).astype(np.int32), np.float32(w),
                      np.asarray(schedule.betas), np.asarray(schedule.alpha_bars), sigmas.astype(np.float32)))
    return cases


def _guided_sample_with(times="down", shift=0, noise_at_1=False, z_order="by t", keep="x_T first", eps="guided",
                        divide="alpha", noise_scale=lambda s: s):
    """The guided reverse loop with one slip: the steps visited, the noise used, the prediction, or what is kept."""
    def run(model, x_T, zs, y, w, betas, alpha_bars, sigmas):
        zs, betas, alpha_bars, sigmas = (jnp.asarray(a) for a in (zs, betas, alpha_bars, sigmas))
        T = betas.shape[0]
        ts = (jnp.arange(T, 0, -1) if times == "down" else jnp.arange(1, T + 1)) - shift
        z_index = ts - 1 if z_order == "by t" else jnp.arange(T)     # "in order": zs[0] at the first step (t = T)
        predict = {"guided": lambda x, t: guidance.guided_eps(model, x, t, y, w),
                   "conditional": lambda x, t: model(x, t, y),
                   "unconditional": lambda x, t: model(x, t, jnp.full_like(y, embeddings.NO_LABEL)),
                   "w plus one": lambda x, t: guidance.guided_eps(model, x, t, y, w + 1)}[eps]

        def body(x, t_and_i):
            t, i = t_and_i
            z = zs[i] if noise_at_1 else jnp.where(t > 1, zs[i], 0.0)
            k = t - 1      # at t = 0 (the off-by-one slip) this wraps to the last entry, as betas[t - 1] does
            e = predict(x, jnp.full((x.shape[0],), t))
            b, ab = betas[k], alpha_bars[k]
            x_prev = (x - b / jnp.sqrt(1 - ab) * e) / jnp.sqrt(1 - b if divide == "alpha" else ab) + noise_scale(sigmas[k]) * z
            return x_prev, (x if keep in ("no x_0", "x_t collected") else x_prev)

        x_last, xs = jax.lax.scan(body, x_T, (ts, z_index))
        return kept_trajectory(keep, x_T, x_last, xs)
    return run


register(Exercise(
    name="guided_sample",
    reference=guidance.guided_sample,
    make_case=_guided_sample_case,
    edge_cases=_guided_sample_edge_cases,
    module_argnums=(0,),
    rtol=1e-3, atol=1e-4,   # T steps through a U-Net with group norms: float32 rounding of equivalent formulas grows
    requires=("scan", "while"),
    requires_message="loop over the time steps with jax.lax.scan (a Python for loop unrolls all T steps, "
                     "each with two calls of the network, into one huge compiled program).",
    depends_on=("guided_eps",),
    hints=[
        Hint(_guided_sample_with(times="up"), "the reverse process runs backwards in time: t = T, T - 1, ..., 1 "
                                              "(jnp.arange(T, 0, -1)), not 1, ..., T."),
        Hint(_guided_sample_with(shift=1), "off by one: the steps are t = T, ..., 1, and jnp.arange(T, 0, -1) gives "
                                           "exactly those; yours start at T - 1 and end at t = 0."),
        Hint(_guided_sample_with(noise_at_1=True), "no noise at the last step: z = 0 when t = 1 (zs[0] is never used)."),
        Hint(_guided_sample_with(z_order="in order"), "step t uses the noise zs[t - 1] (the same index as betas[t - 1]): "
                                                      "scanning over zs in its stored order gives step T the noise zs[0]."),
        Hint(_guided_sample_with(eps="conditional"), "the guidance is missing: every step predicts the noise with "
                                                     "guided_eps(model, x_t, t, y, w), not with the plain conditional "
                                                     "model(x_t, t, y) (that is w = 0)."),
        Hint(_guided_sample_with(eps="unconditional"), "the steps use the unconditional prediction (label -1): pass the "
                                                       "labels y asked for, through guided_eps(model, x_t, t, y, w)."),
        Hint(_guided_sample_with(eps="w plus one"), "pass the guidance weight w itself to guided_eps: it already forms "
                                                    "(w + 1) eps(y) - w eps(none)."),
        Hint(_guided_sample_with(divide="alpha_bar"), "divide by sqrt(alpha_t) = sqrt(1 - beta_t), not sqrt(alpha_bar_t)."),
        Hint(_guided_sample_with(noise_scale=lambda s: s**2), "sigmas holds standard deviations: add sigma_t * z, not "
                                                             "sigma_t ** 2 * z."),
        Hint(_guided_sample_with(keep="x_0 only"), "return the whole trajectory x_T, ..., x_0 (shape (T + 1, N, 2)), not "
                                                   "only the final x_0: scan's second output collects one entry per step."),
        Hint(_guided_sample_with(keep="no x_T"), "the trajectory starts with x_T itself: put x_T in front of the T states "
                                                 "that the scan collects (jnp.concatenate([x_T[None], xs]))."),
        Hint(_guided_sample_with(keep="no x_0"), "the trajectory is missing x_0: collect the new state x_{t-1} in the scan "
                                                 "body, not the state x_t it started from."),
        Hint(_guided_sample_with(keep="x_t collected"), "the trajectory holds x_T twice and no x_0: collect the new state "
                                                        "x_{t-1} in the scan body, not the state x_t it started from."),
        Hint(_guided_sample_with(keep="reversed"), "the trajectory is in the order of the sampler: index 0 holds x_T and "
                                                   "the last index x_0 (do not reverse it)."),
    ],
))


# ---------------------------------------------------------------- conditional_train_step (the training-step kind)


@functools.lru_cache(maxsize=None)
def _step_alpha_bars():
    return np.asarray(schedules.make_schedule(schedules.cosine_betas(50, max_beta=0.5)).alpha_bars, np.float32)


def _step_batches(rng, n_steps, p_uncond=None):
    """One batch per step: 16 two-pixel images, their labels, steps, noise, alpha_bars, a raw key and p_uncond."""
    batches = []
    for _ in range(n_steps):
        n = 16
        y = rng.integers(0, 2, size=n).astype(np.int32)
        means = np.asarray(guidance.TWO_PIXEL.means, np.float32)
        x0 = (means[y] + 0.1 * rng.standard_normal((n, 2))).astype(np.float32)
        p = np.float32(rng.uniform(0.2, 0.6) if p_uncond is None else p_uncond)
        batches.append((x0, y, rng.integers(1, 51, size=n).astype(np.int32), _array(rng, (n, 2)), _step_alpha_bars(),
                        np.asarray(jax.random.PRNGKey(int(rng.integers(2**31))), np.uint32), p))
    return batches


register(train_step_exercise(
    "conditional_train_step", guidance.conditional_train_step,
    setups=[StepSetup(parts.step_conditional_net, parts.adam, _step_batches, "Adam (learning rate 0.01)")],
    # the edge runs use the same model and optimizer as the visible one (other weights): no new compilation
    edge_setups=[StepSetup(parts.step_conditional_net, parts.adam, functools.partial(_step_batches, p_uncond=0.0), "Adam, p_uncond = 0", seed=1),
                 StepSetup(parts.step_conditional_net, parts.adam, functools.partial(_step_batches, p_uncond=1.0), "Adam, p_uncond = 1", seed=2)],
    hints=[
        Hint(guided_step_with(labels="kept"), "the labels are not dropped: pass y through your drop_labels(key, y, p_uncond) "
                                        "and give the model the labels it returns."),
        Hint(guided_step_with(labels="none"), "every label is replaced by \"no label\": only a fraction p_uncond is dropped, "
                                        "with drop_labels(key, y, p_uncond)."),
        Hint(guided_step_with(sign=-1.0), "the parameters move uphill: pass the gradient itself to optimizer.update (the "
                                    "optimizer already subtracts it), not minus the gradient."),
        Hint(guided_step_with(loss_after=True), "return the loss computed before the update, the one nnx.value_and_grad "
                                          "returns with the gradient."),
        Hint(guided_step_with(x_t="no sqrt"), "x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise: the square roots are missing."),
        Hint(guided_step_with(target="x0"), "the network predicts the noise: compare its output with `noise`, not with x0."),
        Hint(guided_step_with(shift=0), "off by one: alpha_bar_t is alpha_bars[t - 1] (time steps count from 1)."),
    ],
    arg_names=("x0", "y", "t", "noise", "alpha_bars", "key", "p_uncond"),
    depends_on=("drop_labels",)))
