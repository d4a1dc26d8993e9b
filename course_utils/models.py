"""The denoising networks of the course, in flax.nnx.

Each model maps a noisy input ``x_t`` and its time step ``t`` to a prediction
of the noise that was added, with the shape of ``x_t``.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from .embeddings import sinusoidal_embedding


class MLPDenoiser(nnx.Module):
    """A small MLP noise predictor for points in a low-dimensional space.

    The point and the sinusoidal embedding of its time step are concatenated
    and passed through ``depth`` hidden layers of width ``hidden`` with SiLU
    activations; the last layer outputs the predicted noise.
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, time_dim: int = 32, *, rngs: nnx.Rngs):
        self.time_dim = time_dim
        sizes = [dim + time_dim] + [hidden] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = nnx.Linear(hidden, dim, rngs=rngs)

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
        self.widen = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(up[:-1], up[1:])])
        down = [*reversed(widths), widths[0]]
        self.narrow = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(down[:-1], down[1:])])
        self.out = nnx.Linear(widths[0], pixels, rngs=rngs)

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
