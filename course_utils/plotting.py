"""Every figure type the notebooks draw. Each function returns its matplotlib Figure."""

import matplotlib.pyplot as plt
import numpy as np

from . import schedules


def _plane(ax, limit, y_label=True):
    """A square view of the plane, [-limit, limit] on both axes, labelled x_1 (and x_2)."""
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    if y_label:
        ax.set_ylabel("$x_2$")


def plot_schedules(betas_by_name: dict):
    r"""Three panels side by side: :math:`\beta_t`, :math:`\bar\alpha_t` and the signal-to-noise ratio (log scale)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for name, betas in betas_by_name.items():
        betas = np.asarray(betas)
        t = np.arange(1, len(betas) + 1)
        alpha_bar = np.asarray(schedules.alpha_bars(betas))
        axes[0].semilogy(t, betas, label=name)
        axes[1].plot(t, alpha_bar, label=name)
        axes[2].semilogy(t, np.asarray(schedules.signal_to_noise(betas)), label=name)
    titles = [r"noise added per step $\beta_t$ (log scale)", r"signal kept $\bar\alpha_t$",
              r"signal-to-noise ratio $\bar\alpha_t / (1 - \bar\alpha_t)$"]
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("time step $t$")
    axes[0].set_ylabel(r"$\beta_t$")
    axes[1].set_ylabel(r"$\bar\alpha_t$")
    axes[2].set_ylabel("SNR")
    axes[0].legend()
    return fig


def plot_trajectories(xs, title="forward trajectories", ax=None):
    """Lines of :math:`x_t` against t, one per sample; ``xs`` has shape ``(T + 1, n)``."""
    xs = np.asarray(xs)
    fig, ax = _figure_and_axes(ax, (7, 3.5))
    ax.plot(np.arange(xs.shape[0]), xs, lw=1.2)
    ax.set_xlabel("time step $t$")
    ax.set_ylabel("$x_t$")
    ax.set_title(title)
    return fig


def plot_point_clouds(xs, steps, colour=None, title=None, limit=None):
    """Scatter plots of 2D points at several time steps; ``xs[t]`` has shape ``(n, 2)``.

    ``colour`` (shape ``(n,)``) colours each point by where it started.
    """
    xs = np.asarray(xs)
    limit = limit or max(3.0, float(np.abs(xs[list(steps)]).max()))
    fig, axes = plt.subplots(1, len(steps), figsize=(2.6 * len(steps), 2.9), sharex=True, sharey=True)
    for ax, t in zip(np.atleast_1d(axes), steps):
        ax.scatter(xs[t, :, 0], xs[t, :, 1], s=2, alpha=0.7, **_colours(colour))
        ax.set_title(f"$t = {t}$")
        _plane(ax, limit, y_label=False)
    np.atleast_1d(axes)[0].set_ylabel("$x_2$")
    if title:
        fig.suptitle(title)
    return fig


def plot_images(images, steps, title=None):
    """Grey-scale images at several time steps; ``images[t]`` has shape ``(H, W)``."""
    images = np.asarray(images)
    fig, axes = plt.subplots(1, len(steps), figsize=(1.9 * len(steps), 2.3))
    for ax, t in zip(np.atleast_1d(axes), steps):
        ax.imshow(images[t], cmap="gray", vmin=-2.5, vmax=2.5)
        ax.set_title(f"$t = {t}$")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    if title:
        fig.suptitle(title)
    return fig


def plot_histograms(samples: dict, normal=None, title=None, xlabel="$x$", ax=None, bins=100):
    """Overlaid density histograms of 1D samples; ``normal=(mean, std)`` adds that Gaussian's density."""
    fig, ax = _figure_and_axes(ax, (6, 3.5))
    for label, values in samples.items():
        ax.hist(np.asarray(values).ravel(), bins=bins, density=True, histtype="step", lw=1.5, label=label)
    if normal is not None:
        mean, std = normal
        grid = np.linspace(mean - 4 * std, mean + 4 * std, 400)
        density = np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))
        ax.plot(grid, density, "k--", lw=1, label=f"$\\mathcal{{N}}({mean:g}, {std:g}^2)$")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if title:
        ax.set_title(title)
    ax.legend()
    return fig


