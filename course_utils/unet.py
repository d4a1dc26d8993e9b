r"""The U-Net of notebook 06: a class-conditional noise predictor for 28 x 28 images.

Shapes follow JAX's convention for images: (N, height, width, channels).

The network has four residual blocks on the way down and four on the way up
(the *paths*), a middle block, self-attention at the two lowest resolutions,
and an embedding of the time step and the class label that every residual
block adds to its features::

    28x28  conv_in ─ down[0] ──────────────────────────── up[0] ─ conv_out
              (avg-pool 2x2)                          (nearest 2x)
    14x14           down[1] ──────────────────── up[1]
              (avg-pool 2x2)                  (nearest 2x)
     7x7              down[2]+attn ──── up[2]+attn
                         down[3]+attn ─ up[3]+attn
                              middle (res + attn + res)

Each up block takes the output of the down block at the same level,
concatenated to its input (the skip connections), so fine detail from the
way down reaches the output without passing through the bottleneck.

Speed on a CPU. Two things make this network train about 1.7x faster on a
CPU than a plain flax version (``benchmarks/unet_mnist.py``):

* XLA hands convolutions to the YNNPACK library by default, which is 2-3x
  slower than XLA's own (Eigen) convolutions on these small images, in both
  directions. :func:`course_utils.config.jit` compiles the U-Net's train and
  sampling steps with YNNPACK kept for matrix products and reductions only.
* flax's ``GroupNorm`` reduces over a (N, H, W, groups, channels per group)
  view, which XLA's CPU backend runs 5-9x slower than one reduction over the
  pixels followed by a tiny one over each group: :class:`GroupNorm` here.
"""

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from .embeddings import sinusoidal_embedding
from ._validate import marked
from .models import ClassEmbedding, Linear, fan_in_normal

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def conv2d(x, kernel):
    """A 'SAME' convolution with stride 1: ``x`` (N, H, W, C_in), ``kernel`` (kh, kw, C_in, C_out)."""
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DIMENSIONS)


