"""The measures of notebook 06 in a feature space (course_utils.metrics), each against an independent computation,
and the classifier's features and the EMA of the weights (course_utils.training.with_ema)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.linalg
from flax import nnx

from course_utils import classifier, metrics, training


def _random_covariance(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / (rank or d) + (0.0 if rank else 0.1) * np.eye(d)


def test_feature_statistics_against_numpy_loops():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(40, 3))
    mu, sigma = metrics.feature_statistics(f)
    mean = sum(f) / len(f)
    cov = sum(np.outer(x - mean, x - mean) for x in f) / (len(f) - 1)
    np.testing.assert_allclose(mu, mean, rtol=1e-12)
    np.testing.assert_allclose(sigma, cov, rtol=1e-12)
    with pytest.raises(ValueError, match="n >= 2"):
        metrics.feature_statistics(f[:1])


def test_frechet_distance_of_one_dimensional_gaussians_in_closed_form():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    for m1, s1, m2, s2 in [(0.0, 1.0, 0.0, 1.0), (1.0, 2.0, -0.5, 0.3), (3.0, 0.1, 3.0, 5.0)]:
        got = metrics.frechet_distance([m1], [[s1 ** 2]], [m2], [[s2 ** 2]])
        assert got == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-10, abs=1e-12)


def test_frechet_distance_of_diagonal_gaussians_in_closed_form():
    rng = np.random.default_rng(1)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    s_a, s_b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((s_a - s_b) ** 2)
    assert metrics.frechet_distance(mu_a, np.diag(s_a ** 2), mu_b, np.diag(s_b ** 2)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("rank", [None, 3])
def test_frechet_distance_against_scipy_sqrtm(rank):
    rng = np.random.default_rng(2)
    d = 8
    sigma_a, sigma_b = _random_covariance(rng, d, rank), _random_covariance(rng, d)
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    cross = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a + sigma_b - 2 * np.real(cross))
    assert metrics.frechet_distance(mu_a, sigma_a, mu_b, sigma_b) == pytest.approx(expected, rel=1e-7)


def test_frechet_distance_is_zero_for_one_gaussian_and_symmetric():
    rng = np.random.default_rng(3)
    sigma, mu = _random_covariance(rng, 6), rng.normal(size=6)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-9
    other = _random_covariance(rng, 6)
    assert metrics.frechet_distance(mu, sigma, 0 * mu, other) == pytest.approx(
        metrics.frechet_distance(0 * mu, other, mu, sigma), rel=1e-9)
    with pytest.raises(ValueError, match="one d"):
        metrics.frechet_distance(mu, sigma, mu[:3], sigma[:3, :3])


def test_frechet_distance_of_samples_approaches_the_closed_form():
    rng = np.random.default_rng(4)
    a = rng.normal([1.0, 0.0], [1.0, 2.0], size=(200_000, 2))
    b = rng.normal([0.0, 0.0], [1.0, 1.0], size=(200_000, 2))
    assert metrics.frechet_distance_of(a, b) == pytest.approx(1.0 + 1.0, abs=0.02)


def test_knn_radii_and_manifold_fraction_on_hand_made_points():
    # Points on a line at 0, 1, 3, 7: 1st neighbours at distances 1, 1, 2, 4; 2nd at 3, 2, 3, 6.
    line = np.array([[0.0], [1.0], [3.0], [7.0]])
    np.testing.assert_array_equal(metrics.knn_radii(line, 1), [1, 1, 2, 4])
    np.testing.assert_array_equal(metrics.knn_radii(line, 2), [3, 2, 3, 6])
    # With k = 1 the balls are [-1, 1], [0, 2], [1, 5], [3, 11]: 12 and -2 fall outside, 10 and 4.5 inside.
    points = np.array([[12.0], [-2.0], [10.0], [4.5]])
    assert metrics.manifold_fraction(points, line, k=1) == 0.5
    # the edge of a ball counts as inside
    assert metrics.manifold_fraction(np.array([[11.0]]), line, k=1) == 1.0
    with pytest.raises(ValueError, match="k < n"):
        metrics.knn_radii(line, 4)


def test_precision_recall_on_hand_made_point_sets():
    real = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])          # a unit square; k = 1: radius 1
    # Two generated points at the square's centre (inside the corners' balls of radius 1), two far away:
    # precision 2/4. The generated set's own k = 1 balls have radius 0.1 and reach no corner: recall 0.
    generated = np.array([[0.5, 0.5], [0.6, 0.5], [5.0, 5.0], [5.1, 5.0]])
    precision, recall = metrics.precision_recall(real, generated, k=1)
    assert precision == 0.5 and recall == 0.0
    # A generated set equal to the real one: everything inside both ways.
    assert metrics.precision_recall(real, real.copy(), k=1) == (1.0, 1.0)
    # A generated set covering only one corner, with a wide spread around it: every sample realistic, one corner
    # of four recalled.
    corner = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1]])
    assert metrics.precision_recall(real, corner, k=1) == (1.0, 0.25)


def test_manifold_fraction_against_a_brute_force_loop():
    rng = np.random.default_rng(5)
    ref, pts = rng.normal(size=(30, 4)), rng.normal(size=(25, 4)) * 1.3
    k = 3
    radii = [sorted(np.linalg.norm(r - o) for j, o in enumerate(ref) if j != i)[k - 1] for i, r in enumerate(ref)]
    inside = [any(np.linalg.norm(p - r) <= rad for r, rad in zip(ref, radii)) for p in pts]
    assert metrics.manifold_fraction(pts, ref, k) == pytest.approx(np.mean(inside))


def test_classifier_features_are_what_its_last_layer_reads():
    net = classifier.load_classifier()
    images = np.asarray(jax.random.uniform(jax.random.key(0), (7, 28, 28, 1), minval=-1, maxval=1))
    feats = classifier.features(images, net)
    assert feats.shape == (7, 64) and feats.dtype == np.float32 and (feats >= 0).all()
    logits = np.asarray(net.out(jnp.asarray(feats)))
    np.testing.assert_allclose(logits, np.asarray(net(jnp.asarray(images))), rtol=1e-5, atol=1e-5)
    probs = classifier.probabilities(images, net)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), classifier.predict(images, net))


def test_with_ema_averages_the_parameters_after_every_update():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, training.with_ema(optax.sgd(0.1), 0.9), wrt=nnx.Param)
    x = jnp.ones((4, 2))
    history = [np.asarray(model.kernel[...])]
    for _ in range(30):
        grads = nnx.grad(lambda m: jnp.mean(m(x) ** 2))(model)
        opt.update(model, grads)
        history.append(np.asarray(model.kernel[...]))
    average = history[0]
    for n, kernel in enumerate(history[1:]):
        d = min(0.9, (1 + n) / (10 + n))
        average = d * average + (1 - d) * kernel
    np.testing.assert_allclose(np.asarray(training.ema_params(opt)["kernel"]), average, rtol=1e-5, atol=1e-7)
    # the training itself is plain SGD: the same parameters as without the average
    plain = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    plain_opt = nnx.Optimizer(plain, optax.sgd(0.1), wrt=nnx.Param)
    for _ in range(30):
        plain_opt.update(plain, nnx.grad(lambda m: jnp.mean(m(x) ** 2))(plain))
    np.testing.assert_allclose(np.asarray(plain.kernel[...]), history[-1], rtol=1e-6)
    with pytest.raises(ValueError, match="keeps no average"):
        training.ema_params(plain_opt)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        training.with_ema(optax.sgd(0.1), 1.0)


def test_feature_quality_measures_groups_of_runs_against_a_floor_of_real_digits():
    from course_utils import data, mnist

    test_images, test_labels = data.load_mnist("test")
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10), 20)                      # 4 runs of 50 (5 per digit)
    key_index = np.repeat(np.arange(4), 50)
    noise = np.clip(rng.normal(size=(200, 28, 28, 1)), -1, 1).astype(np.float32)
    result = mnist.feature_quality(noise, labels, key_index, test_images, test_labels, groups=2)
    assert result["group_size"] == 100 and result["reference_size"] == 500 and result["all_size"] == 200
    for key in ("fd", "precision", "recall", "floor_fd", "floor_precision", "floor_recall"):
        assert result[key].shape == (2,)
    # noise is nothing like a digit: far above the floor, no sample inside the real manifold
    assert result["fd"].min() > 10 * result["floor_fd"].max()
    assert result["precision"].max() == 0.0 and result["floor_precision"].min() > 0.5
    # more groups than runs: one group per run
    assert mnist.feature_quality(noise, labels, key_index, test_images, test_labels, groups=9)["fd"].shape == (4,)


def test_train_conditional_many_is_train_conditional_for_each_model():
    from course_utils import guidance, models, schedules

    x, y = guidance.sample_mixture(jax.random.key(0), 500)
    sched = schedules.make_schedule(schedules.cosine_betas(10, max_beta=0.5))
    tx = optax.adam(1e-3)
    stack = [models.TwoPixelUNet(10, rngs=nnx.Rngs(s)) for s in (1, 2)]
    losses = guidance.train_conditional_many(stack, x, y, sched.alpha_bars, steps=20, key=jax.random.key(5),
                                             optimizer=tx, batch_size=32, p_uncond=0.2, loss="l1", progress=False)
    assert losses.shape == (2, 20)
    for i, seed in enumerate((1, 2)):
        alone = models.TwoPixelUNet(10, rngs=nnx.Rngs(seed))
        expected = guidance.train_conditional(alone, x, y, sched.alpha_bars, steps=20,
                                              key=jax.random.split(jax.random.key(5), 2)[i], optimizer=tx,
                                              batch_size=32, p_uncond=0.2, loss="l1", progress=False)
        np.testing.assert_allclose(losses[i], expected, rtol=1e-4, atol=1e-5)
