"""What the grader computes once per process and reuses for every student.

The trials of a check are drawn from a fixed seed, so every student of a class is judged on the same inputs, and
what the grader computes from the inputs alone is the same for all of them: the reference's expected output, a
training step's reference run, a hint's or an edit's wrong output. One ``nbgrader autograde`` process grades several
students in a row (``autograder/pool.py``); :func:`once` computes each such value for the first of them and hands it
to the others. Keys are made from the values of the inputs (:func:`fingerprint`), never from object ids alone, so a
new trial that happens to reuse a freed object's address never gets another trial's value.
"""

import dataclasses
import hashlib

import jax
import numpy as np

from .kept import asarray as _asarray, isinstance as _isinstance, len as _len

MAX_ENTRIES = 20_000
MAX_BYTES = 256 * 2**20
"""The most values and the most bytes of arrays kept; past either the store is emptied and filled again (a grading
process grades at most 16 students of one notebook, far below both; a long test session checks thousands)."""

_STORE: dict = {}
_BYTES = [0]


def _nbytes(value) -> int:
    try:
        return sum(int(getattr(leaf, "nbytes", 64)) for leaf in jax.tree_util.tree_leaves(value))
    except Exception:  # noqa: BLE001 - a value the tree functions cannot walk: counted as small
        return 64


def once(owner, key, compute):
    """What ``compute()`` returns for the function ``owner`` (a reference, a hint's variant, an edit) on the inputs
    whose :func:`fingerprint` is in ``key``: computed the first time, then stored. The store holds ``owner`` itself
    next to the value, so an owner that is gone (and whose address a new one reuses) never gets its value. An
    exception from ``compute`` is raised and nothing is stored."""
    entry = _STORE.get((id(owner), key))
    if entry is not None and entry[0] is owner:
        return entry[1]
    value = compute()
    size = _nbytes(value)
    if _len(_STORE) >= MAX_ENTRIES or _BYTES[0] + size > MAX_BYTES:
        _STORE.clear()
        _BYTES[0] = 0
    _STORE[(id(owner), key)] = (owner, value)
    _BYTES[0] += size
    return value


def fingerprint(value) -> str:
    """A digest of ``value``: arrays by dtype, shape and bytes, flax.nnx modules by their weights, dataclasses (a
    training step's trial) field by field, anything else by its ``repr`` (a module-level function's includes its
    address, which is fixed for the life of the process)."""
    from flax import nnx

    digest = hashlib.sha1()

    def add(value):
        if _isinstance(value, (np.ndarray, jax.Array)) and not jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            arr = _asarray(value)
            digest.update(f"{arr.dtype}{arr.shape}".encode())
            digest.update(arr.tobytes())
        elif _isinstance(value, (tuple, list)):
            digest.update(f"{type(value).__qualname__}{_len(value)}(".encode())
            for v in value:
                add(v)
            digest.update(b")")
        elif _isinstance(value, nnx.Module):
            digest.update(type(value).__qualname__.encode())
            for leaf in jax.tree_util.tree_leaves(nnx.state(value)):
                add(leaf)
        elif dataclasses.is_dataclass(value) and not _isinstance(value, type):
            digest.update(type(value).__qualname__.encode())
            for field in dataclasses.fields(value):
                digest.update(field.name.encode())
                add(getattr(value, field.name))
        else:
            digest.update(f"{type(value).__qualname__}:{value!r};".encode())

    add(value)
    return digest.hexdigest()
