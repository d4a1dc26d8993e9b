"""course_utils.point_sets (the stars of notebook 04's optional section) against independent computations:
the outline by point-to-segment distances in numpy, the angular modes by numpy's FFT of the radius
resampled on a uniform grid of angles, the alignment by rotating stars by known angles; the model's
permutation equivariance, a short training run, the sampler's and the report's shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from course_utils import point_sets, schedules


def test_a_star_without_noise_lies_on_its_outline():
    arms, radius, depth, rotation = 5, 1.1, 0.4, 0.3
    points = np.asarray(point_sets.star(jax.random.key(0), 400, arms, radius, depth, rotation, 0.0))
    assert points.shape == (400, 2) and points.dtype == np.float32
    r, theta = np.hypot(points[:, 0], points[:, 1]), np.arctan2(points[:, 1], points[:, 0])
    np.testing.assert_allclose(r, radius * (1 + depth * np.cos(arms * (theta - rotation))), atol=1e-5)
    # The angles are stratified: one in each of 400 equal sectors.
    sector = np.floor(np.mod(theta, 2 * np.pi) / (2 * np.pi / 400)).astype(int)
    np.testing.assert_array_equal(np.sort(sector), np.arange(400))


def test_star_dataset_shapes_labels_radii_and_centres():
    sets, labels = point_sets.star_dataset(jax.random.key(1), 10, 48)
    assert sets.shape == (30, 48, 2) and labels.shape == (30,) and labels.dtype == jnp.int32
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 10))
    sets = np.asarray(point_sets.stars(jax.random.key(2), 200, 256, 3, noise=0.0))
    centres = sets.mean(axis=1)            # angles uniform: the mean of the points is near the centre
    radius = np.linalg.norm(sets - centres[:, None], axis=-1).mean(axis=1)
    low, high = point_sets.RADII
    assert np.all(np.abs(centres) < point_sets.SHIFT + 0.25) and centres.std(0).min() > point_sets.SHIFT / 3
    assert np.all(radius > low - 0.05) and np.all(radius < high + 0.05) and radius.std() > (high - low) / 5
    with pytest.raises(ValueError, match="stars: argument `n_stars`"):
        point_sets.stars(jax.random.key(0), 0, 10, 3)


def _dominant_mode_numpy(points, max_mode=point_sets.MAX_MODE):
    """The dominant angular mode of the radius by numpy's FFT: r(theta) resampled on 256 uniform angles."""
    centred = points - points.mean(0)
    r, theta = np.hypot(centred[:, 0], centred[:, 1]), np.arctan2(centred[:, 1], centred[:, 0])
    order = np.argsort(theta)
    grid = np.linspace(-np.pi, np.pi, 256, endpoint=False)
    resampled = np.interp(grid, theta[order], r[order], period=2 * np.pi)
    spectrum = np.abs(np.fft.rfft(resampled - resampled.mean()))
    return int(np.argmax(spectrum[2:max_mode + 1]) + 2)


@pytest.mark.parametrize("arms", [3, 4, 7, 9])
def test_the_arms_of_clean_stars_are_recovered(arms):
    sets = np.asarray(point_sets.stars(jax.random.key(arms), 8, 128, arms))
    found = np.asarray(point_sets.recovered_arms(sets))
    np.testing.assert_array_equal(found, arms)
    assert [_dominant_mode_numpy(s) for s in sets] == [arms] * 8
    # The coefficients are the formula's, computed in numpy.
    centred = sets[0] - sets[0].mean(0)
    r, theta = np.hypot(centred[:, 0], centred[:, 1]), np.arctan2(centred[:, 1], centred[:, 0])
    expected = [np.mean((r - r.mean()) * np.exp(-1j * k * theta)) for k in range(1, point_sets.MAX_MODE + 1)]
    np.testing.assert_allclose(point_sets.angular_modes(sets[0]), expected, atol=1e-5)


def test_noise_and_rings_are_not_stars():
    labels = jnp.repeat(jnp.arange(3), 30)
    noise = jax.random.normal(jax.random.key(2), (90, 64, 2))
    assert point_sets.arms_accuracy(noise, labels) < 0.5
    real, real_labels = point_sets.star_dataset(jax.random.key(3), 30, 64)
    assert point_sets.arms_accuracy(real, real_labels) == 1.0


