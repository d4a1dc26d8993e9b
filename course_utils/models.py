"""The denoising networks of the course, in flax.nnx.

Each model maps a noisy input ``x_t`` and its time step ``t`` to a prediction
of the noise that was added, with the shape of ``x_t``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._validate import marked
from .embeddings import class_one_hot, fourier_frequencies, gaussian_fourier_embedding, sinusoidal_embedding


def fan_in_normal(key, shape, dtype=jnp.float32):
    """Initial weights, normal with standard deviation 1 / sqrt(fan_in) (fan_in: the product of all axes but the last).

    Drawn by numpy from a seed taken from ``key``, so the same key gives the
    same weights. ``jax.random.normal`` compiles one program per shape, 0.2-0.7 s
    each on a CPU, which made building the U-Net take 12 s; this takes a
    fraction of a second. Under a trace (``jax.jit``, ``nnx.eval_shape``) it
    uses ``jax.random``.
    """
    scale = 1.0 / math.sqrt(math.prod(shape[:-1]))
    if isinstance(key, jax.core.Tracer):
        return jax.random.normal(key, shape, dtype) * scale
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * scale, dtype)


def Linear(in_features: int, out_features: int, *, rngs: nnx.Rngs, **kwargs) -> nnx.Linear:
    """``flax.nnx.Linear`` with :func:`fan_in_normal` initial weights: the same layer and parameters, built faster."""
    return nnx.Linear(in_features, out_features, kernel_init=fan_in_normal, rngs=rngs, **kwargs)


class MLPDenoiser(nnx.Module):
    """A small MLP noise predictor for points in a low-dimensional space.

    The point and the sinusoidal embedding of its time step are concatenated
    and passed through ``depth`` hidden layers of width ``hidden`` with SiLU
    activations; the last layer outputs the predicted noise.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 32, *, rngs: nnx.Rngs):
        self.time_dim = time_dim
        sizes = [dim + time_dim] + [hidden] * depth
        self.hidden = nnx.List([Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = Linear(hidden, dim, rngs=rngs)

    @marked
    def __call__(self, x, t):
        """``x``: (N, dim) noisy points; ``t``: (N,) time steps. Returns (N, dim)."""
        h = jnp.concatenate([x, sinusoidal_embedding.raw(t, self.time_dim)], axis=-1)
        for layer in self.hidden:
            h = jax.nn.silu(layer(h))
        return self.out(h)


class WidenNarrowMLP(nnx.Module):
    """An "upside-down U-Net" for tiny images: it widens, then narrows back, with a skip.

    A 3x3 image is too small to downsample, so instead the network lifts it to
    wider layers (``widths``, e.g. 64, 256, 64) and brings it back to 9
    pixels; each widening layer's output is added to the narrowing layer of the
    same width, as in a U-Net's skip connections. The time embedding is
    concatenated to the input. Input and output have shape (N, H, W).
    """

    def __init__(self, shape=(3, 3), widths=(64, 256), time_dim: int = 16, *, rngs: nnx.Rngs):
        self.image_shape = tuple(shape)
        self.time_dim = time_dim
        pixels = self.image_shape[0] * self.image_shape[1]
        up = [pixels + time_dim, *widths]
        self.widen = nnx.List([Linear(a, b, rngs=rngs) for a, b in zip(up[:-1], up[1:])])
        down = [*reversed(widths), widths[0]]
        self.narrow = nnx.List([Linear(a, b, rngs=rngs) for a, b in zip(down[:-1], down[1:])])
        self.out = Linear(widths[0], pixels, rngs=rngs)

    def __call__(self, x, t):
        n = x.shape[0]
        h = jnp.concatenate([x.reshape(n, -1), sinusoidal_embedding.raw(t, self.time_dim)], axis=-1)
        skips = []
        for layer in self.widen:
            h = jax.nn.silu(layer(h))
            skips.append(h)
        skips.pop()  # the widest layer feeds the narrowing path directly
        for layer in self.narrow:
            h = jax.nn.silu(layer(h))
            if skips and h.shape[-1] == skips[-1].shape[-1]:
                h = h + skips.pop()
        return self.out(h).reshape(x.shape)


class ClassEmbedding(nnx.Module):
    """A learned vector per class and one for "no label": a linear layer on :func:`class_one_hot` codes.

    ``y`` holds labels in 0..K-1, or -1 (:data:`course_utils.embeddings.NO_LABEL`)
    for "no label"; the result has shape ``(*y.shape, dim)``.
    """

    def __init__(self, num_classes: int, dim: int, *, rngs: nnx.Rngs):
        self.num_classes = num_classes
        self.project = Linear(num_classes + 1, dim, use_bias=False, rngs=rngs)

    def __call__(self, y):
        return self.project(class_one_hot(y, self.num_classes))


class TwoPixelUNet(nnx.Module):
    r"""The conditional U-Net of notebook 05: noise prediction :math:`\epsilon_\theta(x_t, t, y)` for two-pixel images.

    The image is a sequence of length 2 with one channel, shape (N, 2, 1).
    Two encoder and two decoder blocks, each adding a projection of the
    (time + class) embedding to its features (shapes are (N, length, channels)):

    ===========  ======================================================  ==================
    block        layers                                                  output
    ===========  ======================================================  ==================
    encoder 1    Conv1D kernel 2 + Dense(emb) + GroupNorm(4) + SiLU       (N, 1, c1)
    encoder 2    Conv1D kernel 1 + Dense(emb) + GroupNorm(32) + SiLU      (N, 1, c2)
    decoder 1    ConvTranspose1D kernel 1 + Dense(emb) + GroupNorm(4)     (N, 1, c1)
                 + SiLU; concatenated with encoder 1's output and the
                 two input pixels (skip connections)                      (N, 1, 2 c1 + 2)
    decoder 2    ConvTranspose1D kernel 1 with 2 output channels, read
                 as the two pixels                                        (N, 2)
    ===========  ======================================================  ==================

    The kernel-2 convolution ('VALID') sees both pixels at once and leaves a
    sequence of length 1, so every later layer mixes channels only, and the
    last layer's two output channels are the two pixels. (A length-2 design
    with 'SAME' padding would leave the right pixel blind to the left one;
    with circular padding the network would treat the two pixels
    symmetrically and could not learn a mixture that is not.) The skip from
    the input lets the scale of :math:`x_t` survive the group normalisations:
    the exact noise predictor is nearly linear in :math:`x_t`.

    The embedding is :math:`\mathrm{silu}(\mathrm{Dense}(\text{Fourier}(t / T))) + \text{class}(y)`,
    with fixed random Fourier frequencies ``W`` and a :class:`ClassEmbedding`
    (label -1 = "no label"). ``x``: (N, 2); ``t``: (N,) steps in 1..T;
    ``y``: (N,) labels in -1..K-1. Returns (N, 2).
    """

    def __init__(self, T: int, num_classes: int = 2, channels=(32, 128), embed_dim: int = 32,
                 fourier_scale: float = 4.0, *, rngs: nnx.Rngs):
        c1, c2 = channels
        self.T = T
        self.W = nnx.Variable(fourier_frequencies(rngs.params(), embed_dim, fourier_scale))  # fixed, not trained
        self.time_dense = Linear(embed_dim, embed_dim, rngs=rngs)
        self.class_embed = ClassEmbedding(num_classes, embed_dim, rngs=rngs)
        self.conv1 = nnx.Conv(1, c1, kernel_size=2, padding="VALID", kernel_init=fan_in_normal, rngs=rngs)
        self.dense1 = Linear(embed_dim, c1, rngs=rngs)
        self.norm1 = nnx.GroupNorm(c1, num_groups=4, rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, kernel_size=1, kernel_init=fan_in_normal, rngs=rngs)
        self.dense2 = Linear(embed_dim, c2, rngs=rngs)
        self.norm2 = nnx.GroupNorm(c2, num_groups=32, rngs=rngs)
        self.tconv2 = nnx.ConvTranspose(c2, c1, kernel_size=1, kernel_init=fan_in_normal, rngs=rngs)
        self.dense3 = Linear(embed_dim, c1, rngs=rngs)
        self.norm3 = nnx.GroupNorm(c1, num_groups=4, rngs=rngs)
        self.tconv1 = nnx.ConvTranspose(2 * c1 + 2, 2, kernel_size=1, kernel_init=fan_in_normal, rngs=rngs)

    def embed(self, t, y):
        """The embedding of time step and label, shape (N, embed_dim)."""
        fourier = gaussian_fourier_embedding.raw(jnp.asarray(t, jnp.float32) / self.T, self.W[...])
        return jax.nn.silu(self.time_dense(fourier)) + self.class_embed(y)

    @marked
    def __call__(self, x, t, y):
        emb = self.embed(t, y)
        h = x[:, :, None]                                                           # (N, 2, 1)
        h1 = jax.nn.silu(self.norm1(self.conv1(h) + self.dense1(emb)[:, None, :]))  # (N, 1, c1)
        h2 = jax.nn.silu(self.norm2(self.conv2(h1) + self.dense2(emb)[:, None, :]))  # (N, 1, c2)
        h = jax.nn.silu(self.norm3(self.tconv2(h2) + self.dense3(emb)[:, None, :]))  # (N, 1, c1)
        h = self.tconv1(jnp.concatenate([h, h1, x[:, None, :]], axis=-1))          # (N, 1, 2)
        return h[:, 0, :]
