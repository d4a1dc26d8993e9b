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


def two_clusters(key, n, separation=2.0, std=0.25):
    """Two round Gaussian clusters centred at (-separation/2, 0) and (+separation/2, 0), equal weights.

    Returns ``(points, label)``: (n, 2) points and (n,) labels in {0, 1}
    (as floats, to colour by).
    """
    n = v.check_positive_int("two_clusters", "n", n)
    k_label, k_noise = jax.random.split(key)
    label = jax.random.bernoulli(k_label, 0.5, (n,)).astype(jnp.float32)
    centres = jnp.stack([(label - 0.5) * separation, jnp.zeros(n)], axis=-1)
    return centres + std * jax.random.normal(k_noise, (n, 2)), label


def _along_polygon(key, vertices, n, noise, closed=True):
    """``n`` points spread uniformly along a polyline, plus Gaussian noise; and each point's position in [0, 1]."""
    vertices = jnp.asarray(vertices, jnp.float32)
    if closed:
        vertices = jnp.concatenate([vertices, vertices[:1]])
    lengths = jnp.linalg.norm(jnp.diff(vertices, axis=0), axis=1)
    cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(lengths)])
    k_pos, k_noise = jax.random.split(key)
    position = jax.random.uniform(k_pos, (n,))
    s = position * cumulative[-1]
    segment = jnp.clip(jnp.searchsorted(cumulative, s, side="right") - 1, 0, len(lengths) - 1)
    frac = ((s - cumulative[segment]) / lengths[segment])[:, None]
    points = vertices[segment] * (1 - frac) + vertices[segment + 1] * frac
    return points + noise * jax.random.normal(k_noise, points.shape), position


def circle(key, n, radius=1.0, noise=0.03):
    """Points on a circle of the given radius, plus noise; and each point's angle / 2 pi."""
    n = v.check_positive_int("circle", "n", n)
    k_angle, k_noise = jax.random.split(key)
    position = jax.random.uniform(k_angle, (n,))
    angle = 2 * jnp.pi * position
    points = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return points + noise * jax.random.normal(k_noise, points.shape), position


def square(key, n, half_side=1.0, noise=0.03):
    """Points on the outline of a square centred at 0, plus noise; and each point's position along it."""
    n = v.check_positive_int("square", "n", n)
    h = half_side
    return _along_polygon(key, [(-h, -h), (h, -h), (h, h), (-h, h)], n, noise)


# The outline of a long-necked dinosaur facing right, drawn for this course
# (x, y on a 0..10 grid); rescaled below to about unit spread.
_DINO = [(0.0, 3.0), (2.0, 3.6), (3.5, 4.3), (5.0, 4.6), (6.3, 4.3), (7.0, 5.5), (7.6, 7.2),
         (8.2, 7.8), (9.2, 7.7), (9.5, 7.3), (8.8, 7.0), (8.2, 6.9), (7.9, 6.0), (7.6, 4.6),
         (7.4, 3.2), (7.4, 1.0), (6.7, 1.0), (6.6, 2.8), (4.6, 2.7), (4.5, 1.0), (3.7, 1.0),
         (3.6, 2.9), (2.0, 3.2)]


def dino(key, n, noise=0.02):
    """Points along the outline of a dinosaur, plus noise; and each point's position along it."""
    n = v.check_positive_int("dino", "n", n)
    vertices = (jnp.asarray(_DINO) - jnp.array([5.0, 4.3])) / 2.5
    return _along_polygon(key, vertices, n, noise)


POINT_CLOUDS = {"swiss_roll": swiss_roll, "two_clusters": two_clusters, "circle": circle,
                "square": square, "dino": dino}


def points_2d(name, key, n):
    """``n`` points of the 2D data set ``name`` (one of :data:`POINT_CLOUDS`), and a colour per point in [0, 1]."""
    if name not in POINT_CLOUDS:
        raise ValueError(f"points_2d: argument `name` must be one of {sorted(POINT_CLOUDS)}, got {name!r}")
    return POINT_CLOUDS[name](key, n)


def dot_images(n, size=3):
    """``n`` copies of a ``size`` x ``size`` image with one bright centre pixel (+1) on a dark background (-1)."""
    n = v.check_positive_int("dot_images", "n", n)
    image = jnp.full((size, size), -1.0, jnp.float32).at[size // 2, size // 2].set(1.0)
    return jnp.broadcast_to(image, (n, size, size))
