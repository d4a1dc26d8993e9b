"""Helpers shared by the exercise definitions: random inputs of the usual kinds."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import embeddings, guidance

_SHAPES = [(), (5,), (3, 4), (2, 3, 2)]


def array(rng, shape):
    """Standard normal float32 values of the given shape."""
    return np.asarray(rng.standard_normal(shape), dtype=np.float32)


def shape(rng):
    """One of a few shapes (a scalar, a vector, a matrix, a 3D array)."""
    return _SHAPES[rng.integers(len(_SHAPES))]


def f32(x):
    return np.float32(x)


def time_step(rng):
    """A consistent (beta_t, alpha_bar_t, alpha_bar_prev) triple at a random step."""
    beta_t = rng.uniform(1e-3, 0.5)
    alpha_bar_prev = rng.uniform(0.01, 1.0)
    return f32(beta_t), f32(alpha_bar_prev * (1 - beta_t)), f32(alpha_bar_prev)


def kept_trajectory(keep, x_T, x_last, xs):
    """What a sampler returns when it keeps its trajectory as ``keep`` says (the slips of the sampler exercises).

    ``x_last``: the scan's final state; ``xs``: what the scan collected, one entry per step.
    "x_0 only": the final state; "no x_T" and "no x_0": the collected states alone; "reversed": the
    whole trajectory from x_0 to x_T; anything else: the right one, x_T in front of the collected states.
    """
    import jax.numpy as jnp

    if keep == "x_0 only":
        return x_last
    if keep in ("no x_T", "no x_0"):
        return xs
    trajectory = jnp.concatenate([x_T[None], xs])
    return trajectory[::-1] if keep == "reversed" else trajectory


def guided_step_with(labels="dropped", x_t="closed form", target="noise", sign=1.0, loss_after=False, shift=1,
                     reduce="mean"):
    """The guided training step (notebook 05's ``conditional_train_step``, notebook 06's ``image_train_step``: the
    same step on any data shape) with one slip, for the hints of both."""
    def step(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
        chosen = {"dropped": lambda: guidance.drop_labels(key, y, p_uncond), "kept": lambda: y,
                  "none": lambda: jnp.full_like(y, embeddings.NO_LABEL)}[labels]()

        def loss_fn(model):
            ab = alpha_bars[jnp.clip(t - shift, 0, alpha_bars.shape[0] - 1)].reshape((-1,) + (1,) * (x0.ndim - 1))
            noisy = (jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise) if x_t == "closed form" else (ab * x0 + (1 - ab) * noise)
            squared = ((noise if target == "noise" else x0) - model(noisy, t, chosen)) ** 2
            return jnp.mean(squared) if reduce == "mean" else jnp.mean(jnp.sum(squared, axis=tuple(range(1, x0.ndim))))

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, jax.tree.map(lambda g: sign * g, grads))
        return loss_fn(model) if loss_after else loss
    return step
