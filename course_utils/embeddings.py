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
