r"""Notebook 06: class-conditional diffusion on MNIST with the :class:`~course_utils.unet.UNet`.

This module holds what the notebook and the training script share: the
schedules (T = 200), training with label dropout (classifier-free guidance),
guided DDPM and DDIM sampling, the measures of quality (the shipped
classifier's accuracy on guided samples, and diversity within each digit),
and the shipped checkpoint.

Train the checkpoint that ships with the course (the command is recorded in
the file's metadata)::

    python -m course_utils.mnist train --config cpu --steps 3000 --out course_utils/weights/mnist_unet_cpu.msgpack

On a machine with several devices (GPUs, or CPU cores made into devices with
``--cpu-devices``), training and sampling are data parallel.
"""

import functools
import importlib.resources
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import checkpoints, classifier, config, data, metrics, unet
from ._validate import marked
from .forward import q_sample
from .guidance import drop_labels, guided_eps, train_conditional
from .sampling import ddpm_step, guided_ddim_sample, reverse_sigmas
from .schedules import cosine_betas, linear_betas, make_schedule
from .training import data_parallel_shardings, ema_params, with_ema

T = 200
"""The number of diffusion steps of notebook 06."""

CONFIGS = {"cpu": unet.CPU_CONFIG, "gpu": unet.GPU_CONFIG}
SHIPPED = {"cpu": "weights/mnist_unet_cpu.msgpack",
           "cpu_seed1": "weights/mnist_unet_cpu_seed1.msgpack",
           "cpu_seed1_raw": "weights/mnist_unet_cpu_seed1_raw.msgpack",
           "cpu_linear": "weights/mnist_unet_cpu_linear.msgpack",
           "cpu_linear_seed1": "weights/mnist_unet_cpu_linear_seed1.msgpack",
           "cpu_fashion": "weights/fashion_mnist_unet_cpu.msgpack"}
"""The checkpoints that ship with course_utils, by name: the CPU U-Net trained with the cosine schedule (the
one notebook 06 uses); a second run of it (``--seed 1``) that kept an average of the weights, as its averaged
(``cpu_seed1``) and its last weights (``cpu_seed1_raw``); the same recipe with the linear schedule, seeds 0
and 1; and the cosine one trained on Fashion-MNIST. Each file's metadata holds its configuration, data set,
schedule, seed, kind of weights, command and measured quality."""


COSINE_MAX_BETA = 0.2
"""The cosine schedule's betas are clipped here, not at 0.999 (notebook 04, section 8.2)."""


def make_betas(kind="cosine", T=T):
    r"""The betas of notebook 06: "cosine" (clipped at :data:`COSINE_MAX_BETA`), or "linear" rescaled to T steps.

    The linear schedule of Ho et al. goes from :math:`10^{-4}` to 0.02 in
    1000 steps; with fewer steps both ends are multiplied by 1000 / T, so
    that :math:`\bar\alpha_T` is about as small as with 1000 steps. The
    cosine schedule clipped at 0.999 makes the first reverse step divide by
    :math:`\sqrt{1 - 0.999}`, 30-fold amplifying the network's error at
    t = T: measured on the U-Net trained with it, DDIM samples (20 steps,
    w = 2) were noise (the classifier: 12 % right), and a few DDPM samples too.
    """
    if kind == "cosine":
        return cosine_betas(T, max_beta=COSINE_MAX_BETA)
    if kind == "linear":
        return linear_betas(T, 1e-4 * 1000 / T, 0.02 * 1000 / T)
    raise ValueError(f"make_betas: argument `kind` must be 'cosine' or 'linear', got {kind!r}")


def new_model(config="cpu", seed=0, **blocks):
    """A freshly initialised U-Net; ``config`` is "cpu", "gpu" or a :class:`~course_utils.unet.UNetConfig`.

    ``blocks``: ``residual_block=`` and ``attention=`` classes to build it with
    (see :class:`~course_utils.unet.UNet`).
    """
    config = CONFIGS[config] if isinstance(config, str) else config
    return unet.UNet(config, rngs=nnx.Rngs(seed), **blocks)


@functools.lru_cache(maxsize=None)
def optimizer_for(steps, learning_rate=2e-3, warmup=100):
    """Adam with a short linear warm-up and a cosine decay to 5 % over ``steps`` (one object per setting)."""
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(warmup, steps // 2), steps,
                                                  end_value=0.05 * learning_rate)
    return optax.adam(schedule)


