"""Notebook 05's references: the two-pixel mixture and its exact noise predictor, the embeddings,
the conditional U-Net, label dropout, guidance, the guided sampler and the losses, each against an
independent computation (numpy, jax.grad of the log density, statistics of many samples)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course_utils import embeddings, guidance, losses, metrics, models, schedules
from course_utils.guidance import TWO_PIXEL

MEANS = np.array(TWO_PIXEL.means)


def _numpy_log_density(x, alpha_bar, weights=TWO_PIXEL.weights):
    var = alpha_bar * TWO_PIXEL.std**2 + 1 - alpha_bar
    comps = [w * np.exp(-0.5 * np.sum((x - np.sqrt(alpha_bar) * m) ** 2, -1) / var) / (2 * np.pi * var)
             for w, m in zip(weights, MEANS)]
    return np.log(np.sum(comps, axis=0))


def test_mixture_samples_have_the_right_weights_means_and_spread():
    x, y = guidance.sample_mixture(jax.random.key(0), 40_000)
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == (40_000, 2) and x.dtype == np.float32 and y.dtype == np.int32
    fraction_0 = np.mean(y == 0)
    assert abs(fraction_0 - 0.35) < 4 * np.sqrt(0.35 * 0.65 / 40_000)
    for k in (0, 1):
        np.testing.assert_allclose(x[y == k].mean(0), MEANS[k], atol=0.005)
        np.testing.assert_allclose(x[y == k].std(0), 0.1, rtol=0.03)
    np.testing.assert_allclose(guidance.mode_fractions(x), [fraction_0, 1 - fraction_0], atol=1e-3)
    with pytest.raises(ValueError, match="sample_mixture"):
        guidance.sample_mixture(jax.random.key(0), 0)


@pytest.mark.parametrize("alpha_bar", [1.0, 0.7, 0.05])
def test_mixture_density_matches_numpy_and_integrates_to_one(alpha_bar):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2)).astype(np.float32)
    np.testing.assert_allclose(guidance.mixture_log_density(x, alpha_bar=alpha_bar), _numpy_log_density(x, alpha_bar),
                               rtol=1e-4, atol=1e-4)
    grid = np.linspace(-5, 5, 401)
    cell = (grid[1] - grid[0]) ** 2
    points = np.stack(np.meshgrid(grid, grid), -1).astype(np.float32)
    assert abs(float(jnp.sum(guidance.mixture_density(points, alpha_bar=alpha_bar))) * cell - 1) < 2e-3


def test_conditional_density_is_one_component():
    x = np.array([[0.0, 0.1], [0.7, -0.4]], np.float32)
    own = guidance.mixture_log_density(x, alpha_bar=0.5, y=np.array([1, 1]))
    np.testing.assert_allclose(own, _numpy_log_density(x, 0.5, weights=(0.0, 1.0)), rtol=1e-5)
    unlabelled = guidance.mixture_log_density(x, alpha_bar=0.5, y=np.array([-1, -1]))
    np.testing.assert_allclose(unlabelled, _numpy_log_density(x, 0.5), rtol=1e-5)


@pytest.mark.parametrize("alpha_bar", [0.999, 0.9, 0.5, 0.1, 0.001])
@pytest.mark.parametrize("label", [None, 0, 1, -1])
def test_exact_eps_is_minus_sqrt_one_minus_alpha_bar_times_the_score(alpha_bar, label):
    """eps*(x_t) = -sqrt(1 - alpha_bar_t) * grad log q_t(x_t), with the score taken by jax.grad."""
    x = jnp.asarray(np.random.default_rng(1).normal(scale=0.8, size=(64, 2)), jnp.float32)
    y = None if label is None else jnp.full((64,), label)

    def log_q(point, lab):
        return guidance.mixture_log_density(point, alpha_bar=alpha_bar, y=lab)

    if y is None:
        score = jax.vmap(jax.grad(lambda p: log_q(p, None)))(x)
    else:
        score = jax.vmap(jax.grad(log_q))(x, y)
    eps = guidance.mixture_eps(x, alpha_bar, y=y)
    np.testing.assert_allclose(eps, -np.sqrt(1 - alpha_bar) * score, rtol=1e-4, atol=1e-4)


def test_exact_eps_is_the_conditional_mean_of_the_noise():
    """E[eps | x_t] estimated by binning many forward samples agrees with mixture_eps (a second, independent check)."""
    alpha_bar = 0.4
    x0, _ = guidance.sample_mixture(jax.random.key(3), 400_000)
    eps = jax.random.normal(jax.random.key(4), x0.shape)
    x_t = np.asarray(np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * eps)
    centre = np.array([0.1, 0.1], np.float32)
    near = np.linalg.norm(x_t - centre, axis=1) < 0.08
    assert near.sum() > 1000, near.sum()
    np.testing.assert_allclose(np.asarray(eps)[near].mean(0), guidance.mixture_eps(centre[None], alpha_bar)[0], atol=0.05)


def test_mixture_eps_model_accepts_per_example_steps():
    schedule = schedules.make_schedule(schedules.cosine_betas(20, max_beta=0.5))
    exact = guidance.MixtureEps(schedule.alpha_bars)
    x = jnp.ones((3, 2))
    t = jnp.array([1, 10, 20])
    y = jnp.array([0, 1, -1])
    expected = jnp.stack([guidance.mixture_eps(x[i:i + 1], schedule.alpha_bars[t[i] - 1], y=y[i:i + 1])[0] for i in range(3)])
    np.testing.assert_allclose(exact(x, t, y), expected, rtol=1e-5)
    assert np.allclose(guidance.eps_error_by_step(exact, schedule, jax.random.key(0), n=200), 0.0, atol=1e-10)


def _sample(model, x_T, key, schedule, y, w=0.0, sigma="beta", trajectory=False):
    return guidance.run_guided_sampler(guidance.guided_sample, model, x_T, key, schedule, y, w, sigma, trajectory)


@pytest.mark.parametrize("label", [0, 1])
def test_guided_sampler_with_exact_eps_and_w_0_draws_the_class(label):
    """The DDPM sampler fed with the exact class-conditional eps (w = 0) reproduces that class's Gaussian.

    With T = 1000 steps the fixed reverse variance is close to the exact one; with T = 100 the spread is
    bracketed by the two DDPM choices (sigma^2 = beta_tilde too small, sigma^2 = beta too large).
    """
    n = 10_000
    x_T = jax.random.normal(jax.random.key(label), (n, 2))
    schedule = schedules.make_schedule(schedules.cosine_betas(1000, max_beta=0.5))
    exact = guidance.MixtureEps(schedule.alpha_bars)
    samples = np.asarray(_sample(exact, x_T, jax.random.key(10 + label), schedule, label, sigma="beta_tilde"))
    np.testing.assert_allclose(samples.mean(0), MEANS[label], atol=0.01)
    np.testing.assert_allclose(samples.std(0), TWO_PIXEL.std, rtol=0.04)
    assert guidance.mode_fractions(samples)[label] == 1.0
    short = schedules.make_schedule(schedules.cosine_betas(100, max_beta=0.5))
    exact = guidance.MixtureEps(short.alpha_bars)
    low, high = (np.asarray(_sample(exact, x_T, jax.random.key(3), short, label, sigma=s)).std(0)
                 for s in ("beta_tilde", "beta"))
    assert np.all(low < TWO_PIXEL.std) and np.all(high > TWO_PIXEL.std)


def test_unguided_sampler_with_exact_eps_reproduces_the_weights():
    schedule = schedules.make_schedule(schedules.cosine_betas(50, max_beta=0.5))
    n = 20_000
    samples = _sample(guidance.MixtureEps(schedule.alpha_bars), jax.random.normal(jax.random.key(0), (n, 2)),
                      jax.random.key(1), schedule, -1)
    assert abs(guidance.mode_fractions(samples)[0] - 0.35) < 4 * np.sqrt(0.35 * 0.65 / n) + 0.01


def test_guided_sampler_trajectory_shape_and_start():
    schedule = schedules.make_schedule(schedules.cosine_betas(10, max_beta=0.5))
    x_T = jnp.zeros((4, 2))
    path = _sample(guidance.MixtureEps(schedule.alpha_bars), x_T, jax.random.key(0), schedule,
                   jnp.array([0, 1, 0, 1]), w=2.0, trajectory=True)
    assert path.shape == (11, 4, 2)
    np.testing.assert_array_equal(path[0], x_T)
    np.testing.assert_allclose(path[-1], _sample(guidance.MixtureEps(schedule.alpha_bars), x_T, jax.random.key(0),
                                                 schedule, jnp.array([0, 1, 0, 1]), w=2.0), atol=1e-6)


def test_guided_sample_matches_a_numpy_loop():
    """guided_sample against Ho et al.'s algorithm 2 written out in numpy (float64), with a toy conditional model
    whose guided prediction is known in closed form: eps(x, y) = x (y + 2), so that (w + 1) eps(y) - w eps(none)
    = x ((w + 1)(y + 2) - w)."""
    rng = np.random.default_rng(0)
    T, n, w = 7, 5, 1.5
    betas = np.linspace(0.01, 0.2, T)
    alpha_bars = np.cumprod(1 - betas)
    sigmas = np.sqrt(0.5 * betas)
    x_T, zs = rng.normal(size=(n, 2)), rng.normal(size=(T, n, 2))
    y = np.array([0, 1, 1, 0, -1])
    factor = np.where(y < 0, 1.0, (w + 1) * (y + 2) - w)[:, None]
    path = [x_T]
    for t in range(T, 0, -1):
        x = path[-1]
        eps = x * factor
        z = zs[t - 1] if t > 1 else 0.0
        path.append((x - betas[t - 1] / np.sqrt(1 - alpha_bars[t - 1]) * eps) / np.sqrt(1 - betas[t - 1]) + sigmas[t - 1] * z)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    got = jax.jit(lambda *a: guidance.guided_sample(_Linear(), *a))(
        f32(x_T), f32(zs), jnp.asarray(y, jnp.int32), jnp.float32(w), f32(betas), f32(alpha_bars), f32(sigmas))
    np.testing.assert_allclose(got, np.stack(path), rtol=1e-4, atol=1e-5)


class _Linear(nnx.Module):
    """A toy conditional model: eps = x * (label + 2) (label -1 gives x)."""

    def __call__(self, x, t, y):
        return x * (y[:, None] + 2.0)


def test_guided_eps_is_the_weighted_difference():
    x = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    t = jnp.array([5, 5])
    y = jnp.array([0, 1])
    w = 3.0
    expected = (w + 1) * x * np.array([[2.0], [3.0]]) - w * x
    np.testing.assert_allclose(guidance.guided_eps(_Linear(), x, t, y, w), expected, rtol=1e-6)
    np.testing.assert_allclose(guidance.guided_eps(_Linear(), x, t, y, 0.0), _Linear()(x, t, y), rtol=1e-6)


def test_drop_labels_drops_the_asked_fraction():
    y = jnp.ones((100_000,), jnp.int32)
    dropped = np.asarray(guidance.drop_labels(jax.random.key(0), y, 0.2))
    assert set(np.unique(dropped)) == {-1, 1}
    assert abs(np.mean(dropped == -1) - 0.2) < 0.01
    assert np.all(np.asarray(guidance.drop_labels(jax.random.key(0), y, 0.0)) == 1)
    assert np.all(np.asarray(guidance.drop_labels(jax.random.key(0), y, 1.0)) == -1)


def test_gaussian_fourier_embedding_matches_numpy():
    t = np.array([0.0, 0.1, 0.5, 1.0])
    W = np.array([0.5, -3.0, 7.0])
    angles = 2 * np.pi * t[:, None] * W
    expected = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    np.testing.assert_allclose(embeddings.gaussian_fourier_embedding(t, W), expected, atol=1e-5)
    assert embeddings.gaussian_fourier_embedding(jnp.ones((2, 3)), jnp.ones(4)).shape == (2, 3, 8)
    with pytest.raises(ValueError, match="gaussian_fourier_embedding.*`W`"):
        embeddings.gaussian_fourier_embedding(t, np.ones((2, 2)))


def test_class_one_hot_has_a_no_label_slot():
    np.testing.assert_array_equal(embeddings.class_one_hot(jnp.array([0, 1, -1]), 2),
                                  [[1, 0, 0], [0, 1, 0], [0, 0, 1]])


def test_two_pixel_unet_shapes_and_conditioning():
    model = models.TwoPixelUNet(T=50, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)), jnp.float32)
    t = jnp.arange(1, 7)
    out = model(x, t, jnp.zeros(6, jnp.int32))
    assert out.shape == (6, 2)
    assert not np.allclose(out, model(x, t, jnp.ones(6, jnp.int32)))
    assert not np.allclose(out, model(x, t, jnp.full(6, -1)))
    assert not np.allclose(out, model(x, t + 20, jnp.zeros(6, jnp.int32)))
    # The two pixels are not treated symmetrically (the mixture is not symmetric).
    swapped = model(x[:, ::-1], t, jnp.zeros(6, jnp.int32))[:, ::-1]
    assert not np.allclose(out, swapped, atol=1e-3)
    # The Fourier frequencies are fixed: not among the trained parameters.
    assert all("W" not in str(path) for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param)))


def test_losses_match_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 50, 2)).astype(np.float32) * 2
    r = np.abs(a - b)
    np.testing.assert_allclose(losses.l2_loss(a, b), np.mean(r**2), rtol=1e-5)
    np.testing.assert_allclose(losses.l1_loss(a, b), np.mean(r), rtol=1e-5)
    np.testing.assert_allclose(losses.huber_loss(a, b), np.mean(np.where(r <= 1, 0.5 * r**2, r - 0.5)), rtol=1e-5)
    np.testing.assert_allclose(losses.huber_loss(a, b, delta=100.0), 0.5 * np.mean(r**2), rtol=1e-5)


@pytest.mark.parametrize("loss", ["l1", "l2", "huber"])
def test_train_conditional_lowers_the_loss(loss):
    schedule = schedules.make_schedule(schedules.cosine_betas(20, max_beta=0.5))
    x, y = guidance.sample_mixture(jax.random.key(0), 2000)
    model = models.TwoPixelUNet(T=20, channels=(8, 32), embed_dim=8, rngs=nnx.Rngs(0))
    history = guidance.train_conditional(model, x, y, schedule.alpha_bars, steps=400, key=jax.random.key(1),
                                         batch_size=128, learning_rate=3e-3, loss=loss, progress=False)
    assert history.shape == (400,) and np.all(np.isfinite(history))
    assert history[-50:].mean() < 0.8 * history[:50].mean()
    with pytest.raises(ValueError, match="loss"):
        guidance.train_conditional(model, x, y, schedule.alpha_bars, steps=1, key=jax.random.key(1), loss="l3")


# ------------------------------------------------------------------ classifier guidance


@pytest.mark.parametrize("alpha_bar", [1.0, 0.5, 0.02])
def test_class_posterior_is_bayes_rule_in_numpy(alpha_bar):
    x = np.random.default_rng(2).normal(scale=0.7, size=(40, 2))
    var = alpha_bar * TWO_PIXEL.std**2 + 1 - alpha_bar
    joint = np.stack([w * np.exp(-0.5 * np.sum((x - np.sqrt(alpha_bar) * m) ** 2, -1) / var)
                      for w, m in zip(TWO_PIXEL.weights, MEANS)], -1)
    np.testing.assert_allclose(guidance.class_posterior(x.astype(np.float32), alpha_bar), joint / joint.sum(-1, keepdims=True),
                               rtol=1e-4, atol=1e-6)


def test_classifier_guidance_with_the_exact_classifier_at_scale_1_is_the_exact_conditional_eps():
    """grad log q(x_t | y) = grad log q(x_t) + grad log q(y | x_t): scale 1 turns the unconditional eps* into
    the conditional one; scale 0 leaves it unconditional."""
    schedule = schedules.make_schedule(schedules.cosine_betas(20, max_beta=0.5))
    exact, classifier = guidance.MixtureEps(schedule.alpha_bars), guidance.ExactClassifier(schedule.alpha_bars)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(scale=0.8, size=(12, 2)), jnp.float32)
    t = jnp.asarray(rng.integers(1, 21, size=12), jnp.int32)
    y = jnp.asarray(rng.integers(0, 2, size=12), jnp.int32)
    got = guidance.classifier_guided_eps(exact, classifier, x, t, y, 1.0, schedule.alpha_bars)
    np.testing.assert_allclose(got, exact(x, t, y), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(guidance.classifier_guided_eps(exact, classifier, x, t, y, 0.0, schedule.alpha_bars),
                               exact(x, t, jnp.full_like(y, -1)), rtol=1e-6)
    wrapped = guidance.ClassifierGuided(exact, classifier, schedule.alpha_bars, 1.0)
    np.testing.assert_allclose(wrapped(x, t, y), got, rtol=1e-6)
    np.testing.assert_allclose(wrapped(x, t, jnp.full_like(y, -1)), exact(x, t, jnp.full_like(y, -1)), rtol=1e-6)


def test_a_noisy_classifier_learns_the_exact_posterior():
    schedule = schedules.make_schedule(schedules.cosine_betas(20, max_beta=0.5))
    x, y = guidance.sample_mixture(jax.random.key(0), 4000)
    classifier = guidance.NoisyClassifier(20, rngs=nnx.Rngs(0))
    history = guidance.train_noisy_classifier(classifier, x, y, schedule.alpha_bars, steps=600, key=jax.random.key(1),
                                              learning_rate=3e-3, progress=False)
    assert history.shape == (600,) and history[-100:].mean() < 0.8 * history[:50].mean()
    x_t = jax.random.normal(jax.random.key(2), (500, 2))
    for t in (5, 15):
        learned = jax.nn.softmax(classifier(x_t, jnp.full((500,), t)), -1)
        exact = guidance.class_posterior(x_t, schedule.alpha_bars[t - 1])
        assert float(jnp.mean(jnp.abs(learned - exact))) < 0.08, t


def test_classifier_error_by_step_is_zero_for_the_exact_classifier_and_matches_numpy_for_a_constant_one():
    schedule = schedules.make_schedule(schedules.cosine_betas(10, max_beta=0.5))
    exact = guidance.ExactClassifier(schedule.alpha_bars)
    errors = guidance.classifier_error_by_step(exact, schedule, jax.random.key(0), n=500)
    assert errors.shape == (10,) and np.all(errors < 1e-5)

    class Constant(nnx.Module):   # always p(y = 1) = 0.8, whatever x_t and t
        def __call__(self, x, t):
            return jnp.broadcast_to(jnp.log(jnp.array([0.2, 0.8])), (x.shape[0], 2))

    key = jax.random.key(3)
    got = guidance.classifier_error_by_step(Constant(), schedule, key, n=500)
    # the same points, drawn as the function draws them, and the total variation in numpy
    x0, _ = guidance.sample_mixture(key, 500)
    noise = jax.random.normal(jax.random.fold_in(key, 1), (10, 500, 2))
    for t in (1, 5, 10):
        ab = float(schedule.alpha_bars[t - 1])
        x_t = np.sqrt(ab) * np.asarray(x0) + np.sqrt(1 - ab) * np.asarray(noise[t - 1])
        p1 = np.asarray(guidance.class_posterior(x_t, ab))[:, 1]
        assert got[t - 1] == pytest.approx(np.mean(np.abs(0.8 - p1)), rel=1e-4), t
    assert got[0] > 0.2     # at t = 1 the classes are apart: the constant is far from 0 or 1


def test_stopped_improving_compares_each_seed_before_and_after():
    before = [0.020, 0.016, 0.022]
    lower = [0.0175, 0.0134, 0.0195]         # every seed lower by about 0.0025: within the seeds' spread, not the pairs'
    still = metrics.stopped_improving(before, lower)
    d = np.subtract(lower, before)
    assert not still["stopped"] and still["status"] == "still improving"
    assert still["difference"] == pytest.approx(d.mean()) and still["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(3))
    assert not metrics.compare("before", before, "after", lower)["differ"]   # unpaired, the seeds' spread hides it
    assert still["text"].startswith("the last stage changed it by -0.0025 (mean over 3 seeds), more than twice")
    same = [0.0215, 0.0150, 0.0218]           # changes of both signs
    done = metrics.stopped_improving(before, same, stage="cycle")
    assert done["stopped"] and done["status"] == "stopped improving" and done["text"].endswith(": stopped improving")
    assert done["text"].startswith("the last cycle changed it by")
    worse = metrics.stopped_improving(lower, before)   # a rise is a change too
    assert not worse["stopped"] and worse["status"] == "got worse"
    assert not any(word in r["text"] for r in (still, done, worse) for word in ("PASS", "FAIL"))