def plot_timings(seconds_by_name: dict, title="time per call (lower is better)", factors=None):
    """Horizontal bars of run times, each labelled with its speed-up: over the slowest, or ``factors[name]`` when
    given (the factors a cell prints, so that the figure and the printed lines show the same numbers)."""
    names = list(seconds_by_name)
    times = np.array([seconds_by_name[n] for n in names]) * 1e3
    factors = [times.max() / ms for ms in times] if factors is None else [float(factors[n]) for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(names) + 1.2))
    bars = ax.barh(names, times, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log scale)")
    ax.set_title(title)
    for bar, ms, factor in zip(bars, times, factors):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {ms:.3g} ms ({factor:.1f}x)", va="center")
    ax.set_xlim(times.min() / 2, times.max() * 20)
    return fig


def plot_timing_curves(sizes, seconds_by_name: dict, xlabel="dimension", title="time per call", spread=None):
    """Run time against problem size, one line per method; ``spread[name] = (low, high)`` (arrays like the
    times) draws error bars from ``low`` to ``high``, for example the range over repeated rounds."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, seconds in seconds_by_name.items():
        seconds = np.asarray(seconds)
        if spread is not None and name in spread:
            low, high = (np.asarray(a) for a in spread[name])
            ax.errorbar(sizes, seconds * 1e6, yerr=[(seconds - low) * 1e6, (high - seconds) * 1e6], fmt="o-",
                        capsize=3, label=name)
        else:
            ax.plot(sizes, seconds * 1e6, "o-", label=name)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("microseconds per call (log scale)")
    ax.set_title(title)
    ax.legend()
    return fig


def _colours(colour):
    """Scatter keywords: colour each point by ``colour`` (values in [0, 1]) when given."""
    return {} if colour is None else {"c": np.asarray(colour), "cmap": "viridis", "vmin": 0, "vmax": 1}


def _figure_and_axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


# ---------------------------------------------------------------- notebook 04: points in 2D

def plot_point_sets(sets: dict, title=None, limit=2.0, size=2.8):
    """One scatter panel per entry of ``sets``: {panel title: points} or {panel title: (points, colour)}."""
    fig, axes = plt.subplots(1, len(sets), figsize=(size * len(sets), size + 0.4), squeeze=False)
    for ax, (name, value) in zip(axes[0], sets.items()):
        points, colour = value if isinstance(value, tuple) else (value, None)
        points = np.asarray(points)
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.6, **_colours(colour))
        ax.set_title(name, fontsize=10)
        _plane(ax, limit, y_label=False)
    axes[0][0].set_ylabel("$x_2$")
    if title:
        fig.suptitle(title)
    return fig


def plot_samples(samples, data, title, ax=None, limit=2.0):
    """Generated points (orange) over the data (grey), with ``title`` (put the quality number there).

    The key (grey: data, orange: samples) stands in the x axis's label, under the panel and off the points, where
    every layout makes room for it (a legend anchored outside the axes was drawn over the next row's titles)."""
    fig, ax = _figure_and_axes(ax, (4, 4))
    data, samples = np.asarray(data), np.asarray(samples)
    ax.scatter(data[:, 0], data[:, 1], s=1, c="0.75", label="data")
    ax.scatter(samples[:, 0], samples[:, 1], s=1, c="tab:orange", alpha=0.6, label="samples")
    _plane(ax, limit)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("$x_1$\n(grey: data, orange: samples)", fontsize=9)
    return fig


def plot_paths(paths, data, title, limit=2.5):
    """Reverse-process paths of single points (``paths``: (T + 1, k, 2), from x_T to x_0) over the data (left), and
    their first coordinate against the time step (right), which shows when each path takes its side."""
    paths, data = np.asarray(paths), np.asarray(data)
    fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    ax.scatter(data[:, 0], data[:, 1], s=1, c="0.8", label="data")
    colours = plt.cm.tab10(np.arange(paths.shape[1]) % 10)
    steps = np.arange(paths.shape[0] - 1, -1, -1)          # index i holds step T - i
    for k in range(paths.shape[1]):
        ax.plot(paths[:, k, 0], paths[:, k, 1], "-", lw=0.8, color=colours[k], alpha=0.8)
        ax.plot(paths[-1, k, 0], paths[-1, k, 1], "o", ms=5, color=colours[k])
        ax_t.plot(steps, paths[:, k, 0], "-", lw=0.9, color=colours[k], alpha=0.8)
    ax.plot(paths[0, :, 0], paths[0, :, 1], "k*", ms=12, label="start $x_T$")
    _plane(ax, limit)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right")
    ax_t.axhline(0, color="0.5", lw=0.8, ls="--")
    ax_t.invert_xaxis()
    ax_t.set(xlabel="time step $t$ (the sampler runs from left to right)", ylabel="first coordinate",
             title="the same paths against time: the side each one takes, and when")
    ax_t.title.set_fontsize(10)
    return fig


def plot_losses(losses, title="training loss", window=100):
    """The loss of every training step (faint) and its running mean over ``window`` steps."""
    losses = np.asarray(losses)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(losses, lw=0.5, alpha=0.3, label="every step")
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(losses)), smooth, lw=1.5, label=f"mean of {window} steps")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return fig


