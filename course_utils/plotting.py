"""Every figure type the notebooks draw. Each function returns its matplotlib Figure."""

import matplotlib.pyplot as plt
import numpy as np

from . import schedules


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
        ax.scatter(xs[t, :, 0], xs[t, :, 1], c=colour, cmap="viridis", s=2, alpha=0.7)
        ax.set_title(f"$t = {t}$")
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
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


def plot_timings(seconds_by_name: dict, title="time per call (lower is better)"):
    """Horizontal bars of run times, each labelled with its speed-up over the slowest."""
    names = list(seconds_by_name)
    times = np.array([seconds_by_name[n] for n in names]) * 1e3
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(names) + 1.2))
    bars = ax.barh(names, times, color="tab:blue")
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log scale)")
    ax.set_title(title)
    for bar, ms in zip(bars, times):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f"  {ms:.3g} ms ({times.max() / ms:.0f}x)", va="center")
    ax.set_xlim(times.min() / 2, times.max() * 20)
    return fig


def plot_timing_curves(sizes, seconds_by_name: dict, xlabel="dimension", title="time per call"):
    """Run time against problem size, one line per method."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, seconds in seconds_by_name.items():
        ax.semilogy(sizes, np.asarray(seconds) * 1e6, "o-", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("microseconds per call (log scale)")
    ax.set_title(title)
    ax.legend()
    return fig


def _figure_and_axes(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax
