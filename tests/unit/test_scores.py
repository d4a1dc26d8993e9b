"""course_utils.scores against independent computations: numpy finite differences of the exact log-density, the
closed-form flow of Gaussian data, a Gaussian kept stationary by Langevin steps, numpy losses and Euler sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flax import nnx

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


# ---------------------------------------------------------------- what the network predicts: eps, x0, v


def _posterior_means_np(x, alpha_bar, mixture=guidance.TWO_PIXEL):
    """E[x0 | x_t] and E[eps | x_t] of the noised mixture in float64 numpy, from each component's Gaussian posterior
    (written from the formulas, not from course_utils)."""
    means, weights, s2 = np.asarray(mixture.means, np.float64), np.asarray(mixture.weights, np.float64), mixture.std**2
    var = alpha_bar * s2 + 1 - alpha_bar
    centred = x[:, None, :] - np.sqrt(alpha_bar) * means[None]                        # (N, K, d)
    log_r = np.log(weights)[None] - 0.5 * np.sum(centred**2, -1) / var
    r = np.exp(log_r - log_r.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    x0_k = means[None] + (np.sqrt(alpha_bar) * s2 / var) * centred                    # E[x0 | x_t, k]
    eps_k = (np.sqrt(1 - alpha_bar) / var) * centred                                   # E[eps | x_t, k]
    return np.sum(r[..., None] * x0_k, 1), np.sum(r[..., None] * eps_k, 1)


@pytest.mark.parametrize("alpha_bar", ALPHA_BARS)
def test_each_exact_prediction_turns_into_the_exact_score(alpha_bar):
    """E[x0 | x_t] and E[v | x_t], from each component's posterior in numpy, give through score_from_x0 and score_from_v
    the finite-difference gradient of the exact log-density; and eps_from_x0 / eps_from_v give the exact noise."""
    x = _points(alpha_bar)
    x0_star, eps_star = _posterior_means_np(x, alpha_bar)
    v_star = np.sqrt(alpha_bar) * eps_star - np.sqrt(1 - alpha_bar) * x0_star
    expected = _finite_difference_score(x, alpha_bar)
    tol = dict(rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    with float64():
        np.testing.assert_allclose(np.asarray(scores.score_from_x0(x0_star, x, alpha_bar)), expected, **tol)
        np.testing.assert_allclose(np.asarray(scores.score_from_v(v_star, x, alpha_bar)), expected, **tol)
    exact_eps = np.asarray(guidance.mixture_eps(f32(x), alpha_bar))
    np.testing.assert_allclose(exact_eps, eps_star, atol=1e-4)
    for got in (scores.eps_from_x0(f32(x0_star), f32(x), alpha_bar), scores.eps_from_v(f32(v_star), f32(x), alpha_bar)):
        np.testing.assert_allclose(np.asarray(got), eps_star, atol=2e-3 / np.sqrt(1 - alpha_bar) * 1e-1 + 1e-4)
    np.testing.assert_allclose(np.asarray(scores.x0_from_eps(f32(eps_star), f32(x), alpha_bar)), x0_star,
                               atol=1e-4 / np.sqrt(alpha_bar))


def test_the_conversions_are_inverse_to_each_other_and_agree_with_numpy():
    rng = np.random.default_rng(3)
    x0, eps = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    ab = rng.uniform(0.01, 0.99, size=(50, 1))
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    v = np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0
    with float64():
        np.testing.assert_allclose(np.asarray(scores.velocity_target(x0, eps, ab)), v, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(scores.x0_from_eps(eps, x_t, ab)), x0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.asarray(scores.eps_from_x0(x0, x_t, ab)), eps, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.asarray(scores.v_from_eps(eps, x_t, ab)), v, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.asarray(scores.eps_from_v(v, x_t, ab)), eps, rtol=1e-9, atol=1e-9)
        # eps -> x0 -> eps and eps -> v -> eps for a prediction that is not the true noise
        guess = rng.normal(size=x0.shape)
        np.testing.assert_allclose(np.asarray(scores.eps_from_x0(scores.x0_from_eps(guess, x_t, ab), x_t, ab)), guess,
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.asarray(scores.eps_from_v(scores.v_from_eps(guess, x_t, ab), x_t, ab)), guess,
                                   rtol=1e-9, atol=1e-9)
        # all three scores agree with Tweedie's -eps / sqrt(1 - ab)
        tweedie = -guess / np.sqrt(1 - ab)
        np.testing.assert_allclose(np.asarray(scores.score_from_x0(scores.x0_from_eps(guess, x_t, ab), x_t, ab)), tweedie,
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.asarray(scores.score_from_v(scores.v_from_eps(guess, x_t, ab), x_t, ab)), tweedie,
                                   rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("gamma", [1.0, 5.0, 1e9])
def test_min_snr_weights_give_one_objective_whatever_the_target(gamma):
    """w_eps |eps - eps^|^2 = w_v |v - v^|^2 = min(SNR, gamma) |x0 - x0^|^2 for predictions that imply each other."""
    rng = np.random.default_rng(4)
    x0, eps, guess = rng.normal(size=(40, 2)), rng.normal(size=(40, 2)), rng.normal(size=(40, 2))
    ab = rng.uniform(0.001, 0.999, size=(40, 1))
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps
    snr = ab / (1 - ab)
    with float64():
        x0_hat, v_hat = scores.x0_from_eps(guess, x_t, ab), scores.v_from_eps(guess, x_t, ab)
        v = np.sqrt(ab) * eps - np.sqrt(1 - ab) * x0
        reference = np.minimum(snr, gamma) * np.sum((x0 - np.asarray(x0_hat)) ** 2, -1, keepdims=True)
        for kind, target, hat in (("eps", eps, guess), ("x0", x0, x0_hat), ("v", v, v_hat)):
            w = np.asarray(scores.min_snr_weight(ab, gamma, kind))
            np.testing.assert_allclose(w * np.sum((target - np.asarray(hat)) ** 2, -1, keepdims=True), reference,
                                       rtol=1e-8)
            np.testing.assert_allclose(w, np.asarray(scores.min_snr_weight(ab, gamma, scores.PREDICTIONS.index(kind))))
        np.testing.assert_allclose(np.asarray(scores.signal_to_noise(ab)), snr, rtol=1e-12)
    if gamma > 1e6:   # no clipping: the noise loss is unweighted
        np.testing.assert_allclose(np.asarray(scores.min_snr_weight(ab, gamma, "eps")), 1.0, rtol=1e-12)


class _Linear(nnx.Module):
    """out = x @ W + c * t / 1000: a small network with weights, for the predictor tests."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.W = nnx.Param(jnp.asarray(rng.normal(size=(2, 2)) * 0.3, jnp.float32))
        self.c = nnx.Param(jnp.asarray(rng.normal(size=2), jnp.float32))

    def __call__(self, x, t):
        return x @ self.W[...] + (t[:, None] / 1000.0) * self.c[...]


