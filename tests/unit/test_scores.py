"""course_utils.scores against independent computations: numpy finite differences of the exact log-density, the
closed-form flow of Gaussian data, a Gaussian kept stationary by Langevin steps, numpy losses and Euler sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from course_utils import analytic, guidance, schedules, scores
from course_utils.config import float64

ALPHA_BARS = [0.999, 0.95, 0.7, 0.3, 0.02]


def _mixture_log_density_np(x, alpha_bar, mixture=guidance.TWO_PIXEL):
    """log q_t(x) of the noised mixture in float64 numpy, written from the formula (not from course_utils)."""
    means, weights = np.asarray(mixture.means, np.float64), np.asarray(mixture.weights, np.float64)
    var = alpha_bar * mixture.std**2 + 1 - alpha_bar
    sq = np.sum((x[:, None, :] - np.sqrt(alpha_bar) * means[None]) ** 2, axis=-1)
    comps = weights[None] * np.exp(-0.5 * sq / var) / (2 * np.pi * var)
    return np.log(comps.sum(axis=1))


def _finite_difference_score(x, alpha_bar, h=1e-5):
    grads = []
    for i in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, i] = h
        grads.append((_mixture_log_density_np(x + step, alpha_bar) - _mixture_log_density_np(x - step, alpha_bar)) / (2 * h))
    return np.stack(grads, axis=1)


def _points(alpha_bar, n=64, seed=0):
    """Points where q_t has mass: noised data plus a few far away."""
    x0, _ = guidance.sample_mixture(jax.random.key(seed), n)
    eps = jax.random.normal(jax.random.key(seed + 1), x0.shape)
    return np.asarray(np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * eps, np.float64)


@pytest.mark.parametrize("alpha_bar", ALPHA_BARS)
def test_score_from_the_exact_eps_is_the_gradient_of_the_exact_log_density(alpha_bar):
    x = _points(alpha_bar)
    eps = guidance.mixture_eps(jnp.asarray(x, jnp.float32), alpha_bar)
    from_eps = np.asarray(scores.score_from_eps(eps, alpha_bar))
    expected = _finite_difference_score(x, alpha_bar)
    np.testing.assert_allclose(from_eps, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    by_grad = np.asarray(scores.mixture_score(jnp.asarray(x, jnp.float32), alpha_bar))
    np.testing.assert_allclose(by_grad, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_the_mixture_score_is_defined_on_the_data_themselves():
    x = _points(1.0)
    expected = _finite_difference_score(x, 1.0, h=1e-6)
    got = np.asarray(scores.mixture_score(jnp.asarray(x, jnp.float32), 1.0))
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_score_from_eps_broadcasts_and_rejects_alpha_bar_one():
    eps = jnp.ones((3, 2))
    out = scores.score_from_eps(eps, jnp.array([[0.75], [0.0 + 0.5], [0.96]]))
    np.testing.assert_allclose(np.asarray(out)[:, 0], [-2.0, -np.sqrt(2.0), -5.0], rtol=1e-6)
    with pytest.raises(ValueError, match="alpha_bar_t"):
        scores.score_from_eps(eps, 1.0)


# ---------------------------------------------------------------- the ODE for Gaussian data

M, P = 3.0, 0.5


def _gaussian_eps_fn(schedule):
    def eps_fn(x, t):
        return analytic.gaussian_eps.raw(x, schedule.alpha_bars[t - 1][:, None], M, P)
    return eps_fn


def _integrate(step, schedule, x_T, n_steps):
    T = schedule.T
    times = np.round(np.linspace(T, 0, n_steps + 1)).astype(np.int32)
    eps_fn = _gaussian_eps_fn(schedule)

    def body(x, pair):
        return step(eps_fn, x, pair[0], pair[1], schedule), None

    x0, _ = jax.lax.scan(body, x_T, (jnp.asarray(times[:-1]), jnp.asarray(times[1:])))
    return x0


@pytest.mark.parametrize("step,order", [(scores.probability_flow_step, 1), (scores.heun_step, 2)])
def test_euler_and_heun_converge_to_the_closed_form_flow_at_their_order(step, order):
    with float64():
        schedule = schedules.make_schedule(jnp.linspace(1e-4, 0.02, 1024, dtype=jnp.float64))
        x_T = jnp.linspace(-3.0, 3.0, 41, dtype=jnp.float64)[:, None]
        exact = scores.gaussian_flow(x_T, schedule.alpha_bars[-1], 1.0, M, P)
        errors = [float(jnp.max(jnp.abs(_integrate(step, schedule, x_T, n) - exact))) for n in (16, 32, 64, 128)]
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    # halving the step divides the error by 2 (Euler) or 4 (Heun)
    assert np.all(np.abs(ratios - 2.0**order) < 0.25 * 2.0**order), (errors, ratios)
    assert errors[-1] < (0.06 if order == 1 else 1e-3), errors


def test_the_closed_form_flow_carries_the_noise_marginal_to_the_data():
    schedule = schedules.make_schedule(schedules.linear_betas(50, 0.02, 0.3))
    ab_T = schedule.alpha_bars[-1]
    mean_T, var_T = analytic.forward_marginal_mean_var(ab_T, M, P)
    x_T = mean_T + jnp.sqrt(var_T) * jax.random.normal(jax.random.key(3), (200_000,))
    x0 = scores.gaussian_flow(x_T, ab_T, 1.0, M, P)
    assert abs(float(x0.mean()) - M) < 0.01 and abs(float(x0.std()) - P) < 0.01


def test_a_consecutive_euler_step_is_song_et_al_s_discretisation_to_first_order():
    schedule = schedules.make_schedule(schedules.linear_betas(1000))
    eps_fn = _gaussian_eps_fn(schedule)
    x = jnp.linspace(-2.0, 4.0, 7)[:, None]
    t = 700
    beta, ab = float(schedule.betas[t - 1]), float(schedule.alpha_bars[t - 1])
    score = -np.asarray(eps_fn(x, jnp.full((7,), t))) / np.sqrt(1 - ab)
    song = (2 - np.sqrt(1 - beta)) * np.asarray(x) + 0.5 * beta * score
    ours = np.asarray(scores.probability_flow_step(eps_fn, x, t, t - 1, schedule))
    np.testing.assert_allclose(ours, song, atol=5 * beta**2)


def test_heun_to_step_zero_is_the_euler_step():
    schedule = schedules.make_schedule(schedules.linear_betas(20, 0.01, 0.2))
    eps_fn = _gaussian_eps_fn(schedule)
    x = jnp.linspace(-1.0, 1.0, 5)[:, None]
    for t in (1, 7):
        np.testing.assert_allclose(np.asarray(scores.heun_step(eps_fn, x, t, 0, schedule)),
                                   np.asarray(scores.probability_flow_step(eps_fn, x, t, 0, schedule)), rtol=1e-6)


# ---------------------------------------------------------------- Langevin


def test_langevin_with_the_exact_score_keeps_a_gaussian_stationary():
    mean, var, delta, n_chains, n_steps = jnp.array([1.0, -2.0]), 0.25, 0.002, 20_000, 300
    x = mean + jnp.sqrt(var) * jax.random.normal(jax.random.key(0), (n_chains, 2))

    def score(x):
        return -(x - mean) / var

    def body(x, key):
        return scores.langevin_correct(score, x, delta, jax.random.normal(key, x.shape)), None

    x, _ = jax.lax.scan(body, x, jax.random.split(jax.random.key(1), n_steps))
    # the discretised chain's stationary variance is var / (1 - delta / (2 var)): 0.4 % above var here
    np.testing.assert_allclose(np.asarray(x.mean(0)), np.asarray(mean), atol=0.015)
    np.testing.assert_allclose(np.asarray(x.var(0)), var / (1 - delta / (2 * var)), rtol=0.03)


def test_langevin_from_a_wrong_start_moves_to_the_gaussian():
    var = 0.25
    x = jnp.zeros((20_000, 2))

    def body(x, key):
        return scores.langevin_correct(lambda x: -x / var, x, 0.01, jax.random.normal(key, x.shape)), None

    x, _ = jax.lax.scan(body, x, jax.random.split(jax.random.key(2), 400))
    np.testing.assert_allclose(np.asarray(x.var(0)), var / (1 - 0.01 / (2 * var)), rtol=0.03)


# ---------------------------------------------------------------- flow matching


def test_flow_matching_loss_against_numpy():
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(2, 2)), rng.normal(size=2)
    x0, x1, t = rng.normal(size=(16, 2)), rng.normal(size=(16, 2)), rng.uniform(size=16)

    def model(x, t):
        return x @ jnp.asarray(W, jnp.float32) + jnp.asarray(t)[:, None] * jnp.asarray(b, jnp.float32)

    x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
    expected = np.mean((x_t @ W + t[:, None] * b - (x1 - x0)) ** 2)
    got = scores.flow_matching_loss(model, *(jnp.asarray(a, jnp.float32) for a in (x0, x1, t)))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_the_straight_velocity_is_a_zero_loss_for_a_single_pair():
    x0, x1 = jnp.zeros((4, 2)), jnp.ones((4, 2))
    assert float(scores.flow_matching_loss(lambda x, t: jnp.ones_like(x), x0, x1, jnp.linspace(0, 1, 4))) == 0.0


def test_euler_flow_sample_is_an_euler_sum():
    x = jnp.linspace(-1.0, 1.0, 6).reshape(3, 2)
    path = scores.euler_flow_sample(lambda x, s: 0.5 * x + s[:, None], x, 8)
    expected, xs = np.asarray(x, np.float64), [np.asarray(x)]
    for k in range(8):
        expected = expected + (0.5 * expected + k / 8) / 8
        xs.append(expected)
    assert path.shape == (9, 3, 2)
    np.testing.assert_allclose(np.asarray(path), np.stack(xs), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- log-likelihood through the ODE


@pytest.mark.parametrize("n_steps,tolerance", [(100, 0.2), (200, 0.05)])
def test_pf_log_likelihood_of_the_mixture_matches_its_exact_log_density(n_steps, tolerance):
    grid = scores.noise_level_grid(n_steps)
    ab_K = float(grid[-1])
    x0, _ = guidance.sample_mixture(jax.random.key(5), 64)
    log_q = scores.pf_log_likelihood(lambda x, ab: scores.mixture_score(x, ab), x0, grid,
                                     prior_log_density=lambda x: guidance.mixture_log_density(x, alpha_bar=ab_K))
    exact = guidance.mixture_log_density(x0)
    np.testing.assert_allclose(np.asarray(log_q), np.asarray(exact), atol=tolerance)
    # a standard normal in place of q_K changes almost nothing at alpha_bar_K = 1e-4
    normal = scores.pf_log_likelihood(lambda x, ab: scores.mixture_score(x, ab), x0, grid)
    np.testing.assert_allclose(np.asarray(normal), np.asarray(log_q), atol=0.01)