def plot_image_grid(images, titles=None, title=None, vmin=-1.5, vmax=1.5, size=1.6):
    """A row of small grey-scale images (e.g. 3x3), each with its own title; ``size``: inches per image."""
    images = np.asarray(images)
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size + 0.6), squeeze=False, layout="constrained")
    for i, (ax, image) in enumerate(zip(axes[0], images)):
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def animate_points(xs, colour=None, limit=2.5, frames=50, interval=80, title_of=None):
    """An animation of points moving through the reverse process; ``xs``: (T + 1, N, 2) from x_T to x_0.

    ``title_of(i)`` gives the title of the frame that shows ``xs[i]`` (default: "reverse process, t = T - i").
    Returns a matplotlib ``FuncAnimation``; in a notebook show it with
    ``IPython.display.HTML(anim.to_jshtml())``.
    """
    from matplotlib import animation

    xs = np.asarray(xs)
    steps = np.unique(np.linspace(0, xs.shape[0] - 1, frames).astype(int))
    fig, ax = plt.subplots(figsize=(4, 4))
    dots = ax.scatter(xs[0, :, 0], xs[0, :, 1], s=2, **_colours(colour))
    _plane(ax, limit)
    title = ax.set_title("")
    T = xs.shape[0] - 1
    if title_of is None:
        def title_of(i):
            return f"reverse process, $t = {T - i}$"

    def draw(i):
        dots.set_offsets(xs[steps[i]])
        title.set_text(title_of(steps[i]))
        return dots, title

    anim = animation.FuncAnimation(fig, draw, frames=len(steps), interval=interval, blit=False)
    plt.close(fig)
    return anim


# ---------------------------------------------------------------- notebook 03: the reverse process in 1D


def add_band(ax, steps, mean, std, label=r"mean $\pm$ 2 std of $q(x_t)$", colour="0.5", mean_label=r"mean of $q(x_t)$"):
    """Shade ``mean`` ± 2 ``std`` against the time steps ``steps`` (arrays of the same length) on ``ax``, and draw
    ``mean`` dashed (with ``mean_label`` in the legend)."""
    steps, mean, std = (np.asarray(a, np.float64) for a in (steps, mean, std))
    ax.fill_between(steps, mean - 2 * std, mean + 2 * std, color=colour, alpha=0.2, lw=0, label=label)
    ax.plot(steps, mean, color=colour, lw=1, ls="--", label=mean_label)
    return ax


