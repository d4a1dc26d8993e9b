r"""Whole point sets: a diffusion model that generates star-shaped point clouds (seed 002, issue 18).

Each example is a *set* of ``P`` points in the plane, shape (P, 2): the outline of a smooth star
with a given number of arms, a random radius and a random centre (and, with ``turn`` > 0, a random
rotation). One model generates whole sets: every point's noise predictor sees the point, the time
step, the asked-for number of arms (a class label) and a summary of its whole noisy set, the mean
over the set of a learned per-point embedding (the simplest permutation-invariant summary, Zaheer
et al. 2017, "Deep Sets"):

.. math::
    s(X_t) = \frac{1}{P}\sum_{j=1}^{P} \phi(x_t^{(j)}, t), \qquad
    \epsilon_\theta(X_t, t, y)^{(i)} = f\big(x_t^{(i)}, e(t), s(X_t), c(y)\big).

Without the summary every point would be denoised on its own, and the points of one set could
not agree on a centre or a radius: the model would draw the average of all stars, a blurred
star. Training and sampling are the course's (:func:`course_utils.guidance.train_conditional`,
:func:`conditional_sample`, notebook 04's sampler with the plain conditional prediction): time steps
1..T, one time step per set, no noise at the last step.

How star-like a sample is, measured two ways:

* the **recovered number of arms**: the dominant angular Fourier mode of the points' distance to
  their centre (:func:`angular_modes`, :func:`recovered_arms`), against the asked-for one;
* the **aligned energy distance**: each set is centred and turned so that one arm points along
  the x axis (:func:`align`); the points of all samples of a class are then compared with those of
  as many real stars of the class by :func:`course_utils.metrics.energy_distance`
  (:func:`class_energy_distance`); the same distance between two draws of real stars is the
  floor, and between noise and real stars the ceiling.
"""

import functools

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from flax import nnx

from . import guidance, metrics, plotting, schedules
from . import _validate as v
from .embeddings import fourier_frequencies, gaussian_fourier_embedding, sinusoidal_embedding
from .models import ClassEmbedding, Linear

ARMS = (3, 5, 7)
"""The numbers of arms of the three classes (label ``k`` asks for ``ARMS[k]`` arms)."""
N_POINTS = 64
"""Points per star."""
RADII = (1.0, 1.4)
"""The outer radius of a star is uniform in this range."""
SHIFT = 0.3
"""The centre of a star is uniform in [-SHIFT, SHIFT]^2."""
TURN = 0.0
"""Stars are turned by up to TURN times the angle between two arms (0: a tip on the positive x axis)."""
DEPTH = 0.4
"""How far the radius rises and falls around its mean, as a fraction of it (:func:`star`)."""
NOISE = 0.02
"""Standard deviation of the Gaussian noise added to every point of a star."""
MAX_MODE = 12
"""The highest angular mode :func:`recovered_arms` considers (modes 2..MAX_MODE)."""

FOURIER = 8
"""Random Fourier features per coordinate of a point (:class:`SetDenoiser`; 0: the bare coordinates)."""
FOURIER_SCALE = 1.5
"""The standard deviation of their frequencies, in cycles per unit of the plane."""
T = 100
"""Diffusion steps of the stars' model, with linear betas from ``BETAS[0]`` to ``BETAS[1]`` (notebook 04's schedule)."""
BETAS = (1e-4, 0.08)
TRAIN_STEPS = 3000
"""Adam steps of the full run (notebook 04's optional section and ``benchmarks/point_sets.py``)."""
BATCH_SIZE = 32
"""Stars per training step."""
N_TRAIN = 1000
"""Training stars per class."""
LEARNING_RATE = 3e-3
"""Adam's initial learning rate; it decays along a cosine to 5 % of it (:func:`optimizer`)."""


# ---------------------------------------------------------------- data

@functools.partial(jax.jit, static_argnames=("n_points", "arms"))
def star(key, n_points, arms, radius=1.0, depth=DEPTH, rotation=0.0, noise=NOISE):
    r"""``n_points`` points on the outline of a smooth star of ``arms`` arms, plus Gaussian noise.

    The outline is the curve of radius

    .. math::
        r(\theta) = \text{radius}\,\big(1 + \text{depth}\,\cos(\text{arms}\,(\theta - \text{rotation}))\big),

    whose ``arms`` tips lie at angles :math:`\text{rotation} + 2\pi j / \text{arms}`. The angles are
    stratified: point :math:`j` has :math:`\theta_j = 2\pi (j + u_j) / P`, :math:`u_j` uniform in
    [0, 1), so that the points cover the outline evenly (their mean is close to the star's centre).
    ``n_points`` and ``arms`` are Python ints. Returns (n_points, 2).
    """
    k_angle, k_noise = jax.random.split(key)
    theta = 2 * jnp.pi * (jnp.arange(n_points) + jax.random.uniform(k_angle, (n_points,))) / n_points
    r = radius * (1 + depth * jnp.cos(arms * (theta - rotation)))
    points = jnp.stack([r * jnp.cos(theta), r * jnp.sin(theta)], axis=-1)
    return points + noise * jax.random.normal(k_noise, points.shape)


def stars(key, n_stars, n_points, arms, radii=RADII, shift=SHIFT, turn=TURN, depth=DEPTH, noise=NOISE):
    """``n_stars`` stars of ``arms`` arms: radius uniform in ``radii``, centre uniform in [-shift, shift]^2.

    Each star is turned by an angle uniform in [-turn, turn] times the angle between two arms
    (``turn = 0.5``: any rotation; ``turn = 0``: a tip on the positive x axis). Returns (n_stars, n_points, 2).
    """
    v.check_positive_int("stars", "n_stars", n_stars)
    v.check_positive_int("stars", "n_points", n_points)
    v.check_positive_int("stars", "arms", arms)
    k_radius, k_rotation, k_shift, k_points = jax.random.split(key, 4)
    radius = jax.random.uniform(k_radius, (n_stars,), minval=radii[0], maxval=radii[1])
    rotation = jax.random.uniform(k_rotation, (n_stars,), minval=-turn, maxval=turn) * 2 * jnp.pi / arms
    centre = jax.random.uniform(k_shift, (n_stars, 1, 2), minval=-shift, maxval=shift)
    one = lambda k, r, a: star(k, n_points, arms, r, depth, a, noise)  # noqa: E731
    return jax.vmap(one)(jax.random.split(k_points, n_stars), radius, rotation) + centre


def star_dataset(key, n_per_class, n_points=N_POINTS, arms=ARMS):
    """``n_per_class`` stars of every number of arms in ``arms``, and their class labels.

    Returns ``(sets, labels)``: (len(arms) n_per_class, n_points, 2) float32, and (len(arms) n_per_class,)
    int32 labels, label ``k`` for ``arms[k]`` arms (in blocks: all of class 0 first).
    """
    keys = jax.random.split(key, len(arms))
    sets = jnp.concatenate([stars(k, n_per_class, n_points, a) for k, a in zip(keys, arms)])
    labels = jnp.repeat(jnp.arange(len(arms), dtype=jnp.int32), n_per_class)
    return sets, labels


# ---------------------------------------------------------------- measures

def _polar(points):
    """Distances and angles of a set's points around the set's mean, each (..., P)."""
    centred = points - jnp.mean(points, axis=-2, keepdims=True)
    return jnp.linalg.norm(centred, axis=-1), jnp.arctan2(centred[..., 1], centred[..., 0])


@functools.partial(jax.jit, static_argnames=("max_mode",))
def angular_modes(points, max_mode=MAX_MODE):
    r"""The angular Fourier coefficients of a set's radius, :math:`k = 1..\text{max\_mode}`.

    With :math:`r_i, \theta_i` the polar coordinates of point :math:`i` around the set's mean and
    :math:`\bar r` their mean radius,

    .. math::
        c_k = \frac{1}{P}\sum_{i=1}^{P} (r_i - \bar r)\, e^{-\mathrm{i} k \theta_i} .

    A shape with :math:`m`-fold symmetry has :math:`c_k = 0` unless :math:`k` is a multiple of
    :math:`m`, and a star's radius rises and falls once per arm, so :math:`|c_m|` is its largest.
    ``points``: (..., P, 2). Returns complex64 (..., max_mode), index ``k - 1`` for mode ``k``.
    """
    r, theta = _polar(points)
    k = jnp.arange(1, max_mode + 1)
    return jnp.mean((r - r.mean(-1, keepdims=True))[..., None] * jnp.exp(-1j * k * theta[..., None]), axis=-2)