def _loss_np(net, kind, gamma, x0, t, noise, ab_all):
    ab = np.asarray(ab_all, np.float64)[t - 1][:, None]
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    out = x_t @ np.asarray(net.W[...], np.float64) + (t[:, None] / 1000.0) * np.asarray(net.c[...], np.float64)
    target = {"eps": noise, "x0": x0, "v": np.sqrt(ab) * noise - np.sqrt(1 - ab) * x0}[kind]
    snr = ab / (1 - ab)
    w = 1.0 if gamma is None else {"eps": np.minimum(snr, gamma) / snr, "x0": np.minimum(snr, gamma),
                                   "v": np.minimum(snr, gamma) / (snr + 1)}[kind]
    return np.mean(w * (out - target) ** 2)


@pytest.mark.parametrize("kind,gamma", [("eps", None), ("x0", None), ("v", None), ("eps", 5.0), ("v", 5.0)])
def test_prediction_loss_against_numpy(kind, gamma):
    schedule = schedules.make_schedule(schedules.linear_betas(1000))
    rng = np.random.default_rng(5)
    x0, noise, t = rng.normal(size=(32, 2)), rng.normal(size=(32, 2)), rng.integers(1, 1001, size=32)
    model = scores.Predictor(_Linear(0), schedule.alpha_bars, kind, gamma)
    got = scores.prediction_loss(model, jnp.asarray(x0, jnp.float32), jnp.asarray(t), jnp.asarray(noise, jnp.float32),
                                 schedule.alpha_bars)
    np.testing.assert_allclose(float(got), _loss_np(model.net, kind, gamma, x0, t, noise, schedule.alpha_bars), rtol=2e-4)
    if kind == "eps" and gamma is None:
        from course_utils import training
        same = training.ddpm_loss(model.net, jnp.asarray(x0, jnp.float32), jnp.asarray(t),
                                  jnp.asarray(noise, jnp.float32), schedule.alpha_bars)
        np.testing.assert_allclose(float(got), float(same), rtol=1e-6)


