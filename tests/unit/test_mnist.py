"""Notebook 06's MNIST module: schedules, diversity, sampling, and the shipped checkpoint's recorded quality."""

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from course_utils import checkpoints, mnist, unet
from course_utils.schedules import make_schedule

TINY = unet.UNetConfig(channels=(8, 8, 16, 16), emb_dim=16, num_heads=2)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_both_schedules_end_in_noise(kind):
    schedule = make_schedule(mnist.make_betas(kind))
    assert schedule.T == mnist.T
    assert float(schedule.alpha_bars[-1]) < 1e-3
    assert float(schedule.alpha_bars[0]) > 0.99


def test_cosine_keeps_more_signal_midway_than_linear():
    """The reason notebook 06 uses the cosine schedule: linear destroys the image early."""
    cosine, linear = (make_schedule(mnist.make_betas(k)).alpha_bars for k in ("cosine", "linear"))
    assert float(cosine[mnist.T // 2]) > 2 * float(linear[mnist.T // 2])


def test_make_betas_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="`kind`"):
        mnist.make_betas("quadratic")


def test_within_class_spread_against_a_double_loop():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(30, 4, 4, 1))
    labels = rng.integers(0, 3, 30)
    spread = mnist.within_class_spread(images, labels)
    for digit in range(3):
        group = images[labels == digit].reshape(-1, 16)
        pairs = [np.linalg.norm(a - b) for i, a in enumerate(group) for b in group[i + 1:]]
        assert spread[digit] == pytest.approx(np.mean(pairs), rel=1e-9)
    assert np.isnan(spread[3:]).all()  # no images of digits 3..9
    same = mnist.within_class_spread(np.ones((4, 2, 2, 1)), np.zeros(4, int))
    assert same[0] == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_model():
    return mnist.new_model(TINY)


@pytest.mark.parametrize("sampler, n_states", [("ddpm", mnist.T + 1), ("ddim", 6)])
def test_sample_digits_shapes(tiny_model, sampler, n_states):
    schedule = make_schedule(mnist.make_betas("cosine"))
    labels = jnp.arange(4)
    x = mnist.sample_digits(tiny_model, jax.random.key(0), labels, schedule, sampler=sampler, n_steps=5)
    assert x.shape == (4, 28, 28, 1) and float(jnp.abs(x).max()) <= 1.0
    path = mnist.sample_digits(tiny_model, jax.random.key(0), labels, schedule, sampler=sampler, n_steps=5,
                               trajectory=True)
    assert path.shape == (n_states, 4, 28, 28, 1)
    np.testing.assert_allclose(jnp.clip(path[-1], -1, 1), x, atol=1e-5)


def test_sample_digits_rejects_bad_arguments(tiny_model):
    schedule = make_schedule(mnist.make_betas("cosine"))
    with pytest.raises(ValueError, match="`sampler`"):
        mnist.sample_digits(tiny_model, jax.random.key(0), jnp.arange(2), schedule, sampler="euler")
    with pytest.raises(ValueError, match="`n_steps`"):
        mnist.sample_digits(tiny_model, jax.random.key(0), jnp.arange(2), schedule, sampler="ddim", n_steps=0)


# What each shipped checkpoint must say it is (the notebook's comparisons rest on it): data set, schedule, seed and
# kind of weights ("raw": the last ones of training, "ema": their average).
SHIPPED_AS = {"cpu": ("mnist", "cosine", 0, "raw"), "cpu_seed1": ("mnist", "cosine", 1, "ema"),
              "cpu_seed1_raw": ("mnist", "cosine", 1, "raw"), "cpu_linear": ("mnist", "linear", 0, "raw"),
              "cpu_linear_seed1": ("mnist", "linear", 1, "raw"), "cpu_fashion": ("fashion_mnist", "cosine", 0, "raw")}


def test_every_shipped_checkpoint_is_tested_and_listed_with_its_command_in_the_readme():
    assert set(mnist.SHIPPED) == set(SHIPPED_AS)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, path in mnist.SHIPPED.items():
        with mnist.shipped_path(name) as file:
            command = checkpoints.read_metadata(file)["command"]
        assert f"| `{Path(path).name}` |" in readme, f"{path} is not in the README's table of shipped weights"
        assert command in readme, f"the README does not give the command that made {path}: {command}"


