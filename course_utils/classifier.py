"""A small MNIST classifier, the course's measure of generated digits.

Two 3x3 convolutions with max pooling and two dense layers (about 0.1 M
parameters). The project trains it with ``python -m course_utils.classifier
train --out course_utils/weights/mnist_classifier.msgpack`` and ships the
weights, together with the command, the data and the held-out accuracy
(:func:`shipped_metadata`). Images are (N, 28, 28, 1) in [-1, 1], as
:func:`course_utils.data.load_mnist` returns them. A second one, trained the
same way on Fashion-MNIST (``--dataset fashion_mnist``), measures the
Fashion-MNIST samples of notebook 06: ``load_classifier("fashion_mnist")``.
"""

import functools
import importlib.resources
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from . import _validate as v
from . import checkpoints, data, training
from .models import Linear

SHIPPED_WEIGHTS = {"mnist": "weights/mnist_classifier.msgpack",        # inside the course_utils package
                   "fashion_mnist": "weights/fashion_mnist_classifier.msgpack"}
IMAGE_SHAPE = (28, 28, 1)
N_CLASSES = 10
_EVAL_BATCH = 500   # predictions run in batches of this size (one compilation for any N)


class Conv3x3(nnx.Module):
    """A 'SAME' 3x3 convolution with a bias, computed as (N, H, W, 9 C_in) patches @ a (9 C_in, C_out) kernel.

    Not ``nnx.Conv``: on a CPU, XLA's own convolution ran this classifier's
    training step about 6x slower inside the compiled training loop
    (``fori_loop``) than in a lone jitted step (0.65 s against 0.11 s at batch
    128 on 2 cores); as a matmul the step takes 0.08 s in the loop.
    """

    def __init__(self, in_channels, out_channels, *, rngs):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (3, 3, in_channels, out_channels)))
        self.bias = nnx.Param(jnp.zeros(out_channels))

    def __call__(self, x):
        h, w = x.shape[1:3]
        padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = jnp.concatenate([padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=-1)
        kernel = self.kernel[...]
        return patches @ kernel.reshape(-1, kernel.shape[-1]) + self.bias[...]


class MnistClassifier(nnx.Module):
    """conv 3x3 -> ReLU -> max pool 2 -> conv 3x3 -> ReLU -> max pool 2 -> dense -> ReLU -> dense (10 logits)."""

    def __init__(self, channels=(16, 32), hidden=64, *, rngs):
        c1, c2 = channels
        self.conv1 = Conv3x3(1, c1, rngs=rngs)
        self.conv2 = Conv3x3(c1, c2, rngs=rngs)
        self.hidden = Linear(7 * 7 * c2, hidden, rngs=rngs)
        self.out = Linear(hidden, N_CLASSES, rngs=rngs)

    def features(self, x):
        """The penultimate layer (N, hidden): the ReLU of the first dense layer, what the last layer reads."""
        x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))
        x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
        return nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))

    def __call__(self, x):
        """Logits (N, 10) of images x (N, 28, 28, 1)."""
        return self.out(self.features(x))


class Accuracy(NamedTuple):
    """``overall``: the fraction of correct predictions; ``per_class``: (10,), NaN for a digit with no images."""
    overall: float
    per_class: np.ndarray


def _check_images(where, images):
    """``images`` as a float32 numpy array, or an error naming the expected shape and range."""
    try:
        arr = np.asarray(images, np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: argument `images` must be an array of shape (N, 28, 28, 1) in [-1, 1], "
                        f"got {type(images).__name__}") from None
    if arr.ndim != 4 or arr.shape[1:] != IMAGE_SHAPE or arr.shape[0] == 0:
        raise ValueError(f"{where}: argument `images` must have shape (N, 28, 28, 1) with N >= 1, got shape "
                         f"{arr.shape}" + (" (add the channel axis: images[..., None])" if arr.shape[1:] == (28, 28) else ""))
    if not np.all(np.isfinite(arr)) or arr.min() < -1 - 1e-5 or arr.max() > 1 + 1e-5:
        raise ValueError(f"{where}: argument `images` must lie in [-1, 1] (clip samples first), got values from "
                         f"{np.nanmin(arr):.4g} to {np.nanmax(arr):.4g}" + (" (NaN or inf included)" if not np.all(np.isfinite(arr)) else ""))
    return arr


def _check_labels(where, labels, n):
    arr = np.asarray(labels)
    if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: argument `labels` must be integers of shape ({n},) (one per image), "
                         f"got {arr.dtype} of shape {arr.shape}")
    if arr.min() < 0 or arr.max() >= N_CLASSES:
        raise ValueError(f"{where}: argument `labels` must lie in 0..9, got values from {arr.min()} to {arr.max()}")
    return arr.astype(np.int32)


def _check_classifier(where, classifier):
    if classifier is None:
        return load_classifier()
    if not isinstance(classifier, MnistClassifier):
        raise TypeError(f"{where}: argument `classifier` must be a MnistClassifier (or None for the shipped one), "
                        f"got {type(classifier).__name__}")
    return classifier