@pytest.mark.parametrize("kind", scores.PREDICTIONS)
def test_a_predictor_of_the_exact_target_is_the_exact_noise_predictor(kind):
    schedule = schedules.make_schedule(schedules.linear_betas(1000))
    x0_star_fn = lambda x, t: _posterior_means_np(np.asarray(x, np.float64), float(schedule.alpha_bars[int(t[0]) - 1]))  # noqa: E731

    class Oracle(nnx.Module):
        def __call__(self, x, t):
            x0_s, eps_s = (jnp.asarray(a, jnp.float32) for a in x0_star_fn(x, t))
            ab = float(schedule.alpha_bars[int(t[0]) - 1])
            return {"eps": eps_s, "x0": x0_s, "v": np.sqrt(ab) * eps_s - np.sqrt(1 - ab) * x0_s}[kind]

    for t in (5, 300, 900):
        ab = float(schedule.alpha_bars[t - 1])
        x = jnp.asarray(_points(ab, n=32, seed=t), jnp.float32)
        got = scores.Predictor(Oracle(), schedule.alpha_bars, kind)(x, jnp.full((32,), t))
        tolerance = 1e-4 * (np.sqrt(ab / (1 - ab)) if kind == "x0" else 1.0) + 1e-4
        np.testing.assert_allclose(np.asarray(got), np.asarray(guidance.mixture_eps(x, ab)), atol=tolerance)


