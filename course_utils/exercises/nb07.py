"""Exercises of notebook 07 (scores, the probability-flow ODE, Langevin correction, flow matching).

The function arguments are stand-ins from :mod:`.parts`: the noise predictor of ``probability_flow_step`` and
``heun_step`` and the velocity of ``euler_flow_sample`` are small random MLPs (flax modules, passed as graph and
state), the scores of ``langevin_correct`` module-level functions (static). ``schedule`` is a
:class:`course_utils.schedules.Schedule` of numpy arrays; ``t`` and ``t_prev`` are int32 scalars, traced under jit
as inside ``lax.scan``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import schedules, scores
from ..grading import Exercise, Hint, register
from . import parts
from .common import array as _array, kept_trajectory, shape as _shape

# ---------------------------------------------------------------- score_from_eps


def _score_case(rng):
    s = _shape(rng)
    ab_shape = s if rng.uniform() < 0.5 else ()
    return _array(rng, s), np.asarray(rng.uniform(0.01, 0.99, size=ab_shape), np.float32)


register(Exercise(
    name="score_from_eps",
    reference=scores.score_from_eps,
    make_case=_score_case,
    edge_cases=[(np.linspace(-2, 2, 6).astype(np.float32), np.float32(0.9999)),
                (np.linspace(-2, 2, 6).astype(np.float32), np.float32(1e-4)),
                (np.ones((2, 3), np.float32), np.array([0.1, 0.5, 0.9], np.float32))],
    rtol=1e-5, atol=1e-6,
    hints=[
        Hint(lambda eps, ab: eps / jnp.sqrt(1 - ab), "the score points against the noise: score = -eps / sqrt(1 - alpha_bar_t) "
                                                     "(the noise moved x_t away from the data; the score points back)."),
        Hint(lambda eps, ab: -eps / (1 - ab), "divide by the standard deviation of the noise, sqrt(1 - alpha_bar_t), "
                                              "not by its variance."),
        Hint(lambda eps, ab: -eps / jnp.sqrt(ab), "the noise in x_t has standard deviation sqrt(1 - alpha_bar_t): divide by "
                                                  "that, not by sqrt(alpha_bar_t)."),
        Hint(lambda eps, ab: -eps * jnp.sqrt(1 - ab), "eps = -sqrt(1 - alpha_bar_t) * score, so score = -eps / sqrt(1 - alpha_bar_t): "
                                                      "divide, do not multiply."),
    ],
))

# ---------------------------------------------------------------- probability_flow_step and heun_step


@functools.lru_cache(maxsize=None)
def _eps_model(seed):
    """A stand-in noise predictor model(x, t) (three of them, made once)."""
    return parts.TrialMLP(size=2, hidden=32, rngs=nnx.Rngs(int(seed) % 3))


def _schedule(T, beta_end):
    return schedules.Schedule(*(np.asarray(a) for a in schedules.make_schedule(
        np.linspace(1e-3, beta_end, T).astype(np.float32))))


def _ode_case(rng):
    """A step t -> t_prev: to 0 (one case in four), to t - 1 (one in two), or strided."""
    T = int(rng.choice([10, 100]))
    t = int(rng.integers(2, T + 1))
    kind = rng.uniform()
    t_prev = 0 if kind < 0.25 else t - 1 if kind < 0.75 else int(rng.integers(1, t))
    return (_eps_model(int(rng.integers(3))), _array(rng, (8, 2)), np.int32(t), np.int32(t_prev),
            _schedule(T, float(rng.uniform(0.05, 0.3)) * 10 / np.sqrt(T)))


def _ode_edge_cases():
    rng = np.random.default_rng(7071)
    schedule = _schedule(100, 0.08)
    return [(_eps_model(i), _array(rng, (8, 2)), np.int32(t), np.int32(t_prev), schedule)
            for i, (t, t_prev) in enumerate(((1, 0), (100, 0), (100, 99), (50, 49), (100, 60), (30, 1)))]


def _alpha_bars(schedule, t, t_prev, shift=1, wrap=False):
    ab = jnp.asarray(schedule.alpha_bars)
    last = ab.shape[0] - 1
    ab_t = ab[jnp.clip(t - shift, 0, last)]
    if wrap:                       # alpha_bars[t_prev - 1] with t_prev = 0 is the last entry
        return ab_t, ab[t_prev - 1]
    return ab_t, jnp.where(t_prev > 0, ab[jnp.clip(t_prev - shift, 0, last)], 1.0)


def _slope(eps_fn, x, t, ab, sign=-1.0, power=0.5, half=0.5):
    eps = eps_fn(x, jnp.full((x.shape[0],), t))
    return half * (x + sign * eps / (1 - ab) ** power)


def _euler_with(shift=1, wrap=False, sign=-1.0, power=0.5, half=0.5, step="log", direction=1.0):
    def step_fn(eps_fn, x_t, t, t_prev, schedule):
        ab_t, ab_prev = _alpha_bars(schedule, t, t_prev, shift, wrap)
        h = jnp.log(ab_prev / ab_t) if step == "log" else ab_prev - ab_t
        return x_t + direction * h * _slope(eps_fn, x_t, t, ab_t, sign, power, half)
    return step_fn


register(Exercise(
    name="probability_flow_step",
    reference=scores.probability_flow_step,
    make_case=_ode_case,
    edge_cases=_ode_edge_cases,
    module_argnums=(0,),
    rtol=1e-4, atol=1e-5,
    hints=[
        Hint(_euler_with(sign=+1.0), "the score is -eps / sqrt(1 - alpha_bar_t): the slope is (x - eps / sqrt(1 - alpha_bar_t)) / 2, "
                                     "with a minus sign before the noise."),
        Hint(_euler_with(half=1.0), "the slope of the ODE in log alpha_bar is one half of (x + score): the factor 1/2 is missing."),
        Hint(_euler_with(power=1.0), "the score divides the noise by sqrt(1 - alpha_bar_t), not by 1 - alpha_bar_t."),
        Hint(_euler_with(step="alpha_bar"), "the time of this ODE is log alpha_bar: the step is h = log(alpha_bar_prev / alpha_bar_t), "
                                            "not the difference alpha_bar_prev - alpha_bar_t."),
        Hint(_euler_with(direction=-1.0), "the step goes towards the data, h = log(alpha_bar_prev / alpha_bar_t) > 0: yours has "
                                          "the opposite sign (it adds noise)."),
        Hint(_euler_with(shift=0), "off by one: the alpha_bar of step t is alpha_bars[t - 1] (time steps count from 1), "
                                   "and the same for t_prev."),
        Hint(_euler_with(wrap=True), "t_prev = 0 means alpha_bar = 1 (the clean data): alpha_bars[t_prev - 1] with t_prev = 0 "
                                     "wraps around to the last entry, alpha_bar_T. Use jnp.where."),
    ],
))


def _heun_with(second_at="t_prev", average=True, wrap=False):
    """Heun's step with one slip; ``wrap``: "all" (alpha_bars[t_prev - 1] everywhere, no Euler step at t_prev = 0) or
    "second" (h right, but the second slope taken at t_prev = 0 with alpha_bars[-1], no Euler step)."""
    def step_fn(eps_fn, x_t, t, t_prev, schedule):
        ab_t, ab_prev = _alpha_bars(schedule, t, t_prev, wrap=wrap == "all")
        h = jnp.log(ab_prev / ab_t)
        slope = _slope(eps_fn, x_t, t, ab_t)
        x_euler = x_t + h * slope
        if wrap:
            t2, ab2 = t_prev, jnp.asarray(schedule.alpha_bars)[t_prev - 1]
        elif second_at == "t":
            t2, ab2 = t, ab_t
        else:
            t2 = jnp.maximum(t_prev, 1)
            ab2 = jnp.asarray(schedule.alpha_bars)[t2 - 1]
        slope2 = _slope(eps_fn, x_euler, t2, ab2)
        heun = x_t + (0.5 * h * (slope + slope2) if average else h * slope2)
        return heun if wrap else jnp.where(t_prev > 0, heun, x_euler)
    return step_fn


register(Exercise(
    name="heun_step",
    reference=scores.heun_step,
    make_case=_ode_case,
    edge_cases=_ode_edge_cases,
    module_argnums=(0,),
    rtol=1e-4, atol=1e-5,
    depends_on=("probability_flow_step",),
    hints=[
        Hint(_euler_with(), "that is the Euler step: Heun's step evaluates the slope a second time, at the Euler "
                            "prediction and t_prev, and moves with the average of the two slopes."),
        Hint(_heun_with(second_at="t"), "evaluate the second slope at the end of the step: the Euler prediction at time t_prev "
                                        "(its noise prediction and alpha_bar_prev), not at time t."),
        Hint(_heun_with(average=False), "move with the average of the two slopes, (f(x_t, t) + f(x_euler, t_prev)) / 2, not with "
                                        "the second slope alone."),
        Hint(_heun_with(wrap="all"), "the step to t_prev = 0 is the Euler step: at alpha_bar_0 = 1 there is no noise to predict "
                                     "(and alpha_bars[t_prev - 1] wraps around to alpha_bar_T). Use jnp.where(t_prev > 0, ...)."),
        Hint(_heun_with(wrap="second"), "at t_prev = 0 return the Euler step: the second slope would need a noise prediction at "
                                        "alpha_bar_0 = 1, and yours takes it at alpha_bars[t_prev - 1] = alpha_bar_T. "
                                        "Use jnp.where(t_prev > 0, heun, euler)."),
    ],
))

# ---------------------------------------------------------------- langevin_correct


def _langevin_case(rng):
    s = [(8, 2), (5,), (3, 4)][rng.integers(3)]
    score_fn = (parts.trial_score_a, parts.trial_score_b)[rng.integers(2)]
    return score_fn, _array(rng, s), np.float32(rng.uniform(1e-3, 0.5)), _array(rng, s)


def _langevin_with(noise=lambda d: jnp.sqrt(2 * d), drift=lambda d: d):
    def correct(score_fn, x, step_size, z):
        return x + drift(step_size) * score_fn(x) + noise(step_size) * z
    return correct


register(Exercise(
    name="langevin_correct",
    reference=scores.langevin_correct,
    make_case=_langevin_case,
    edge_cases=[(parts.trial_score_a, np.zeros((4, 2), np.float32), np.float32(1e-4), np.ones((4, 2), np.float32)),
                (parts.trial_score_b, np.linspace(-1, 1, 6).astype(np.float32), np.float32(1.0), np.zeros(6, np.float32))],
    static_argnums=(0,),
    rtol=1e-5, atol=1e-6,
    hints=[
        Hint(_langevin_with(noise=lambda d: jnp.sqrt(d)), "the noise has standard deviation sqrt(2 * step_size): the factor 2 "
                                                          "inside the square root is missing."),
        Hint(_langevin_with(noise=lambda d: 2 * d), "the noise is sqrt(2 * step_size) * z: the square root is missing "
                                                    "(2 * step_size is its variance)."),
        Hint(_langevin_with(drift=lambda d: -d), "move up the score, x + step_size * score(x): the score already points "
                                                 "towards higher density."),
        Hint(_langevin_with(noise=lambda d: 0.0 * d), "the noise term sqrt(2 * step_size) * z is missing: without it the "
                                                      "step climbs to a mode instead of sampling."),
    ],
))

# ---------------------------------------------------------------- flow_matching_loss


@functools.lru_cache(maxsize=None)
def _velocity_model(seed):
    """A stand-in velocity model(x, s) whose output depends strongly on s in [0, 1]."""
    return parts.TimeSensitive(_eps_model(seed))


def _flow_loss_case(rng):
    n = 8
    return (_velocity_model(int(rng.integers(3))), _array(rng, (n, 2)), _array(rng, (n, 2)) * 0.5 + 1.0,
            np.asarray(rng.uniform(0, 1, n), np.float32))


def _flow_loss_with(path="straight", target=lambda x0, x1: x1 - x0, reduce=jnp.mean, model_time=lambda t: t):
    def loss(model, x0, x1, t):
        s = t[:, None]
        x_s = (1 - s) * x0 + s * x1 if path == "straight" else s * x0 + (1 - s) * x1
        return reduce((model(x_s, model_time(t)) - target(x0, x1)) ** 2)
    return loss


register(Exercise(
    name="flow_matching_loss",
    reference=scores.flow_matching_loss,
    make_case=_flow_loss_case,
    edge_cases=lambda: [(_velocity_model(0), np.zeros((4, 2), np.float32), np.ones((4, 2), np.float32),
                         np.array([0.0, 0.0, 1.0, 1.0], np.float32))],
    module_argnums=(0,),
    rtol=1e-4, atol=1e-6,
    hints=[
        Hint(_flow_loss_with(target=lambda x0, x1: x0 - x1), "the velocity points from the noise to the data: the target is "
                                                             "x1 - x0, not x0 - x1."),
        Hint(_flow_loss_with(path="swapped"), "the path starts at the noise: x_t = (1 - t) x0 + t x1 is the noise x0 at t = 0 "
                                              "and the data x1 at t = 1; yours runs the other way."),
        Hint(_flow_loss_with(reduce=jnp.sum), "average the squared errors (jnp.mean) instead of summing them."),
        Hint(_flow_loss_with(model_time=lambda t: 1 - t), "call the model with the time t of x_t, not 1 - t."),
    ],
))

# ---------------------------------------------------------------- euler_flow_sample


def _flow_sample_case(rng):
    return _eps_model(int(rng.integers(3))), _array(rng, (8, 2)), int(rng.choice([1, 4, 10]))


def _flow_sample_with(time="start", scale=True, keep="noise first"):
    def run(velocity_fn, x, n_steps):
        ds = 1.0 / n_steps
        times = {"start": jnp.arange(n_steps) * ds, "end": (jnp.arange(n_steps) + 1) * ds,
                 "reversed": 1.0 - jnp.arange(n_steps) * ds}[time]

        def body(y, s):
            y_next = y + (ds if scale else 1.0) * velocity_fn(y, jnp.full((y.shape[0],), s))
            return y_next, (y if keep == "no x_0" else y_next)

        last, xs = jax.lax.scan(body, x, times)
        return kept_trajectory(keep, x, last, xs)
    return run


register(Exercise(
    name="euler_flow_sample",
    reference=scores.euler_flow_sample,
    make_case=_flow_sample_case,
    edge_cases=lambda: [(_eps_model(1), np.zeros((4, 2), np.float32), 2), (_eps_model(2), np.ones((3, 2), np.float32), 25)],
    module_argnums=(0,),
    static_argnums=(2,),
    rtol=1e-4, atol=1e-5,
    requires=("scan", "while"),
    requires_message="loop over the steps with jax.lax.scan (a Python for loop unrolls every step into the compiled program).",
    hints=[
        Hint(_flow_sample_with(time="end"), "step k starts at time s_k = k / n_steps (0 for the first step) and evaluates "
                                            "the velocity there; yours uses the time at the end of the step."),
        Hint(_flow_sample_with(time="reversed"), "flow matching's time runs forwards, from the noise at s = 0 to the data at "
                                                 "s = 1 (jnp.arange(n_steps) / n_steps)."),
        Hint(_flow_sample_with(scale=False), "each Euler step moves by the step size times the velocity, x + (1 / n_steps) * v(x, s)."),
        Hint(_flow_sample_with(keep="x_0 only"), "return the whole trajectory (shape (n_steps + 1, N, 2)), not only the final "
                                                 "samples: scan's second output collects one entry per step."),
        Hint(_flow_sample_with(keep="no x_T"), "the trajectory starts with the noise itself: put x in front of the states that "
                                               "the scan collects (jnp.concatenate([x[None], xs]))."),
    ],
))