class Conv(nnx.Module):
    """A 'SAME' convolution with stride 1 and a bias, computed by :func:`conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(fan_in_normal(rngs.params(), (kernel_size, kernel_size, in_channels, out_channels)))
        self.bias = nnx.Param(jnp.zeros((out_channels,)))

    def __call__(self, x):
        return conv2d(x, self.kernel[...]) + self.bias[...]


def _groups(channels: int) -> int:
    """Groups for GroupNorm: 8 where the channels allow it."""
    return 8 if channels % 8 == 0 else 1


class GroupNorm(nnx.Module):
    r"""Group normalisation of (N, ..., channels) features, the same as ``flax.nnx.GroupNorm`` (and its parameters).

    The channels are split into ``num_groups`` groups; each example's features
    in a group are normalised by their mean and variance over the group's
    channels and all pixels, then scaled and shifted per channel:

    .. math::
        \mathrm{GN}(x)_c = \gamma_c\,\frac{x_c - \mu_g}{\sqrt{\sigma_g^2 + \epsilon}} + \beta_c,
        \qquad c \in g

    The group moments come from each channel's mean of :math:`x` and of
    :math:`x^2` over the pixels (one reduction that XLA runs fast on a CPU),
    then the average of those over the group's channels.
    """

    def __init__(self, num_features: int, num_groups: int = 8, *, epsilon: float = 1e-6, rngs: nnx.Rngs = None):
        if num_features % num_groups:
            raise ValueError(f"GroupNorm: `num_features` ({num_features}) must be divisible by `num_groups` ({num_groups})")
        self.num_groups, self.epsilon = num_groups, epsilon
        self.scale = nnx.Param(jnp.ones((num_features,)))
        self.bias = nnx.Param(jnp.zeros((num_features,)))

    def __call__(self, x):
        n, channels = x.shape[0], x.shape[-1]
        per_group = channels // self.num_groups
        pixels = x.reshape(n, -1, channels)
        mean = pixels.mean(axis=1).reshape(n, self.num_groups, per_group).mean(axis=-1)              # (N, groups)
        mean_square = jnp.square(pixels).mean(axis=1).reshape(n, self.num_groups, per_group).mean(axis=-1)
        inverse_std = jax.lax.rsqrt(jnp.maximum(mean_square - jnp.square(mean), 0.0) + self.epsilon)
        scale = jnp.repeat(inverse_std, per_group, axis=1) * self.scale[...]                        # (N, channels)
        shift = self.bias[...] - jnp.repeat(mean, per_group, axis=1) * scale
        broadcast = (n,) + (1,) * (x.ndim - 2) + (channels,)
        return x * scale.reshape(broadcast) + shift.reshape(broadcast)


class ResidualBlock(nnx.Module):
    r"""Two 3x3 convolutions with the embedding added in between, plus a skip connection.

    .. math::
        h = \mathrm{conv}_1(\mathrm{silu}(\mathrm{GN}_1(x))) + W_e\,\mathrm{silu}(e), \qquad
        \mathrm{out} = \mathrm{conv}_2(\mathrm{silu}(\mathrm{GN}_2(h))) + \mathrm{skip}(x)

    where ``skip`` is the identity when the channel counts agree and a 1x1
    convolution otherwise. ``x``: (N, H, W, in_channels); ``emb``: (N, emb_dim).
    Returns (N, H, W, out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, *, rngs: nnx.Rngs):
        self.norm1 = GroupNorm(in_channels, num_groups=_groups(in_channels), rngs=rngs)
        self.conv1 = Conv(in_channels, out_channels, rngs=rngs)
        self.emb_proj = Linear(emb_dim, out_channels, rngs=rngs)
        self.norm2 = GroupNorm(out_channels, num_groups=_groups(out_channels), rngs=rngs)
        self.conv2 = Conv(out_channels, out_channels, rngs=rngs)
        self.skip = Conv(in_channels, out_channels, kernel_size=1, rngs=rngs) if in_channels != out_channels else None

    @marked
    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.emb_proj(jax.nn.silu(emb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class SelfAttention(nnx.Module):
    r"""Multi-head self-attention over the pixels of a feature map, with a residual connection.

    Every pixel is a token of ``channels`` numbers. After a group norm,
    queries, keys and values are linear maps of the tokens, split into
    ``num_heads`` heads of ``channels // num_heads`` numbers each:

    .. math::
        \mathrm{head}_i = \mathrm{softmax}\!\Big(\frac{Q_i K_i^\top}{\sqrt{d}}\Big) V_i, \qquad
        \mathrm{out} = x + W_o\,[\mathrm{head}_1, \dots, \mathrm{head}_h]

    ``x``: (N, H, W, channels); returns the same shape.

    The computation is the one notebook 06 asks for, arranged with the heads
    in front: the projections' weights are viewed as (channels, 3, heads, d)
    and (heads, d, channels), so that queries, keys and values come out of one
    product already as (3, N, heads, tokens, d) and the heads merge inside the
    output product. XLA then moves no data between the products; the train
    step is about 4 % faster on a CPU than with the (N, tokens, heads, d)
    layout and its transposes (``benchmarks/unet_mnist.py``).
    """

    def __init__(self, channels: int, num_heads: int = 4, *, rngs: nnx.Rngs):
        if channels % num_heads:
            raise ValueError(f"SelfAttention: `channels` ({channels}) must be divisible by `num_heads` ({num_heads})")
        self.num_heads = num_heads
        self.norm = GroupNorm(channels, num_groups=_groups(channels), rngs=rngs)
        self.qkv = Linear(channels, 3 * channels, rngs=rngs)
        self.out = Linear(channels, channels, rngs=rngs)

    @marked
    def __call__(self, x):
        n, h, w, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        tokens = self.norm(x).reshape(n, h * w, c)
        w_qkv = self.qkv.kernel[...].reshape(c, 3, heads, d)
        b_qkv = self.qkv.bias[...].reshape(3, 1, heads, 1, d)
        q, k, v = jnp.einsum("ntc,cihd->inhtd", tokens, w_qkv) + b_qkv  # each (N, heads, tokens, d)
        weights = jax.nn.softmax(jnp.einsum("nhqd,nhkd->nhqk", q, k) / jnp.sqrt(d), axis=-1)
        attended = jnp.einsum("nhqk,nhkd->nhqd", weights, v)
        out = jnp.einsum("nhqd,hdc->nqc", attended, self.out.kernel[...].reshape(heads, d, c)) + self.out.bias[...]
        return x + out.reshape(n, h, w, c)


def _pool(x):
    """2x2 average pooling."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def _upsample(x):
    """Nearest-neighbour upsampling by 2."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The sizes of a :class:`UNet`.

    ``channels``: the channels of the four levels (28, 14, 7 and 7 pixels for
    MNIST); ``attention``: which levels have self-attention; ``emb_dim``: the
    size of the time + class embedding; ``num_classes``: labels 0..K-1 (and
    -1 for "no label"); ``image_channels``: 1 for grey images.
    """

    channels: tuple = (16, 32, 64, 64)
    attention: tuple = (False, False, True, True)
    emb_dim: int = 128
    num_heads: int = 4
    num_classes: int = 10
    image_channels: int = 1


CPU_CONFIG = UNetConfig()
"""Sized to train on a 2-core CPU in minutes."""

GPU_CONFIG = UNetConfig(channels=(64, 128, 256, 256), emb_dim=256)
"""Wider, for a GPU."""

POOL_AFTER = (True, True, False, False)
"""Which levels halve the resolution after their down block (28 -> 14 -> 7)."""


class UNet(nnx.Module):
    r"""The noise predictor :math:`\epsilon_\theta(x_t, t, y)` for images (see the module docstring).

    ``x``: (N, H, W, image_channels) with H and W divisible by 4; ``t``: (N,)
    time steps; ``y``: (N,) labels in 0..K-1, or -1 for "no label". Returns
    the predicted noise, the shape of ``x``.

    ``residual_block`` and ``attention`` are the classes of the blocks (the
    notebook passes its own, with the same constructor and layer names, so
    that the shipped weights load into either).
    """

    def __init__(self, config: UNetConfig = CPU_CONFIG, *, rngs: nnx.Rngs, residual_block=None, attention=None):
        block = residual_block or ResidualBlock
        attention_block = attention or SelfAttention
        self.config = config
        c, e = config.channels, config.emb_dim
        self.time_in = Linear(c[0], e, rngs=rngs)
        self.time_out = Linear(e, e, rngs=rngs)
        self.class_embed = ClassEmbedding(config.num_classes, e, rngs=rngs)
        self.conv_in = Conv(config.image_channels, c[0], rngs=rngs)

        def attention(level):
            return attention_block(c[level], config.num_heads, rngs=rngs) if config.attention[level] else None

        ins = (c[0],) + c[:-1]
        self.down = nnx.List([block(ins[i], c[i], e, rngs=rngs) for i in range(4)])
        self.down_attention = nnx.List([attention(i) for i in range(4)])
        self.middle1 = block(c[3], c[3], e, rngs=rngs)
        self.middle_attention = attention_block(c[3], config.num_heads, rngs=rngs)
        self.middle2 = block(c[3], c[3], e, rngs=rngs)
        # up[i] works at level i: its input comes from level i + 1 (or the middle), plus the skip of down[i].
        outs_above = c[1:] + (c[3],)
        self.up = nnx.List([block(outs_above[i] + c[i], c[i], e, rngs=rngs) for i in range(4)])
        self.up_attention = nnx.List([attention(i) for i in range(4)])
        self.norm_out = GroupNorm(c[0], num_groups=_groups(c[0]), rngs=rngs)
        self.conv_out = Conv(c[0], config.image_channels, rngs=rngs)

    def embed(self, t, y):
        """The embedding of time step and label, shape (N, emb_dim)."""
        time = self.time_out(jax.nn.silu(self.time_in(sinusoidal_embedding.raw(t, self.config.channels[0]))))
        return time + self.class_embed(y)

    def __call__(self, x, t, y):
        emb = self.embed(t, y)
        h = self.conv_in(x)
        skips = []
        for level in range(4):
            h = self.down[level](h, emb)
            if self.down_attention[level] is not None:
                h = self.down_attention[level](h)
            skips.append(h)
            if POOL_AFTER[level]:
                h = _pool(h)
        h = self.middle2(self.middle_attention(self.middle1(h, emb)), emb)
        for level in reversed(range(4)):
            if POOL_AFTER[level]:
                h = _upsample(h)
            h = self.up[level](jnp.concatenate([h, skips[level]], axis=-1), emb)
            if self.up_attention[level] is not None:
                h = self.up_attention[level](h)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))
