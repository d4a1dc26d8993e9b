r"""The terms of the variational bound, written with means and with noises.

With :math:`\alpha_t = 1 - \beta_t` and :math:`\bar\alpha_t = \prod_{s \le t}\alpha_s`,
the forward posterior is :math:`q(x_{t-1} \mid x_t, x_0) = \mathcal N(\tilde\mu_t, \tilde\beta_t I)`.
The losses here act on one example (any shape) and sum over all its
coordinates; use :func:`jax.vmap` for a batch.
"""

import jax.numpy as jnp

from . import _validate as v



@v.reference(beta_t=v.check_open_unit, alpha_bar_t=v.check_open_unit,
             alpha_bar_prev=v.check_unit_interval)
def posterior_mean(x0, x_t, beta_t, alpha_bar_t, alpha_bar_prev):
    r"""Mean of :math:`q(x_{t-1} \mid x_t, x_0)`:

    .. math::
        \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1 - \bar\alpha_t}\,x_0
        + \frac{\sqrt{\alpha_t}\,(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t}\,x_t

    ``x0`` and ``x_t`` have the same shape; the result has it too.
    """
    v.check_same_shape("posterior_mean", "x0", x0, "x_t", x_t)
    alpha_t = 1 - beta_t
    coef_x0 = jnp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t)
    coef_xt = jnp.sqrt(alpha_t) * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
    return coef_x0 * x0 + coef_xt * x_t


@v.reference(beta_t=v.check_open_unit, alpha_bar_t=v.check_open_unit,
             alpha_bar_prev=v.check_unit_interval)
def posterior_variance(beta_t, alpha_bar_t, alpha_bar_prev):
    r"""Variance of :math:`q(x_{t-1} \mid x_t, x_0)`: :math:`\tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\,\beta_t`."""
    return (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t


@v.reference(beta_t=v.check_open_unit, alpha_bar_t=v.check_open_unit)
def mean_from_noise(x_t, eps, beta_t, alpha_bar_t):
    r"""The mean of :math:`q(x_{t-1} \mid x_t, x_0)` written with :math:`x_t` and the noise ``eps`` in place of
    :math:`x_0` (Ho et al. 2020, eq. 11, with ``eps`` a noise prediction :math:`\epsilon_\theta`).

    ``x_t`` and ``eps`` have the same (any) shape, and so does the result; ``beta_t`` and ``alpha_bar_t`` are
    numbers or broadcast against ``x_t``.
    """
    v.check_same_shape("mean_from_noise", "x_t", x_t, "eps", eps)
    alpha_t = 1 - beta_t
    return (x_t - beta_t / jnp.sqrt(1 - alpha_bar_t) * eps) / jnp.sqrt(alpha_t)


@v.reference(sigma2=v.check_positive)
def mean_loss(mu_tilde, mu_theta, sigma2):
    r"""The KL term as a weighted squared error of means:
    :math:`\frac{1}{2\sigma_t^2}\,\lVert\tilde\mu_t - \mu_\theta\rVert^2` (a scalar).
    """
    v.check_same_shape("mean_loss", "mu_tilde", mu_tilde, "mu_theta", mu_theta)
    return jnp.sum((mu_tilde - mu_theta) ** 2) / (2 * sigma2)


@v.reference(beta_t=v.check_open_unit, alpha_t=v.check_open_unit,
             alpha_bar_t=v.check_open_unit, sigma2=v.check_positive)
def noise_loss(eps, eps_theta, beta_t, alpha_t, alpha_bar_t, sigma2):
    r"""The same KL term written with noises: :func:`noise_loss_weight` times
    :math:`\lVert\epsilon - \epsilon_\theta\rVert^2` (Ho et al. 2020, eq. 12). ``eps`` and ``eps_theta`` have the
    same (any) shape, the rest are numbers; a scalar.
    """
    v.check_same_shape("noise_loss", "eps", eps, "eps_theta", eps_theta)
    return noise_loss_weight.raw(beta_t, alpha_t, alpha_bar_t, sigma2) * simple_loss.raw(eps, eps_theta)


@v.reference(beta_t=v.check_open_unit, alpha_t=v.check_open_unit,
             alpha_bar_t=v.check_open_unit, sigma2=v.check_positive)
def noise_loss_weight(beta_t, alpha_t, alpha_bar_t, sigma2):
    r"""The weight :math:`\lambda_t` of the KL term written with noises, :math:`L_{t-1} = \lambda_t\,
    \lVert\epsilon - \epsilon_\theta\rVert^2 + C`, for a reverse step of variance ``sigma2`` :math:`= \sigma_t^2`
    (the factor in front of the squared error in Ho et al. 2020, eq. 12).

    The arguments are numbers or arrays that broadcast together; the result has their broadcast shape.
    """
    return beta_t**2 / (2 * sigma2 * alpha_t * (1 - alpha_bar_t))


@v.reference()
def simple_loss(eps, eps_theta):
    r"""The unweighted :math:`L_{simple} = \lVert\epsilon - \epsilon_\theta\rVert^2` (a scalar)."""
    v.check_same_shape("simple_loss", "eps", eps, "eps_theta", eps_theta)
    return jnp.sum((eps - eps_theta) ** 2)


# Losses for training a noise predictor on a batch (notebook 05): each is a mean over every element.


def l2_loss(eps, eps_theta):
    r"""Mean squared error :math:`\mathrm{mean}\,(\epsilon - \epsilon_\theta)^2` (:math:`L_{simple}` per coordinate)."""
    return jnp.mean((eps - eps_theta) ** 2)


def l1_loss(eps, eps_theta):
    r"""Mean absolute error :math:`\mathrm{mean}\,|\epsilon - \epsilon_\theta|` (its minimiser is the conditional *median* of the noise)."""
    return jnp.mean(jnp.abs(eps - eps_theta))


def huber_loss(eps, eps_theta, delta=1.0):
    r"""The Huber loss, quadratic for errors below ``delta`` and linear above, averaged over every element.

    .. math::
        h(r) = \tfrac12 r^2 \ (|r| \le \delta), \qquad \delta\,(|r| - \tfrac12\delta) \ (|r| > \delta)
    """
    r = jnp.abs(eps - eps_theta)
    return jnp.mean(jnp.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)))
