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


def test_every_noise_arrow_panel_has_the_same_limits_and_a_background_under_them():
    """Notebook 05, section 9 (fresh review): widening each panel for its own arrows gave the panels different ranges
    and left the density underlay ending short of the widened limits. Every panel now has the union of the limits, a
    background of the density's lowest level beyond the grid, the arrows' scale in the legend, and the MSE named as
    the error over q(x_t)."""
    xs = ys = np.linspace(-1.0, 1.0, 20)
    grid = (xs, ys, np.exp(-(xs[None, :] ** 2 + ys[:, None] ** 2)))
    points = np.array([[0.9, 0.9], [-0.9, 0.0]])
    wide = np.array([[8.0, 8.0], [-8.0, 0.0]])          # tips at 1.9, 1.9 and -1.9, 0
    small = 0.01 * wide
    fig = plotting.plot_eps_fields({5: (points, wide, wide, 0.1), 25: (points, small, small, 0.2)}, {5: grid, 25: grid},
                                   "arrows")
    panels = fig.axes[:2]
    assert panels[0].get_xlim() == panels[1].get_xlim() and panels[0].get_ylim() == panels[1].get_ylim()
    assert panels[1].get_xlim()[1] > 1.9 and panels[1].get_xlim()[0] < -1.9
    for ax in panels:
        lowest = ax.collections[0].get_facecolor()[0]    # the contour set's lowest level
        assert np.allclose(matplotlib.colors.to_rgba(ax.get_facecolor()), lowest)
        assert "q(x_t)" in ax.get_title()
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert len(labels) == 2 and all("/ 8" in label for label in labels)
    fig.savefig(io.BytesIO(), format="png")
    plt.close("all")


def test_the_trajectory_figure_title_stands_above_the_panel_titles():
    """Notebook 05, section 8.1 (fresh review): at 3.6 inches high the figure's title ran over the panels' titles."""
    xs = ys = np.linspace(-3.0, 3.0, 50)
    grid = (xs, ys, np.exp(-(xs[None, :] ** 2 + ys[:, None] ** 2)))
    estimated = {t: grid for t in (50, 40, 30, 20, 10)}
    with plt.rc_context({"figure.dpi": 100}):
        fig = plotting.plot_trajectory_on_densities(np.zeros((51, 2)), estimated, grid, 50)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        bottom_of_title = fig._suptitle.get_window_extent(renderer).y0
        assert all(ax.title.get_window_extent(renderer).y1 < bottom_of_title for ax in fig.axes)
    plt.close("all")


def test_the_trajectory_legend_names_no_single_step_for_the_marker_of_every_panel():
    """Notebook 05, section 8.1 (fresh read 3): the one legend took the first panel's label, "x_50, the chain now",
    for the dot that marks x_t at a different t in every panel."""
    xs = ys = np.linspace(-3.0, 3.0, 20)
    grid = (xs, ys, np.exp(-(xs[None, :] ** 2 + ys[:, None] ** 2)))
    fig = plotting.plot_trajectory_on_densities(np.zeros((51, 2)), {t: grid for t in (50, 30, 10)}, grid, 50)
    labels = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    labels += [text.get_text() for ax in fig.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
    marker = [label for label in labels if "chain" in label]
    assert marker and not any(f"x_{{{t}}}" in label for label in marker for t in (50, 30, 10)), labels
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
