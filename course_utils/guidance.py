r"""Class-conditional diffusion and classifier-free guidance on a known Gaussian mixture (notebook 05).

The data are two-pixel images drawn from a mixture of isotropic Gaussians,
the component being the class label. Because the mixture is known, so is
every noised distribution :math:`q(x_t)` (again a mixture), its score, and
hence the *exact* noise predictor

.. math::
    \epsilon^*(x_t, t) = \mathbb E[\epsilon \mid x_t] = -\sqrt{1 - \bar\alpha_t}\;\nabla_{x_t}\log q(x_t),

unconditional or given the label. A learned :math:`\epsilon_\theta` can be
measured against it.

Conventions: labels are integers 0..K-1, and -1 (:data:`NO_LABEL`) means "no
label" (the unconditional model). Models take ``model(x, t, y)`` with ``x``
(N, 2), ``t`` (N,) steps in 1..T and ``y`` (N,) labels.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import config
from ._validate import marked
from .embeddings import NO_LABEL
from .forward import q_sample
from .losses import huber_loss, l1_loss, l2_loss
from .sampling import ddpm_sample, guided_eps, reverse_sigmas  # guided_eps: with the samplers that use it
from .schedules import Schedule
from .training import in_chunks, data_parallel_shardings, run_in_chunks, stack_states


# ---------------------------------------------------------------- the data


class Mixture(NamedTuple):
    """An isotropic Gaussian mixture: ``means`` (K, d), one standard deviation ``std``, ``weights`` (K,)."""

    means: tuple
    std: float
    weights: tuple


TWO_PIXEL = Mixture(means=((-0.35, 0.65), (0.75, -0.45)), std=0.1, weights=(0.35, 0.65))
"""The two-pixel data of notebook 05: class 0 (left pixel darker) has weight 0.35, class 1 has 0.65."""


def sample_mixture(key, n, mixture: Mixture = TWO_PIXEL):
    """``n`` points of the mixture and their labels: ``(x (n, d) float32, y (n,) int32)``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"sample_mixture: argument `n` must be a positive int, got {n!r}")
    k_label, k_noise = jax.random.split(key)
    means = jnp.asarray(mixture.means, jnp.float32)
    y = jax.random.choice(k_label, len(mixture.weights), (n,), p=jnp.asarray(mixture.weights)).astype(jnp.int32)
    x = means[y] + mixture.std * jax.random.normal(k_noise, (n, means.shape[1]))
    return x, y


def _component_log_densities(x, alpha_bar, mixture):
    """log N(x; sqrt(ab) mu_k, v I) for every component, shape (*S, K), and v."""
    means = jnp.asarray(mixture.means, jnp.float32)
    alpha_bar = jnp.asarray(alpha_bar, jnp.float32)
    var = alpha_bar * mixture.std**2 + 1 - alpha_bar                # a number, or (*S, 1)
    d = means.shape[1]
    diff = x[..., None, :] - jnp.sqrt(alpha_bar)[..., None] * means  # (*S, K, d)
    return -0.5 * jnp.sum(diff**2, -1) / var - 0.5 * d * jnp.log(2 * jnp.pi * var), var, diff


def _responsibilities(x, alpha_bar, mixture, y):
    """p(component k | x_t) (y = None or -1), or the one-hot code of y; shape (*S, K)."""
    logs, var, diff = _component_log_densities(x, alpha_bar, mixture)
    posterior = jax.nn.softmax(logs + jnp.log(jnp.asarray(mixture.weights, jnp.float32)), axis=-1)
    if y is None:
        return posterior, var, diff
    y = jnp.asarray(y)
    one_hot = jax.nn.one_hot(jnp.maximum(y, 0), len(mixture.weights))
    return jnp.where((y < 0)[..., None], posterior, one_hot), var, diff


