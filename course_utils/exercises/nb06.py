"""Notebook 06: the two blocks of the MNIST U-Net, ResidualBlock and SelfAttention, the guided DDIM sampler, and
the image training step ``image_train_step`` (the training-step kind of notebook 04, on a stand-in image model).

For the blocks the student writes ``__call__`` of each class; the constructor (and so the
layer names) is given, so that the shipped weights load into the student's
blocks. The checks build the student's block and the reference with the same
seed, copy the student's weights into the reference, and compare the outputs
on random inputs; on a mismatch they try known slips. The sampler,
``guided_ddim_sample``, is checked against the reference on a cheap stand-in
for the U-Net (same signature, same image shape), so that its test takes
seconds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import guidance, mnist, sampling, schedules, unet
from ..grading import Build, CheckFailure, Exercise, Hint, built_outputs, compare, describe_value, jit_call, register
from . import parts
from .common import guided_step_with, kept_trajectory
from .kinds import StepSetup, train_step_exercise


def _trials(reference_cls, settings, make_inputs, forward):
    """One trial per (constructor args, input size) setting: the student's block gets the reference's weights
    (seed 1), and is called on random inputs."""
    rng = np.random.default_rng(606)
    trials = []
    for args, size in settings:
        reference = reference_cls(*args, rngs=nnx.Rngs(1))
        trials.append(Build(args=args, state=nnx.state(reference), inputs=(make_inputs(rng, size, *args),), forward=forward))
    return trials


def _judge_against(ex, trials, results, variants, arg_names):
    """Compare the student's block with the reference (same weights) on each trial; on a mismatch, try the slips."""
    reference_cls = getattr(unet, ex.name)
    for trial, record in zip(trials, results):
        (got,) = built_outputs(ex, trial, record, arg_names)
        (inputs,) = trial.inputs
        reference = reference_cls(*trial.args, rngs=nnx.Rngs(1))
        expected = np.asarray(jit_call(trial.forward, (reference, *inputs), (), (0,)))
        problem = compare(expected, got, 1e-4, 1e-5)
        if problem is None:
            continue
        shapes = ", ".join(f"{name} of shape {np.shape(x)}" for name, x in zip(arg_names, inputs))
        lines = [f"{ex.name}: wrong output for {ex.name}{trial.args} on {shapes}.",
                 f"  expected: {describe_value(expected)}", f"  got:      {describe_value(got)}",
                 *("  " + p for p in problem)]
        for variant, message in variants:
            try:
                slip = np.asarray(jit_call(lambda m, *a: variant(m, *a), (reference, *inputs), (), (0,)))
            except Exception:  # noqa: BLE001 - a slip that does not apply to this shape
                continue
            if compare(slip, got, 1e-4, 1e-5) is None:
                lines.append(f"Likely slip: {message}")
                break
        raise CheckFailure("\n".join(lines))


# ---------------------------------------------------------------- ResidualBlock


def _block_inputs(rng, size, in_channels, out_channels, emb_dim):
    x = np.asarray(rng.normal(size=(3, size, size, in_channels)), np.float32)
    emb = np.asarray(rng.normal(size=(3, emb_dim)), np.float32)
    return x, emb


def _block_variant(kind):
    def forward(b, x, emb):
        act = (lambda z: z) if kind == "no_silu" else jax.nn.silu
        if kind == "no_norm":
            return b.conv2(act(b.conv1(act(x)) + b.emb_proj(jax.nn.silu(emb))[:, None, None, :])) + (x if b.skip is None else b.skip(x))
        swapped = kind in ("silu_before_norm", "silu_before_norm_both")
        first = (lambda z: b.norm1(act(z))) if swapped else (lambda z: act(b.norm1(z)))
        second = (lambda z: b.norm2(act(z))) if kind in ("silu_before_norm_both", "silu_before_norm_second") else (lambda z: act(b.norm2(z)))
        h = b.conv1(first(x))
        e = b.emb_proj(emb if kind == "emb_no_silu" else jax.nn.silu(emb))[:, None, None, :]
        if kind not in ("no_embedding", "embedding_after"):
            h = h + e
        h = b.conv2(second(h))
        if kind == "embedding_after":
            h = h + e
        if kind == "no_skip":
            return h
        return h + (x if b.skip is None else b.skip(x))
    return forward