@functools.partial(jax.jit, static_argnames=("max_mode",))
def recovered_arms(points, max_mode=MAX_MODE):
    """The number of arms a set shows: the mode ``k`` in 2..max_mode with the largest ``|c_k|`` (:func:`angular_modes`).

    ``points``: (..., P, 2). Returns int32 (...). (Mode 1 is left out: it is an off-centre blob, not an arm.)
    """
    return jnp.argmax(jnp.abs(angular_modes(points, max_mode)[..., 1:]), axis=-1).astype(jnp.int32) + 2


def arms_accuracy(sets, labels, arms=ARMS):
    """The fraction of ``sets`` (N, P, 2) whose :func:`recovered_arms` is the asked-for ``arms[labels]`` ((N,) int)."""
    return float(jnp.mean(recovered_arms(sets) == jnp.asarray(arms)[labels]))


@jax.jit
def align(points, arms):
    r"""Centre a set and turn it so that an arm points along the positive x axis.

    The phase of :math:`c_m` (:func:`angular_modes`, :math:`m` = ``arms``) says where the arms are: a
    tip at angle :math:`\theta_0` gives :math:`\arg c_m = -m\theta_0`; the set is turned by
    :math:`-\theta_0 = \arg(c_m)/m`. ``points``: (..., P, 2); ``arms``: int (...), a traced value.
    """
    r, theta = _polar(points)
    arms = jnp.asarray(arms)[..., None]
    c_m = jnp.mean((r - r.mean(-1, keepdims=True)) * jnp.exp(-1j * arms * theta), axis=-1, keepdims=True)
    turned = theta + jnp.angle(c_m) / arms
    return jnp.stack([r * jnp.cos(turned), r * jnp.sin(turned)], axis=-1)


def class_energy_distance(a, b, arms):
    """The energy distance between the points of sets ``a`` and of sets ``b``, every set :func:`align`-ed first.

    ``a``: (n, P, 2), ``b``: (m, P', 2), sets of one class with ``arms`` arms (an int). All aligned
    points of ``a`` (n P of them) are compared with all of ``b`` by
    :func:`course_utils.metrics.energy_distance`: centred and turned, sets of the same shape
    pile up on one another, and a set of another shape (or no shape) does not.
    """
    return float(metrics.energy_distance(align(a, arms).reshape(-1, 2), align(b, arms).reshape(-1, 2)))


# ---------------------------------------------------------------- the model