@pytest.mark.parametrize("name", sorted(SHIPPED_AS))
def test_shipped_checkpoint_is_small_and_says_how_it_was_made(name):
    with mnist.shipped_path(name) as path:
        assert path.stat().st_size < 3 * 2 ** 20
        metadata = checkpoints.read_metadata(path)
    dataset, schedule, seed, weights = SHIPPED_AS[name]
    assert metadata["command"].startswith("python -m course_utils.mnist train")
    assert metadata["config"] == "cpu" and "evaluation" in metadata and metadata["schedule"] == schedule
    assert metadata.get("dataset", "mnist") == dataset and "offline" in metadata["train_data"]
    assert metadata["training"]["seed"] == seed and metadata.get("weights", "raw") == weights
    if name != "cpu":   # made after --schedule, --dataset and --stored-as existed: the command says all of it
        assert f"--schedule {schedule}" in metadata["command"] or schedule == "cosine"
        assert f"--dataset {dataset}" in metadata["command"] or dataset == "mnist"
        assert f"--seed {seed}" in metadata["command"] or seed == 0
        assert metadata["stored_as"] == "float16" and "--stored-as float16" in metadata["command"]
    if weights == "ema":   # the averaged weights ship with the last ones of the same run, both measured
        assert metadata["ema_decay"] == 0.999 and set(metadata["evaluation_of"]) == {"ema", "raw"}
    # The recipe of the comparisons: everything but the schedule, the data or the seed is the shipped cosine model's.
    with mnist.shipped_path("cpu") as reference_path:
        reference = checkpoints.read_metadata(reference_path)
    for key in ("steps", "batch_size", "learning_rate"):
        assert metadata["training"][key] == reference["training"][key], key


def test_the_averaged_and_the_last_weights_shipped_are_of_one_training_run():
    """Notebook 06, section 11.1, reads a difference between these two files as the averaging's alone."""
    with mnist.shipped_path("cpu_seed1") as averaged, mnist.shipped_path("cpu_seed1_raw") as last:
        averaged, last = checkpoints.read_metadata(averaged), checkpoints.read_metadata(last)
    assert averaged["command"] == last["command"]
    assert averaged["training"] == last["training"]
    assert averaged["evaluation_of"]["raw"]["accuracy"] == last["evaluation"]["accuracy"]


def test_load_pretrained_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="no checkpoint ships under the name 'gpu'.*cpu_fashion"):
        mnist.load_pretrained("gpu")


@pytest.mark.xdist_group("mnist_checkpoint")
@pytest.mark.parametrize("name", sorted(SHIPPED_AS))
def test_shipped_checkpoint_reproduces_its_recorded_accuracy(name):
    """Guided samples of each shipped U-Net, 10 per class, as the training script measured (w, DDIM steps),
    with the classifier of its data set."""
    model, metadata = mnist.load_pretrained(name)
    recorded = metadata["evaluation"]
    schedule = make_schedule(mnist.make_betas(metadata["schedule"]))
    result = mnist.evaluate(model, schedule, jax.random.key(12345), per_digit=10, w=recorded["w"],
                            n_steps=recorded["n_steps"], keys=1, dataset=metadata.get("dataset", "mnist"))
    n = 100
    p = recorded["accuracy"]
    tolerance = 4 * math.sqrt(max(p * (1 - p), 0.01) / n)  # a binomial spread of 100 samples
    assert abs(result["accuracy"] - p) <= tolerance, (result["accuracy"], p, tolerance)
    # The samples are images of many shapes, not copies of one image.
    assert np.nanmin(result["spread"]) > 0.5 * np.nanmin(recorded["spread"])


@pytest.mark.parametrize("backend, expected", [("cpu", 1), ("gpu", 100), ("tpu", 100)])
def test_training_runs_many_steps_per_compiled_call_on_an_accelerator(monkeypatch, backend, expected):
    """On a GPU or TPU one U-Net step per call leaves the device waiting for Python (51 against 243 steps/s
    measured on an H200); on a CPU one step per call is the fastest (convolutions inside loops are slow)."""
    from course_utils import config

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert config.steps_per_call() == expected
    seen = {}

    def fake_train_conditional(*args, chunk, **kwargs):
        seen["chunk"] = chunk
        return np.zeros(kwargs["steps"])

    monkeypatch.setattr(mnist, "train_conditional", fake_train_conditional)
    mnist.train_unet(None, None, None, make_schedule(mnist.make_betas()), steps=5, key=jax.random.key(0))
    assert seen["chunk"] == expected