@functools.partial(jax.jit, static_argnames=("mixture",))
def mixture_log_density(x, mixture: Mixture = TWO_PIXEL, alpha_bar=1.0, y=None):
    r"""Log density of the noised mixture :math:`q_t(x) = \sum_k \pi_k \mathcal N(x; \sqrt{\bar\alpha_t}\mu_k, v_t I)`.

    :math:`v_t = \bar\alpha_t\sigma^2 + 1 - \bar\alpha_t`; ``alpha_bar = 1`` is the
    data density itself. ``x``: (*S, d); ``y`` (shape S, optional) gives the
    class-conditional density (label -1: unconditional). Returns shape S.
    """
    logs, _, _ = _component_log_densities(jnp.asarray(x, jnp.float32), alpha_bar, mixture)
    mixed = jax.nn.logsumexp(logs + jnp.log(jnp.asarray(mixture.weights, jnp.float32)), axis=-1)
    if y is None:
        return mixed
    y = jnp.asarray(y)
    own = jnp.take_along_axis(logs, jnp.maximum(y, 0)[..., None], axis=-1)[..., 0]
    return jnp.where(y < 0, mixed, own)


def mixture_density(x, mixture: Mixture = TWO_PIXEL, alpha_bar=1.0, y=None):
    """The density of :func:`mixture_log_density` (not its log)."""
    return jnp.exp(mixture_log_density(x, mixture, alpha_bar, y))


@functools.partial(jax.jit, static_argnames=("mixture",))
def mixture_eps(x_t, alpha_bar_t, mixture: Mixture = TWO_PIXEL, y=None):
    r"""The exact noise predictor of the mixture, :math:`\epsilon^*(x_t) = -\sqrt{1-\bar\alpha_t}\,\nabla\log q_t(x_t)`.

    .. math::
        \epsilon^*(x_t) = \frac{\sqrt{1-\bar\alpha_t}}{v_t}\sum_k r_k(x_t)\,\big(x_t - \sqrt{\bar\alpha_t}\,\mu_k\big),
        \qquad r_k(x_t) = p(k \mid x_t)

    With a label ``y`` the responsibilities are the one-hot code of ``y``
    (the class-conditional predictor); -1 means unconditional. ``x_t``:
    (N, d); ``alpha_bar_t``: a number or (N, 1); ``y``: None or (N,).
    Returns (N, d).
    """
    x_t = jnp.asarray(x_t, jnp.float32)
    r, var, diff = _responsibilities(x_t, alpha_bar_t, mixture, y)
    return jnp.sqrt(1 - alpha_bar_t) / var * jnp.sum(r[..., None] * diff, axis=-2)


class MixtureEps(nnx.Module):
    """The exact noise predictor as a model ``model(x, t, y)``: plug it in wherever a trained network goes."""

    def __init__(self, alpha_bars, mixture: Mixture = TWO_PIXEL):
        self.alpha_bars = nnx.Variable(jnp.asarray(alpha_bars, jnp.float32))
        self.mixture = mixture

    def __call__(self, x, t, y):
        ab = self.alpha_bars[...][jnp.asarray(t) - 1][:, None]
        return mixture_eps(x, ab, self.mixture, y)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _predict(graphdef, state, x, t, y):
    return nnx.merge(graphdef, state)(x, t, y)


def predict_eps(model, x, t, y):
    """``model(x, t, y)`` compiled (much faster than calling an nnx model op by op); ``t`` and ``y`` broadcast to (N,)."""
    x = jnp.asarray(x, jnp.float32)
    t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), x.shape[:1])
    y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), x.shape[:1])
    graphdef, state = nnx.split(model)
    return _predict(graphdef, state, x, t, y)


# ---------------------------------------------------------------- classifier-free guidance


@marked
def drop_labels(key, y, p_uncond):
    r"""Replace each label by :data:`NO_LABEL` (-1) with probability ``p_uncond``.

    One uniform number per label: ``jax.random.bernoulli(key, p_uncond, y.shape)``
    says which are dropped. Training on these labels teaches one network both
    :math:`\epsilon_\theta(x_t, t, y)` and :math:`\epsilon_\theta(x_t, t, \varnothing)`.
    """
    drop = jax.random.bernoulli(key, p_uncond, jnp.shape(y))
    return jnp.where(drop, NO_LABEL, y)


