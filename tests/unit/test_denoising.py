"""Notebook 04's references: embeddings, models, training, samplers, metrics and 2D data,
each against an independent computation (numpy, closed forms, statistics)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course_utils import data, embeddings, metrics, models, sampling, schedules, training


def test_sinusoidal_embedding_matches_numpy():
    t = np.array([0, 1, 7, 500, 1000])
    dim = 16
    freqs = 10000.0 ** (-np.arange(8) / 8)
    expected = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], axis=1)
    np.testing.assert_allclose(embeddings.sinusoidal_embedding(t, dim), expected, atol=2e-4)
    assert embeddings.sinusoidal_embedding(jnp.ones((2, 3), jnp.int32), 4).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="sinusoidal_embedding.*`dim` must be even"):
        embeddings.sinusoidal_embedding(t, 5)


def test_models_map_inputs_to_noise_of_the_same_shape():
    mlp = models.MLPDenoiser(dim=3, rngs=nnx.Rngs(0))
    assert mlp(jnp.ones((4, 3)), jnp.arange(4)).shape == (4, 3)
    image_model = models.WidenNarrowMLP(rngs=nnx.Rngs(0))
    assert image_model(jnp.ones((5, 3, 3)), jnp.arange(5)).shape == (5, 3, 3)


def _energy_numpy(x, y):
    d = lambda a, b: np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1).mean()  # noqa: E731
    return 2 * d(x, y) - d(x, x) - d(y, y)


def test_energy_distance_matches_numpy_and_orders_distributions():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(300, 2)), rng.normal(size=(200, 2)) + 0.5
    np.testing.assert_allclose(metrics.energy_distance(x, y), _energy_numpy(x, y), rtol=1e-4)
    np.testing.assert_allclose(metrics.energy_distance(x, x), 0.0, atol=1e-5)
    same = float(metrics.energy_distance(rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))))
    shifted = float(metrics.energy_distance(rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2)) + 0.3))
    # Closed form for large n: for N(0, I) vs N(0, I), 2 E|X - X'| / n with E|X - X'| = sqrt(pi) in 2D.
    assert same < 2 * (2 * np.sqrt(np.pi) / 2000) and shifted > 5 * same


def test_quality_report_floor_is_below_noise():
    points, _ = data.swiss_roll(jax.random.key(0), 4000)
    report = metrics.quality_report(points[:1000], points[1000:], jax.random.key(1))
    assert report["floor"] < report["noise"] / 10
    assert "energy distance" in report["text"]


def test_kde_on_grid_recovers_a_gaussian_density():
    points = np.random.default_rng(0).normal(size=(20000, 2))
    xs, ys, density = metrics.kde_on_grid(points, extent=(-4, 4, -4, 4), size=81)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert abs(density.sum() * cell - 1) < 0.01
    true = np.exp(-0.5 * (xs[None, :] ** 2 + ys[:, None] ** 2)) / (2 * np.pi)
    assert np.abs(density - true).max() < 0.015


class GaussianOracle(nnx.Module):
    """The exact noise predictor for data N(m, p^2 I): E[eps | x_t] = sqrt(1 - ab)(x_t - sqrt(ab) m) / (ab p^2 + 1 - ab)."""

    def __init__(self, alpha_bars, m, p):
        self.alpha_bars, self.m, self.p = nnx.Variable(alpha_bars), m, p

    def __call__(self, x, t):
        ab = self.alpha_bars[...][t - 1][:, None]
        return jnp.sqrt(1 - ab) * (x - jnp.sqrt(ab) * self.m) / (ab * self.p**2 + 1 - ab)


def _linear_chain(schedule, m, p, sigma):
    """Mean and std of x_0 from the reverse chain driven by the exact eps, in float64.

    With the exact eps of Gaussian data every reverse step is affine,
    x_{t-1} = a_t x_t + b_t + sigma_t z, so the output is Gaussian with a mean
    and variance that follow from two scalar recursions (per coordinate).
    """
    betas = np.asarray(schedule.betas, np.float64)
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    mean, var = np.zeros_like(np.asarray(m, np.float64)), 1.0
    for t in range(len(betas), 0, -1):
        b, a_bar, a_prev = betas[t - 1], ab[t - 1], ab_prev[t - 1]
        v_star = a_bar * p**2 + 1 - a_bar          # Var(x_t) under the forward process
        c = np.sqrt(1 - a_bar) / v_star            # eps* = c (x_t - sqrt(a_bar) m)
        if sigma == "ddim":
            x0_coef = (1 - np.sqrt(1 - a_bar) * c) / np.sqrt(a_bar)
            scale = np.sqrt(a_prev) * x0_coef + np.sqrt(1 - a_prev) * c
            shift = (np.sqrt(a_prev) * np.sqrt(1 - a_bar) / np.sqrt(a_bar) - np.sqrt(1 - a_prev)) * c * np.sqrt(a_bar) * np.asarray(m)
            noise_var = 0.0
        else:
            scale = (1 - b / np.sqrt(1 - a_bar) * c) / np.sqrt(1 - b)
            shift = b / np.sqrt(1 - a_bar) * c * np.sqrt(a_bar) * np.asarray(m) / np.sqrt(1 - b)
            noise_var = 0.0 if t == 1 else (b if sigma == "beta" else (1 - a_prev) / (1 - a_bar) * b)
        mean, var = scale * mean + shift, scale**2 * var + noise_var
    return mean, np.sqrt(var)


@pytest.mark.parametrize("sigma", ["beta_tilde", "beta", "ddim"])
def test_samplers_with_the_exact_noise_predictor_follow_the_linear_recursion(sigma):
    """The sampler's output statistics equal those of the affine chain computed independently in float64,
    and that chain lands close to the data distribution N(m, p^2) (exactly only as the steps get small)."""
    schedule = schedules.make_schedule(schedules.linear_betas(200, 1e-4, 0.05))
    m, p = np.array([1.5, -0.5]), 0.4
    n = 100_000
    x0 = np.asarray(sampling.sample(GaussianOracle(schedule.alpha_bars, jnp.asarray(m), p),
                                    jax.random.normal(jax.random.key(0), (n, 2)), jax.random.key(1), schedule, sigma=sigma))
    mean, std = _linear_chain(schedule, m, p, sigma)
    np.testing.assert_allclose(x0.mean(0), mean, atol=5 * std / np.sqrt(n))
    np.testing.assert_allclose(x0.std(0), std, rtol=5 / np.sqrt(2 * n))
    # DDPM forgets that x_T ~ N(0, I) is not exactly the forward marginal (alpha_bar_T = 0.007 here);
    # the deterministic DDIM map carries that small error to x_0.
    np.testing.assert_allclose(mean, m, atol=0.06 if sigma == "ddim" else 0.01)
    np.testing.assert_allclose(std, p, rtol=0.08)


def test_strided_ddim_with_the_exact_noise_predictor():
    schedule = schedules.make_schedule(schedules.linear_betas(200, 1e-4, 0.05))
    m, p = jnp.array([0.5, 1.0]), 0.3
    x0 = np.asarray(sampling.ddim_sample(GaussianOracle(schedule.alpha_bars, m, p),
                                         jax.random.normal(jax.random.key(2), (50_000, 2)), schedule, 50))
    np.testing.assert_allclose(x0.mean(0), m, atol=0.04)  # see the note on DDIM above
    np.testing.assert_allclose(x0.std(0), p, atol=0.02)


def test_ddim_step_to_zero_returns_the_x0_estimate():
    schedule = schedules.make_schedule(schedules.linear_betas(20, 1e-3, 0.2))
    m, p = jnp.zeros(2), 1.0
    oracle = GaussianOracle(schedule.alpha_bars, m, p)
    x_t = jax.random.normal(jax.random.key(0), (10, 2))
    t = 7
    eps = oracle(x_t, jnp.full((10,), t))
    ab = schedule.alpha_bars[t - 1]
    np.testing.assert_allclose(sampling.ddim_step(oracle, x_t, t, 0, schedule.alpha_bars),
                               (x_t - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab), rtol=1e-5, atol=1e-6)


def test_sample_trajectory_shape_and_endpoints():
    schedule = schedules.make_schedule(schedules.linear_betas(30, 1e-3, 0.2))
    model = models.MLPDenoiser(rngs=nnx.Rngs(0))
    x_T = jax.random.normal(jax.random.key(0), (7, 2))
    xs = sampling.sample(model, x_T, jax.random.key(1), schedule, trajectory=True)
    assert xs.shape == (31, 7, 2)
    np.testing.assert_allclose(xs[0], x_T)
    np.testing.assert_allclose(xs[-1], sampling.sample(model, x_T, jax.random.key(1), schedule), atol=1e-5)
    with pytest.raises(ValueError, match="sigma"):
        sampling.sample(model, x_T, jax.random.key(1), schedule, sigma="huge")


def test_short_training_lowers_the_loss_and_beats_noise():
    points, _ = data.swiss_roll(jax.random.key(0), 4000)
    schedule = schedules.make_schedule(schedules.linear_betas(50, 1e-4, 0.15))
    model = models.MLPDenoiser(rngs=nnx.Rngs(0))
    x_T = jax.random.normal(jax.random.key(3), (1000, 2))
    before = metrics.quality_report(sampling.sample(model, x_T, jax.random.key(4), schedule), points, jax.random.key(5))
    losses = training.train(model, points, schedule.alpha_bars, steps=1200, key=jax.random.key(1), batch_size=256)
    after = metrics.quality_report(sampling.sample(model, x_T, jax.random.key(4), schedule), points, jax.random.key(5))
    assert losses.shape == (1200,) and np.all(np.isfinite(losses))
    assert losses[-200:].mean() < 0.85 * losses[:50].mean()
    assert after["samples"] < after["noise"] / 3 and after["samples"] < before["samples"] / 3


@pytest.mark.parametrize("drawn", ["before the loop", "inside the loop"])
def test_training_draws_fresh_standard_normal_noise_every_step(drawn, monkeypatch):
    """The loss below is the mean square of the step's noise: about 1 on average, and new at every step."""
    if drawn == "inside the loop":
        monkeypatch.setattr(training, "PREDRAWN_NOISE_LIMIT", 0)

    def noise_power(model, x0, t, noise, alpha_bars):  # a new function for each case: a new trace
        return jnp.mean(noise ** 2) + 0.0 * jnp.mean(model(x0, t))

    points, _ = data.circle(jax.random.key(0), 1000)
    model = models.MLPDenoiser(rngs=nnx.Rngs(0))
    losses = training.train(model, points, jnp.linspace(0.99, 0.01, 20), steps=300, key=jax.random.key(1),
                            batch_size=256, loss_fn=noise_power, chunk=64)
    # each loss: the mean of 512 squared standard normals, mean 1 and standard deviation sqrt(2 / 512) = 0.0625
    assert abs(losses.mean() - 1) < 0.03
    assert 0.045 < losses.std() < 0.085
    assert len(np.unique(losses)) == 300