def plot_reverse_paths(paths, title="reverse trajectories", ax=None, band=None, last=None, linestyle="-", label=None):
    r"""Lines of :math:`x_t` drawn from :math:`t = T` (left) to :math:`t = 0` (right).

    ``paths`` has shape ``(T + 1, n)`` with ``paths[t]`` = :math:`x_t`;
    ``band=(mean, std)`` (each of shape ``(T + 1,)``) shades where
    :math:`x_t` should lie (see :func:`add_band`). Path ``i`` is always
    drawn in colour ``C{i}``, so that two calls on the same axes (say solid
    and ``linestyle="--"``, with a ``label`` each) pair up path by path.
    ``last=k`` shows only the last ``k`` steps, :math:`t = k..0`.
    """
    paths = np.asarray(paths)
    fig, ax = _figure_and_axes(ax, (7, 3.5))
    drawn_before = bool(ax.lines)
    steps = np.arange(paths.shape[0])
    if band is not None:
        add_band(ax, steps, *band)
    for i in range(paths.shape[1]):
        ax.plot(steps, paths[:, i], color=f"C{i % 10}", ls=linestyle, lw=1.2, label=label if i == 0 else None)
    ax.set_xlim(steps[-1] if last is None else last, 0)
    if last is not None:
        shown = paths[: last + 1]
        pad = 0.05 * (shown.max() - shown.min())
        low, high = shown.min() - pad, shown.max() + pad
        if drawn_before:  # a second set of paths on the same axes: show both
            low, high = min(low, ax.get_ylim()[0]), max(high, ax.get_ylim()[1])
        ax.set_ylim(low, high)
    ax.set_xlabel(r"time step $t$ (the reverse process runs from $T$ to $0$)")
    ax.set_ylabel("$x_t$")
    ax.set_title(title)
    if band is not None or label is not None:
        ax.legend(loc="upper left")
    return fig


