"""Bad input raises an error that names the function and the argument (course_utils._validate)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from course_utils import forward, losses, schedules

BAD_PROBABILITIES = [0.0, 1.0, -0.1, 1.5, math.nan, math.inf]
X = np.ones(3, np.float32)


def _msg(function, argument):
    return rf"{function}.*`{argument}`"


# ------------------------------------------------------------------ values in (0, 1)


@pytest.mark.parametrize("beta", BAD_PROBABILITIES)
@pytest.mark.parametrize("call,function", [
    (lambda b: forward.forward_mean(X, b), "forward_mean"),
    (lambda b: forward.forward_variance(b), "forward_variance"),
    (lambda b: forward.forward_step(X, b, X), "forward_step"),
    (lambda b: schedules.constant_betas(5, b), "constant_betas"),
    (lambda b: losses.mean_from_noise(X, X, b, 0.5), "mean_from_noise"),
])
def test_beta_outside_open_unit_interval(call, function, beta):
    name = "beta_t" if function == "mean_from_noise" else "beta"
    with pytest.raises(ValueError, match=_msg(function, name) + r" must lie strictly between 0 and 1"):
        call(beta)


@pytest.mark.parametrize("bad", BAD_PROBABILITIES)
def test_bad_betas_array(bad):
    betas = np.array([0.1, bad, 0.2])
    for fn in (schedules.alpha_bars, schedules.signal_to_noise, schedules.make_schedule):
        with pytest.raises(ValueError, match=_msg(fn.__name__, "betas") + " must lie strictly between 0 and 1"):
            fn(betas)
    with pytest.raises(ValueError, match=_msg("diffuse", "betas")):
        forward.diffuse(X, betas, np.zeros((3, 3), np.float32))


def test_one_bad_beta_per_example_is_found():
    beta = np.full((6, 1), 0.1, np.float32)
    beta[4, 0] = 1.0
    with pytest.raises(ValueError, match=_msg("forward_mean", "beta")):
        forward.forward_mean(np.ones((6, 2), np.float32), beta)


@pytest.mark.parametrize("value", [0.0, 1.0, 1.5, math.nan])
def test_linear_and_cosine_parameters(value):
    with pytest.raises(ValueError, match=_msg("linear_betas", "beta_start")):
        schedules.linear_betas(10, value, 0.02)
    with pytest.raises(ValueError, match=_msg("linear_betas", "beta_end")):
        schedules.linear_betas(10, 1e-4, value)
    with pytest.raises(ValueError, match=_msg("cosine_betas", "max_beta")):
        schedules.cosine_betas(10, 0.008, value)


@pytest.mark.parametrize("s", [0.0, -0.1, math.nan])
def test_cosine_offset_must_be_positive(s):
    with pytest.raises(ValueError, match=_msg("cosine_betas", "s") + " must be positive"):
        schedules.cosine_betas(10, s)


@pytest.mark.parametrize("ab", [0.0, -0.1, 1.5, math.nan])
def test_q_sample_alpha_bar(ab):
    with pytest.raises(ValueError, match=_msg("q_sample", "alpha_bar_t") + r" must lie in \(0, 1\]"):
        forward.q_sample(X, ab, X)


def test_posterior_arguments():
    with pytest.raises(ValueError, match=_msg("posterior_mean", "alpha_bar_t")):
        losses.posterior_mean(X, X, 0.1, 1.0, 1.0)
    with pytest.raises(ValueError, match=_msg("posterior_mean", "alpha_bar_prev")):
        losses.posterior_mean(X, X, 0.1, 0.5, 0.0)
    with pytest.raises(ValueError, match=_msg("posterior_variance", "beta_t")):
        losses.posterior_variance(0.0, 0.5, 0.9)
    with pytest.raises(ValueError, match=_msg("posterior_variance", "alpha_bar_prev")):
        losses.posterior_variance(0.1, 0.5, math.nan)


@pytest.mark.parametrize("sigma2", [0.0, -1.0, math.nan, math.inf])
def test_sigma2_must_be_positive(sigma2):
    with pytest.raises(ValueError, match=_msg("mean_loss", "sigma2") + " must be positive"):
        losses.mean_loss(X, X, sigma2)
    with pytest.raises(ValueError, match=_msg("noise_loss", "sigma2") + " must be positive"):
        losses.noise_loss(X, X, 0.1, 0.9, 0.5, sigma2)


def test_noise_loss_alpha_t():
    with pytest.raises(ValueError, match=_msg("noise_loss", "alpha_t")):
        losses.noise_loss(X, X, 0.1, 1.0, 0.5, 0.1)


def test_large_bad_array_is_described_briefly():
    betas = np.linspace(0.0, 0.5, 1000)
    with pytest.raises(ValueError, match=r"array of shape \(1000,\) with min 0 and max 0\.5"):
        schedules.alpha_bars(betas)


# ------------------------------------------------------------------ T


@pytest.mark.parametrize("T", [10.0, 2.5, "10", None, True, np.float32(3), jnp.int32(3)])
@pytest.mark.parametrize("fn", [schedules.linear_betas, schedules.cosine_betas, schedules.constant_betas])
def test_T_must_be_a_python_int(fn, T):
    with pytest.raises(TypeError, match=_msg(fn.__name__, "T") + " must be a Python int"):
        fn(T)


@pytest.mark.parametrize("T", [0, -1, -1000])
@pytest.mark.parametrize("fn", [schedules.linear_betas, schedules.cosine_betas, schedules.constant_betas])
def test_T_must_be_at_least_one(fn, T):
    with pytest.raises(ValueError, match=_msg(fn.__name__, "T") + " must be at least 1"):
        fn(T)


def test_numpy_int_T_is_accepted():
    assert schedules.linear_betas(np.int64(4)).shape == (4,)


# ------------------------------------------------------------------ shapes


def test_forward_step_mismatched_noise():
    with pytest.raises(ValueError, match=r"forward_step: arguments `x_prev` and `noise` must have the same shape, got \(3,\) and \(4,\)"):
        forward.forward_step(X, 0.1, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"forward_step.*\(3,\) and \(3, 1\)"):
        forward.forward_step(X, 0.1, np.ones((3, 1), np.float32))


@pytest.mark.parametrize("noises_shape", [(5, 4), (4, 3), (5,), (5, 3, 1), (3, 5)])
def test_diffuse_wrong_noises_shape(noises_shape):
    with pytest.raises(ValueError, match=_msg("diffuse", "noises") + r" must have shape \(T, \*x0\.shape\) = \(5, 3\)"):
        forward.diffuse(X, np.full(5, 0.1, np.float32), np.zeros(noises_shape, np.float32))


def test_diffuse_betas_must_be_one_dimensional():
    with pytest.raises(ValueError, match=_msg("diffuse", "betas") + r" must have 1 dimension"):
        forward.diffuse(X, np.full((5, 1), 0.1, np.float32), np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match=_msg("alpha_bars", "betas") + r" must have 1 dimension"):
        schedules.alpha_bars(np.float32(0.1))


def test_posterior_mean_mismatched_shapes():
    with pytest.raises(ValueError, match=r"posterior_mean: arguments `x0` and `x_t` must have the same shape, got \(3,\) and \(2, 3\)"):
        losses.posterior_mean(X, np.ones((2, 3), np.float32), 0.1, 0.5, 0.9)


@pytest.mark.parametrize("call,function,a,b", [
    (lambda: losses.mean_from_noise(X, np.ones(2), 0.1, 0.5), "mean_from_noise", "x_t", "eps"),
    (lambda: losses.mean_loss(X, np.ones(2), 0.1), "mean_loss", "mu_tilde", "mu_theta"),
    (lambda: losses.noise_loss(X, np.ones(2), 0.1, 0.9, 0.5, 0.1), "noise_loss", "eps", "eps_theta"),
    (lambda: losses.simple_loss(X, np.ones((3, 1))), "simple_loss", "eps", "eps_theta"),
])
def test_loss_mismatched_shapes(call, function, a, b):
    with pytest.raises(ValueError, match=rf"{function}: arguments `{a}` and `{b}` must have the same shape"):
        call()


def test_q_sample_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"q_sample: the shapes of `x0` \(3,\), `alpha_bar_t` \(\), `noise` \(4,\) cannot be broadcast"):
        forward.q_sample(X, 0.5, np.ones(4, np.float32))


def test_shape_checks_also_run_under_jit():
    with pytest.raises(ValueError, match=_msg("forward_step", "x_prev")):
        jax.jit(forward.forward_step)(X, 0.1, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=_msg("diffuse", "noises")):
        jax.jit(forward.diffuse)(X, np.full(5, 0.1, np.float32), np.zeros((5, 4), np.float32))


def test_wrong_number_of_arguments_names_the_signature():
    with pytest.raises(TypeError, match=r"forward_step\(x_prev, beta, noise\)"):
        forward.forward_step(X, 0.1)
    with pytest.raises(TypeError, match=r"q_sample\(x0, alpha_bar_t, noise\)"):
        forward.q_sample(X, 0.5, X, wrong=1)


# ------------------------------------------------------------------ not numbers


NOT_NUMBERS = {
    "forward_mean-x_prev-str": (lambda: forward.forward_mean("abc", 0.1), "forward_mean", "x_prev"),
    "forward_step-noise-str": (lambda: forward.forward_step(X, 0.1, "noise"), "forward_step", "noise"),
    "q_sample-x0-str": (lambda: forward.q_sample("x", 0.5, X), "q_sample", "x0"),
    "diffuse-x0-str": (lambda: forward.diffuse("x", np.full(3, 0.1, np.float32), np.zeros((3,), np.float32)), "diffuse", "x0"),
    "posterior_mean-x0-str": (lambda: losses.posterior_mean("a", X, 0.1, 0.5, 0.9), "posterior_mean", "x0"),
    "simple_loss-eps-str": (lambda: losses.simple_loss("a", "b"), "simple_loss", "eps"),
    "alpha_bars-betas-str": (lambda: schedules.alpha_bars("0.1 0.2"), "alpha_bars", "betas"),
    # checked scalar arguments given as strings
    "forward_mean-beta-str": (lambda: forward.forward_mean(X, "0.1"), "forward_mean", "beta"),
    "forward_variance-beta-str": (lambda: forward.forward_variance("0.1"), "forward_variance", "beta"),
    "q_sample-alpha_bar_t-str": (lambda: forward.q_sample(X, "half", X), "q_sample", "alpha_bar_t"),
    "linear_betas-beta_start-str": (lambda: schedules.linear_betas(10, "a"), "linear_betas", "beta_start"),
    "mean_loss-sigma2-str": (lambda: losses.mean_loss(X, X, "1"), "mean_loss", "sigma2"),
    # None (a forgotten return value passed on)
    "forward_mean-x_prev-None": (lambda: forward.forward_mean(None, 0.1), "forward_mean", "x_prev"),
}


@pytest.mark.parametrize("call,function,argument", list(NOT_NUMBERS.values()), ids=list(NOT_NUMBERS))
def test_strings_and_none_as_arrays(call, function, argument):
    with pytest.raises((TypeError, ValueError), match=rf"{function}[\s\S]*{argument}"):
        call()
