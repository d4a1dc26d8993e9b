"""Checkpoints (round trip, mismatch errors) and the shipped MNIST classifier (recorded accuracy, metric, checks)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, serialization

from course_utils import checkpoints, classifier, data, metrics


def _weights(model):
    return jax.tree_util.tree_map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


class _Normed(nnx.Module):
    """A model with batch statistics and a random-number state, besides parameters."""

    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(3, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)])
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)


def test_checkpoint_round_trip(tmp_path):
    model = classifier.MnistClassifier((4, 8), 8, rngs=nnx.Rngs(1))
    metadata = {"config": {"channels": [4, 8], "hidden": 8}, "command": "python -m x", "accuracy": [0.5, 1.0]}
    path = checkpoints.save_model(model, tmp_path / "sub" / "m.msgpack", metadata)
    fresh = classifier.MnistClassifier((4, 8), 8, rngs=nnx.Rngs(2))
    assert not np.allclose(_weights(fresh)["conv1"]["kernel"], _weights(model)["conv1"]["kernel"])
    assert checkpoints.load_model(fresh, path) == metadata == checkpoints.read_metadata(path)
    jax.tree_util.tree_map(np.testing.assert_array_equal, _weights(fresh), _weights(model))
    x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1), minval=-1, maxval=1)
    np.testing.assert_array_equal(fresh(x), model(x))
    assert b"pickle" not in path.read_bytes() and not list(tmp_path.glob("sub/*.partial"))


def test_checkpoint_stored_as_float16_is_half_the_size_and_reads_back_as_float32(tmp_path):
    model = classifier.MnistClassifier((4, 8), 8, rngs=nnx.Rngs(1))
    full = checkpoints.save_model(model, tmp_path / "full.msgpack", {"a": 1})
    half = checkpoints.save_model(model, tmp_path / "half.msgpack", {"a": 1}, stored_as="float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    fresh = classifier.MnistClassifier((4, 8), 8, rngs=nnx.Rngs(2))
    assert checkpoints.load_model(fresh, half) == {"a": 1}
    for got, want in zip(jax.tree_util.tree_leaves(_weights(fresh)), jax.tree_util.tree_leaves(_weights(model))):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))   # rounded, nothing else
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-7)
    with pytest.raises(ValueError, match="`stored_as` must be one of"):
        checkpoints.save_model(model, tmp_path / "x", stored_as="int8")
    payload = serialization.msgpack_restore(half.read_bytes())
    payload["stored_as"] = "bfloat16"
    (tmp_path / "odd").write_bytes(serialization.msgpack_serialize(payload))
    with pytest.raises(ValueError, match="stored as 'bfloat16'"):
        checkpoints.load_model(fresh, tmp_path / "odd")


def test_checkpoint_keeps_batch_statistics(tmp_path):
    model = _Normed(nnx.Rngs(0))
    model.norm.mean[...] = jnp.arange(4.0)
    checkpoints.save_model(model, tmp_path / "n.msgpack")
    fresh = _Normed(nnx.Rngs(5))
    assert checkpoints.load_model(fresh, tmp_path / "n.msgpack") == {}
    np.testing.assert_array_equal(fresh.norm.mean[...], np.arange(4.0))
    np.testing.assert_array_equal(fresh.layers[1].kernel[...], model.layers[1].kernel[...])


def test_checkpoint_mismatch_names_the_parameter(tmp_path):
    path = checkpoints.save_model(classifier.MnistClassifier((4, 8), 8, rngs=nnx.Rngs(0)), tmp_path / "m.msgpack",
                                  {"config": "small"})
    other = classifier.MnistClassifier((4, 16), 8, rngs=nnx.Rngs(0))
    before = _weights(other)
    with pytest.raises(ValueError, match=r"`conv2/kernel` has shape \(3, 3, 4, 8\) float32 in the file but "
                                         r"\(3, 3, 4, 16\) float32 in the model.*`hidden/kernel`"):
        checkpoints.load_model(other, path)
    jax.tree_util.tree_map(np.testing.assert_array_equal, _weights(other), before)
    with pytest.raises(ValueError, match=r"`conv1/bias` is in the file but not in the model.*"
                                         r"`layers/0/kernel` is in the model but not in the file"):
        checkpoints.load_model(_Normed(nnx.Rngs(0)), path)


def test_checkpoint_bad_files_and_arguments(tmp_path):
    model = classifier.MnistClassifier((4, 8), 8, rngs=nnx.Rngs(0))
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        checkpoints.load_model(model, tmp_path / "missing.msgpack")
    (tmp_path / "junk").write_bytes(b"\xc1\xc1 not msgpack")
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        checkpoints.read_metadata(tmp_path / "junk")
    (tmp_path / "other").write_bytes(serialization.msgpack_serialize({"weights": np.zeros(3)}))
    with pytest.raises(ValueError, match="not a checkpoint written by course_utils"):
        checkpoints.load_model(model, tmp_path / "other")
    with pytest.raises(TypeError, match="`model` must be a flax.nnx Module"):
        checkpoints.save_model({"w": 1}, tmp_path / "x")
    with pytest.raises(TypeError, match="`metadata` must be a dict"):
        checkpoints.save_model(model, tmp_path / "x", metadata=[1])
    with pytest.raises(TypeError, match="`metadata` must be JSON-serialisable"):
        checkpoints.save_model(model, tmp_path / "x", metadata={"date": object()})
    assert not (tmp_path / "x").exists()


def test_conv3x3_is_a_same_convolution():
    conv = classifier.Conv3x3(3, 5, rngs=nnx.Rngs(0))
    conv.bias[...] = jnp.arange(5.0)
    x = jax.random.normal(jax.random.key(1), (2, 7, 6, 3))
    expected = jax.lax.conv_general_dilated(x, conv.kernel[...], (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                            precision=jax.lax.Precision.HIGHEST) + jnp.arange(5.0)
    with jax.default_matmul_precision("highest"):
        np.testing.assert_allclose(conv(x), expected, atol=1e-5)


def test_shift_crop_moves_the_image():
    image = np.arange(28 * 28, dtype=np.float32).reshape(28, 28, 1)
    padded = jnp.pad(image, ((2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    np.testing.assert_array_equal(classifier._shift_crop(padded, jnp.array([2, 2])), image)
    moved = np.asarray(classifier._shift_crop(padded, jnp.array([2, 0])))   # window 2 px left: content moves right
    np.testing.assert_array_equal(moved[:, 2:], image[:, :-2])
    np.testing.assert_array_equal(moved[:, :2], -1.0)


@pytest.fixture(scope="module")
def fallback_test():
    return data.mnist_fallback("test")


@pytest.mark.parametrize("dataset, least, worst_class", [("mnist", 0.97, 0.9), ("fashion_mnist", 0.8, 0.4)])
def test_shipped_classifier_reproduces_its_recorded_accuracy(dataset, least, worst_class):
    recorded = classifier.shipped_metadata(dataset)
    for key in ("config", "command", "date", "train_data", "test_data", "held_out_accuracy_per_class"):
        assert key in recorded
    assert recorded["command"].startswith("python -m course_utils.classifier train")
    assert "offline" in recorded["test_data"], "recorded on other data: evaluate on that data here"
    images, labels = data.mnist_fallback("test", dataset)
    accuracy = classifier.classifier_accuracy(images, labels, classifier.load_classifier(dataset))
    assert abs(accuracy.overall - recorded["held_out_accuracy"]) <= 0.005
    np.testing.assert_allclose(accuracy.per_class, recorded["held_out_accuracy_per_class"], atol=0.02)
    assert accuracy.overall >= least and accuracy.per_class.min() >= worst_class


def test_accuracy_is_low_on_shuffled_labels(fallback_test):
    images, labels = fallback_test
    shuffled = np.random.default_rng(0).permutation(labels)
    accuracy = metrics.classifier_accuracy(images, shuffled)
    assert 0.05 < accuracy.overall < 0.16
    assert accuracy.per_class.max() < 0.3


def test_per_class_accuracy_against_a_plain_count(fallback_test):
    images, labels = fallback_test
    keep = labels != 3   # no image of a 3: its accuracy is NaN
    predicted = classifier.predict(images[keep])
    accuracy = classifier.classifier_accuracy(images[keep], labels[keep])
    for digit in range(10):
        chosen = labels[keep] == digit
        if digit == 3:
            assert np.isnan(accuracy.per_class[digit])
        else:
            assert accuracy.per_class[digit] == pytest.approx(np.mean(predicted[chosen] == digit))
    assert accuracy.overall == pytest.approx(np.mean(predicted == labels[keep]))
    # Batching (padding to 500) does not change a prediction.
    np.testing.assert_array_equal(classifier.predict(images[keep][:7]), predicted[:7])


def test_argument_checks(fallback_test):
    images, labels = fallback_test
    with pytest.raises(ValueError, match=r"`images` must have shape \(N, 28, 28, 1\).*got shape \(1000, 28, 28\).*\[\.\.\., None\]"):
        classifier.classifier_accuracy(images[..., 0], labels)
    with pytest.raises(ValueError, match=r"`images` must have shape \(N, 28, 28, 1\).*got shape \(2, 32, 32, 1\)"):
        classifier.predict(np.zeros((2, 32, 32, 1)))
    with pytest.raises(ValueError, match=r"`images` must lie in \[-1, 1\].*from 0 to 255"):
        classifier.classifier_accuracy((images + 1) * 127.5, labels)
    with pytest.raises(ValueError, match=r"`labels` must be integers of shape \(1000,\).*got int32 of shape \(999,\)"):
        classifier.classifier_accuracy(images, labels[:-1])
    with pytest.raises(ValueError, match=r"`labels` must be integers of shape \(1000,\).*float"):
        classifier.classifier_accuracy(images, labels.astype(float))
    with pytest.raises(ValueError, match=r"`labels` must lie in 0\.\.9.*to 10"):
        classifier.classifier_accuracy(images, labels + 1)
    with pytest.raises(TypeError, match="`classifier` must be a MnistClassifier"):
        classifier.predict(images[:2], classifier=lambda x: x)
    with pytest.raises(TypeError, match="`steps` must be a Python int"):
        classifier.train_classifier(images, labels, steps=10.0)


def test_training_learns_and_is_deterministic():
    images, labels = data.mnist_fallback("train")
    images, labels = images[::8], labels[::8]
    runs = [classifier.train_classifier(images, labels, steps=200, batch_size=32, channels=(8, 16), hidden=32,
                                        seed=3, progress=False) for _ in range(2)]
    jax.tree_util.tree_map(np.testing.assert_array_equal, _weights(runs[0]), _weights(runs[1]))
    test_images, test_labels = data.mnist_fallback("test")
    assert classifier.classifier_accuracy(test_images, test_labels, runs[0]).overall > 0.6


def test_train_command_records_command_data_and_accuracy(tmp_path, monkeypatch):
    def small_mnist(split, **kwargs):
        images, labels = data.mnist_fallback(split)
        return images[::10], labels[::10], f"every 10th offline digit, {split}"

    monkeypatch.setattr(classifier.data, "_load_mnist", small_mnist)
    out = tmp_path / "c.msgpack"
    classifier.main(["train", "--out", str(out), "--steps", "20", "--batch-size", "16"])
    recorded = checkpoints.read_metadata(out)
    assert recorded["command"] == f"python -m course_utils.classifier train --out {out} --steps 20 --batch-size 16"
    assert recorded["train_data"] == "every 10th offline digit, train" and recorded["training"]["steps"] == 20
    images, labels = data.mnist_fallback("test")
    accuracy = classifier.classifier_accuracy(images[::10], labels[::10], classifier.load_from(out))
    assert recorded["held_out_accuracy"] == pytest.approx(accuracy.overall)
    assert json.dumps(recorded)   # plain JSON all the way down
