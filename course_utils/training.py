r"""Training a noise predictor: the DDPM loss and a fast, fully jitted training loop.

The loop runs many optimisation steps inside one ``jax.lax.scan`` (drawing each
batch, its time steps and its noise inside the scan), so that Python is
visited only between chunks of steps, to update the progress bar.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from . import config
from .forward import q_sample


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


def _draw_batch(key, data, batch_size, T):
    k_index, k_t, k_noise = jax.random.split(key, 3)
    x0 = data[jax.random.randint(k_index, (batch_size,), 0, data.shape[0])]
    t = jax.random.randint(k_t, (batch_size,), 1, T + 1)
    return x0, t, jax.random.normal(k_noise, x0.shape)


@functools.partial(jax.jit, static_argnames=("graphdef", "loss_fn", "batch_size", "n_steps"))
def _train_chunk(graphdef, state, key, data, alpha_bars, *, loss_fn, batch_size, n_steps):
    def one_step(state, key):
        model, optimizer = nnx.merge(graphdef, state)
        x0, t, noise = _draw_batch(key, data, batch_size, alpha_bars.shape[0])
        loss, grads = nnx.value_and_grad(loss_fn)(model, x0, t, noise, alpha_bars)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    return jax.lax.scan(one_step, state, jax.random.split(key, n_steps))


def train(model, data, alpha_bars, *, steps, key, batch_size=128, learning_rate=1e-3,
          loss_fn=ddpm_loss, optimizer=None, progress=None, chunks=20):
    """Train ``model`` in place on ``data`` (N, ...) for ``steps`` Adam steps; return the loss of every step.

    Each step draws a batch of ``batch_size`` examples, time steps uniform in
    1..T and fresh noise, and calls ``loss_fn(model, x0, t, noise, alpha_bars)``
    (:func:`ddpm_loss` by default). The steps run in ``chunks`` jitted
    ``lax.scan`` calls of equal length, with a progress bar between them (off
    in grading mode). ``optimizer`` (an ``optax`` transformation) defaults to
    Adam with ``learning_rate``.
    """
    if steps < 1:
        raise ValueError(f"train: argument `steps` must be at least 1, got {steps}")
    data = jnp.asarray(data)
    tx = optimizer or optax.adam(learning_rate)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    graphdef, state = nnx.split((model, opt))
    n_chunks = max(1, min(chunks, steps))
    sizes = [steps // n_chunks] * n_chunks
    sizes[-1] += steps - sum(sizes)
    show = (not config.fast_mode()) if progress is None else progress
    losses = []
    with tqdm(total=steps, disable=not show, desc="training", leave=False) as bar:
        for size, chunk_key in zip(sizes, jax.random.split(key, n_chunks)):
            state, chunk_losses = _train_chunk(graphdef, state, chunk_key, data, alpha_bars,
                                               loss_fn=loss_fn, batch_size=batch_size, n_steps=size)
            losses.append(chunk_losses)
            bar.update(size)
            bar.set_postfix(loss=f"{float(chunk_losses[-1]):.4f}")
    nnx.update((model, opt), state)
    return np.asarray(jnp.concatenate(losses))
