r"""Training a noise predictor: the DDPM loss and a fast, fully jitted training loop.

The loop runs many optimisation steps inside one compiled loop (drawing each
batch, its time steps and its noise inside the compiled function), so that
Python is visited only between chunks of steps, to update the progress bar.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import config
from ._validate import marked
from .forward import q_sample


def progress_bar(**kwargs):
    """A tqdm progress bar: a widget in Jupyter and Colab when ipywidgets is installed, text otherwise.

    ``tqdm.auto`` warns ("IProgress not found") in a notebook without ipywidgets; this picks the text
    bar there instead, which works everywhere.
    """
    try:
        from IPython import get_ipython

        in_kernel = get_ipython() is not None and "IPKernelApp" in get_ipython().config
        import ipywidgets  # noqa: F401

        from tqdm.notebook import tqdm
    except Exception:  # noqa: BLE001 - no IPython, no kernel, or no ipywidgets
        in_kernel = False
    if not in_kernel:
        from tqdm.std import tqdm
    return tqdm(**kwargs)


@marked
def ddpm_loss(model, x0, t, noise, alpha_bars):
    r"""The DDPM training loss :math:`L_{simple}` on a batch, averaged over examples and coordinates.

    ``x0``: clean data (N, ...); ``t``: time steps (N,) in 1..T; ``noise``: the
    same shape as ``x0``; ``alpha_bars``: (T,). Builds
    :math:`x_t = \sqrt{\bar\alpha_t}x_0 + \sqrt{1-\bar\alpha_t}\epsilon` and returns
    :math:`\mathrm{mean}\,(\epsilon - \epsilon_\theta(x_t, t))^2`.
    """
    alpha_bar_t = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
    x_t = q_sample.raw(x0, alpha_bar_t, noise)
    return jnp.mean((noise - model(x_t, t)) ** 2)


@marked
def train_step(model, optimizer, x0, t, noise, alpha_bars, loss_fn=ddpm_loss):
    r"""One optimisation step of the DDPM loss; updates ``model`` and ``optimizer`` in place and returns the loss.

    .. math::
        L, g = L_{simple}(\theta),\ \nabla_\theta L_{simple}(\theta), \qquad
        \theta \leftarrow \theta + \mathrm{update}(g)

    ``optimizer``: an ``nnx.Optimizer`` of ``model`` (``wrt=nnx.Param``); the
    update is the optax transformation's (for plain gradient descent,
    :math:`-\eta g`). ``loss_fn(model, x0, t, noise, alpha_bars)`` (:func:`ddpm_loss`)
    is evaluated on the parameters *before* the update; its value is returned,
    a scalar. The arguments as in :func:`ddpm_loss`.
    """
    loss, grads = nnx.value_and_grad(loss_fn)(model, x0, t, noise, alpha_bars)
    optimizer.update(model, grads)
    return loss


@functools.lru_cache(maxsize=None)
def step_of(loss_fn):
    """:func:`train_step` with the loss ``loss_fn``, one object per loss (so that compiled loops are reused)."""
    return functools.partial(train_step, loss_fn=loss_fn)


PREDRAWN_NOISE_LIMIT = 2**24
"""The most noise numbers (64 MiB of float32) that :func:`train` draws for a whole chunk of steps at once."""


@functools.partial(jax.jit, static_argnames=("graphdef", "step", "batch_size", "chunk"))
def _train_chunk(graphdef, state, key, data, alpha_bars, n_steps, *, step, batch_size, chunk):
    """Run ``n_steps`` (at most ``chunk``) optimisation steps in one compiled loop.

    ``n_steps`` is a traced value, so runs of any length reuse one compilation.
    Returns the new state and a (chunk,) array of losses (NaN past ``n_steps``).

    The examples, time steps and noise of the whole chunk are drawn before
    the loop, in one call each: on the CPU every call of JAX's generator
    inside a compiled loop runs as a small loop of its own, on one thread.
    The eight calls that drawing a batch took made up 40 % of a step at batch
    32, and the noise alone 4 % at batch 1024. Noise larger than
    :data:`PREDRAWN_NOISE_LIMIT` numbers (a long chunk of big images) is drawn
    in the loop instead, one call per step.
    """
    k_index, k_t, k_noise = jax.random.split(key, 3)
    indices = jax.random.randint(k_index, (chunk, batch_size), 0, data.shape[0])
    ts = jax.random.randint(k_t, (chunk, batch_size), 1, alpha_bars.shape[0] + 1)
    noise_shape = (batch_size,) + data.shape[1:]
    if chunk * math.prod(noise_shape) <= PREDRAWN_NOISE_LIMIT:
        noises = jax.random.normal(k_noise, (chunk,) + noise_shape)

        def noise_of_step(i):
            return noises[i]
    else:
        noise_keys = jax.random.split(k_noise, chunk)

        def noise_of_step(i):
            return jax.random.normal(noise_keys[i], noise_shape)

    def one_step(i, carry):
        state, losses = carry
        model, optimizer = nnx.merge(graphdef, state)
        x0 = data[indices[i]]
        noise = noise_of_step(i)
        loss = step(model, optimizer, x0, ts[i], noise, alpha_bars)
        return nnx.state((model, optimizer)), losses.at[i].set(loss)

    return jax.lax.fori_loop(0, n_steps, one_step, (state, jnp.full((chunk,), jnp.nan, jnp.float32)))


@functools.lru_cache(maxsize=None)
def adam(learning_rate):
    """Adam with a constant learning rate, one object per rate (so that compiled training loops are reused)."""
    return optax.adam(learning_rate)


def train(model, data, alpha_bars, *, steps, key, batch_size=128, learning_rate=1e-3,
          loss_fn=ddpm_loss, optimizer=None, progress=None, chunk=500, step=None):
    """Train ``model`` in place on ``data`` (N, ...) for ``steps`` Adam steps; return the loss of every step.

    Each step draws a batch of ``batch_size`` examples, time steps uniform in
    1..T and fresh noise, and calls ``loss_fn(model, x0, t, noise, alpha_bars)``
    (:func:`ddpm_loss` by default). The steps run in compiled loops of at most
    ``chunk`` steps, with a progress bar between them (off in grading mode).
    ``optimizer`` is an ``optax`` transformation (default: Adam with
    ``learning_rate``), or an ``nnx.Optimizer`` of this model from an earlier
    call, to continue training where it stopped (learning-rate schedule and
    Adam's moments included). Pass the same optax object to several calls to
    reuse the compiled loop (a new object means a new compilation).

    ``step(model, optimizer, x0, t, noise, alpha_bars)`` takes one
    optimisation step in place and returns the loss (notebook 04's exercise
    ``train_step``); it is compiled inside the loop. By default
    :func:`train_step` with ``loss_fn``.
    """
    if steps < 1:
        raise ValueError(f"train: argument `steps` must be at least 1, got {steps}")
    data = jnp.asarray(data)
    step = step_of(loss_fn) if step is None else step

    def run(graphdef, state, key, n):
        return _train_chunk(graphdef, state, key, data, alpha_bars, n, step=step, batch_size=batch_size, chunk=chunk)

    return run_in_chunks(model, run, optimizer=optimizer, learning_rate=learning_rate, steps=steps, key=key,
                         chunk=chunk, progress=progress)


def data_parallel_shardings(batch_size, where="train"):
    """(batch, replicated) shardings over every local device, or (None, None) when there is only one.

    ``batch`` splits the first axis of an array between the devices;
    ``replicated`` puts a whole copy on each. ``batch_size`` must be a
    multiple of the number of devices.
    """
    devices = jax.local_devices()
    if len(devices) == 1:
        return None, None
    if batch_size % len(devices):
        raise ValueError(f"{where}: argument `batch_size` ({batch_size}) must be a multiple of the number of "
                         f"devices ({len(devices)}) for data-parallel training")
    mesh = jax.sharding.Mesh(np.array(devices), ("data",))
    return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")),
            jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def run_in_chunks(model, run_chunk, *, optimizer, learning_rate, steps, key, chunk, progress):
    """The loop shared by the training functions: optimizer, chunks of compiled steps, progress bar.

    ``run_chunk(graphdef, state, key, n)`` runs ``n`` steps (n <= chunk) on the
    split (model, optimizer) and returns the new state and a (chunk,) array of
    losses. ``optimizer``: an optax transformation (default Adam with
    ``learning_rate``) or an ``nnx.Optimizer`` of ``model`` to continue with.
    Updates ``model`` in place and returns the loss of every step.
    """
    if isinstance(optimizer, nnx.Optimizer):
        opt = optimizer
    else:
        opt = nnx.Optimizer(model, optimizer or adam(learning_rate), wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    state, losses = in_chunks(lambda st, k, n: run_chunk(graphdef, st, k, n), state, steps=steps, key=key,
                               chunk=chunk, progress=progress)
    nnx.update((model, opt), state)
    return losses


def in_chunks(run_chunk, state, *, steps, key, chunk, progress, fold=jax.random.fold_in):
    """``run_chunk(state, key, n)`` over ``steps`` steps in chunks, with a progress bar; (state, losses (..., steps)).
    The key of the chunk that starts at step ``first`` is ``fold(key, first)``."""
    show = (not config.fast_mode()) if progress is None else progress
    losses = []
    with progress_bar(total=steps, disable=not show, desc="training", leave=False) as bar:
        for first in range(0, steps, chunk):
            n = min(chunk, steps - first)
            state, chunk_losses = run_chunk(state, fold(key, first), n)
            losses.append(chunk_losses[..., :n])
            bar.update(n)
            bar.set_postfix(loss=f"{float(jnp.mean(chunk_losses[..., n - 1])):.4f}")
    return state, np.asarray(jnp.concatenate(losses, axis=-1))


@functools.partial(jax.jit, static_argnames=("graphdef", "step", "batch_size", "chunk", "data_axis", "schedule_axis"))
def _train_many_chunk(graphdef, states, keys, data, alpha_bars, n_steps, *, step, batch_size, chunk, data_axis,
                      schedule_axis):
    """:func:`_train_chunk` for a stack of models: ``jax.vmap`` over the leading axis of their states and keys (and
    of ``data`` / ``alpha_bars`` when each model has its own)."""
    def one(state, key, data, alpha_bars):
        return _train_chunk(graphdef, state, key, data, alpha_bars, n_steps, step=step, batch_size=batch_size, chunk=chunk)

    return jax.vmap(one, in_axes=(0, 0, data_axis, schedule_axis))(states, keys, data, alpha_bars)


def stack_states(modules):
    """The states of ``modules`` (same structure) stacked along a new first axis, and their common graph definition."""
    graphdef, _ = nnx.split(modules[0])
    states = [nnx.split(m)[1] for m in modules]
    return graphdef, jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def train_many(models, data, alpha_bars, *, steps, key, batch_size=128, optimizer=None, learning_rate=1e-3,
               loss_fn=ddpm_loss, step=None, progress=None, chunk=500):
    """Train several models of the same structure at once, in place; return their losses, shape (len(models), steps).

    The models' states (with one ``nnx.Optimizer`` each) are stacked along a new first axis and the compiled
    training loop of :func:`train` runs under ``jax.vmap`` over that axis: one program trains them all, each with
    its own batches (model ``i`` draws them as :func:`train` would with the key ``jax.random.split(key, n)[i]``,
    so it ends where that run ends, up to rounding). ``data`` is one array (N, ...) for all, or a list with one
    array per model (all of the same shape); ``alpha_bars`` likewise (T,) or one per model. ``optimizer`` is one
    optax transformation used by each model (default Adam with ``learning_rate``), or a list of ``nnx.Optimizer``
    one per model, from an earlier call (to continue training); ``step`` and ``loss_fn`` as in :func:`train`.
    """
    if steps < 1:
        raise ValueError(f"train_many: argument `steps` must be at least 1, got {steps}")
    models = list(models)
    if isinstance(optimizer, list):   # (an optax transformation is a tuple)
        if len(optimizer) != len(models) or not all(isinstance(o, nnx.Optimizer) for o in optimizer):
            raise ValueError("train_many: a list `optimizer` must hold one nnx.Optimizer per model")
        pairs = list(zip(models, optimizer))
    else:
        tx = optimizer or adam(learning_rate)
        pairs = [(m, nnx.Optimizer(m, tx, wrt=nnx.Param)) for m in models]
    graphdef, states = stack_states(pairs)
    per_model = [isinstance(a, (list, tuple)) for a in (data, alpha_bars)]
    data, alpha_bars = (jnp.stack([jnp.asarray(x) for x in a]) if many else jnp.asarray(a)
                        for a, many in zip((data, alpha_bars), per_model))
    step = step_of(loss_fn) if step is None else step

    def run(states, keys, n):
        return _train_many_chunk(graphdef, states, keys, data, alpha_bars, n, step=step, batch_size=batch_size,
                                 chunk=chunk, data_axis=0 if per_model[0] else None,
                                 schedule_axis=0 if per_model[1] else None)

    states, losses = in_chunks(run, states, steps=steps, key=jax.random.split(key, len(models)), chunk=chunk,
                                progress=progress, fold=jax.vmap(jax.random.fold_in, in_axes=(0, None)))
    for i, pair in enumerate(pairs):
        nnx.update(pair, jax.tree.map(lambda leaf: leaf[i], states))
    return losses


# ---------------------------------------------------------------- weights averaged over training (EMA)

class EMAState(tuple):
    """The state of :func:`with_ema`: ``(inner, ema, count)`` (a pytree, as optax states are)."""


def ema_decay_at(count, decay):
    r"""The decay used at update number ``count`` (0, 1, ...): :math:`\min(d, (1 + n) / (10 + n))`.

    Early in training the average forgets quickly (0.1 at the first update, 0.5 at the ninth), so that the
    random initial weights do not linger in it; later the decay is ``decay`` (the warm-up of TensorFlow's
    ``ExponentialMovingAverage(num_updates=...)``).
    """
    n = jnp.asarray(count, jnp.float32)
    return jnp.minimum(jnp.float32(decay), (1.0 + n) / (10.0 + n))


def with_ema(tx, decay):
    r"""The optax transformation ``tx`` that also keeps an exponential moving average of the parameters.

    After every update, with :math:`\theta` the new parameters and :math:`d_n` = :func:`ema_decay_at`:

    .. math:: \bar\theta \leftarrow d_n\,\bar\theta + (1 - d_n)\,\theta

    The average lives in the optimizer's state (:class:`EMAState`), so it is carried through compiled loops,
    ``vmap`` over models and data-parallel training like Adam's moments; :func:`ema_params` reads it. The
    updates themselves are ``tx``'s: training is unchanged. Ho et al. (2020) sample from such an average
    (decay 0.9999 over 800k steps); a run of a few thousand steps needs a shorter memory (0.999: the last
    thousand steps or so).
    """
    if not 0.0 < decay < 1.0:
        raise ValueError(f"with_ema: argument `decay` must lie in (0, 1), got {decay!r}")

    def init(params):
        return EMAState((tx.init(params), jax.tree.map(jnp.array, params), jnp.zeros((), jnp.int32)))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("with_ema: the update needs the parameters (nnx.Optimizer passes them)")
        inner, ema, count = state
        updates, inner = tx.update(updates, inner, params)
        new_params = optax.apply_updates(params, updates)
        d = ema_decay_at(count, decay)
        ema = jax.tree.map(lambda e, p: (d * e + (1.0 - d) * p).astype(e.dtype), ema, new_params)
        return updates, EMAState((inner, ema, count + 1))

    return optax.GradientTransformation(init, update)


jax.tree_util.register_pytree_node(EMAState, lambda s: (tuple(s), None), lambda _, children: EMAState(children))


def ema_params(optimizer):
    """The averaged parameters kept by an ``nnx.Optimizer`` whose transformation is :func:`with_ema`, as an
    ``nnx.State`` that ``nnx.update(model, ...)`` loads into a model of the same structure."""
    state = nnx.as_pure(optimizer.opt_state)
    if not isinstance(state, EMAState):
        raise ValueError("ema_params: this optimizer keeps no average (build it with training.with_ema)")
    return state[1]