_BLOCK_SLIPS = [
    (_block_variant("no_skip"), "the skip connection is missing: add x (or self.skip(x) when the channels change) to the output."),
    (_block_variant("no_embedding"), "the embedding is not added: add self.emb_proj(silu(emb))[:, None, None, :] after the first convolution."),
    (_block_variant("embedding_after"), "the embedding is added after the second convolution; add it between the two."),
    (_block_variant("emb_no_silu"), "apply jax.nn.silu to emb before self.emb_proj."),
    (_block_variant("no_silu"), "the SiLU activations are missing: norm, then jax.nn.silu, then the convolution."),
    (_block_variant("silu_before_norm"), "the order is GroupNorm, then SiLU, then the convolution (you applied SiLU first)."),
    (_block_variant("no_norm"), "the group norms are missing: self.norm1 before the first SiLU, self.norm2 before the second."),
    (_block_variant("silu_before_norm_both"), "the order is GroupNorm, then SiLU, then the convolution, in both halves "
                                              "(you applied SiLU before self.norm1 and before self.norm2)."),
    (_block_variant("silu_before_norm_second"), "the order is GroupNorm, then SiLU, then the convolution "
                                                "(you applied SiLU before self.norm2 in the second half)."),
]


_BLOCK_SETTINGS = [((16, 16, 12), 8), ((8, 16, 12), 8)]
# Hidden tests add the U-Net's own shapes: an up block at 14x14 (skip concatenated: 96 -> 32 channels), a middle block.
_BLOCK_UNET_SETTINGS = [((96, 32, 128), 14), ((64, 64, 128), 7)]


def _residual_block_trials(edge_cases):
    settings = _BLOCK_SETTINGS + (_BLOCK_UNET_SETTINGS if edge_cases else [])
    return _trials(unet.ResidualBlock, settings, _block_inputs, parts.apply_block)


def _judge_residual_block(ex, trials, results):
    """``ResidualBlock(in_channels, out_channels, emb_dim, rngs=...)``: __call__(x, emb) against the reference."""
    _judge_against(ex, trials, results, _BLOCK_SLIPS, ["x", "emb"])
    shown = "; ".join(f"{t.args} on {t.inputs[0][0].shape[1]}x{t.inputs[0][0].shape[2]}" for t in trials)
    return (f"maps (N, H, W, in) features and (N, emb_dim) embeddings to (N, H, W, out), exactly as the reference, "
            f"with and without a change of channels ({shown}).")


register(Exercise(name="ResidualBlock", reference=None, trials=_residual_block_trials, judge=_judge_residual_block,
                  reference_class=unet.ResidualBlock))


# ---------------------------------------------------------------- SelfAttention


def _attention_inputs(rng, size, channels, num_heads):
    return (np.asarray(rng.normal(size=(2 if size is None else 3, *(size or (4, 3)), channels)), np.float32),)


def _attention_variant(kind):
    def forward(a, x):
        n, h, w, c = x.shape
        heads = 1 if kind == "one_head" else a.num_heads
        d = c // heads
        qkv = a.qkv(x if kind == "no_norm" else a.norm(x)).reshape(n, h * w, 3, heads, d)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scores = jnp.einsum("nqhd,nkhd->nhqk", q, k)
        if kind != "no_scale":
            scores = scores / jnp.sqrt(d)
        weights = jax.nn.softmax(scores, axis=-2 if kind == "softmax_queries" else -1)
        out = a.out(jnp.einsum("nhqk,nkhd->nqhd", weights, v).reshape(n, h, w, c))
        return out if kind == "no_residual" else x + out
    return forward


_ATTENTION_SLIPS = [
    (_attention_variant("no_residual"), "the residual connection is missing: return x + self.out(...)."),
    (_attention_variant("no_scale"), "divide the scores Q K^T by sqrt(d), d = channels // num_heads (the size of one head)."),
    (_attention_variant("softmax_queries"), "the softmax runs over the keys (the last axis of the scores), so each query's weights sum to 1."),
    (_attention_variant("one_head"), "the channels are split into self.num_heads heads, each attending on its own."),
    (_attention_variant("no_norm"), "normalise x with self.norm before computing queries, keys and values."),
]


