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
from ..grading import CheckFailure, Exercise, _call_student, _compare, describe_value, jit_call, register


def _build(ex, cls, args, reference_cls):
    call = f"{ex.name}({', '.join(map(str, args))}, rngs=nnx.Rngs(0))"
    try:
        model = cls(*args, rngs=nnx.Rngs(0))
    except NotImplementedError:
        raise CheckFailure(f"{ex.name}: not implemented yet. Replace `raise NotImplementedError()` with your code.") from None
    except Exception as exc:  # noqa: BLE001
        raise CheckFailure(f"{ex.name}: creating `{call}` raised {type(exc).__name__}: {exc}. "
                           "Keep the constructor given in the exercise.") from None
    reference = reference_cls(*args, rngs=nnx.Rngs(1))
    try:
        nnx.update(reference, nnx.state(model))
    except Exception:  # noqa: BLE001
        raise CheckFailure(f"{ex.name}: the block's layers differ from the reference's. Keep the constructor "
                           "(__init__) given in the exercise and write only __call__.") from None
    return model, reference


def _check_against(ex, cls, settings, make_inputs, forward, variants, arg_names):
    """Compare the student's block with the reference on each (constructor args, inputs) setting."""
    rng = np.random.default_rng(606)
    for number, args in enumerate(settings, start=1):
        model, reference = _build(ex, cls, args, getattr(unet, ex.name))
        inputs = make_inputs(rng, *args)
        got, _ = _call_student(ex, forward, (model, *inputs), ["block", *arg_names])
        expected = np.asarray(jit_call(forward, (reference, *inputs), (), (0,)))
        problem = _compare(expected, got, 1e-4, 1e-5)
        if problem is None:
            continue
        shapes = ", ".join(f"{name} of shape {np.shape(x)}" for name, x in zip(arg_names, inputs))
        lines = [f"{ex.name}: wrong output for {ex.name}{args} on {shapes}.",
                 f"  expected: {describe_value(expected)}", f"  got:      {describe_value(got)}",
                 *("  " + p for p in problem)]
        for variant, message in variants:
            slip = np.asarray(jit_call(lambda m, *a: variant(m, *a), (reference, *inputs), (), (0,)))
            if _compare(slip, got, 1e-4, 1e-5) is None:
                lines.append(f"Likely slip: {message}")
                break
        raise CheckFailure("\n".join(lines))


# ---------------------------------------------------------------- ResidualBlock


def _block_inputs(rng, in_channels, out_channels, emb_dim):
    x = np.asarray(rng.normal(size=(3, 8, 8, in_channels)), np.float32)
    emb = np.asarray(rng.normal(size=(3, emb_dim)), np.float32)
    return x, emb


def _block_forward(block, x, emb):
    return block(x, emb)


def _block_variant(kind):
    def forward(b, x, emb):
        act = (lambda z: z) if kind == "no_silu" else jax.nn.silu
        first = (lambda z: b.norm1(act(z))) if kind == "silu_before_norm" else (lambda z: act(b.norm1(z)))
        h = b.conv1(first(x))
        e = b.emb_proj(emb if kind == "emb_no_silu" else jax.nn.silu(emb))[:, None, None, :]
        if kind not in ("no_embedding", "embedding_after"):
            h = h + e
        h = b.conv2(act(b.norm2(h)))
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
]


def _check_residual_block(ex, cls):
    """``ResidualBlock(in_channels, out_channels, emb_dim, rngs=...)``: __call__(x, emb) against the reference."""
    _check_against(ex, cls, [(16, 16, 12), (8, 16, 12)], _block_inputs, _block_forward, _BLOCK_SLIPS, ["x", "emb"])
    return ("maps (N, H, W, in) features and (N, emb_dim) embeddings to (N, H, W, out), exactly as the reference, "
            "with and without a change of channels.")


register(Exercise(name="ResidualBlock", reference=None, property_check=_check_residual_block, reference_class=unet.ResidualBlock,
                  probe=lambda cls: cls(8, 8, 4, rngs=nnx.Rngs(0))(jnp.zeros((2, 4, 4, 8)), jnp.zeros((2, 4)))))


# ---------------------------------------------------------------- SelfAttention


def _attention_inputs(rng, channels, num_heads):
    return (np.asarray(rng.normal(size=(2, 4, 3, channels)), np.float32),)


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


def _check_self_attention(ex, cls):
    """``SelfAttention(channels, num_heads, rngs=...)``: __call__(x) against the reference."""
    _check_against(ex, cls, [(16, 4), (8, 2)], _attention_inputs, _attention_forward, _ATTENTION_SLIPS, ["x"])
    return "maps (N, H, W, C) features to the same shape, exactly as the reference, with 4 heads and with 2."


register(Exercise(name="SelfAttention", reference=None, property_check=_check_self_attention, reference_class=unet.SelfAttention,
                  probe=lambda cls: cls(8, 2, rngs=nnx.Rngs(0))(jnp.zeros((2, 2, 2, 8)))))