def test_predictors_of_every_kind_train_together_as_each_would_alone():
    """One train_many call over predictors of different targets (the target is state, traced under vmap) ends where
    separate training runs end."""
    from course_utils import training
    schedule = schedules.make_schedule(schedules.linear_betas(100, 1e-3, 0.05))
    data, _ = guidance.sample_mixture(jax.random.key(0), 512)
    kinds = [("eps", None), ("x0", None), ("v", 5.0)]
    together = [scores.Predictor(_Linear(i), schedule.alpha_bars, k, g) for i, (k, g) in enumerate(kinds)]
    alone = [scores.Predictor(_Linear(i), schedule.alpha_bars, k, g) for i, (k, g) in enumerate(kinds)]
    key = jax.random.key(7)
    settings = dict(steps=30, batch_size=64, learning_rate=1e-2, progress=False, chunk=30, loss_fn=scores.prediction_loss)
    losses = training.train_many(together, data, schedule.alpha_bars, key=key, **settings)
    for i, model in enumerate(alone):
        single = training.train(model, data, schedule.alpha_bars, key=jax.random.split(key, 3)[i], **settings)
        np.testing.assert_allclose(losses[i], single, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(np.asarray(together[i].net.W[...]), np.asarray(model.net.W[...]), rtol=1e-3, atol=1e-5)
    assert not np.allclose(losses[0], losses[1])


def test_predictor_rejects_unknown_targets():
    with pytest.raises(ValueError, match="prediction"):
        scores.Predictor(_Linear(0), jnp.ones(3) * 0.5, "score")
    with pytest.raises(ValueError, match="min_snr_gamma"):
        scores.Predictor(_Linear(0), jnp.ones(3) * 0.5, "eps", 0.0)


# ---------------------------------------------------------------- the samplers side by side, and the measurements


_STEPS = dict(euler=scores.probability_flow_step, heun=scores.heun_step, corrector=scores.langevin_correct,
              score=scores.score_from_eps.raw)


def _python_loop(method, eps_fn, x, n_steps, schedule, key, langevin=0.1):
    """The same sampler as a Python loop over the steps, written from the definitions."""
    from course_utils import sampling
    steps = [int(round(schedule.T * (n_steps - k) / n_steps)) for k in range(n_steps + 1)]
    for k, (t, t_prev) in enumerate(zip(steps[:-1], steps[1:])):
        z = jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
        if method in ("DDPM", "DDIM"):
            x = sampling.ddim_step(eps_fn, x, t, t_prev, schedule.alpha_bars, 1.0 if method == "DDPM" else 0.0, z)
        elif method == "PF Heun":
            x = scores.heun_step(eps_fn, x, t, t_prev, schedule)
        else:
            x = scores.probability_flow_step(eps_fn, x, t, t_prev, schedule)
            if method == "PF Euler + Langevin" and t_prev > 0:
                ab = float(schedule.alpha_bars[t_prev - 1])
                score = -eps_fn(x, jnp.full((x.shape[0],), t_prev)) / np.sqrt(1 - ab)
                x = x + langevin * (1 - ab) * score + np.sqrt(2 * langevin * (1 - ab)) * z
    return x


@pytest.mark.parametrize("method", scores.METHODS)
def test_sample_with_is_the_loop_of_its_steps(method):
    schedule = schedules.make_schedule(schedules.cosine_betas(50, max_beta=0.5))

    def eps_fn(x, t):
        return guidance.mixture_eps(x, schedule.alpha_bars[t - 1][:, None])

    x_T, key = jax.random.normal(jax.random.key(0), (64, 2)), jax.random.key(1)
    for n_steps in (3, 7, 50):
        got = scores.sample_with(method, eps_fn, x_T, n_steps, schedule, key, **_STEPS)
        np.testing.assert_allclose(np.asarray(got), np.asarray(_python_loop(method, eps_fn, x_T, n_steps, schedule, key)),
                                   rtol=2e-4, atol=2e-5)
    if method == "DDIM":
        from course_utils import sampling
        np.testing.assert_allclose(np.asarray(got), np.asarray(sampling.ddim_sample(guidance.Guided(
            guidance.MixtureEps(schedule.alpha_bars), jnp.full((64,), -1), 0.0), x_T, schedule, 50)), rtol=2e-4, atol=2e-5)
    with pytest.raises(ValueError, match="n_steps"):
        scores.sample_with(method, eps_fn, x_T, 51, schedule, key, **_STEPS)


def test_eps_errors_against_numpy():
    schedule = schedules.make_schedule(schedules.linear_betas(200))
    x0, _ = guidance.sample_mixture(jax.random.key(2), 300)
    steps = jnp.array([1, 50, 199])
    noise = jax.random.normal(jax.random.key(3), (3, 300, 2))

    def exact(x, t):
        return guidance.mixture_eps(x, schedule.alpha_bars[t - 1][:, None])

    np.testing.assert_allclose(scores.eps_errors(exact, schedule, x0, noise, steps), 0.0, atol=1e-9)
    zero = scores.eps_errors(lambda x, t: jnp.zeros_like(x), schedule, x0, noise, steps)
    for k, t in enumerate(np.asarray(steps)):
        ab = float(schedule.alpha_bars[t - 1])
        x_t = np.sqrt(ab) * np.asarray(x0, np.float64) + np.sqrt(1 - ab) * np.asarray(noise[k], np.float64)
        np.testing.assert_allclose(zero[k], np.mean(_posterior_means_np(x_t, ab)[1] ** 2), rtol=1e-3)


def test_consistent_with_says_pass_within_the_spread_and_fail_outside():
    assert scores.consistent_with([0.34, 0.36, 0.35], 0.35)["agrees"]
    assert "PASS" in scores.consistent_with([0.34, 0.36, 0.35], 0.35)["text"]
    far = scores.consistent_with([0.40, 0.41, 0.39], 0.35)
    assert not far["agrees"] and "FAIL" in far["text"]
    np.testing.assert_allclose(far["se"], 0.01 / np.sqrt(3))
    with pytest.raises(ValueError):
        scores.consistent_with([0.3], 0.35)