class SetDenoiser(nnx.Module):
    r"""A noise predictor for whole point sets, conditioned on the class and a mean-pooled summary of the set.

    For a batch of sets ``x`` (B, P, 2) with one time step ``t`` (B,) and one label ``y`` (B,) per
    set: every point gets :math:`\phi(x^{(j)}, e(t))`, an MLP of two layers of width ``summary``
    (the sinusoidal time embedding :math:`e(t)` of width ``time_dim``); their mean over the set is
    the summary :math:`s`; then every point's noise is an MLP of ``depth`` hidden layers of width
    ``hidden`` (SiLU) on :math:`[x^{(i)}, e(t), s, c(y)]`, with :math:`c(y)` a
    :class:`course_utils.models.ClassEmbedding` of width ``class_dim`` (label -1: no label).
    Every layer acts on each point alone and the mean does not depend on the order of the points,
    so permuting the input points permutes the output the same way. Returns (B, P, 2).
    """

    def __init__(self, num_classes: int = len(ARMS), hidden: int = 128, depth: int = 3, summary: int = 64,
                 time_dim: int = 32, class_dim: int = 16, fourier: int = FOURIER, fourier_scale: float = FOURIER_SCALE,
                 *, rngs: nnx.Rngs):
        self.time_dim = time_dim
        self.W = nnx.Variable(fourier_frequencies(rngs.params(), 2 * fourier, fourier_scale))  # fixed, not trained
        point_dim = 2 + 4 * fourier
        self.embed_points = nnx.List([Linear(point_dim + time_dim, summary, rngs=rngs),
                                      Linear(summary, summary, rngs=rngs)])
        self.class_embed = ClassEmbedding(num_classes, class_dim, rngs=rngs)
        sizes = [point_dim + time_dim + summary + class_dim] + [hidden] * depth
        self.hidden = nnx.List([Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.out = Linear(hidden, 2, rngs=rngs)

    def summary(self, x, t):
        r"""The set summary :math:`s(X_t) = \mathrm{mean}_j\, \phi(x_t^{(j)}, e(t))`: (B, P, 2), (B,) -> (B, summary)."""
        return jnp.mean(self._phi(x, self._time(x, t)), axis=1)

    def _time(self, x, t):
        return jnp.broadcast_to(sinusoidal_embedding.raw(t, self.time_dim)[:, None, :], x.shape[:2] + (self.time_dim,))

    def _point(self, x):
        """Each point and random Fourier features of its coordinates (Tancik et al. 2020), (B, P, 2 + 4 fourier)."""
        features = gaussian_fourier_embedding.raw(x, self.W[...])
        return jnp.concatenate([x, features.reshape(x.shape[:2] + (-1,))], axis=-1)

    def _phi(self, x, time):
        first, second = self.embed_points
        return second(jax.nn.silu(first(jnp.concatenate([self._point(x), time], axis=-1))))

    def __call__(self, x, t, y):
        per_set = jnp.concatenate([self.summary(x, t), self.class_embed(y)], axis=-1)[:, None, :]   # (B, 1, .)
        h = jnp.concatenate([self._point(x), self._time(x, t), jnp.broadcast_to(per_set, x.shape[:2] + per_set.shape[-1:])],
                            axis=-1)
        for layer in self.hidden:
            h = jax.nn.silu(layer(h))
        return self.out(h)


# ---------------------------------------------------------------- training and sampling

def star_schedule():
    """The stars' noise schedule: :data:`T` linear betas from ``BETAS[0]`` to ``BETAS[1]``."""
    return schedules.make_schedule(schedules.linear_betas(T, *BETAS))


@functools.lru_cache(maxsize=None)
def optimizer(steps, learning_rate=LEARNING_RATE):
    """Adam whose learning rate decays along a cosine over ``steps`` steps (one object per ``steps``: compiled once)."""
    return optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.05))


def train(model, sets, labels, alpha_bars, *, steps, key, batch_size=32, learning_rate=1e-3, optimizer=None,
          progress=None):
    """Train a :class:`SetDenoiser` in place on ``sets`` (N, P, 2) with ``labels`` (N,); return every step's loss.

    :func:`course_utils.guidance.train_conditional` with no label dropout: each step draws
    ``batch_size`` sets, one time step per set and fresh noise for every point, and takes an Adam
    step on the DDPM loss (the mean squared error of the predicted noise over every point).
    """
    return guidance.train_conditional(model, sets, labels, alpha_bars, steps=steps, key=key, p_uncond=0.0,
                                      batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
                                      progress=progress)


def conditional_sample(model, x_T, zs, y, w, betas, alpha_bars, sigmas):
    """Notebook 04's DDPM sampler with the plain conditional prediction ``model(x_t, t, y)`` (``w`` unused).

    The signature of :func:`course_utils.guidance.guided_sample`, so that
    :func:`course_utils.guidance.run_guided_sampler` compiles and runs it.
    """
    from .sampling import ddpm_sample

    del w
    return ddpm_sample(lambda x, t: model(x, t, y), x_T, zs, betas, alpha_bars, sigmas)


def sample(model, key, labels, schedule, n_points=N_POINTS, trajectory=False):
    """One set of ``n_points`` points for each label of ``labels`` (N,): the DDPM reverse process of the course.

    Draws :math:`X_T \\sim \\mathcal N(0, I)` of shape (N, n_points, 2) and runs
    :func:`conditional_sample` through :func:`course_utils.guidance.run_guided_sampler` (one jitted
    ``lax.scan``, :math:`\\sigma_t^2 = \\tilde\\beta_t`, no noise at :math:`t = 1`).
    Returns (N, n_points, 2), or the trajectory (T + 1, N, n_points, 2) with ``trajectory=True``.
    """
    labels = jnp.asarray(labels, jnp.int32)
    k_start, k_steps = jax.random.split(key)
    x_T = jax.random.normal(k_start, (labels.shape[0], n_points, 2))
    return guidance.run_guided_sampler(conditional_sample, model, x_T, k_steps, schedule, labels,
                                       sigma="beta_tilde", trajectory=trajectory)


