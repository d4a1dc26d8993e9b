r"""Measuring generated samples against data."""

import jax
import jax.numpy as jnp
import numpy as np


def _mean_distance(x, y, block=512):
    """Mean Euclidean distance between the rows of x (n, d) and y (m, d), in blocks of rows."""
    n = x.shape[0]
    pad = (-n) % block
    xb = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, block, x.shape[1])
    valid = (jnp.arange(n + pad) < n).reshape(-1, block)
    y_sq = jnp.sum(y**2, axis=1)

    def block_sum(args):
        rows, ok = args
        # float32 products on every backend: the squared distance is a difference of large terms, which
        # TF32 (a GPU's default) or bfloat16 passes (a TPU's) would leave with errors of 1e-3 of |x|^2.
        sq = jnp.sum(rows**2, axis=1)[:, None] + y_sq[None, :] - 2 * jnp.matmul(rows, y.T, precision="highest")
        return jnp.sum(jnp.where(ok[:, None], jnp.sqrt(jnp.maximum(sq, 0.0)), 0.0))

    return jnp.sum(jax.lax.map(block_sum, (xb, valid))) / (n * y.shape[0])


@jax.jit
def energy_distance(x, y):
    r"""The (squared) energy distance between two point sets x (n, d) and y (m, d).

    .. math::
        D^2 = 2\,\mathbb E\lVert X - Y\rVert - \mathbb E\lVert X - X'\rVert - \mathbb E\lVert Y - Y'\rVert

    estimated with plain means over all pairs (a V-statistic). It is never
    negative, and for two independent samples of size n from the *same*
    distribution it is about :math:`2\,\mathbb E\lVert X - X'\rVert / n`, not 0:
    that is the floor a perfect generator reaches at this sample size (see
    :func:`quality_report`). Smaller is better.
    """
    x = jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1)
    y = jnp.asarray(y, jnp.float32).reshape(y.shape[0], -1)
    return 2 * _mean_distance(x, y) - _mean_distance(x, x) - _mean_distance(y, y)