def test_training_continues_with_the_same_optimizer():
    points, _ = data.circle(jax.random.key(0), 1000)
    schedule = schedules.make_schedule(schedules.linear_betas(20, 1e-3, 0.3))
    model = models.MLPDenoiser(rngs=nnx.Rngs(0))
    import optax
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    training.train(model, points, schedule.alpha_bars, steps=10, key=jax.random.key(1), optimizer=opt)
    training.train(model, points, schedule.alpha_bars, steps=5, key=jax.random.key(2), optimizer=opt)
    assert int(opt.step[...]) == 15


@pytest.mark.parametrize("name", sorted(data.POINT_CLOUDS))
def test_point_clouds(name):
    points, colour = data.points_2d(name, jax.random.key(0), 3000)
    assert points.shape == (3000, 2) and colour.shape == (3000,)
    assert float(colour.min()) >= 0 and float(colour.max()) <= 1
    assert 0.2 < float(points.std()) < 1.5, "data sets are scaled to about unit spread"


def test_shapes_lie_on_their_curves():
    circle, _ = data.circle(jax.random.key(0), 2000, noise=0.0)
    np.testing.assert_allclose(jnp.linalg.norm(circle, axis=1), 1.0, atol=1e-5)
    square, _ = data.square(jax.random.key(0), 2000, noise=0.0)
    np.testing.assert_allclose(jnp.abs(square).max(axis=1), 1.0, atol=1e-5)
    clusters, label = data.two_clusters(jax.random.key(0), 4000)
    assert abs(float(label.mean()) - 0.5) < 0.05
    assert np.all(np.sign(np.asarray(clusters[:, 0])[np.asarray(label) == 1]).mean() > 0.99)