@marked
def image_train_step(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond):
    r"""One optimisation step of the guided model on images; updates ``model`` and ``optimizer`` in place and returns
    the loss computed before the update (a scalar).

    ``x0``: images (N, H, W, C); ``y``: their labels (N,); ``t``: time steps (N,) in 1..T; ``noise``: shaped like
    ``x0``; ``alpha_bars``: (T,); ``key``: a raw key (``uint32[2]``, as ``jax.random.key_data`` gives) for
    :func:`course_utils.guidance.drop_labels` with the probability ``p_uncond``. With :math:`	ilde y` the labels
    after dropping and :math:`arlpha_t` broadcast over the image axes:

    .. math::
        x_t = \sqrt{arlpha_t}\,x_0 + \sqrt{1 - arlpha_t}\,\epsilon, \qquad
        L = \operatorname{mean}ig(\epsilon - \epsilon_	heta(x_t, t, 	ilde y)ig)^2

    (the mean over the batch and every pixel), then its gradient with ``nnx.value_and_grad`` and
    ``optimizer.update(model, grads)``. Notebook 06's exercise; :func:`train_unet` takes it as ``step``.
    """
    labels = drop_labels(key, y, p_uncond)

    def loss_fn(model):
        alpha_bar_t = alpha_bars[t - 1].reshape((-1,) + (1,) * (x0.ndim - 1))
        x_t = q_sample.raw(x0, alpha_bar_t, noise)
        return jnp.mean((noise - model(x_t, t, labels)) ** 2)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


def train_unet(model, images, labels, schedule, *, steps, key, batch_size=64, learning_rate=2e-3, optimizer=None,
               p_uncond=0.1, progress=None, step=None):
    """Train ``model`` in place with label dropout (see :func:`course_utils.guidance.train_conditional`).

    Steps per compiled call: :func:`course_utils.config.steps_per_call`, one on
    a CPU (convolutions inside a compiled loop run several times slower there,
    see :func:`sample_digits`), 100 on a GPU or TPU (where one step per call
    leaves the device waiting for Python).

    ``optimizer``: an optax transformation (default :func:`optimizer_for`), or an ``nnx.Optimizer`` of
    ``model``, for example one built on :func:`course_utils.training.with_ema` to keep an average of the
    weights (:func:`ema_model` reads it afterwards). ``step``: a function of the signature of notebook 06's
    exercise ``image_train_step(model, optimizer, x0, y, t, noise, alpha_bars, key, p_uncond)`` that takes each
    step (None: the course's own loop body, the same computation).
    """
    optimizer = optimizer if optimizer is not None else optimizer_for(steps, learning_rate)
    return train_conditional(model, images, labels, schedule.alpha_bars, steps=steps, key=key, p_uncond=p_uncond,
                             batch_size=batch_size, optimizer=optimizer, progress=progress,
                             chunk=config.steps_per_call(), step=step)


def ema_model(model, optimizer, **blocks):
    """A new U-Net of ``model``'s configuration holding the weights averaged over training by ``optimizer`` (an
    ``nnx.Optimizer`` built on :func:`course_utils.training.with_ema`); ``model`` itself is left as it is."""
    averaged = new_model(model.config, **blocks)
    nnx.update(averaged, nnx.state(model, nnx.Not(nnx.Param)))
    nnx.update(averaged, ema_params(optimizer))
    return averaged


def _spread(*arrays):
    """Split the first axis of each array over the local devices (when there are several and it divides)."""
    if arrays[0].shape[0] % len(jax.local_devices()):
        return arrays
    batch, _ = data_parallel_shardings(arrays[0].shape[0])
    return arrays if batch is None else jax.device_put(arrays, batch)


@config.jit(static_argnames=("graphdef",))
def _ddpm_step(graphdef, state, x, t, z, y, w, schedule, sigmas):
    model = nnx.merge(graphdef, state)
    return ddpm_step(lambda x_t, steps: guided_eps(model, x_t, steps, y, w), x, t, z, schedule.betas, schedule.alpha_bars,
                     sigmas)