_ATTENTION_SETTINGS = [((16, 4), None), ((8, 2), None)]
_ATTENTION_UNET_SETTINGS = [((64, 4), (7, 7))]  # hidden tests: the U-Net's own setting


def _self_attention_trials(edge_cases):
    settings = _ATTENTION_SETTINGS + (_ATTENTION_UNET_SETTINGS if edge_cases else [])
    return _trials(unet.SelfAttention, settings, _attention_inputs, parts.apply_attention)


def _judge_self_attention(ex, trials, results):
    """``SelfAttention(channels, num_heads, rngs=...)``: __call__(x) against the reference."""
    _judge_against(ex, trials, results, _ATTENTION_SLIPS, ["x"])
    shown = "; ".join(f"{t.args[1]} heads of {t.args[0]} channels" for t in trials)
    return f"maps (N, H, W, C) features to the same shape, exactly as the reference ({shown})."


register(Exercise(name="SelfAttention", reference=None, trials=_self_attention_trials, judge=_judge_self_attention,
                  reference_class=unet.SelfAttention))


# ---------------------------------------------------------------- the sampler: guided_ddim_sample


_TOYS = {}


def _toy(seed):
    """One of three stand-in models, made once (building models is slow)."""
    seed = int(seed) % 3
    if seed not in _TOYS:
        _TOYS[seed] = parts.ToyImageEps(seed)
    return _TOYS[seed]


_N_IMAGES = 4


def _ddim_inputs(rng, T, timesteps, w, betas=None):
    if betas is None:
        betas = np.linspace(1e-3, rng.uniform(0.1, 0.2), T)
    alpha_bars = np.cumprod(1 - np.asarray(betas, np.float64)).astype(np.float32)
    return (_toy(int(rng.integers(3))), np.asarray(rng.standard_normal((_N_IMAGES, 28, 28, 1)), np.float32),
            rng.integers(0, 10, size=_N_IMAGES).astype(np.int32), np.float32(w),
            np.asarray(timesteps, np.int32), alpha_bars)


def _ddim_case(rng):
    """T = 50, 5 visited jumps: evenly spaced (one case in two) or uneven, always from T down to 0; w in [0.5, 4]."""
    T, K = 50, 5
    if rng.uniform() < 0.5:
        timesteps = np.round(np.linspace(T, 0, K + 1))
    else:
        timesteps = np.concatenate([[T], np.sort(rng.choice(np.arange(1, T), K - 1, replace=False))[::-1], [0]])
    return _ddim_inputs(rng, T, timesteps, rng.uniform(0.5, 4.0))


def _ddim_edge_cases():
    from .. import mnist

    rng = np.random.default_rng(6061)
    return [
        _ddim_inputs(rng, 50, [50, 0], 2.0),                                   # one jump from T to 0
        _ddim_inputs(rng, 50, np.arange(50, -1, -10), 0.0),                    # w = 0: the plain conditional model
        _ddim_inputs(rng, 10, np.arange(10, -1, -1), 1.5),                     # every step, t' = t - 1
        _ddim_inputs(rng, mnist.T, np.round(np.linspace(mnist.T, 0, 21)), 2.0,  # the notebook's schedule and steps
                     betas=np.asarray(mnist.make_betas("cosine"))),
    ]