@nnx.jit
def _batch_predictions(classifier, images):
    return jnp.argmax(classifier(images), axis=-1).astype(jnp.int32)


@nnx.jit
def _batch_features(classifier, images):
    return classifier.features(images)


@nnx.jit
def _batch_probabilities(classifier, images):
    return jax.nn.softmax(classifier(images), axis=-1)


def _in_batches(where, fn, images, classifier):
    images = _check_images(where, images)
    classifier = _check_classifier(where, classifier)
    n = len(images)
    padded = np.concatenate([images, np.zeros(((-n) % _EVAL_BATCH,) + IMAGE_SHAPE, np.float32)])
    batches = [fn(classifier, padded[i:i + _EVAL_BATCH]) for i in range(0, len(padded), _EVAL_BATCH)]
    return np.asarray(jnp.concatenate(batches))[:n]


def features(images, classifier=None):
    """The classifier's penultimate-layer features (float32, (N, hidden); 64 for the shipped one) of images
    (N, 28, 28, 1) in [-1, 1]: the space in which :mod:`course_utils.metrics` measures Fréchet distance and
    precision/recall of generated digits. The shipped classifier by default."""
    return _in_batches("features", _batch_features, images, classifier)


def probabilities(images, classifier=None):
    """The classifier's softmax probabilities (float32, (N, 10)) of images (N, 28, 28, 1) in [-1, 1]."""
    return _in_batches("probabilities", _batch_probabilities, images, classifier)


def predict(images, classifier=None):
    """The predicted digit (int32, N) of each image (N, 28, 28, 1) in [-1, 1]; the shipped classifier by default."""
    images = _check_images("predict", images)
    classifier = _check_classifier("predict", classifier)
    n = len(images)
    padded = np.concatenate([images, np.zeros(((-n) % _EVAL_BATCH,) + IMAGE_SHAPE, np.float32)])
    batches = [_batch_predictions(classifier, padded[i:i + _EVAL_BATCH]) for i in range(0, len(padded), _EVAL_BATCH)]
    return np.asarray(jnp.concatenate(batches))[:n]


def classifier_accuracy(images, labels, classifier=None):
    """How often the classifier (the shipped one by default) names each image's label: :class:`Accuracy`.

    ``images``: (N, 28, 28, 1) in [-1, 1]; ``labels``: integers (N,) in 0..9,
    for generated samples the digit each was asked to be.
    """
    images = _check_images("classifier_accuracy", images)
    labels = _check_labels("classifier_accuracy", labels, len(images))
    correct = predict(images, _check_classifier("classifier_accuracy", classifier)) == labels
    counts = np.bincount(labels, minlength=N_CLASSES)
    hits = np.bincount(labels, weights=correct, minlength=N_CLASSES)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = hits / counts
    return Accuracy(float(correct.mean()), per_class)


def _shift_crop(padded, offsets):
    """The 28x28 window of ``padded`` (28 + 2 s, 28 + 2 s, 1) starting at ``offsets`` (2,)."""
    return jax.lax.dynamic_slice(padded, (offsets[0], offsets[1], 0), IMAGE_SHAPE)


def _cross_entropy(model, images, labels):
    return optax.softmax_cross_entropy_with_integer_labels(model(images), labels).mean()


@functools.partial(jax.jit, static_argnames=("graphdef", "batch_size", "shift", "chunk"))
def _train_chunk(graphdef, state, key, images, labels, n_steps, *, batch_size, shift, chunk):
    """``n_steps`` (at most ``chunk``) Adam steps on random batches shifted by up to ``shift`` pixels."""
    k_index, k_shift = jax.random.split(key)
    indices = jax.random.randint(k_index, (chunk, batch_size), 0, images.shape[0])
    offsets = jax.random.randint(k_shift, (chunk, batch_size, 2), 0, 2 * shift + 1)
    padded = jnp.pad(images, ((0, 0), (shift, shift), (shift, shift), (0, 0)), constant_values=-1.0)

    def one_step(i, carry):
        state, losses = carry
        model, optimizer = nnx.merge(graphdef, state)
        batch = jax.vmap(_shift_crop)(padded[indices[i]], offsets[i])
        loss, grads = nnx.value_and_grad(_cross_entropy)(model, batch, labels[indices[i]])
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), losses.at[i].set(loss)

    return jax.lax.fori_loop(0, n_steps, one_step, (state, jnp.full((chunk,), jnp.nan, jnp.float32)))