def ddim_timesteps(n_steps, T=T):
    """The steps visited by DDIM in ``n_steps`` jumps: ``n_steps + 1`` evenly spaced integers from T down to 0."""
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or not 1 <= n_steps <= T:
        raise ValueError(f"ddim_timesteps: argument `n_steps` must be an int in 1..T = {T}, got {n_steps!r}")
    return np.round(np.linspace(T, 0, int(n_steps) + 1)).astype(np.int32)


@config.jit(static_argnames=("graphdef", "sampler"))
def _sampler_call(graphdef, state, x, y, w, timesteps, alpha_bars, *, sampler):
    return sampler(nnx.merge(graphdef, state), x, y, w, timesteps, alpha_bars)


def run_guided_ddim(model, x_T, y, w, timesteps, alpha_bars, sampler=guided_ddim_sample):
    r"""``sampler(model, x_T, y, w, timesteps, alpha_bars)``, compiled: the trajectory, shape (K + 1, N, ...).

    ``sampler`` has the signature of :func:`course_utils.sampling.guided_ddim_sample` (the reference, or the
    notebook's own): one ``lax.scan`` over the visited steps. On a GPU or TPU it runs in one call with every
    step. On a CPU it is called once per pair of consecutive visited steps ``(t, t')`` and the calls are
    chained, so that one compilation (14-18 s for the U-Net's guided step on the 2-core machine at load 11)
    serves every number of steps; a scan over all the steps would be compiled anew for each number of steps.
    Measured on the course's 2-core machine (load average 11, batch 20, 10 DDIM steps, three interleaved
    rounds): 136-180 ms a step for the whole scan in one call, 141-167 ms chained, so forward sampling is not
    slowed by the loop (unlike the training step, ``benchmarks/README.md``). The result is the same (the carry
    is the image batch). With several devices the batch is split between them (when it divides evenly).
    """
    timesteps = np.asarray(timesteps, np.int32)
    graphdef, state = nnx.split(model)
    w = jnp.float32(w)
    x_T, y = _spread(jnp.asarray(x_T), jnp.asarray(y, jnp.int32))    # the batch split over the devices
    if config.on_accelerator():
        return _sampler_call(graphdef, state, x_T, y, w, jnp.asarray(timesteps), alpha_bars, sampler=sampler)
    states, x = [x_T], x_T
    for pair in zip(timesteps[:-1], timesteps[1:]):
        x = _sampler_call(graphdef, state, x, y, w, jnp.asarray(pair, jnp.int32), alpha_bars, sampler=sampler)[-1]
        states.append(x)
    return jnp.stack(states)


def sample_digits(model, key, labels, schedule, *, w=2.0, sampler="ddpm", n_steps=20, trajectory=False,
                  ddim=guided_ddim_sample):
    r"""Guided samples of the digits ``labels`` (N,), shape (N, 28, 28, 1), clipped to [-1, 1].

    ``sampler``: "ddpm" (all T steps, :math:`\sigma_t^2 = \tilde\beta_t`) or
    "ddim" (``n_steps`` deterministic steps, :func:`ddim_timesteps`, run by
    :func:`run_guided_ddim` with ``ddim``: the reference
    :func:`course_utils.sampling.guided_ddim_sample`, or a function of the
    same signature). ``w``: the guidance weight. The starting noise depends
    only on ``key`` and the shape, so both samplers start from the same
    :math:`x_T`. With ``trajectory=True`` returns every visited state
    (unclipped), first axis from :math:`x_T` to :math:`x_0`.

    DDPM's loop over time steps is a Python loop of one compiled step, not a
    ``lax.scan``: on a CPU, XLA runs convolutions inside a compiled loop
    several times slower than on their own (``benchmarks/unet_mnist.py``);
    a step of the U-Net is long enough that Python's overhead does not count.
    DDIM's scan is called one pair of steps at a time on a CPU (:func:`run_guided_ddim`).
    """
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sample_digits: argument `sampler` must be 'ddpm' or 'ddim', got {sampler!r}")
    labels = jnp.asarray(labels, jnp.int32)
    shape = (labels.shape[0],) + (28, 28, model.config.image_channels)
    k_start, k_noise = jax.random.split(key)
    x, labels = _spread(jax.random.normal(k_start, shape), labels)
    graphdef, state = nnx.split(model)
    w = jnp.float32(w)
    states = [x]
    if sampler == "ddpm":
        sigmas = reverse_sigmas(schedule, "beta_tilde")
        for t in range(schedule.T, 0, -1):
            z = jax.random.normal(jax.random.fold_in(k_noise, t), shape) if t > 1 else jnp.zeros(shape)
            x = _ddpm_step(graphdef, state, x, t, _spread(z)[0], labels, w, schedule, sigmas)
            if trajectory:
                states.append(x)
    else:
        if not 1 <= n_steps <= schedule.T:
            raise ValueError(f"sample_digits: argument `n_steps` must lie in 1..T = {schedule.T}, got {n_steps}")
        states = run_guided_ddim(model, x, labels, w, ddim_timesteps(n_steps, schedule.T), schedule.alpha_bars,
                                 sampler=ddim)
        return states if trajectory else jnp.clip(states[-1], -1.0, 1.0)
    return jnp.stack(states) if trajectory else jnp.clip(x, -1.0, 1.0)


