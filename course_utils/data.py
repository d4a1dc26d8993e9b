"""Data sets of the course, as pure functions of an explicit PRNG key.

Every point-cloud data set returns float32 arrays; values are scaled so that
the data have roughly unit spread, which is what the noise schedules assume.
"""

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v


def swiss_roll(key, n, noise=0.02):
    r"""``n`` points on a 2D Swiss roll, and each point's position along the roll.

    The roll is the spiral :math:`(s\cos s,\ s\sin s)/10` for
    :math:`s \in [1.5\pi, 4.5\pi]`, plus Gaussian noise of standard deviation
    ``noise``. Returns ``(points, position)``: ``points`` of shape ``(n, 2)``
    and ``position`` of shape ``(n,)`` in [0, 1] (use it as the colour, to
    see where each point came from once the roll dissolves).
    """
    n = v.check_positive_int("swiss_roll", "n", n)
    if not noise >= 0:
        raise ValueError(f"swiss_roll: argument `noise` must be non-negative, got {noise}")
    return _swiss_roll(key, n, noise)


@jax.jit
def _swiss_roll_points(key, position, noise):
    s = 1.5 * jnp.pi * (1 + 2 * position)
    points = jnp.stack([s * jnp.cos(s), s * jnp.sin(s)], axis=-1) / 10
    return points + noise * jax.random.normal(key, points.shape)


def _swiss_roll(key, n, noise):
    key_pos, key_noise = jax.random.split(key)
    position = jax.random.uniform(key_pos, (n,))
    return _swiss_roll_points(key_noise, position, noise), position


def smiley(size=32):
    """A small grey-scale picture (a smiling face), shape ``(size, size)``, values in [-1, 1].

    Drawn from circles and arcs, so it needs no file; use it to watch an image
    dissolve into noise.
    """
    size = v.check_positive_int("smiley", "size", size)
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    r = np.hypot(x, y)
    face = r < 0.9
    eyes = (np.hypot(x + 0.32, y + 0.3) < 0.13) | (np.hypot(x - 0.32, y + 0.3) < 0.13)
    mouth = (np.abs(np.hypot(x, y + 0.05) - 0.5) < 0.08) & (y > 0.15)
    image = np.where(face, 0.6, -1.0)
    image = np.where(eyes | mouth, -0.8, image)
    return jnp.asarray(image, dtype=jnp.float32)
