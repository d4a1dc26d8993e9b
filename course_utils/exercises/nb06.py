"""Notebook 06: the two blocks of the MNIST U-Net, ResidualBlock and SelfAttention.

The student writes ``__call__`` of each class; the constructor (and so the
layer names) is given, so that the shipped weights load into the student's
blocks. The checks build the student's block and the reference with the same
seed, copy the student's weights into the reference, and compare the outputs
on random inputs; on a mismatch they try known slips.
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import unet
from ..grading import Build, CheckFailure, Exercise, _compare, built_outputs, describe_value, jit_call, register


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
        problem = _compare(expected, got, 1e-4, 1e-5)
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
            if _compare(slip, got, 1e-4, 1e-5) is None:
                lines.append(f"Likely slip: {message}")
                break
        raise CheckFailure("\n".join(lines))


# ---------------------------------------------------------------- ResidualBlock


def _block_inputs(rng, size, in_channels, out_channels, emb_dim):
    x = np.asarray(rng.normal(size=(3, size, size, in_channels)), np.float32)
    emb = np.asarray(rng.normal(size=(3, emb_dim)), np.float32)
    return x, emb


def _block_forward(block, x, emb):
    return block(x, emb)


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
    return _trials(unet.ResidualBlock, settings, _block_inputs, _block_forward)


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


def _attention_forward(block, x):
    return block(x)


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
    return _trials(unet.SelfAttention, settings, _attention_inputs, _attention_forward)


def _judge_self_attention(ex, trials, results):
    """``SelfAttention(channels, num_heads, rngs=...)``: __call__(x) against the reference."""
    _judge_against(ex, trials, results, _ATTENTION_SLIPS, ["x"])
    shown = "; ".join(f"{t.args[1]} heads of {t.args[0]} channels" for t in trials)
    return f"maps (N, H, W, C) features to the same shape, exactly as the reference ({shown})."


register(Exercise(name="SelfAttention", reference=None, trials=_self_attention_trials, judge=_judge_self_attention,
                  reference_class=unet.SelfAttention))