def _ddim_with(order="down", pairs="t_then_next", prev_one=True, shift=1, model_t="t", guidance="cfg", null=-1,
               direction="guided", x0_power=0.5, keep="x_T first"):
    """The guided DDIM sampler with one slip."""
    def run(model, x_T, y, w, timesteps, alpha_bars):
        timesteps, alpha_bars = jnp.asarray(timesteps), jnp.asarray(alpha_bars)
        ts = timesteps[::-1] if order == "reversed" else timesteps
        if pairs == "t_then_next":
            steps = jnp.stack([ts[:-1], ts[1:]], axis=1)
        elif pairs == "swapped":
            steps = jnp.stack([ts[1:], ts[:-1]], axis=1)
        else:  # "t_minus_1": the next visited step ignored, t' = t - 1
            steps = jnp.stack([ts[:-1], ts[:-1] - 1], axis=1)
        no_label = jnp.full_like(y, null)

        def body(x, pair):
            t, t_prev = pair[0], pair[1]
            at = jnp.full((x.shape[0],), t if model_t == "t" else t_prev)
            cond, uncond = model(x, at, y), model(x, at, no_label)
            eps = {"cfg": (w + 1) * cond - w * uncond, "convention": w * cond + (1 - w) * uncond,
                   "swapped": (w + 1) * uncond - w * cond, "difference": w * (cond - uncond)}[guidance]
            ab_t = alpha_bars[t - shift]
            ab_index = alpha_bars[t_prev - shift]
            ab_prev = jnp.where(t_prev > 0, ab_index, 1.0) if prev_one else ab_index
            x0_hat = (x - jnp.sqrt(1 - ab_t) * eps) / ab_t**x0_power
            x_prev = jnp.sqrt(ab_prev) * x0_hat + jnp.sqrt(1 - ab_prev) * (eps if direction == "guided" else cond)
            return x_prev, (x if keep in ("no x_0", "x_t collected") else x_prev)

        x_last, xs = jax.lax.scan(body, x_T, steps)
        return kept_trajectory(keep, x_T, x_last, xs)
    return run


register(Exercise(
    name="guided_ddim_sample",
    reference=sampling.guided_ddim_sample,
    make_case=_ddim_case,
    edge_cases=_ddim_edge_cases,
    module_argnums=(0,),
    rtol=1e-4, atol=1e-4,  # x0_hat reaches ~100 where alpha_bar_t is small: float32 rounding of other algebra
    requires=("scan", "while"),
    requires_message="loop over the visited time steps with jax.lax.scan (a Python for loop unrolls every step, "
                     "each with two calls of the U-Net, into one huge compiled program).",
    hints=[
        Hint(_ddim_with(order="reversed"), "`timesteps` is already in the order of sampling, from T down to 0: "
                                           "do not reverse it."),
        Hint(_ddim_with(pairs="swapped"), "each step goes from t = timesteps[k] down to t' = timesteps[k + 1], "
                                          "the smaller one (you swapped t and t')."),
        Hint(_ddim_with(pairs="t_minus_1"), "each step jumps to the next visited step, t' = timesteps[k + 1], "
                                            "not to t - 1: that is how DDIM skips steps."),
        Hint(_ddim_with(prev_one=False), "at the last step t' = 0, and alpha_bar_0 = 1 (the clean image): "
                                         "alpha_bars[t' - 1] with t' = 0 wraps around to alpha_bar_T. Use jnp.where."),
        Hint(_ddim_with(shift=0), "off by one: the alpha_bar of step t is alpha_bars[t - 1] (time steps count from 1), "
                                  "and the same for t'."),
        Hint(_ddim_with(model_t="t_prev"), "call the U-Net at the step the image is at, t, not at the step t' "
                                           "it jumps to."),
        Hint(_ddim_with(guidance="convention"), "the guided noise is (w + 1) eps(x_t, t, y) - w eps(x_t, t, no label): "
                                                "with w = 0 it is the plain conditional prediction."),
        Hint(_ddim_with(guidance="swapped"), "the conditional prediction gets the weight (w + 1) and the "
                                             "unconditional one -w (you swapped them)."),
        Hint(_ddim_with(guidance="difference"), "the guided noise is eps(x_t, t, y) + w (eps(x_t, t, y) - eps(x_t, t, no label)): "
                                                "the conditional prediction itself is missing."),
        Hint(_ddim_with(null=0), "\"no label\" is the label -1 (the U-Net's learned null entry); label 0 asks for "
                                 "the digit zero."),
        Hint(_ddim_with(direction="conditional"), "use the guided noise in both places: in x0_hat and in the "
                                                  "direction term sqrt(1 - alpha_bar_t') * eps."),
        Hint(_ddim_with(x0_power=1.0), "x0_hat divides by sqrt(alpha_bar_t), not by alpha_bar_t."),
        Hint(_ddim_with(keep="x_0 only"), "return the whole trajectory, shape (K + 1, N, 28, 28, 1), not only the "
                                          "final x_0: scan's second output collects one image batch per step."),
        Hint(_ddim_with(keep="no x_T"), "the trajectory starts with x_T itself: put x_T in front of the K states "
                                        "that the scan collects."),
        Hint(_ddim_with(keep="no x_0"), "the trajectory is missing x_0: collect the new state x_t' in the scan body, "
                                        "not the state x_t it started from."),
        Hint(_ddim_with(keep="x_t collected"), "the trajectory holds x_T twice and misses x_0: collect the new state "
                                               "x_t' in the scan body, not the state x_t it started from."),
    ],
))


