"""The pieces of the checks that run in the student's kernel: small stand-in models and the functions that apply a
model to a trial's inputs.

While grading, the grader sends each check's trials to the kernel pickled: module-level functions and classes travel
by name, so the kernel imports them from here. This module is the only part of :mod:`course_utils.exercises` that
the grading sandbox keeps (with :mod:`.kinds`): it holds no reference implementation and no hint, and its models are
none of the course's exercises (a check of ``ddpm_step`` must not hand the kernel a working ``MLPDenoiser``).
Each stand-in depends strongly on every input it takes, so that each slip of an exercise changes the outputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .. import embeddings, models


def _time_features(t, frequencies, phases):
    """(N, F) smooth features of the time steps ``t`` (N,) at fixed frequencies: the stand-ins' notion of time."""
    t = jnp.asarray(t, jnp.float32).reshape(-1, 1)
    return jnp.sin(t * frequencies[None, :] + phases[None, :])


class TrialMLP(nnx.Module):
    """A stand-in noise predictor ``model(x, t)`` for points (N, dim) or small images (N, H, W): an MLP on the
    flattened input and fixed sinusoidal features of ``t``; the output has the shape of ``x``."""

    def __init__(self, size: int = 2, hidden: int = 32, time_features: int = 8, *, rngs: nnx.Rngs):
        rng = np.random.default_rng(int(jax.random.randint(rngs.params(), (), 0, 2**30)))
        self.frequencies = nnx.Variable(jnp.asarray(rng.uniform(0.05, 1.0, time_features), jnp.float32))
        self.phases = nnx.Variable(jnp.asarray(rng.uniform(0, np.pi, time_features), jnp.float32))
        self.first = nnx.Linear(size + time_features, hidden, rngs=rngs)
        self.second = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, size, rngs=rngs)

    def __call__(self, x, t):
        n = x.shape[0]
        h = jnp.concatenate([x.reshape(n, -1), _time_features(t, self.frequencies[...], self.phases[...])], axis=-1)
        h = jax.nn.silu(self.first(h))
        h = jax.nn.silu(self.second(h))
        return self.out(h).reshape(x.shape)


class TrialConditionalNet(nnx.Module):
    """A stand-in conditional noise predictor ``model(x, t, y)`` for two-pixel images: eps(x, t, y) from the pixels,
    t / 50 and the label's one-hot code (with the "no label" slot, y = -1). Any conditional model tests a training
    step or a guided sampler; this one compiles several times faster than the U-Net. x (N, 2), t (N,), y (N,)."""

    def __init__(self, *, rngs):
        self.hidden = models.Linear(2 + 1 + 3, 16, rngs=rngs)
        self.out = models.Linear(16, 2, rngs=rngs)

    def __call__(self, x, t, y):
        n = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (n,))
        y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (n,))
        h = jnp.concatenate([x, t[:, None] / 50, embeddings.class_one_hot(y, 2)], axis=-1)
        return self.out(jax.nn.silu(self.hidden(h)))


class TimeSensitive(nnx.Module):
    """A test model for ddpm_loss whose output depends strongly on t: with a plain small network the loss is
    dominated by the noise, and slips in t and in x_t gave losses equal to 2e-5."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x, t):
        out = self.net(x, t)
        phase = jnp.sin(0.9 * jnp.asarray(t, jnp.float32)).reshape((-1,) + (1,) * (out.ndim - 1))
        return out + 2.0 * phase * jnp.ones_like(out)


class ToyImageEps(nnx.Module):
    """A stand-in for the U-Net in the checks of ``guided_ddim_sample``: a cheap conditional noise predictor with
    the U-Net's signature ``model(x, t, y)`` on (N, 28, 28, 1) images, whose output depends on every pixel, on the
    time step and on the label, "no label" (-1) included, so that each slip changes the samples."""

    def __init__(self, seed):
        rng = np.random.default_rng(6060 + seed)
        self.label_shift = nnx.Param(jnp.asarray(rng.normal(size=(11,)), jnp.float32))   # [0]: no label (-1)
        self.pixel = nnx.Param(jnp.asarray(rng.normal(size=(28, 28, 1)) * 0.5, jnp.float32))
        self.frequency = nnx.Param(jnp.float32(0.15 + 0.1 * seed))

    def __call__(self, x, t, y):
        n = x.shape[0]
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (n,)).reshape(n, 1, 1, 1)
        y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (n,))
        shift = self.label_shift[...][jnp.clip(y + 1, 0, 10)].reshape(n, 1, 1, 1)
        return jnp.tanh(0.9 * x + self.pixel[...] * shift + 0.5 * jnp.sin(self.frequency[...] * t + shift))


class TrialImageNet(nnx.Module):
    """A stand-in for the U-Net in the check of ``image_train_step``: a conditional noise predictor ``model(x, t, y)``
    on small images (N, 8, 8, 1), with the U-Net's signature and labels 0..9 or "no label" (-1). The pixels, fixed
    sinusoidal features of t and the label's one-hot code go through one hidden layer; it compiles in a fraction
    of the U-Net's time."""

    def __init__(self, *, rngs):
        rng = np.random.default_rng(int(jax.random.randint(rngs.params(), (), 0, 2**30)))
        self.frequencies = nnx.Variable(jnp.asarray(rng.uniform(0.05, 0.5, 6), jnp.float32))
        self.phases = nnx.Variable(jnp.asarray(rng.uniform(0, np.pi, 6), jnp.float32))
        self.hidden = models.Linear(64 + 6 + 11, 24, rngs=rngs)
        self.out = models.Linear(24, 64, rngs=rngs)

    def __call__(self, x, t, y):
        n = x.shape[0]
        y = jnp.broadcast_to(jnp.asarray(y, jnp.int32), (n,))
        h = jnp.concatenate([x.reshape(n, -1), _time_features(t, self.frequencies[...], self.phases[...]),
                             embeddings.class_one_hot(y, 10)], axis=-1)
        return self.out(jax.nn.silu(self.hidden(h))).reshape(x.shape)


def step_image_net(rngs):
    """The small image model the image_train_step test trains."""
    return TrialImageNet(rngs=rngs)


def step_mlp(rngs):
    """The small model the train_step test trains (reference weights from nnx.Rngs(seed))."""
    return TrialMLP(size=2, hidden=32, rngs=rngs)


def step_conditional_net(rngs):
    """The small conditional model the conditional_train_step test trains."""
    return TrialConditionalNet(rngs=rngs)


def adam():
    """The training-step tests' Adam (a large eps: the first step lr * g / (|g| + eps) stays smooth in tiny g)."""
    return optax.adam(1e-2, eps=1e-4)


def sgd_momentum():
    return optax.sgd(0.05, momentum=0.9)


def apply_model(model, x, t):
    """``model(x, t)``: a class exercise's forward pass in a trial."""
    return model(x, t)


def apply_conditional(model, x, t, y):
    return model(x, t, y)


def apply_block(block, x, emb):
    return block(x, emb)


def apply_attention(block, x):
    return block(x)


def trial_score_a(x):
    """A stand-in score for the checks of ``langevin_correct``: elementwise, nonlinear, any shape."""
    return -x + 0.5 * jnp.sin(3.0 * x)


def trial_score_b(x):
    """Another stand-in score (a quartic potential's), so that a slip does not hide behind one function's shape."""
    return -(x - 0.5) ** 3 - x