def test_dot_images_have_one_bright_centre_pixel():
    images = np.asarray(data.dot_images(4))
    assert images.shape == (4, 3, 3)
    assert np.all(images[:, 1, 1] == 1) and np.sum(images == 1) == 4 and np.sum(images == -1) == 32
    with pytest.raises(ValueError, match="points_2d"):
        data.points_2d("spiral", jax.random.key(0), 10)


def test_ddpm_sample_is_the_loop_of_ddpm_steps_with_zs_indexed_by_t():
    """Written out in Python, independently of the scan: step t uses zs[t - 1], and none at t = 1."""
    schedule = schedules.make_schedule(schedules.linear_betas(12, 1e-3, 0.2))
    model = models.MLPDenoiser(hidden=16, depth=1, time_dim=4, rngs=nnx.Rngs(0))
    x_T = jax.random.normal(jax.random.key(0), (5, 2))
    zs = jax.random.normal(jax.random.key(1), (12, 5, 2))
    sigmas = jnp.sqrt(schedule.betas)
    xs = sampling.ddpm_sample(model, x_T, zs, schedule.betas, schedule.alpha_bars, sigmas)
    assert xs.shape == (13, 5, 2)
    x, expected = x_T, [x_T]
    for t in range(12, 0, -1):
        eps = model(x, jnp.full((5,), t))
        alpha, alpha_bar = 1 - schedule.betas[t - 1], schedule.alpha_bars[t - 1]
        x = (x - (1 - alpha) / jnp.sqrt(1 - alpha_bar) * eps) / jnp.sqrt(alpha) + (sigmas[t - 1] * zs[t - 1] if t > 1 else 0)
        expected.append(x)
    np.testing.assert_allclose(xs, jnp.stack(expected), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="ddpm_sample.*`zs`"):
        sampling.ddpm_sample(model, x_T, zs[1:], schedule.betas, schedule.alpha_bars, sigmas)