class Guided(nnx.Module):
    r"""A conditional model with its labels and guidance weight fixed: ``Guided(model, y, w)(x, t)`` is the guided noise.

    It turns a conditional model into the unconditional ``model(x, t)`` that
    the samplers of :mod:`course_utils.sampling` (DDIM among them) expect.
    ``y``: (N,) labels, one per image of the batch; ``w``: the guidance weight.
    """

    def __init__(self, model, y, w):
        self.model = model
        self.y = nnx.Variable(jnp.asarray(y, jnp.int32))
        self.w = nnx.Variable(jnp.float32(w))

    def __call__(self, x, t):
        return guided_eps(self.model, x, t, self.y[...], self.w[...])


@marked
def guided_sample(model, x_T, zs, y, w, betas, alpha_bars, sigmas):
    r"""The whole DDPM reverse process with classifier-free guidance, from ``x_T`` down to :math:`x_0`.

    Notebook 04's sampler (:func:`course_utils.sampling.ddpm_sample`) with the guided prediction
    :func:`guided_eps` in place of :math:`\epsilon_\theta(x_t, t)` at every step:

    .. math::
        x_{t-1} = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1 - \bar\alpha_t}}\,
        \tilde\epsilon(x_t, t, y)\Big) + \sigma_t z_t, \qquad t = T, \dots, 1,\quad z_1 = 0.

    ``x_T``: (N, d); ``zs``: (T, N, d), ``zs[t - 1]`` the noise of step ``t`` (``zs[0]`` is never
    used); ``y``: (N,) labels (-1: no label); ``w``: the guidance weight; ``betas``, ``alpha_bars``,
    ``sigmas``: (T,). Returns the trajectory, shape (T + 1, N, d), index ``i`` holding :math:`x_{T - i}`.
    Deterministic given ``zs``.
    """
    return ddpm_sample(lambda x, t: guided_eps(model, x, t, y, w), x_T, zs, betas, alpha_bars, sigmas)


@functools.partial(jax.jit, static_argnames=("sampler", "graphdef", "trajectory"))
def _run_sampler(sampler, graphdef, state, x_T, zs, y, w, betas, alpha_bars, sigmas, *, trajectory):
    path = sampler(nnx.merge(graphdef, state), x_T, zs, y, w, betas, alpha_bars, sigmas)
    return path if trajectory else path[-1]


def run_guided_sampler(sampler, model, x_T, key, schedule: Schedule, y, w=0.0, sigma="beta", trajectory=False):
    r"""Run ``sampler`` (:func:`guided_sample`, or a function with its signature) compiled, with noise drawn from ``key``.

    The plumbing of notebook 05's sampling cells: draws ``zs`` (T, N, d) from ``key`` in one call,
    takes :math:`\sigma_t` from ``schedule`` ("beta": :math:`\sigma_t^2 = \beta_t`, "beta_tilde":
    :math:`\sigma_t^2 = \tilde\beta_t`), broadcasts ``y`` (an int or (N,) labels) and compiles the
    whole loop with the model split into graph and state. Returns :math:`x_0` (N, d), or with
    ``trajectory=True`` every state, (T + 1, N, d).
    """
    x_T = jnp.asarray(x_T, jnp.float32)
    y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (x_T.shape[0],))
    zs = jax.random.normal(key, (schedule.T,) + x_T.shape)
    graphdef, state = nnx.split(model)
    return _run_sampler(sampler, graphdef, state, x_T, zs, y, jnp.float32(w), schedule.betas, schedule.alpha_bars,
                        reverse_sigmas(schedule, sigma), trajectory=trajectory)


# ---------------------------------------------------------------- training


LOSSES = {"l1": l1_loss, "l2": l2_loss, "huber": huber_loss}


def conditional_loss(model, x0, t, noise, alpha_bars, y, loss="l2"):
    r"""The DDPM loss of a conditional model: ``LOSSES[loss](noise, model(x_t, t, y))``, a mean over the batch."""
    alpha_bar_t = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
    x_t = q_sample.raw(x0, alpha_bar_t, noise)
    return LOSSES[loss](noise, model(x_t, t, y))


