"""Figures of course_utils.plotting that are drawn from data: what they show must fit in their panels."""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from course_utils import plotting


def test_every_noise_arrow_ends_inside_its_panel():
    """Notebook 05, section 9: an arrow that starts near the panel's edge and points outwards was cut off by the
    density grid's limits. The panel now widens to hold every arrow's tip (exact and learned), and it still draws."""
    xs = ys = np.linspace(-1.0, 1.0, 20)
    grid = (xs, ys, np.exp(-(xs[None, :] ** 2 + ys[:, None] ** 2)))
    points = np.array([[0.9, 0.9], [-0.9, 0.0], [0.0, 0.0]])
    exact = np.array([[4.0, 2.0], [-8.0, 0.0], [0.1, 0.1]])      # tips at 1.4, 1.15 and -1.9, 0 (scale 8)
    learned = np.array([[0.0, 6.0], [0.0, 0.0], [0.0, -9.0]])    # tips at 0.9, 1.65 and 0, -1.125
    fig = plotting.plot_eps_fields({5: (points, exact, learned, 0.1)}, {5: grid}, "arrows")
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    tips = np.concatenate([points, points + exact / 8, points + learned / 8])
    assert x0 < tips[:, 0].min() and x1 > tips[:, 0].max() and y0 < tips[:, 1].min() and y1 > tips[:, 1].max()
    # arrows that fit already leave the grid's limits as they were
    fig2 = plotting.plot_eps_fields({5: (points * 0.1, exact * 0.01, learned * 0.01, 0.1)}, {5: grid}, "small")
    assert fig2.axes[0].get_xlim() == (-1.0, 1.0) and fig2.axes[0].get_ylim() == (-1.0, 1.0)
    fig.savefig(io.BytesIO(), format="png")
    plt.close("all")


def test_the_star_figure_draws_without_a_layout_warning():
    """Notebook 04's stars: tight_layout on a figure with a layout engine warned "The figure layout has changed"."""
    import warnings

    from course_utils import point_sets

    rng = np.random.default_rng(0)
    stars, labels = rng.normal(size=(6, 64, 2)), np.array([0, 0, 1, 1, 2, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with plt.rc_context({"figure.constrained_layout.use": True}):
            fig = point_sets.plot_stars(stars, labels, stars, labels, n_show=2, title="stars")
            fig.savefig(io.BytesIO(), format="png")
    plt.close("all")