def test_ddim_with_eta_1_and_one_step_is_the_ddpm_step_with_the_posterior_variance():
    """Question 3 of notebook 04, numerically: sigma_t(1)^2 = beta_tilde_t and the same mean."""
    schedule = schedules.make_schedule(schedules.linear_betas(50, 1e-4, 0.1))
    model = models.MLPDenoiser(hidden=16, depth=1, time_dim=4, rngs=nnx.Rngs(1))
    x_t = jax.random.normal(jax.random.key(2), (6, 2))
    z = jax.random.normal(jax.random.key(3), (6, 2))
    for t in (2, 17, 50):
        ddim = sampling.ddim_step(model, x_t, t, t - 1, schedule.alpha_bars, 1.0, z)
        ddpm = sampling.ddpm_step(model, x_t, t, z, schedule.betas, schedule.alpha_bars,
                                  jnp.sqrt(schedule.posterior_variances))
        np.testing.assert_allclose(ddim, ddpm, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(sampling.ddim_sigma(schedule.alpha_bars[t - 1], schedule.alpha_bars[t - 2], 1.0) ** 2,
                                   schedule.posterior_variances[t - 1], rtol=1e-4)
    # eta = 0 ignores z; t_prev = 0 gives the estimate of x_0 whatever eta
    np.testing.assert_allclose(sampling.ddim_step(model, x_t, 9, 4, schedule.alpha_bars, 0.0, z),
                               sampling.ddim_step(model, x_t, 9, 4, schedule.alpha_bars), rtol=1e-6)
    np.testing.assert_allclose(sampling.ddim_step(model, x_t, 9, 0, schedule.alpha_bars, 1.0, z),
                               sampling.ddim_step(model, x_t, 9, 0, schedule.alpha_bars), rtol=1e-6)


def test_ddim_sample_with_eta_draws_noise_and_takes_a_step_function():
    schedule = schedules.make_schedule(schedules.linear_betas(40, 1e-4, 0.1))
    model = models.MLPDenoiser(hidden=16, depth=1, time_dim=4, rngs=nnx.Rngs(0))
    x_T = jax.random.normal(jax.random.key(0), (7, 2))
    deterministic = sampling.ddim_sample(model, x_T, schedule, 10)
    noisy = sampling.ddim_sample(model, x_T, schedule, 10, eta=1.0, key=jax.random.key(1))
    assert noisy.shape == deterministic.shape and not np.allclose(noisy, deterministic)
    np.testing.assert_allclose(sampling.ddim_sample(model, x_T, schedule, 10, eta=1.0, key=jax.random.key(1)), noisy)
    calls = []

    def my_step(model, x_t, t, t_prev, alpha_bars, eta, z):
        calls.append(1)
        return sampling.ddim_step(model, x_t, t, t_prev, alpha_bars, eta, z)

    np.testing.assert_allclose(sampling.ddim_sample(model, x_T, schedule, 10, step=my_step), deterministic, rtol=1e-6)
    assert calls  # traced once inside the scan
    with pytest.raises(ValueError, match="key"):
        sampling.ddim_sample(model, x_T, schedule, 10, eta=0.5)


def test_train_step_is_one_gradient_step_on_the_ddpm_loss():
    """With plain SGD the step is theta - lr * grad, the gradient taken here with jax.grad over the parameters."""
    import optax

    model = models.MLPDenoiser(hidden=16, depth=2, time_dim=8, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x0, noise = (jnp.asarray(rng.standard_normal((32, 2)), jnp.float32) for _ in range(2))
    t = jnp.asarray(rng.integers(1, 21, size=32), jnp.int32)
    alpha_bars = jnp.cumprod(1 - jnp.linspace(1e-3, 0.2, 20))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_of(p):
        m = nnx.merge(graphdef, p, rest)
        ab = alpha_bars[t - 1][:, None]
        return jnp.mean((noise - m(jnp.sqrt(ab) * x0 + jnp.sqrt(1 - ab) * noise, t)) ** 2)

    expected_loss, grads = jax.value_and_grad(loss_of)(params)
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    loss = training.train_step(model, optimizer, x0, t, noise, alpha_bars)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(nnx.state(model, nnx.Param)), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert int(jax.tree.leaves(optimizer.step)[0]) == 1


def test_train_with_a_step_function_is_train_with_the_loss():
    points = data.points_2d("circle", jax.random.key(0), 512)[0]
    alpha_bars = schedules.make_schedule(schedules.linear_betas(20, 1e-3, 0.2)).alpha_bars
    a, b = (models.MLPDenoiser(hidden=16, depth=2, time_dim=8, rngs=nnx.Rngs(0)) for _ in range(2))
    losses_a = training.train(a, points, alpha_bars, steps=30, key=jax.random.key(1), batch_size=64, progress=False)

    def my_step(model, optimizer, x0, t, noise, alpha_bars):
        loss, grads = nnx.value_and_grad(training.ddpm_loss)(model, x0, t, noise, alpha_bars)
        optimizer.update(model, grads)
        return loss

    losses_b = training.train(b, points, alpha_bars, steps=30, key=jax.random.key(1), batch_size=64, progress=False,
                              step=my_step)
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-5)


def test_train_many_trains_each_model_as_train_would_with_its_share_of_the_key():
    """jax.vmap over stacked states: model i ends where train() ends with jax.random.split(key, n)[i]; per-model
    data and schedules are used by their own model."""
    points = [data.points_2d(name, jax.random.key(0), 512)[0] for name in ("circle", "square")]
    alpha_bars = [schedules.make_schedule(schedules.linear_betas(20, 1e-3, b)).alpha_bars for b in (0.2, 0.3)]
    make = lambda seed: models.MLPDenoiser(hidden=16, depth=2, time_dim=8, rngs=nnx.Rngs(seed))
    import optax

    tx = optax.sgd(0.05, momentum=0.9)   # smooth in the gradient: vmapped and plain products round differently
    together = [make(0), make(1)]
    losses = training.train_many(together, points, alpha_bars, steps=40, key=jax.random.key(3), batch_size=64,
                                 optimizer=tx, chunk=25, progress=False)
    assert losses.shape == (2, 40)
    for i, key in enumerate(jax.random.split(jax.random.key(3), 2)):
        alone = make(i)
        own = training.train(alone, points[i], alpha_bars[i], steps=40, key=key, batch_size=64, optimizer=tx, chunk=25,
                             progress=False)
        np.testing.assert_allclose(losses[i], own, rtol=2e-4, atol=1e-6)
        for got, want in zip(jax.tree.leaves(nnx.state(together[i], nnx.Param)), jax.tree.leaves(nnx.state(alone, nnx.Param))):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_spread_and_compare_match_numpy():
    a, b = [0.010, 0.012, 0.011], [0.020, 0.021, 0.019]
    s = metrics.spread(a)
    assert s["mean"] == pytest.approx(np.mean(a)) and s["sd"] == pytest.approx(np.std(a, ddof=1))
    assert s["se"] == pytest.approx(np.std(a, ddof=1) / np.sqrt(3))
    assert s["text"] == "0.0110 +- 0.0010" and s["label"] == "0.0110 ± 0.0010"   # printed lines / figure labels
    verdict = metrics.compare("A", a, "B", b)
    se = np.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3)
    assert verdict["differ"] and verdict["se"] == pytest.approx(se) and verdict["text"].startswith("A is lower than B")
    close = metrics.compare("A", a, "C", [0.011, 0.013, 0.010])
    assert not close["differ"] and "not distinguishable" in close["text"]