@marked
def conditional_train_step(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
    r"""One optimisation step of the conditional DDPM loss with label dropout; returns the loss (before the update).

    The labels ``y`` (N,) go through :func:`drop_labels` with ``key`` (a raw ``uint32[2]`` key, as
    ``jax.random.key_data`` gives) and ``p_uncond``; then :math:`x_t = \sqrt{\bar\alpha_t}x_0 +
    \sqrt{1-\bar\alpha_t}\,\epsilon` with ``noise`` at the steps ``t`` (N,), the loss
    :math:`\mathrm{mean}\,(\epsilon - \epsilon_\theta(x_t, t, \tilde y))^2` (:func:`conditional_loss`), its gradient
    with ``nnx.value_and_grad`` and ``optimizer.update(model, grads)``. Updates ``model`` and ``optimizer`` in place.
    """
    labels = drop_labels(key, y, p_uncond)
    loss, grads = nnx.value_and_grad(conditional_loss)(model, x0, t, noise, alpha_bars, labels)
    optimizer.update(model, grads)
    return loss


@config.jit(static_argnames=("graphdef", "batch_size", "chunk", "loss", "drop_fn", "objective", "step", "sharding"))
def _train_chunk(graphdef, state, key, data, labels, alpha_bars, p_uncond, n_steps, *, batch_size, chunk, loss,
                 drop_fn, objective, step=None, sharding=None):
    """``n_steps`` steps in one compiled loop; with ``sharding``, each batch is split over the devices."""
    def one_step(i, carry):
        state, losses = carry
        model, optimizer = nnx.merge(graphdef, state)
        k_index, k_t, k_noise, k_drop = jax.random.split(jax.random.fold_in(key, i), 4)
        index = jax.random.randint(k_index, (batch_size,), 0, data.shape[0])
        x0, y = data[index], drop_fn(k_drop, labels[index], p_uncond)
        t = jax.random.randint(k_t, (batch_size,), 1, alpha_bars.shape[0] + 1)
        noise = jax.random.normal(k_noise, x0.shape)
        if sharding is not None:
            x0, y, t, noise = jax.lax.with_sharding_constraint((x0, y, t, noise), sharding)
        if step is not None:    # a step function of conditional_train_step's signature (labels not dropped yet)
            value = step(model, optimizer, x0, labels[index], t, noise, alpha_bars, jax.random.key_data(k_drop), p_uncond)
        else:
            value, grads = nnx.value_and_grad(objective)(model, x0, t, noise, alpha_bars, y, loss)
            optimizer.update(model, grads)
        return nnx.state((model, optimizer)), losses.at[i].set(value)

    start = (state, jnp.full((chunk,), jnp.nan, jnp.float32))
    if chunk == 1:  # one step, without a loop: XLA's CPU convolutions run several times slower inside loops
        return one_step(0, start)
    return jax.lax.fori_loop(0, n_steps, one_step, start)


def train_conditional(model, data, labels, alpha_bars, *, steps, key, p_uncond=0.1, batch_size=256,
                      learning_rate=1e-3, loss="l2", optimizer=None, progress=None, chunk=500, drop_fn=drop_labels,
                      objective=conditional_loss, step=None):
    """Train a conditional ``model(x, t, y)`` in place with label dropout; return the loss of every step.

    As :func:`course_utils.training.train`, plus: ``labels`` (N,) int, one per
    example; each step replaces a fraction ``p_uncond`` of the batch's labels
    by "no label" with ``drop_fn(key, y, p_uncond)`` (:func:`drop_labels` by
    default), so that the same network learns the unconditional model too;
    ``loss`` is "l1", "l2" or "huber". ``objective(model, x0, t, noise, alpha_bars, y, loss)`` is the
    function minimised (:func:`conditional_loss`; :func:`classifier_loss` trains a noisy classifier).
    ``step``: a function of :func:`conditional_train_step`'s signature that takes each step itself (drops the
    labels, computes the loss and updates; ``drop_fn``, ``loss`` and ``objective`` are then unused), compiled
    inside the same loop.
    ``optimizer``: an optax transformation
    or an ``nnx.Optimizer`` from an earlier call (to continue training).

    With several devices (GPUs, TPU cores, or CPU devices made with
    ``jax.config.update("jax_num_cpu_devices", n)``), training is data
    parallel: the model and the data are copied to every device, each batch
    is split between them, and XLA adds up the gradients.
    """
    if steps < 1:
        raise ValueError(f"train_conditional: argument `steps` must be at least 1, got {steps}")
    if loss not in LOSSES:
        raise ValueError(f"train_conditional: argument `loss` must be one of {sorted(LOSSES)}, got {loss!r}")
    data, labels = jnp.asarray(data), jnp.asarray(labels, jnp.int32)
    if labels.shape != data.shape[:1]:
        raise ValueError(f"train_conditional: `labels` must have shape ({data.shape[0]},), got {labels.shape}")
    batch, replicated = data_parallel_shardings(batch_size, "train_conditional")
    if replicated is not None:
        data, labels, alpha_bars = jax.device_put((data, labels, alpha_bars), replicated)

    def run(graphdef, state, chunk_key, n):
        if replicated is not None:
            state = jax.device_put(state, replicated)
        return _train_chunk(graphdef, state, chunk_key, data, labels, alpha_bars, jnp.float32(p_uncond), n,
                            batch_size=batch_size, chunk=chunk, loss=loss, drop_fn=drop_fn, objective=objective,
                            step=step, sharding=batch)

    return run_in_chunks(model, run, optimizer=optimizer, learning_rate=learning_rate, steps=steps, key=key,
                         chunk=chunk, progress=progress)


def train_conditional_many(models, data, labels, alpha_bars, *, steps, key, optimizer, p_uncond=0.1, batch_size=256,
                           loss="l2", progress=None, chunk=500, drop_fn=drop_labels):
    """Train several conditional models of one structure at once, in place (``jax.vmap`` over their stacked states);
    return their losses, shape (len(models), steps).

    Each model ``i`` runs :func:`train_conditional`'s loop with the key ``jax.random.split(key, n)[i]`` and its own
    ``nnx.Optimizer`` of the optax transformation ``optimizer`` (one object for all); data, labels, schedule,
    ``p_uncond``, ``batch_size``, ``loss`` and ``drop_fn`` are shared. One compiled program trains them all (on
    the 2-core CPU, three of notebook 05's U-Nets took about as long as three separate runs: its small convolutions
    do not batch better). Single device only (no data parallelism).
    """
    if steps < 1:
        raise ValueError(f"train_conditional_many: argument `steps` must be at least 1, got {steps}")
    if loss not in LOSSES:
        raise ValueError(f"train_conditional_many: argument `loss` must be one of {sorted(LOSSES)}, got {loss!r}")
    models = list(models)
    data, labels = jnp.asarray(data), jnp.asarray(labels, jnp.int32)
    pairs = [(m, nnx.Optimizer(m, optimizer, wrt=nnx.Param)) for m in models]
    graphdef, states = stack_states(pairs)

    def run(states, keys, n):
        return _train_many_chunk(graphdef, states, keys, data, labels, alpha_bars, jnp.float32(p_uncond), n,
                                 batch_size=batch_size, chunk=chunk, loss=loss, drop_fn=drop_fn)

    states, losses = in_chunks(run, states, steps=steps, key=jax.random.split(key, len(models)), chunk=chunk,
                                progress=progress, fold=jax.vmap(jax.random.fold_in, in_axes=(0, None)))
    for i, pair in enumerate(pairs):
        nnx.update(pair, jax.tree.map(lambda leaf: leaf[i], states))
    return losses


@config.jit(static_argnames=("graphdef", "batch_size", "chunk", "loss", "drop_fn"))
def _train_many_chunk(graphdef, states, keys, data, labels, alpha_bars, p_uncond, n_steps, *, batch_size, chunk, loss,
                      drop_fn):
    def one(state, key):    # the plain function: a nested jit may not carry compiler options
        return _train_chunk.__wrapped__(graphdef, state, key, data, labels, alpha_bars, p_uncond, n_steps, batch_size=batch_size,
                            chunk=chunk, loss=loss, drop_fn=drop_fn, objective=conditional_loss)

    return jax.vmap(one)(states, keys)


# ---------------------------------------------------------------- measuring


def mode_fractions(x, mixture: Mixture = TWO_PIXEL):
    """The fraction of points ``x`` (N, d) nearest to each component mean, shape (K,)."""
    means = np.asarray(mixture.means)
    nearest = np.argmin(((np.asarray(x)[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    return np.bincount(nearest, minlength=len(means)) / len(nearest)


def eps_error_by_step(model, schedule: Schedule, key, n=2000, mixture: Mixture = TWO_PIXEL, y=None):
    r"""Mean squared error of ``model`` against the exact :func:`mixture_eps` at every step, shape (T,).

    At each t, ``n`` points :math:`x_t` are drawn from :math:`q(x_t)` (data
    noised by the forward process), so the error is weighted where the
    sampler actually goes. ``y``: None (no label, the unconditional model) or
    an int label (then the data are drawn from that class only).
    """
    x0, labels = sample_mixture(key, n, mixture)
    if y is not None:
        means = jnp.asarray(mixture.means, jnp.float32)
        x0 = means[y] + mixture.std * jax.random.normal(jax.random.fold_in(key, 2), x0.shape)
    label = jnp.full((n,), NO_LABEL if y is None else y, jnp.int32)
    return _error_by_step(_eps_error_at, model, schedule, key, x0, mixture, label)


def _eps_error_at(model, x_t, t, alpha_bar_t, mixture, label):
    """The mean squared error of ``model`` against :func:`mixture_eps` on the points ``x_t`` of step ``t``."""
    exact = mixture_eps(x_t, alpha_bar_t, mixture, label)
    return jnp.mean((model(x_t, jnp.full((x_t.shape[0],), t), label) - exact) ** 2)


def _error_by_step(error_at, model, schedule: Schedule, key, x0, mixture, label):
    """``error_at(model, x_t, t, alpha_bar_t, mixture, label)`` at every step t, shape (T,): ``x0`` noised to each
    step with noise drawn from ``key`` (one compiled loop over the steps)."""
    noise = jax.random.normal(jax.random.fold_in(key, 1), (schedule.T,) + x0.shape)
    graphdef, state = nnx.split(model)
    return np.asarray(_errors_over_steps(graphdef, state, error_at, mixture, x0, label, noise, schedule.alpha_bars))


@functools.partial(jax.jit, static_argnames=("graphdef", "error_at", "mixture"))
def _errors_over_steps(graphdef, state, error_at, mixture, x0, label, noise, alpha_bars):
    model = nnx.merge(graphdef, state)

    def at(t_and_noise):
        t, e = t_and_noise
        return error_at(model, q_sample.raw(x0, alpha_bars[t - 1], e), t, alpha_bars[t - 1], mixture, label)

    return jax.lax.map(at, (jnp.arange(1, alpha_bars.shape[0] + 1), noise))


# ---------------------------------------------------------------- spreads


def over_keys(measure, key, n_keys):
    """``measure(k)`` for ``n_keys`` keys split from ``key``, stacked: shape (n_keys, ...), numpy.

    For the spread of a measured number: draw the samples it is measured on with each key in turn
    (``k`` can be split further, for the start and the noise of a sampler), then read the values with
    :func:`course_utils.metrics.spread` and :func:`course_utils.metrics.compare`.
    """
    if isinstance(n_keys, bool) or not isinstance(n_keys, (int, np.integer)) or n_keys < 2:
        raise ValueError(f"over_keys: argument `n_keys` must be an int of at least 2 (a spread needs two values), got {n_keys!r}")
    return np.stack([np.asarray(measure(k), np.float64) for k in jax.random.split(key, n_keys)])


# ---------------------------------------------------------------- classifier guidance


@functools.partial(jax.jit, static_argnames=("mixture",))
def class_posterior(x_t, alpha_bar_t, mixture: Mixture = TWO_PIXEL):
    r"""The exact posterior class probabilities of the noised mixture, :math:`p(y = k \mid x_t)`, shape (N, K).

    .. math::
        p(y = k \mid x_t) = \frac{\pi_k\,\mathcal N(x_t; \sqrt{\bar\alpha_t}\mu_k, v_t I)}
        {\sum_j \pi_j\,\mathcal N(x_t; \sqrt{\bar\alpha_t}\mu_j, v_t I)}

    (Bayes' rule; the responsibilities :math:`r_k` of :func:`mixture_eps`). ``x_t``: (N, d);
    ``alpha_bar_t``: a number or (N, 1).
    """
    return _responsibilities(jnp.asarray(x_t, jnp.float32), alpha_bar_t, mixture, None)[0]


def classifier_error_by_step(classifier, schedule: Schedule, key, n=2000, mixture: Mixture = TWO_PIXEL):
    r"""How far a classifier of noisy images is from the exact posterior, at every step: shape (T,).

    At each t, ``n`` points :math:`x_t` are drawn from :math:`q(x_t)` (the mixture's data noised by the forward
    process) and the total variation between the learned and the exact class probabilities is averaged over them:

    .. math::
        \operatorname{mean}_{x_t \sim q(x_t)}\ \tfrac12 \sum_k \big|p_\phi(y = k \mid x_t, t) - p(y = k \mid x_t)\big|

    (with two classes, :math:`|p_\phi(y = 1 \mid x_t, t) - p(y = 1 \mid x_t)|`). ``classifier(x, t)`` returns logits
    (N, K); the exact posterior is :func:`class_posterior`.
    """
    x0, _ = sample_mixture(key, n, mixture)
    return _error_by_step(_classifier_error_at, classifier, schedule, key, x0, mixture, None)


def _classifier_error_at(classifier, x_t, t, alpha_bar_t, mixture, _label):
    """The mean total variation between ``classifier``'s class probabilities and :func:`class_posterior` at ``x_t``."""
    learned = jax.nn.softmax(classifier(x_t, jnp.full((x_t.shape[0],), t)), axis=-1)
    exact = _responsibilities(x_t, alpha_bar_t, mixture, None)[0]
    return jnp.mean(0.5 * jnp.sum(jnp.abs(learned - exact), axis=-1))


class NoisyClassifier(nnx.Module):
    r"""A classifier of noisy images, :math:`p_\phi(y \mid x_t, t)`: an MLP on the pixels and the step, K logits.

    Input: ``x`` (N, d) and ``t`` (N,) steps in 1..T, embedded with fixed random Fourier features of
    :math:`t / T` (as the U-Net's time); two hidden layers with SiLU. Returns logits (N, K).
    """

    def __init__(self, T: int, dim: int = 2, num_classes: int = 2, hidden: int = 64, embed_dim: int = 16,
                 fourier_scale: float = 4.0, *, rngs: nnx.Rngs):
        from .embeddings import fourier_frequencies
        from .models import Linear

        self.T = T
        self.W = nnx.Variable(fourier_frequencies(rngs.params(), embed_dim, fourier_scale))  # fixed, not trained
        self.hidden = nnx.List([Linear(dim + embed_dim, hidden, rngs=rngs), Linear(hidden, hidden, rngs=rngs)])
        self.out = Linear(hidden, num_classes, rngs=rngs)

    def __call__(self, x, t):
        from .embeddings import gaussian_fourier_embedding

        h = jnp.concatenate([x, gaussian_fourier_embedding.raw(jnp.asarray(t, jnp.float32) / self.T, self.W[...])], -1)
        for layer in self.hidden:
            h = jax.nn.silu(layer(h))
        return self.out(h)


class ExactClassifier(nnx.Module):
    """The mixture's exact classifier as logits ``classifier(x, t)``: :math:`\\log p(y = k \\mid x_t)` up to a constant, (N, K)."""

    def __init__(self, alpha_bars, mixture: Mixture = TWO_PIXEL):
        self.alpha_bars = nnx.Variable(jnp.asarray(alpha_bars, jnp.float32))
        self.mixture = mixture

    def __call__(self, x, t):
        # log pi_k + log N(x; sqrt(alpha_bar) mu_k, v I): the log posterior up to a constant, without log(0)
        logs, _, _ = _component_log_densities(jnp.asarray(x, jnp.float32), self.alpha_bars[...][jnp.asarray(t) - 1][:, None],
                                              self.mixture)
        return logs + jnp.log(jnp.asarray(self.mixture.weights, jnp.float32))


def classifier_loss(classifier, x0, t, noise, alpha_bars, y, loss=None):
    r"""Cross-entropy of ``classifier(x_t, t)`` against the labels ``y``, on :math:`x_t` noised from ``x0`` (a mean).

    The same arguments as :func:`conditional_loss` (``loss`` is unused), so that
    :func:`train_conditional` trains a classifier with ``objective=classifier_loss``.
    """
    alpha_bar_t = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
    x_t = q_sample.raw(x0, alpha_bar_t, noise)
    log_p = jax.nn.log_softmax(classifier(x_t, t), axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, y[:, None], axis=-1))


def train_noisy_classifier(classifier, data, labels, alpha_bars, *, steps, key, batch_size=256, learning_rate=1e-3,
                           optimizer=None, progress=None):
    """Train ``classifier(x_t, t)`` in place on noised ``data`` at uniformly drawn steps; return the loss of every step.

    :func:`train_conditional` with :func:`classifier_loss` and no label dropout (every example keeps its label).
    """
    return train_conditional(classifier, data, labels, alpha_bars, steps=steps, key=key, p_uncond=0.0,
                             batch_size=batch_size, learning_rate=learning_rate, optimizer=optimizer,
                             progress=progress, objective=classifier_loss)


def classifier_guided_eps(model, classifier, x_t, t, y, scale, alpha_bars):
    r"""Classifier guidance (Dhariwal and Nichol 2021): the unconditional prediction moved along the classifier's gradient.

    .. math::
        \hat\epsilon(x_t, t, y) = \epsilon_\theta(x_t, t, \varnothing)
        - s\,\sqrt{1 - \bar\alpha_t}\;\nabla_{x_t} \log p_\phi(y \mid x_t, t)

    With :math:`s = 1`, the exact unconditional predictor and the exact classifier this is the exact
    class-conditional predictor (Bayes' rule for the scores). ``x_t``: (N, d); ``t``, ``y``: (N,);
    ``scale``: :math:`s`; ``alpha_bars``: (T,). Returns (N, d).
    """
    eps = model(x_t, t, jnp.full(jnp.shape(y), NO_LABEL, jnp.int32))

    def log_p(x):
        log_probs = jax.nn.log_softmax(classifier(x, t), axis=-1)
        return jnp.sum(jnp.take_along_axis(log_probs, y[:, None], axis=-1))   # each term depends on its own x only

    return eps - scale * jnp.sqrt(1 - alpha_bars[t - 1])[:, None] * jax.grad(log_p)(x_t)


class ClassifierGuided(nnx.Module):
    """An unconditional model and a classifier as one conditional model ``model(x, t, y)`` for the guided sampler.

    A label ``y`` >= 0 gives :func:`classifier_guided_eps` with the scale ``scale``; -1 gives the plain
    unconditional prediction. Sampled with ``w = 0``, :func:`guided_sample` is then classifier guidance.
    """

    def __init__(self, model, classifier, alpha_bars, scale):
        self.model, self.classifier = model, classifier
        self.alpha_bars = nnx.Variable(jnp.asarray(alpha_bars, jnp.float32))
        self.scale = nnx.Variable(jnp.float32(scale))

    def __call__(self, x, t, y):
        guided = classifier_guided_eps(self.model, self.classifier, x, t, jnp.maximum(y, 0), self.scale[...],
                                       self.alpha_bars[...])
        return jnp.where((y < 0)[:, None], self.model(x, t, y), guided)