def quality_report(samples, data, key):
    """Energy distance of ``samples`` to ``data``, with the floor and ceiling to read it by.

    The floor is the distance between two independent halves of the data (what
    a perfect generator scores at this sample size); the ceiling is the
    distance of standard normal noise of the same size to the data.
    Returns a dict with "samples", "floor", "noise" and a one-line "text".
    """
    samples, data = jnp.asarray(samples), jnp.asarray(data)
    n = min(samples.shape[0], data.shape[0] // 2)
    perm = jax.random.permutation(key, data.shape[0])
    half_a, half_b = data[perm[:n]], data[perm[n:2 * n]]
    noise = jax.random.normal(jax.random.fold_in(key, 1), (n,) + data.shape[1:])
    result = {
        "samples": float(energy_distance(samples[:n], half_a)),
        "floor": float(energy_distance(half_b, half_a)),
        "noise": float(energy_distance(noise, half_a)),
    }
    result["text"] = (f"energy distance {result['samples']:.4f} (data vs data {result['floor']:.4f}, "
                      f"noise vs data {result['noise']:.3f}; n = {n})")
    return result


def spread(values) -> dict:
    """Mean, standard deviation (ddof = 1) and standard error of the mean of several measurements of one quantity
    (one per seed or sampling key): {"mean", "sd", "se", "n", "text", "label"} with text "mean +- sd" (for printed
    lines) and label "mean ± sd" (for a figure's titles and labels)."""
    v = np.asarray(values, np.float64).reshape(-1)
    n = v.size
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    result = {"mean": float(v.mean()), "sd": sd, "se": sd / np.sqrt(n) if n > 1 else float("nan"), "n": n}
    result["text"] = f"{result['mean']:.4f} +- {sd:.4f}"
    result["label"] = f"{result['mean']:.4f} ± {sd:.4f}"
    return result


def quality_of_runs(sample_sets, data, key):
    """:func:`quality_report` of each of several sample sets (several models, or several sampling keys), read together.

    Returns {"values": the energy distances, "floor" and "noise": their means over the runs' data halves,
    "floor_spread": :func:`spread` of the floors (each run draws its own halves, so the floor has a spread too),
    "spread": :func:`spread` of the values, "text": one line}. The spreads are standard deviations between runs (n - 1).
    """
    reports = [quality_report(s, data, jax.random.fold_in(key, i)) for i, s in enumerate(sample_sets)]
    values = np.array([r["samples"] for r in reports])
    floors = np.array([r["floor"] for r in reports])
    result = {"values": values, "floor": float(floors.mean()), "floor_spread": spread(floors),
              "noise": float(np.mean([r["noise"] for r in reports])), "spread": spread(values), "n": min(np.shape(sample_sets[0])[0], np.shape(data)[0] // 2)}
    result["text"] = (f"energy distance {result['spread']['text']} over {len(values)} runs (floor {result['floor_spread']['text']}, "
                      f"noise {result['noise']:.3f}; n = {result['n']} points)")
    return result


def compare(label_a, values_a, label_b, values_b) -> dict:
    r"""Whether two sets of measurements (energy distances of runs, say) differ by more than their spread.

    The difference of the means counts as real when it exceeds twice its standard error,
    :math:`2\sqrt{s_a^2/n_a + s_b^2/n_b}` (about a 95 % interval for many runs; with 3 runs each, a t-distribution
    with few degrees of freedom, nearer 85 %: a permissive rule, which is why each verdict names its numbers of
    runs). Returns {"differ": bool, "difference", "se", "text"}, the text a one-line verdict naming the lower one.
    """
    a, b = spread(values_a), spread(values_b)
    difference = b["mean"] - a["mean"]
    se = float(np.sqrt(a["se"] ** 2 + b["se"] ** 2))
    differ = bool(abs(difference) > 2 * se)
    low, high = (label_a, label_b) if difference > 0 else (label_b, label_a)
    if differ:
        text = (f"{low} is lower than {high} by {abs(difference):.4f}, more than twice the standard error of the "
                f"difference ({se:.4f}): a real difference")
    else:
        text = (f"{label_a} and {label_b} differ by {abs(difference):.4f}, less than twice its standard error "
                f"({se:.4f}): not distinguishable with {a['n']} and {b['n']} runs")
    return {"differ": differ, "difference": difference, "se": se, "text": text}


def compare_paired(values_a, values_b) -> dict:
    r"""Whether a and b, measured in pairs (pair i shares its starting noise, say), differ by more than the spread of
    the pairs: the mean of the differences :math:`d_i = a_i - b_i` counts as real when it exceeds twice its standard
    error :math:`s_d / \sqrt{n}` (the rule of :func:`compare`, on the differences). Returns {"difference" (the mean
    of a - b), "se", "differ" (False with a single pair: no spread), "n"}.
    """
    a, b = np.asarray(values_a, np.float64).reshape(-1), np.asarray(values_b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"compare_paired: the arguments must be pairs, got {a.size} and {b.size} values")
    d = spread(a - b)
    return {"difference": d["mean"], "se": d["se"], "differ": bool(d["n"] > 1 and abs(d["mean"]) > 2 * d["se"]),
            "n": d["n"]}


def stopped_improving(values_before, values_after, stage="stage") -> dict:
    r"""Whether more training still changed a quality measured on several seeds: the value of each seed's model
    before and after the last stage of training, compared in pairs (:func:`compare_paired`).

    The quality has stopped improving when the mean change :math:`\bar d`, :math:`d_i` = after minus before for
    seed i, stays within twice its standard error over the seeds, :math:`s_d / \sqrt{n}` (a change in either
    direction counts). Returns {"stopped": bool, "difference" (the mean change), "se", "status", "text"}: ``status``
    is "stopped improving", "still improving" (lower by more than twice the standard error) or "got worse" (higher
    by as much), and the text one line ("the last ``stage`` changed it by ...", ``stage`` naming what was trained
    last: "cycle", "1000 steps") ending in the status. A status, not a PASS or FAIL: which one a model reaches is
    what is measured. With few seeds "stopped improving" means that the seeds cannot see a change, not that none is
    left.
    """
    paired = compare_paired(values_after, values_before)
    difference, se = paired["difference"], paired["se"]
    stopped = not paired["differ"]
    status = "stopped improving" if stopped else "still improving" if difference < 0 else "got worse"
    text = (f"the last {stage} changed it by {difference:+.4f} (mean over {paired['n']} seeds), "
            f"{'less' if stopped else 'more'} than twice its standard error ({se:.4f}): {status}")
    return {"stopped": stopped, "difference": difference, "se": se, "status": status, "text": text}


# ---------------------------------------------------------------- distances in a feature space (images)

def feature_statistics(features):
    r"""The mean and covariance of feature vectors ``features`` (n, d), n >= 2: ``(mu (d,), Sigma (d, d))``, float64.

    .. math::
        \mu = \frac1n \sum_i f_i, \qquad \Sigma = \frac1{n-1} \sum_i (f_i - \mu)(f_i - \mu)^\top
    """
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"feature_statistics: argument `features` must have shape (n, d) with n >= 2, got {f.shape}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_sqrt(matrix):
    """The symmetric square root of a symmetric positive semi-definite matrix (negative rounding clipped)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b):
    r"""The Fréchet (2-Wasserstein) distance, squared, between the Gaussians N(mu_a, sigma_a) and N(mu_b, sigma_b).

    .. math::
        d^2 = \lVert \mu_a - \mu_b \rVert^2 + \operatorname{tr}\big(\Sigma_a + \Sigma_b
              - 2\,(\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}\big)

    (Dowson and Landau 1982; Heusel et al. 2017 call it FID when the features are Inception's.) The trace of the
    matrix square root equals that of :math:`(\Sigma_a \Sigma_b)^{1/2}`; written with the symmetric
    :math:`\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2}` it needs only symmetric eigendecompositions. Means (d,),
    covariances (d, d); returns a float >= 0 (up to rounding).
    """
    mu_a, mu_b = np.atleast_1d(np.asarray(mu_a, np.float64)), np.atleast_1d(np.asarray(mu_b, np.float64))
    sigma_a, sigma_b = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    d = mu_a.shape[0]
    if mu_b.shape != (d,) or sigma_a.shape != (d, d) or sigma_b.shape != (d, d):
        raise ValueError(f"frechet_distance: means (d,) and covariances (d, d) of one d, got {mu_a.shape}, "
                         f"{sigma_a.shape}, {mu_b.shape}, {sigma_b.shape}")
    root_a = _psd_sqrt(sigma_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ sigma_b @ root_a), 0.0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * cross)


def frechet_distance_of(features_a, features_b):
    """:func:`frechet_distance` between the Gaussians fitted (:func:`feature_statistics`) to two sets of features
    (n_a, d) and (n_b, d). It depends on the set sizes (a finite sample's covariance is noisy), so compare it only
    with a floor measured at the same sizes."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def _pairwise_distances(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


def knn_radii(features, k=3):
    r"""For each of ``features`` (n, d), the distance to its k-th nearest neighbour among the others: (n,).

    .. math:: r_k(f_j) = \lVert f_j - \mathrm{NN}_k(f_j) \rVert, \quad \text{the point itself not counted.}

    The ball of this radius around each point is Kynkäänniemi et al. (2019)'s estimate of the set's manifold.
    """
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or not 1 <= k < f.shape[0]:
        raise ValueError(f"knn_radii: need features (n, d) with 1 <= k < n, got shape {f.shape} and k = {k}")
    distances = _pairwise_distances(f, f)
    np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, k - 1]


def manifold_fraction(points, reference, k=3):
    r"""The fraction of ``points`` (n, d) that fall inside the manifold estimate of ``reference`` (m, d):

    .. math:: \frac1n \sum_i \mathbf 1\big[\exists j:\ \lVert p_i - f_j \rVert \le r_k(f_j)\big]

    with :math:`r_k` the :func:`knn_radii` of the reference set.
    """
    radii = knn_radii(reference, k)
    inside = _pairwise_distances(points, reference) <= radii[None, :]
    return float(inside.any(axis=1).mean())


def precision_recall(real, generated, k=3):
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``generated`` against ``real`` features:
    ``(precision, recall)``.

    Precision: the fraction of generated samples inside the real manifold (are the samples realistic?). Recall:
    the fraction of real samples inside the generated manifold (is every kind of real sample produced?). Both
    in [0, 1]; two samples of one distribution score below 1 (how far below depends on k and the set sizes:
    measure that floor at the same sizes).
    """
    return manifold_fraction(generated, real, k), manifold_fraction(real, generated, k)


def kde_on_grid(points, extent=(-3.0, 3.0, -3.0, 3.0), size=120, bandwidth=None):
    """A Gaussian kernel density estimate of 2D ``points`` on a ``size`` x ``size`` grid.

    ``bandwidth`` defaults to Scott's rule. Returns (xs, ys, density) with
    density of shape (size, size), indexed [y, x], for ``plt.contourf`` or ``imshow``.
    """
    points = np.asarray(points, np.float64)
    n = points.shape[0]
    h = bandwidth or float(np.mean(points.std(0))) * n ** (-1 / 6)
    xs = np.linspace(extent[0], extent[1], size)
    ys = np.linspace(extent[2], extent[3], size)
    kx = np.exp(-0.5 * ((xs[:, None] - points[None, :, 0]) / h) ** 2)  # (size, n)
    ky = np.exp(-0.5 * ((ys[:, None] - points[None, :, 1]) / h) ** 2)
    density = ky @ kx.T / (n * 2 * np.pi * h**2)
    return xs, ys, density


def __getattr__(name):
    """``classifier_accuracy`` and ``Accuracy`` of :mod:`course_utils.classifier`, imported on first use.

    (Lazily, so that importing course_utils does not import the classifier, and
    ``python -m course_utils.classifier`` runs its module only once.)
    """
    if name in ("classifier_accuracy", "Accuracy"):
        from . import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