def test_compare_paired_is_a_test_on_the_differences():
    """Pairs that share their noise: a shift much smaller than either spread is found, since the pairs move together."""
    rng = np.random.default_rng(0)
    common = rng.normal(0, 1.0, 8)
    a, b = common + 0.05 + rng.normal(0, 0.01, 8), common + rng.normal(0, 0.01, 8)
    paired, unpaired = metrics.compare_paired(a, b), metrics.compare("a", a, "b", b)
    d = a - b
    assert paired["difference"] == pytest.approx(d.mean()) and paired["se"] == pytest.approx(d.std(ddof=1) / np.sqrt(8))
    assert paired["differ"] and not unpaired["differ"] and paired["n"] == 8
    assert not metrics.compare_paired(a, a + rng.normal(0, 0.01, 8))["differ"]
    assert not metrics.compare_paired([1.0], [0.0])["differ"]          # one pair: no spread, no verdict
    with pytest.raises(ValueError, match="must be pairs"):
        metrics.compare_paired(a, b[:5])


def test_quality_of_runs_gives_the_floor_its_spread():
    """Each run draws its own halves of the data, so the floor printed beside the runs' mean has a spread too."""
    points = jax.random.normal(jax.random.key(0), (4000, 2))
    sets = [jax.random.normal(jax.random.key(10 + i), (500, 2)) for i in range(4)]
    r = metrics.quality_of_runs(sets, points, jax.random.key(1))
    assert r["floor_spread"]["n"] == 4 and r["floor_spread"]["sd"] > 0
    assert abs(r["floor_spread"]["mean"] - r["floor"]) < 1e-12
    assert f"floor {r['floor_spread']['text']}" in r["text"]