def test_several_steps_per_call_train_the_u_net_as_one_step_per_call_does():
    """The compiled loop of many steps (an accelerator's) and one step per call (a CPU's) are the same training:
    the same number of losses, finite, and the same parameters updated."""
    from course_utils import guidance
    from flax import nnx

    schedule = make_schedule(mnist.make_betas())
    data = jax.random.uniform(jax.random.key(1), (32, 28, 28, 1)) * 2 - 1
    labels = jnp.arange(32) % 10
    runs = []
    for chunk in (1, 4):
        model = unet.UNet(TINY, rngs=nnx.Rngs(0))
        before = [np.asarray(p) for p in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))]
        losses = guidance.train_conditional(model, data, labels, schedule.alpha_bars, steps=6, key=jax.random.key(2),
                                            batch_size=8, chunk=chunk, progress=False)
        after = [np.asarray(p) for p in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))]
        assert losses.shape == (6,) and np.all(np.isfinite(losses))
        runs.append([not np.array_equal(a, b) for a, b in zip(before, after)])
    assert runs[0] == runs[1] and all(runs[0])


# ------------------------------------------------------------------ guided DDIM (the sampler of the exercise)


class _LinearEps:
    """A conditional noise predictor with a closed form: eps = a_y * x + b * t (a_y per label, -1 included)."""

    def __init__(self):
        self.a = np.array([0.3, -0.2, 0.5, 0.1, -0.4, 0.25, 0.05, -0.1, 0.2, -0.3, 0.15])  # [0]: no label

    def __call__(self, x, t, y):
        a = jnp.asarray(self.a, jnp.float32)[jnp.asarray(y) + 1].reshape((-1,) + (1,) * (x.ndim - 1))
        return a * x + 0.01 * jnp.asarray(t, jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))


def _numpy_guided_ddim(model, x_T, y, w, timesteps, alpha_bars):
    """The same sampler written out in float64 numpy, one visited step after the other."""
    ab = np.concatenate([[1.0], np.asarray(alpha_bars, np.float64)])        # ab[t], alpha_bar_0 = 1
    x = np.asarray(x_T, np.float64)
    path = [x]
    for t, t_prev in zip(timesteps[:-1], timesteps[1:]):
        shape = (-1,) + (1,) * (x.ndim - 1)
        a_y, a_none = model.a[np.asarray(y) + 1].reshape(shape), model.a[0]
        eps = (w + 1) * (a_y * x + 0.01 * t) - w * (a_none * x + 0.01 * t)
        x0_hat = (x - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t])
        x = np.sqrt(ab[t_prev]) * x0_hat + np.sqrt(1 - ab[t_prev]) * eps
        path.append(x)
    return np.stack(path)