def within_class_spread(images, labels):
    """The mean distance between two images of the same digit, for each digit (10,): a measure of diversity.

    Images that are all the same give 0; the offline MNIST training digits
    give 13.0 (ones) to 19.9 (twos), 17.9 on average (pixels in [-1, 1]).
    """
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    labels = np.asarray(labels)
    spread = np.full(10, np.nan)
    for digit in range(10):
        group = x[labels == digit]
        if len(group) > 1:
            squared = (group ** 2).sum(1)
            d2 = np.maximum(squared[:, None] + squared[None, :] - 2 * group @ group.T, 0.0)
            spread[digit] = np.sqrt(d2)[np.triu_indices(len(group), 1)].mean()
    return spread


def evaluate(model, schedule, key, *, per_digit=50, keys=5, w=2.0, sampler="ddim", n_steps=20,
             ddim=guided_ddim_sample, path=False, dataset="mnist"):
    """Sample ``per_digit`` images of each digit, in ``keys`` runs of :func:`sample_digits` with keys of their own,
    and measure them, overall and run by run (the spread over sampling keys).

    Every run asks for ``per_digit // keys`` images of each digit (``per_digit`` must be a multiple of ``keys``).
    The sampler is compiled before the clock starts, so ``seconds`` is pure sampling. Returns a dict:
    ``accuracy`` (the shipped classifier's, overall), ``per_digit_accuracy`` (10,), ``spread`` (mean
    within-digit distance of all samples, (10,)), ``seconds`` (all runs), ``by_key``: ``accuracy``,
    ``spread`` (the mean over digits; NaN with one image of each digit per run) and ``seconds`` of each run,
    each (keys,); and the ``samples``, their ``labels`` and the run ``key_index`` of each. With ``path=True``
    also ``path``: every visited state of the first run (unclipped, as :func:`sample_digits` with
    ``trajectory=True``), at no extra cost. ``dataset``: whose shipped classifier measures the samples
    ("mnist" or "fashion_mnist").
    """
    ruler = classifier.load_classifier(dataset)
    if isinstance(keys, bool) or not isinstance(keys, int) or keys < 1 or per_digit % keys:
        raise ValueError(f"evaluate: `per_digit` ({per_digit}) must be a multiple of `keys` ({keys!r}, a positive int)")
    labels = np.tile(np.arange(10), per_digit // keys)
    _compile(model, labels, schedule, w, sampler, n_steps, ddim)
    parts, seconds, first_path = [], [], None
    for k in range(keys):
        start = time.perf_counter()
        out = np.asarray(sample_digits(model, jax.random.fold_in(key, k), labels, schedule, w=w, sampler=sampler,
                                       n_steps=n_steps, ddim=ddim, trajectory=path and k == 0))
        seconds.append(time.perf_counter() - start)
        if path and k == 0:
            first_path, out = out, np.clip(out[-1], -1.0, 1.0)
        parts.append(out)
    samples = np.concatenate(parts)
    all_labels = np.tile(labels, keys)
    accuracy = classifier.classifier_accuracy(samples, all_labels, ruler)
    by_key = {"accuracy": np.array([classifier.classifier_accuracy(p, labels, ruler).overall for p in parts]),
              "spread": np.array([_mean_over_digits(within_class_spread(p, labels)) for p in parts]),
              "seconds": np.array(seconds)}
    return {"accuracy": accuracy.overall, "per_digit_accuracy": np.asarray(accuracy.per_class),
            "spread": within_class_spread(samples, all_labels), "seconds": float(sum(seconds)), "by_key": by_key,
            "samples": samples, "labels": all_labels, "key_index": np.repeat(np.arange(keys), len(labels)),
            **({"path": first_path} if path else {})}


def _mean_over_digits(spread):
    """The mean of the digits' spreads that exist (NaN when none does)."""
    known = spread[~np.isnan(spread)]
    return float(known.mean()) if known.size else float("nan")


def _compile(model, labels, schedule, w, sampler, n_steps, ddim):
    """Compile what ``sampler`` runs for a batch of ``labels``: on a CPU one step, thrown away (every step runs
    the same compiled code); on a GPU or TPU DDIM's whole loop of ``n_steps``."""
    labels = jnp.asarray(labels, jnp.int32)
    x, labels = _spread(jnp.zeros((labels.shape[0], 28, 28, model.config.image_channels)), labels)
    if sampler == "ddim":
        steps = ddim_timesteps(n_steps, schedule.T) if config.on_accelerator() else np.array([schedule.T, 0], np.int32)
        run_guided_ddim(model, x, labels, w, steps, schedule.alpha_bars, sampler=ddim)
    else:
        graphdef, state = nnx.split(model)
        _ddpm_step(graphdef, state, x, schedule.T, x, labels, jnp.float32(w), schedule,
                   reverse_sigmas(schedule, "beta_tilde")).block_until_ready()


def mean_and_spread(values):
    """(mean, sample standard deviation) of ``values`` over runs; the deviation is NaN for a single run."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else float("nan")


def _balanced_halves(labels, rng):
    """Two disjoint sets of indices with half of each class's images each (class-balanced halves)."""
    a, b = [], []
    for digit in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        a.append(idx[:len(idx) // 2])
        b.append(idx[len(idx) // 2:2 * (len(idx) // 2)])
    return np.concatenate(a), np.concatenate(b)


def _like(labels_wanted, pool_labels, rng):
    """Indices into ``pool_labels`` with as many of each label as ``labels_wanted`` has, drawn without replacement."""
    chosen = []
    for digit, count in zip(*np.unique(labels_wanted, return_counts=True)):
        pool = np.flatnonzero(pool_labels == digit)
        if count > len(pool):
            raise ValueError(f"feature_quality: {count} samples of digit {digit} in a group, but only {len(pool)} real "
                             f"held-out ones in a half to compare with; use more groups")
        chosen.append(rng.choice(pool, count, replace=False))
    return np.concatenate(chosen)


def feature_quality(samples, labels, key_index, real_images, real_labels, *, groups=5, k=3, seed=0, dataset="mnist"):
    """Fréchet distance and precision/recall of generated ``samples`` in the shipped classifier's feature space
    (:func:`course_utils.classifier.features`), with their spread over sampling keys and their floor.

    The real held-out digits ``real_images``/``real_labels`` are split into two class-balanced halves, A and B. The
    runs of ``key_index`` (as :func:`evaluate` returns it) are gathered into ``groups`` groups of consecutive runs
    (fewer when there are fewer runs). Each group is measured against half A: its Fréchet distance
    (:func:`course_utils.metrics.frechet_distance_of`) and precision/recall (:func:`course_utils.metrics.precision_recall`,
    ``k`` neighbours). The floor is the same measure of real digits of half B, as many of each digit as the group
    has, against the same half A: what a generator that draws real digits scores at these set sizes (Fréchet
    distances of finite samples are biased upwards, so only a floor at the same sizes reads them). All samples
    together are measured the same way (``all_fd`` and ``all_floor_fd``).

    Returns a dict of arrays (groups,): ``fd``, ``precision``, ``recall``, ``floor_fd``, ``floor_precision``,
    ``floor_recall``; and ``group_size``, ``reference_size``, ``all_fd``, ``all_floor_fd``, ``all_size``.
    """
    labels, key_index = np.asarray(labels), np.asarray(key_index)
    real_labels = np.asarray(real_labels)
    rng = np.random.default_rng(seed)
    half_a, half_b = _balanced_halves(real_labels, rng)
    ruler = classifier.load_classifier(dataset)
    f_samples = classifier.features(samples, ruler)
    f_real = classifier.features(real_images, ruler)
    f_a = f_real[half_a]
    runs = np.unique(key_index)
    groups = max(1, min(groups, len(runs)))
    group_of_run = {run: i * groups // len(runs) for i, run in enumerate(runs)}
    group = np.array([group_of_run[r] for r in key_index])
    out = {name: [] for name in ("fd", "precision", "recall", "floor_fd", "floor_precision", "floor_recall")}
    sizes = []
    for g in range(groups):
        mine = group == g
        floor_idx = half_b[_like(labels[mine], real_labels[half_b], rng)]
        sizes.append(int(mine.sum()))
        for prefix, feats in (("", f_samples[mine]), ("floor_", f_real[floor_idx])):
            out[prefix + "fd"].append(metrics.frechet_distance_of(feats, f_a))
            precision, recall = metrics.precision_recall(f_a, feats, k)
            out[prefix + "precision"].append(precision)
            out[prefix + "recall"].append(recall)
    all_floor = half_b[_like(labels, real_labels[half_b], rng)]
    result = {name: np.array(values) for name, values in out.items()}
    result.update(group_size=int(np.median(sizes)), reference_size=len(half_a), all_size=len(labels),
                  all_fd=metrics.frechet_distance_of(f_samples, f_a),
                  all_floor_fd=metrics.frechet_distance_of(f_real[all_floor], f_a))
    return result


def nearest_neighbours(images, reference, batch=500):
    """For each of ``images`` (N, 28, 28, 1), the distance to its nearest image in ``reference`` (M, 28, 28, 1)
    and that image's index: ``(distances (N,), indices (N,))``, Euclidean over the pixels (in [-1, 1]).

    The memorisation check of notebook 06: generated digits that are copies of training digits lie much closer
    to the training set than new real digits (the held-out test split) do.
    """
    x = np.asarray(images, np.float32).reshape(len(images), -1)
    r = np.asarray(reference, np.float32).reshape(len(reference), -1)
    r_squared = (r.astype(np.float64) ** 2).sum(1)
    distances, indices = [], []
    for i in range(0, len(x), batch):
        part = x[i:i + batch]
        d2 = (part.astype(np.float64) ** 2).sum(1)[:, None] + r_squared[None, :] - 2.0 * (part @ r.T)
        nearest = np.argmin(d2, axis=1)
        indices.append(nearest)
        distances.append(np.sqrt(np.maximum(d2[np.arange(len(part)), nearest], 0.0)))
    return np.concatenate(distances), np.concatenate(indices)


def shipped_path(name="cpu"):
    """A context manager giving the file of the shipped checkpoint ``name`` (a key of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise ValueError(f"shipped_path: no checkpoint ships under the name {name!r}; shipped: {sorted(SHIPPED)}")
    return importlib.resources.as_file(importlib.resources.files("course_utils") / SHIPPED[name])


def load_pretrained(name="cpu", **blocks):
    """The shipped U-Net ``name`` (a key of :data:`SHIPPED`; built with ``blocks``, as :func:`new_model`, in the
    configuration its metadata names) and its metadata."""
    with shipped_path(name) as path:
        model = new_model(checkpoints.read_metadata(path)["config"], **blocks)
        metadata = checkpoints.load_model(model, path)
    return model, metadata


def _raw_path(out):
    """Where the script writes the last weights when ``out`` receives the averaged ones: ``NAME_raw.msgpack``."""
    import pathlib

    out = pathlib.Path(out)
    return out.with_name(out.stem + "_raw" + out.suffix)


def _train_command(args, argv):
    if args.cpu_devices > 1:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    images, labels, source = data._load_mnist("train", dataset=args.dataset, cache_dir=None, base_url=None,
                                              checksums=None, fallback=True, progress=True)
    schedule = make_schedule(make_betas(args.schedule))
    model = new_model(args.config, args.seed)
    devices = jax.local_devices()
    use_ema = args.ema_decay > 0
    tx = optimizer_for(args.steps, args.learning_rate)
    optimizer = nnx.Optimizer(model, with_ema(tx, args.ema_decay) if use_ema else tx, wrt=nnx.Param)
    print(f"training the {args.config} U-Net on {len(labels):,} digits ({source}) for {args.steps} steps of batch "
          f"{args.batch_size} on {len(devices)} {devices[0].platform} device(s)"
          + (f", keeping an average of the weights (decay {args.ema_decay})" if use_ema else ""))
    start = time.perf_counter()
    losses = train_unet(model, images, labels, schedule, steps=args.steps, key=jax.random.key(args.seed),
                        batch_size=args.batch_size, learning_rate=args.learning_rate, optimizer=optimizer,
                        progress=True)
    seconds = time.perf_counter() - start
    print(f"trained in {seconds:.0f} s; saving before the evaluation")
    # (weights kind, model, file): the averaged weights go to --out, the last ones beside them (NAME_raw.msgpack)
    kinds = [("ema", ema_model(model, optimizer), args.out), ("raw", model, _raw_path(args.out))] if use_ema \
        else [("raw", model, args.out)]
    for kind, net, path in kinds:
        checkpoints.save_model(net, path, {"config": args.config, "weights": kind, "unevaluated": True},
                               stored_as=args.stored_as)
    evaluations = {}
    for kind, net, path in kinds:
        checkpoints.load_model(net, path)     # evaluate the weights as stored (rounded, with --stored-as float16)
        quality = evaluate(net, schedule, jax.random.key(args.seed + 1), per_digit=args.eval_per_digit, w=args.w,
                           dataset=args.dataset)
        evaluations[kind] = {"sampler": "ddim", "n_steps": 20, "w": args.w, "per_digit": args.eval_per_digit,
                             "seed": args.seed + 1, "accuracy": quality["accuracy"],
                             "per_digit_accuracy": [float(a) for a in quality["per_digit_accuracy"]],
                             "spread": [float(s) for s in quality["spread"]]}
        print(f"{kind} weights: guided accuracy {quality['accuracy']:.3f} (w = {args.w}, DDIM 20 steps); per digit: "
              + " ".join(f"{d}:{a:.2f}" for d, a in enumerate(quality["per_digit_accuracy"])))
    for kind, net, path in kinds:
        metadata = {
            "config": args.config,
            **checkpoints.provenance("course_utils.mnist", argv, net),
            "dataset": args.dataset,
            "train_data": source,
            "stored_as": args.stored_as,
            "schedule": args.schedule,
            "T": T,
            "weights": kind,
            "ema_decay": args.ema_decay if use_ema else None,
            "training": {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                         "seed": args.seed, "seconds": round(seconds, 1),
                         "final_loss": float(np.mean(losses[-100:]))},
            "evaluation": evaluations[kind],
            "evaluation_of": {other: {"file": str(p), "accuracy": evaluations[other]["accuracy"]}
                              for other, _, p in kinds},
        }
        saved = checkpoints.save_model(net, path, metadata, stored_as=args.stored_as)
        print(f"{kind} weights: " + checkpoints.describe_saved(saved))
    print(f"trained in {seconds:.0f} s; final loss {float(np.mean(losses[-100:])):.4f}")


def main(argv=None):
    """``python -m course_utils.mnist train --out PATH``: train the U-Net on MNIST or Fashion-MNIST (or their offline
    copies) and save it with its measured quality."""
    argv = sys.argv[1:] if argv is None else argv
    parser, train = checkpoints.train_command_parser("course_utils.mnist", main.__doc__, "train the U-Net and save it with its measured quality")
    train.add_argument("--config", choices=sorted(CONFIGS), default="cpu")
    train.add_argument("--steps", type=int, default=3000)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--learning-rate", type=float, default=2e-3)
    train.add_argument("--schedule", choices=("cosine", "linear"), default="cosine")
    train.add_argument("--dataset", choices=sorted(data.MNIST_FILES), default="mnist")
    train.add_argument("--stored-as", choices=checkpoints.STORAGE, default="float32",
                       help="float16 halves the file; the evaluation measures the weights as stored")
    train.add_argument("--w", type=float, default=2.0, help="guidance weight of the evaluation")
    train.add_argument("--eval-per-digit", type=int, default=50)
    train.add_argument("--ema-decay", type=float, default=0.999,
                       help="keep an exponential moving average of the weights with this decay (0: none); the "
                            "averaged weights go to --out, the last ones to NAME_raw.msgpack beside it, both evaluated")
    train.add_argument("--cpu-devices", type=int, default=1,
                       help="on a CPU, split it into this many devices for data parallelism (one per core)")
    args = parser.parse_args(argv)
    _train_command(args, argv)


if __name__ == "__main__":
    main()
