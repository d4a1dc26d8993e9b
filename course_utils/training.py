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


PREDRAWN_NOISE_LIMIT = 2**24
"""The most noise numbers (64 MiB of float32) that :func:`train` draws for a whole chunk of steps at once."""


@functools.partial(jax.jit, static_argnames=("graphdef", "loss_fn", "batch_size", "chunk"))
def _train_chunk(graphdef, state, key, data, alpha_bars, n_steps, *, loss_fn, batch_size, chunk):
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
        loss, grads = nnx.value_and_grad(loss_fn)(model, x0, ts[i], noise, alpha_bars)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), losses.at[i].set(loss)

    return jax.lax.fori_loop(0, n_steps, one_step, (state, jnp.full((chunk,), jnp.nan, jnp.float32)))


@functools.lru_cache(maxsize=None)
def adam(learning_rate):
    """Adam with a constant learning rate, one object per rate (so that compiled training loops are reused)."""
    return optax.adam(learning_rate)


def train(model, data, alpha_bars, *, steps, key, batch_size=128, learning_rate=1e-3,
          loss_fn=ddpm_loss, optimizer=None, progress=None, chunk=500):
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
    """
    if steps < 1:
        raise ValueError(f"train: argument `steps` must be at least 1, got {steps}")
    data = jnp.asarray(data)

    def run(graphdef, state, key, n):
        return _train_chunk(graphdef, state, key, data, alpha_bars, n, loss_fn=loss_fn, batch_size=batch_size, chunk=chunk)

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
    show = (not config.fast_mode()) if progress is None else progress
    losses = []
    with progress_bar(total=steps, disable=not show, desc="training", leave=False) as bar:
        for first in range(0, steps, chunk):
            n = min(chunk, steps - first)
            state, chunk_losses = run_chunk(graphdef, state, jax.random.fold_in(key, first), n)
            losses.append(chunk_losses[:n])
            bar.update(n)
            bar.set_postfix(loss=f"{float(chunk_losses[n - 1]):.4f}")
    nnx.update((model, opt), state)
    return np.asarray(jnp.concatenate(losses))