@pytest.mark.parametrize("timesteps", [[200, 150, 100, 50, 0], [200, 0], [200, 199, 120, 3, 1, 0]])
def test_guided_ddim_sample_against_numpy(timesteps):
    from course_utils import sampling

    schedule = make_schedule(mnist.make_betas("cosine"))
    rng = np.random.default_rng(1)
    x_T = rng.standard_normal((3, 4, 4, 1)).astype(np.float32)
    y = np.array([0, 7, -1], np.int32)
    model = _LinearEps()
    got = jax.jit(lambda x, yy, ts: sampling.guided_ddim_sample(model, x, yy, 1.5, ts, schedule.alpha_bars))(
        x_T, y, jnp.asarray(timesteps))
    expected = _numpy_guided_ddim(model, x_T, y, 1.5, timesteps, schedule.alpha_bars)
    assert got.shape == (len(timesteps), 3, 4, 4, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_guided_ddim_sample_rejects_a_single_time_step():
    from course_utils import sampling

    with pytest.raises(ValueError, match="`timesteps`"):
        sampling.guided_ddim_sample(_LinearEps(), jnp.zeros((1, 2)), jnp.zeros(1, jnp.int32), 1.0, jnp.array([5]),
                                    jnp.linspace(0.9, 0.1, 5))


def test_ddim_timesteps():
    np.testing.assert_array_equal(mnist.ddim_timesteps(8), np.arange(200, -1, -25))
    steps = mnist.ddim_timesteps(7)
    assert steps[0] == mnist.T and steps[-1] == 0 and len(steps) == 8 and np.all(np.diff(steps) < 0)
    for bad in (0, mnist.T + 1, 2.0, True):
        with pytest.raises(ValueError, match="`n_steps`"):
            mnist.ddim_timesteps(bad)


def test_run_guided_ddim_step_by_step_is_the_whole_scan(tiny_model):
    """On a CPU the sampler runs one pair of steps per call: the same trajectory as the whole scan at once."""
    from course_utils import sampling

    schedule = make_schedule(mnist.make_betas("cosine"))
    x_T = jax.random.normal(jax.random.key(3), (2, 28, 28, 1))
    y, steps = jnp.array([3, 8]), mnist.ddim_timesteps(4)
    chained = mnist.run_guided_ddim(tiny_model, x_T, y, 2.0, steps, schedule.alpha_bars)
    whole = sampling.guided_ddim_sample(tiny_model, x_T, y, 2.0, jnp.asarray(steps), schedule.alpha_bars)
    assert chained.shape == (5, 2, 28, 28, 1)
    np.testing.assert_allclose(chained, whole, rtol=1e-4, atol=1e-4)


def test_sample_digits_ddim_uses_the_given_sampler(tiny_model):
    schedule = make_schedule(mnist.make_betas("cosine"))
    calls = []

    def mine(model, x_T, y, w, timesteps, alpha_bars):   # halves the images at every step
        calls.append(timesteps.shape)
        return jnp.stack([x_T * 0.5**k for k in range(timesteps.shape[0])])

    x = mnist.sample_digits(tiny_model, jax.random.key(0), jnp.arange(2), schedule, sampler="ddim", n_steps=3, ddim=mine)
    start = mnist.sample_digits(tiny_model, jax.random.key(0), jnp.arange(2), schedule, sampler="ddim", n_steps=3,
                                ddim=mine, trajectory=True)[0]
    assert calls and start.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(x, jnp.clip(start / 8, -1, 1), rtol=1e-6)   # three halvings


def test_evaluate_measures_each_key(tiny_model):
    schedule = make_schedule(mnist.make_betas("cosine"))
    quality = mnist.evaluate(tiny_model, schedule, jax.random.key(0), per_digit=4, keys=2, n_steps=2)
    assert quality["samples"].shape == (40, 28, 28, 1)
    assert list(np.bincount(quality["labels"])) == [4] * 10 and list(np.bincount(quality["key_index"])) == [20, 20]
    for name in ("accuracy", "spread", "seconds"):
        assert quality["by_key"][name].shape == (2,)
    assert np.mean(quality["by_key"]["accuracy"]) == pytest.approx(quality["accuracy"])
    with_path = mnist.evaluate(tiny_model, schedule, jax.random.key(0), per_digit=4, keys=2, n_steps=2, path=True)
    assert with_path["path"].shape == (3, 20, 28, 28, 1)
    np.testing.assert_allclose(np.clip(with_path["path"][-1], -1, 1), with_path["samples"][:20], atol=1e-6)
    np.testing.assert_allclose(with_path["samples"], quality["samples"], atol=1e-5)
    with pytest.raises(ValueError, match="multiple of `keys`"):
        mnist.evaluate(tiny_model, schedule, jax.random.key(0), per_digit=5, keys=2)


def test_mean_and_spread():
    assert mnist.mean_and_spread([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    mean, spread = mnist.mean_and_spread([4.0, float("nan")])
    assert mean == 4.0 and math.isnan(spread)


def test_nearest_neighbours_against_brute_force():
    rng = np.random.default_rng(5)
    images, reference = rng.uniform(-1, 1, (7, 28, 28, 1)), rng.uniform(-1, 1, (30, 28, 28, 1))
    reference[11] = images[2]                                     # one exact copy
    distances, indices = mnist.nearest_neighbours(images, reference, batch=3)
    brute = np.linalg.norm(images.reshape(7, 1, -1) - reference.reshape(1, 30, -1), axis=-1)
    np.testing.assert_array_equal(indices, brute.argmin(1))
    np.testing.assert_allclose(distances, brute.min(1), rtol=1e-5, atol=1e-3)
    assert indices[2] == 11 and distances[2] < 1e-3