def star_quality(model, schedule, key, n_per_class=16, n_keys=4, n_points=N_POINTS, arms=ARMS):
    """Sample with ``n_keys`` keys and measure: arms accuracy and aligned energy distance, with their spread.

    For each key: ``n_per_class`` samples of every class, compared with as many fresh real stars
    of the same class (the floor: two independent draws of real stars; the ceiling: standard
    normal sets), with :func:`class_energy_distance`. Returns a dict of (n_keys, len(arms)) arrays
    "accuracy", "energy", "floor", "noise" (one value per key and class), the samples and labels of the first key,
    and "lines": one printable line per class with the means and standard deviations over keys.
    """
    labels = jnp.repeat(jnp.arange(len(arms), dtype=jnp.int32), n_per_class)
    asked = jnp.asarray(arms)[labels]
    result = {name: [] for name in ("accuracy", "energy", "floor", "noise")}
    for i in range(n_keys):
        k_sample, k_real, k_other, k_noise = jax.random.split(jax.random.fold_in(key, i), 4)
        samples = sample(model, k_sample, labels, schedule, n_points)
        real = star_dataset(k_real, n_per_class, n_points, arms)[0]
        other = star_dataset(k_other, n_per_class, n_points, arms)[0]
        noise = jax.random.normal(k_noise, real.shape)
        hits = np.asarray(recovered_arms(samples) == asked).reshape(len(arms), n_per_class)
        result["accuracy"].append(hits.mean(1))
        for name, sets in (("energy", samples), ("floor", other), ("noise", noise)):
            result[name].append([class_energy_distance(sets[labels == k], real[labels == k], a)
                                 for k, a in enumerate(arms)])
        if i == 0:
            result["samples"], result["labels"], result["real"] = samples, labels, real
    for name in ("accuracy", "energy", "floor", "noise"):
        result[name] = np.stack(result[name])
    ms = lambda a, k, f=".4f": f"{a[:, k].mean():{f}} +- {a[:, k].std(ddof=1) if len(a) > 1 else 0.0:{f}}"  # noqa: E731
    result["lines"] = [
        f"{a} arms: arms recovered in {ms(result['accuracy'], k, '.2f')} of samples; aligned energy distance "
        f"{ms(result['energy'], k)} (real vs real {ms(result['floor'], k)}, noise vs real {ms(result['noise'], k)})"
        for k, a in enumerate(arms)]
    result["lines"].append(f"(mean +- standard deviation over {n_keys} sampling keys, {n_per_class} stars per class "
                           f"and key, {n_points} points per star)")
    return result


# ---------------------------------------------------------------- pictures

def plot_stars(real, real_labels, samples, sample_labels, arms=ARMS, n_show=4, title=None, limit=2.3, size=1.5):
    """Real stars and samples side by side: one row per class, ``n_show`` real stars then ``n_show`` samples.

    Each sample's panel is titled with the number of arms recovered from it (:func:`recovered_arms`).
    """
    real, samples = np.asarray(real), np.asarray(samples)
    real_labels, sample_labels = np.asarray(real_labels), np.asarray(sample_labels)
    found = np.asarray(recovered_arms(samples))
    fig, axes = plt.subplots(len(arms), 2 * n_show, figsize=(size * 2 * n_show, size * len(arms) + 0.6),
                             squeeze=False, layout="constrained")
    for row, a in enumerate(arms):
        for col, (sets, labels, kind) in enumerate([(real, real_labels, "real"), (samples, sample_labels, "sample")]):
            chosen = np.flatnonzero(labels == row)[:n_show]
            for j, index in enumerate(chosen):
                ax = axes[row, col * n_show + j]
                ax.scatter(sets[index, :, 0], sets[index, :, 1], s=4, c="0.4" if kind == "real" else "tab:orange")
                plotting._plane(ax, limit, y_label=False)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel("")
                ax.set_title(f"real, {a} arms" if kind == "real" else
                             f"asked {a}, found {found[index]}", fontsize=8)
        axes[row, 0].set_ylabel(f"{a} arms", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