def train_classifier(images, labels, *, steps=2000, batch_size=128, learning_rate=3e-3, shift=2, seed=0,
                     channels=(16, 32), hidden=64, progress=None):
    """A new :class:`MnistClassifier` trained on ``images`` (N, 28, 28, 1) in [-1, 1] and ``labels`` (N,).

    Adam with a cosine-decaying learning rate for ``steps`` steps on random
    batches, each image shifted by a random whole number of pixels in
    [-shift, shift] along each axis (the border filled with background, -1).
    Deterministic for a given ``seed`` on a given machine.
    """
    images = _check_images("train_classifier", images)
    labels = _check_labels("train_classifier", labels, len(images))
    for name, value in (("steps", steps), ("batch_size", batch_size), ("hidden", hidden)):
        v.check_positive_int("train_classifier", name, value)
    if isinstance(shift, bool) or not isinstance(shift, int) or not 0 <= shift <= 8:
        raise ValueError(f"train_classifier: argument `shift` must be an int in 0..8 (pixels), got {shift!r}")
    model = MnistClassifier(tuple(channels), hidden, rngs=nnx.Rngs(seed))
    images, labels = jnp.asarray(images), jnp.asarray(labels)
    chunk = 100

    def run(graphdef, state, key, n):
        return _train_chunk(graphdef, state, key, images, labels, n, batch_size=batch_size, shift=shift, chunk=chunk)

    schedule = optax.cosine_decay_schedule(learning_rate, steps)
    training.run_in_chunks(model, run, optimizer=optax.adam(schedule), learning_rate=learning_rate, steps=steps,
                           key=jax.random.key(seed), chunk=chunk, progress=progress)
    return model


def _weights_resource(dataset):
    if dataset not in SHIPPED_WEIGHTS:
        raise ValueError(f"classifier: no classifier ships for the data set {dataset!r}; shipped: {sorted(SHIPPED_WEIGHTS)}")
    return importlib.resources.files("course_utils") / SHIPPED_WEIGHTS[dataset]


def shipped_metadata(dataset="mnist"):
    """What the shipped weights of ``dataset`` record: configuration, command, date, data, held-out accuracy."""
    with importlib.resources.as_file(_weights_resource(dataset)) as path:
        return checkpoints.read_metadata(path)


def load_from(path):
    """The classifier saved at ``path`` by this module (its configuration is read from the file)."""
    config = checkpoints.read_metadata(path)["config"]
    model = MnistClassifier(tuple(config["channels"]), config["hidden"], rngs=nnx.Rngs(0))
    checkpoints.load_model(model, path)
    return model


@functools.lru_cache(maxsize=None)
def load_classifier(dataset="mnist"):
    """The classifier of ``dataset`` ("mnist" or "fashion_mnist") shipped with course_utils (loaded once, then
    shared: do not train it further)."""
    with importlib.resources.as_file(_weights_resource(dataset)) as path:
        return load_from(path)


def _train_command(args, argv):
    config = {"channels": list(args.channels), "hidden": args.hidden}
    loaded = {split: data._load_mnist(split, dataset=args.dataset, cache_dir=None, base_url=None, checksums=None,
                                      fallback=True, progress=True) for split in ("train", "test")}
    (train_x, train_y, train_source), (test_x, test_y, test_source) = loaded["train"], loaded["test"]
    print(f"training on {len(train_y):,} images of {args.dataset} for {args.steps} steps of batch {args.batch_size}")
    start = time.perf_counter()
    model = train_classifier(train_x, train_y, steps=args.steps, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, shift=args.shift, seed=args.seed,
                             channels=config["channels"], hidden=config["hidden"], progress=True)
    seconds = time.perf_counter() - start
    accuracy = classifier_accuracy(test_x, test_y, model)
    metadata = {
        "config": config,
        **checkpoints.provenance("course_utils.classifier", argv, model),
        "dataset": args.dataset,
        "train_data": train_source,
        "test_data": test_source,
        "training": {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                     "shift": args.shift, "seed": args.seed, "seconds": round(seconds, 1)},
        "held_out_accuracy": accuracy.overall,
        "held_out_accuracy_per_class": [float(a) for a in accuracy.per_class],
    }
    path = checkpoints.save_model(model, args.out, metadata)
    print(f"held-out accuracy {accuracy.overall:.4f} on {len(test_y):,} images ({test_source}); per class: "
          + " ".join(f"{d}:{a:.3f}" for d, a in enumerate(accuracy.per_class)))
    print(f"trained in {seconds:.0f} s; {checkpoints.describe_saved(path)}")


def main(argv=None):
    """``python -m course_utils.classifier train --out PATH``: train on MNIST or Fashion-MNIST (or their offline
    copies) and save."""
    argv = sys.argv[1:] if argv is None else argv
    parser, train = checkpoints.train_command_parser("course_utils.classifier", main.__doc__, "train the classifier and save weights with their metadata")
    defaults = train_classifier.__kwdefaults__
    train.add_argument("--steps", type=int, default=defaults["steps"])
    train.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    train.add_argument("--learning-rate", type=float, default=defaults["learning_rate"])
    train.add_argument("--shift", type=int, default=defaults["shift"], help="random shifts of up to this many pixels")
    train.add_argument("--channels", type=int, nargs=2, default=defaults["channels"], help="of the two convolutions")
    train.add_argument("--hidden", type=int, default=defaults["hidden"], help="width of the hidden dense layer")
    train.add_argument("--dataset", choices=sorted(data.MNIST_FILES), default="mnist")
    args = parser.parse_args(argv)
    _train_command(args, argv)


if __name__ == "__main__":
    main()