def test_align_undoes_a_rotation_and_the_class_distance_sees_the_shape():
    star = point_sets.star(jax.random.key(4), 64, 5, 1.0, rotation=0.0, noise=0.0)
    angle = 0.77
    rotation = jnp.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    turned = star @ rotation + jnp.array([0.3, -0.2])            # turned by 0.77 rad and moved
    for aligned in (point_sets.align(turned, 5), point_sets.align(star, 5)):
        np.testing.assert_allclose(jnp.angle(point_sets.angular_modes(aligned)[4]), 0.0, atol=1e-4)
        np.testing.assert_allclose(jnp.mean(aligned, axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(point_sets.align(turned, 5), axis=1),
                               jnp.linalg.norm(star - star.mean(0), axis=1), atol=1e-4)
    # After alignment the tips lie at angles 0, 2 pi / 5, ...: the outermost point is at one of them.
    tip = point_sets.align(star, 5)[jnp.argmax(jnp.linalg.norm(star, axis=1))]
    assert abs(np.angle(np.exp(5j * float(jnp.arctan2(tip[1], tip[0]))))) < 0.3
    three = point_sets.stars(jax.random.key(5), 20, 64, 3)
    fives, others = point_sets.stars(jax.random.key(6), 20, 64, 5), point_sets.stars(jax.random.key(7), 20, 64, 5)
    same = point_sets.class_energy_distance(fives, others, 5)
    assert point_sets.class_energy_distance(fives, three, 5) > 5 * same
    assert point_sets.class_energy_distance(jax.random.normal(jax.random.key(8), fives.shape), others, 5) > 5 * same


def test_the_set_denoiser_is_permutation_equivariant():
    model = point_sets.SetDenoiser(hidden=32, summary=16, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(6), (3, 20, 2))
    t, y = jnp.array([1, 50, 100]), jnp.array([0, 2, -1])
    perm = jax.random.permutation(jax.random.key(7), 20)
    out = model(x, t, y)
    assert out.shape == (3, 20, 2) and out.dtype == jnp.float32
    np.testing.assert_allclose(model(x[:, perm], t, y), out[:, perm], atol=1e-5)
    np.testing.assert_allclose(model.summary(x[:, perm], t), model.summary(x, t), atol=1e-5)
    # ... and each point's output depends on the other points of its set (through the summary) and its label.
    moved = x.at[:, 0].add(1.0)
    assert np.abs(np.asarray(model(moved, t, y) - out)[:, 1:]).max() > 1e-4
    assert np.abs(np.asarray(model(x, t, jnp.array([1, 1, 1])) - out)).max() > 1e-4


def test_a_short_training_lowers_the_loss_and_sampling_gives_sets():
    schedule = schedules.make_schedule(schedules.linear_betas(20, 1e-4, 0.3))
    sets, labels = point_sets.star_dataset(jax.random.key(8), 30, 32)
    model = point_sets.SetDenoiser(hidden=32, summary=16, rngs=nnx.Rngs(1))
    losses = point_sets.train(model, sets, labels, schedule.alpha_bars, steps=120, key=jax.random.key(9),
                              batch_size=16, learning_rate=3e-3, progress=False)
    assert losses.shape == (120,) and np.all(np.isfinite(losses))
    assert losses[-40:].mean() < 0.8 * losses[:20].mean()
    samples = point_sets.sample(model, jax.random.key(10), jnp.array([0, 1, 2, 2]), schedule, n_points=32)
    assert samples.shape == (4, 32, 2) and np.all(np.isfinite(np.asarray(samples)))
    path = point_sets.sample(model, jax.random.key(10), jnp.array([0, 1]), schedule, n_points=32, trajectory=True)
    assert path.shape == (21, 2, 32, 2)


def test_star_quality_reports_every_class_with_its_spread():
    schedule = schedules.make_schedule(schedules.linear_betas(10, 1e-4, 0.5))
    model = point_sets.SetDenoiser(hidden=16, summary=8, rngs=nnx.Rngs(2))
    report = point_sets.star_quality(model, schedule, jax.random.key(11), n_per_class=3, n_keys=2, n_points=32)
    for name in ("accuracy", "energy", "floor", "noise"):
        assert report[name].shape == (2, 3)
    assert np.all(report["floor"] < report["noise"])
    assert report["samples"].shape == (9, 32, 2) and len(report["lines"]) == 4
    assert "3 arms" in report["lines"][0] and "+-" in report["lines"][0]