def _normal_density(grid, mean, std):
    return np.exp(-0.5 * ((grid - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))


def plot_marginals(samples_by_step: dict, normals: dict, title=None, bins=120, normal_label="forward marginal $q(x_t)$"):
    r"""One panel per time step: density histograms of several sample sets against the Gaussian they should follow.

    ``samples_by_step`` maps a step ``t`` to ``{label: samples}``; ``normals``
    maps ``t`` to ``(mean, std)`` of the Gaussian drawn as a grey area. One
    legend, under the panels, serves them all.
    """
    steps = list(samples_by_step)
    fig, axes = plt.subplots(1, len(steps), figsize=(3.4 * len(steps), 3.5), layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, t in zip(axes, steps):
        mean, std = (float(v) for v in normals[t])
        grid = np.linspace(mean - 4 * std, mean + 4 * std, 400)
        density = _normal_density(grid, mean, std)
        ax.fill_between(grid, density, color="0.82", lw=0, label=normal_label)
        top = density.max()
        for i, (label, values) in enumerate(samples_by_step[t].items()):  # thinner lines on top: all stay visible
            heights, _, _ = ax.hist(np.asarray(values).ravel(), bins=bins, range=(grid[0], grid[-1]), density=True,
                                    histtype="step", lw=2.4 if i == 0 else 1.2, label=label)
            top = max(top, heights.max())
        ax.set_ylim(0, 1.1 * top)
        ax.set_title(f"$t = {t}$: $\\mathcal{{N}}({mean:.3g}, {std:.3g}^2)$")
        ax.set_xlabel(f"$x_{{{t}}}$")
    axes[0].set_ylabel("density")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(x, panels: dict, xlabel="time step $t$", title=None, logx=False, styles=None):
    r"""Panels of lines side by side. ``panels`` maps a panel title to ``(ylabel, {label: y})``.

    ``styles`` maps a line label to matplotlib keyword arguments (e.g. ``{"exact": {"color": "k"}}``).
    A label that appears in several panels gets the same colour in each.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 3.6))
    axes = np.atleast_1d(axes)
    colours = {}
    for ax, (panel_title, (ylabel, lines)) in zip(axes, panels.items()):
        for label, y in lines.items():
            style = dict((styles or {}).get(label, {}))
            style.setdefault("color", colours.setdefault(label, f"C{len(colours)}"))
            ax.plot(np.asarray(x), np.asarray(y), label=label, **style)
        if logx:
            ax.set_xscale("log")
        ax.set_title(panel_title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_errorbars(x, values_by_label: dict, yerr, reference=None, reference_label="target", xlabel="", ylabel="",
                   title=None, logx=False, colours=None):
    """Measured values against ``x`` with error bars ``yerr`` (a number or an array), one line per label.

    ``reference`` draws a dashed horizontal line (the value the measurements aim at);
    ``colours`` maps a label to a colour.
    """
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, (label, values) in enumerate(values_by_label.items()):
        ax.errorbar(x, values, yerr=yerr, marker="o", ms=4, capsize=3, lw=1.4, label=label,
                    color=(colours or {}).get(label, f"C{i}"))
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=reference_label)
    if logx:
        ax.set_xscale("log")
        ax.set_xticks(list(x), [str(v) for v in x])
        ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return fig


# ---------------------------------------------------------------- notebook 05: guided diffusion on two pixels

_PIXEL_EXTENT = (-1.6, 1.6, -1.6, 1.6)


def true_density_grid(density_fn, extent=_PIXEL_EXTENT, size=120):
    """``density_fn`` evaluated on a ``size`` x ``size`` grid: (xs, ys, density[y, x]), like ``metrics.kde_on_grid``."""
    xs = np.linspace(extent[0], extent[1], size)
    ys = np.linspace(extent[2], extent[3], size)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).astype(np.float32)  # (size, size, 2), [y, x]
    return xs, ys, np.asarray(density_fn(grid))


def _density_panel(ax, grid, title, cmap="Blues"):
    """Filled contours of ``grid`` = (xs, ys, density[y, x]) on ``ax``, limited to the grid; returns the contour set."""
    xs, ys, density = grid
    contours = ax.contourf(xs, ys, density, levels=14, cmap=cmap)
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(ys[0], ys[-1])
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("left pixel $x_1$")
    return contours


def plot_trajectory_on_densities(path, estimated: dict, true_grid, T):
    """One reverse path over the estimated densities of :math:`x_t` (one panel per t) and over the true data density.

    ``path``: (T + 1, 2), index i holding :math:`x_{T - i}`; ``estimated``:
    {t: (xs, ys, density)} (KDEs of many samples at step t); ``true_grid``:
    (xs, ys, density) of the data. Each panel draws the path from :math:`x_T`
    down to :math:`x_t` and marks :math:`x_t`.
    """
    path = np.asarray(path)
    steps = sorted(estimated, reverse=True)
    # constrained layout keeps the figure's title above the panels' titles, provided the square panels are bound by
    # the width: at a height of 3.6 inches they were bound by the height, and the title ran over the panels' titles
    fig, axes = plt.subplots(1, len(steps) + 1, figsize=(2.9 * (len(steps) + 1), 4.3), sharey=True, layout="constrained")
    for ax, t in zip(axes, steps):
        _density_panel(ax, estimated[t], f"estimated $p(x_t)$, $t = {t}$")
        ax.plot(path[: T - t + 1, 0], path[: T - t + 1, 1], "-", color="tab:red", lw=1.2, label=f"path from $x_{{{T}}}$")
        ax.plot(*path[T - t], "o", color="tab:red", ms=6, label="$x_t$, the chain at the panel's $t$")
        ax.plot(*path[0], "k*", ms=10, label=f"$x_{{{T}}}$, the start")
    _density_panel(axes[-1], true_grid, "true data density $p(x_0)$", cmap="Greens")
    axes[-1].plot(path[:, 0], path[:, 1], "-", color="tab:red", lw=1.2)
    axes[-1].plot(*path[-1], "o", color="tab:red", ms=6, mfc="none", mew=1.5, label="$x_0$, where it ends (last panel)")
    axes[-1].plot(*path[0], "k*", ms=10)
    axes[0].set_ylabel("right pixel $x_2$")
    # one legend for all panels, under them, so that no legend covers the path
    handles, labels = axes[0].get_legend_handles_labels()
    last_handles, last_labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles + last_handles, labels + last_labels, loc="outside lower center", ncol=4, frameon=False,
               fontsize=8)
    fig.suptitle("one reverse trajectory (red) over the density of $x_t$ estimated from many samples; "
                 "in each panel the dot is the chain's state at that panel's step")
    return fig


def plot_steps_grid(rows: dict, true_grid, max_points=5000, title=None):
    """The 4 x 2 grid: one row per T; samples over the true density (left), their estimated density (right).

    ``rows``: {row label: (samples (n, 2), (xs, ys, kde))}. The column titles stand once, over the
    top row; each row's label (put its number there, it may have two lines) stands at its left.
    """
    fig, axes = plt.subplots(len(rows), 2, figsize=(7.6, 3.3 * len(rows)), squeeze=False, layout="constrained")
    for row, ((label, (samples, kde)), (left, right)) in enumerate(zip(rows.items(), axes)):
        samples = np.asarray(samples)[:max_points]
        _density_panel(left, true_grid, "samples on the true density" if row == 0 else "", cmap="Greens")
        left.scatter(samples[:, 0], samples[:, 1], s=1, c="tab:orange", alpha=0.35)
        _density_panel(right, kde, "density estimated from the samples" if row == 0 else "")
        left.set_ylabel(f"{label}\n\nright pixel $x_2$", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_guided_paths(paths: dict, true_grid, title):
    """Reverse paths from the same :math:`x_T`, one per label (``paths``: {label: (T + 1, 2)}), over the true density."""
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    _density_panel(ax, true_grid, title, cmap="Greens")
    colours = ["tab:blue", "tab:red", "tab:purple", "tab:orange"]
    for colour, (label, path) in zip(colours, paths.items()):
        path = np.asarray(path)
        ax.plot(path[:, 0], path[:, 1], "-", color=colour, lw=1.3, label=label)
        ax.plot(*path[-1], "o", color=colour, ms=7)
    first = np.asarray(next(iter(paths.values())))
    ax.plot(*first[0], "k*", ms=13, label="shared start $x_T$")
    ax.set_ylabel("right pixel $x_2$")
    ax.legend(loc="lower left", fontsize=8)
    return fig


def _fit_arrows(ax, points, arrows, margin=0.05):
    """Widen the panel's limits (never narrow them) so that every arrow, from ``points`` by each of ``arrows``
    (in the data's units), ends inside it, with a margin."""
    ends = np.concatenate([points] + [points + a for a in arrows])
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    ax.set_xlim(min(x0, ends[:, 0].min() - margin), max(x1, ends[:, 0].max() + margin))
    ax.set_ylim(min(y0, ends[:, 1].min() - margin), max(y1, ends[:, 1].max() + margin))


def plot_eps_fields(fields: dict, density_grids: dict, title, scale=8.0):
    """Learned against exact noise predictions as arrows, one panel per time step, all panels with the same limits.

    ``fields``: {t: (points (n, 2), exact (n, 2), learned (n, 2), mse)}, ``mse`` the error measured over
    :math:`x_t \\sim q(x_t)` (it is printed as such, not as the error of the arrows drawn);
    ``density_grids``: {t: (xs, ys, density of x_t)} drawn underneath. Every arrow is its vector divided by
    ``scale``, in the data's units (the legend says so). The limits are the union of every panel's grid and
    arrow tips; beyond its grid a panel takes the colour of its lowest density level.
    """
    steps = list(fields)
    # constrained layout keeps the title off the panels' titles and every panel inside the figure
    fig, axes = plt.subplots(1, len(steps), figsize=(3.6 * len(steps), 4.1), squeeze=False, layout="constrained")
    for ax, t in zip(axes[0], steps):
        points, exact, learned, mse = (np.asarray(a) for a in fields[t])
        contours = _density_panel(ax, density_grids[t], f"$t = {t}$\nMSE over $x_t \\sim q(x_t)$: {float(mse):.2e}",
                                  cmap="Greys")
        ax.set_facecolor(contours.get_facecolor()[0])   # the density beyond the grid is below its lowest level
        ax.quiver(points[:, 0], points[:, 1], exact[:, 0], exact[:, 1], color="k", angles="xy", scale_units="xy",
                  scale=scale, width=0.006, label=rf"exact $\epsilon^*$ (arrow: $\epsilon^* / {scale:g}$)")
        ax.quiver(points[:, 0], points[:, 1], learned[:, 0], learned[:, 1], color="tab:red", angles="xy",
                  scale_units="xy", scale=scale, width=0.003,
                  label=rf"learned $\epsilon_\theta$ (arrow: $\epsilon_\theta / {scale:g}$)")
        _fit_arrows(ax, points, (exact / scale, learned / scale))
    limits = np.array([ax.get_xlim() + ax.get_ylim() for ax in axes[0]])   # one range for every panel: the union
    for ax in axes[0]:
        ax.set_xlim(limits[:, 0].min(), limits[:, 1].max())
        ax.set_ylim(limits[:, 2].min(), limits[:, 3].max())
    axes[0][0].set_ylabel("right pixel $x_2$")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False, fontsize=8)   # off the arrows
    fig.suptitle(title)
    return fig
