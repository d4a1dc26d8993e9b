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

MAX_ENTRIES = 50_000
"""The most values kept; past it the store is emptied and filled again (a process grades a few students)."""

_STORE: dict = {}


def once(owner, key, compute):
    """What ``compute()`` returns for the function ``owner`` (a reference, a hint's variant, an edit) on the inputs
    whose :func:`fingerprint` is in ``key``: computed the first time, then stored. The store holds ``owner`` itself
    next to the value, so an owner that is gone (and whose address a new one reuses) never gets its value. An
    exception from ``compute`` is raised and nothing is stored."""
    entry = _STORE.get((id(owner), key))
    if entry is not None and entry[0] is owner:
        return entry[1]
    value = compute()
    if _len(_STORE) >= MAX_ENTRIES:
        _STORE.clear()
    _STORE[(id(owner), key)] = (owner, value)
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
