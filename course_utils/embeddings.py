r"""Embeddings of the time step (and, later, of class labels) for the denoisers."""

import jax.numpy as jnp

from . import _validate as v


def _check_dim(where, name, dim):
    v.check_positive_int(where, name, dim)
    if dim % 2:
        raise ValueError(f"{where}: argument `{name}` must be even (half sines, half cosines), got {dim}")


@v.reference(static_argnames=("dim",), dim=_check_dim)
def sinusoidal_embedding(t, dim):
    r"""The transformer's sinusoidal embedding of time steps (Vaswani et al. 2017).

    .. math::
        e(t)_{i} = \sin(t\,\omega_i), \quad e(t)_{i + d/2} = \cos(t\,\omega_i), \quad
        \omega_i = 10000^{-i/(d/2)}, \quad i = 0, \dots, d/2 - 1

    ``t`` is an array of time steps of any shape ``S`` (integers or floats);
    the result has shape ``(*S, dim)``. Neighbouring steps get similar vectors,
    and the low frequencies tell far-apart steps apart.
    """
    half = dim // 2
    frequencies = jnp.exp(-jnp.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angles = jnp.asarray(t, jnp.float32)[..., None] * frequencies
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def _check_frequencies(where, name, W):
    v.check_ndim(where, name, W, 1)


@v.reference(W=_check_frequencies)
def gaussian_fourier_embedding(t, W):
    r"""Random Fourier features of a (continuous) time (Tancik et al. 2020; Song et al. 2021).

    .. math::
        e(t) = \big(\sin(2\pi W_0 t), \dots, \sin(2\pi W_{h-1} t),\
                    \cos(2\pi W_0 t), \dots, \cos(2\pi W_{h-1} t)\big)

    ``W`` has shape ``(h,)``: frequencies drawn once from :math:`\mathcal N(0, s^2)`
    and then kept fixed (not trained; see :func:`fourier_frequencies`). ``t``
    has any shape ``S`` (the models pass :math:`t / T \in (0, 1]`); the result
    has shape ``(*S, 2h)``: all the sines, then all the cosines.
    """
    angles = 2 * jnp.pi * jnp.asarray(t, jnp.float32)[..., None] * jnp.asarray(W, jnp.float32)
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def fourier_frequencies(key, dim, scale=4.0):
    """The fixed random frequencies of :func:`gaussian_fourier_embedding`: ``scale`` * N(0, 1), shape ``(dim // 2,)``."""
    _check_dim("fourier_frequencies", "dim", dim)
    import jax

    return scale * jax.random.normal(key, (dim // 2,))


NO_LABEL = -1
"""The label that means "no label" (the unconditional model of classifier-free guidance)."""


def class_one_hot(y, num_classes):
    r"""One-hot codes of class labels with one extra slot for "no label", shape ``(*y.shape, num_classes + 1)``.

    A label ``k`` in 0..K-1 sets slot ``k``; the label :data:`NO_LABEL` (-1)
    sets the last slot, so that a linear layer on top of this code learns one
    vector per class *and* one for "no label".
    """
    y = jnp.asarray(y)
    index = jnp.where(y < 0, num_classes, y)
    return (index[..., None] == jnp.arange(num_classes + 1)).astype(jnp.float32)