# ---------------------------------------------------------------- image_train_step (the training-step kind)

def _image_alpha_bars():
    return np.cumprod(1 - np.asarray(schedules.cosine_betas(20, max_beta=0.2))).astype(np.float32)


def _image_step_batches(rng, n_steps, p_uncond=None):
    """One batch per step: 6 small images (6, 8, 8, 1) in [-1, 1], their digits, steps, noise, alpha_bars, a raw
    key and p_uncond. Six images, not eight: an alpha_bar_t shaped (N, 1) then fails to broadcast instead of
    silently mixing images."""
    alpha_bars = _image_alpha_bars()
    batches = []
    for _ in range(n_steps):
        n = 6
        x0 = np.tanh(rng.standard_normal((n, 8, 8, 1)) * 1.5).astype(np.float32)
        p = np.float32(rng.uniform(0.2, 0.6) if p_uncond is None else p_uncond)
        batches.append((x0, rng.integers(0, 10, size=n).astype(np.int32),
                        rng.integers(1, len(alpha_bars) + 1, size=n).astype(np.int32),
                        rng.standard_normal((n, 8, 8, 1)).astype(np.float32), alpha_bars,
                        np.asarray(jax.random.PRNGKey(int(rng.integers(2**31))), np.uint32), p))
    return batches


register(train_step_exercise(
    "image_train_step", mnist.image_train_step,
    setups=[StepSetup(parts.step_image_net, parts.adam, _image_step_batches, "Adam (learning rate 0.01)")],
    # the hidden runs use the same model and optimizer (other weights): no new compilation
    edge_setups=[StepSetup(parts.step_image_net, parts.adam, functools.partial(_image_step_batches, p_uncond=0.0),
                           "Adam, p_uncond = 0", seed=1),
                 StepSetup(parts.step_image_net, parts.adam, functools.partial(_image_step_batches, p_uncond=1.0),
                           "Adam, p_uncond = 1", seed=2),
                 StepSetup(parts.step_image_net, parts.sgd_momentum, _image_step_batches, "SGD with momentum", seed=3)],
    hints=[
        Hint(guided_step_with(labels="kept"), "the labels are not dropped: pass y through "
             "cu.guidance.drop_labels(key, y, p_uncond) and give the model the labels it returns."),
        Hint(guided_step_with(labels="none"), "every label is replaced by \"no label\": only a fraction p_uncond is "
             "dropped, with cu.guidance.drop_labels(key, y, p_uncond)."),
        Hint(guided_step_with(sign=-1.0), "the parameters move uphill: pass the gradient itself to optimizer.update "
             "(the optimizer already subtracts it), not minus the gradient."),
        Hint(guided_step_with(loss_after=True), "return the loss computed before the update, the one "
             "nnx.value_and_grad returns with the gradient."),
        Hint(guided_step_with(x_t="no sqrt"), "x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise: the square "
             "roots are missing."),
        Hint(guided_step_with(target="x0"), "the network predicts the noise: compare its output with `noise`, not "
             "with x0."),
        Hint(guided_step_with(shift=0), "off by one: alpha_bar_t is alpha_bars[t - 1] (time steps count from 1)."),
        Hint(guided_step_with(reduce="sum"), "the loss sums the squared errors over the pixels of each image: take "
             "the mean over the batch and every pixel (jnp.mean of the whole array), as the contract says."),
    ],
    arg_names=("x0", "y", "t", "noise", "alpha_bars", "key", "p_uncond"),
    # notebook 05's conditional_train_step does the same step on any shape: calling it writes nothing
    forbidden=(guidance.conditional_train_step,),
    rtol=1e-4, atol=1e-6, seed=606))
