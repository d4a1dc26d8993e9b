"""Saving and loading flax.nnx models: one msgpack file holding the weights and a metadata dict.

The file is ``flax.serialization.msgpack_serialize`` of
``{"format": ..., "metadata": <JSON text>, "state": <pure dict of arrays>}``:
plain arrays and text, no pickle, so loading a file never runs code. The state
is everything in the model except its random-number state (``nnx.RngState``),
which a fresh model brings with it. The metadata (configuration, the command
that made the file, the date, measured quality) is any JSON-serialisable dict.

``save_model(..., stored_as="float16")`` halves the file: the float32
parameters are rounded to float16 (about three significant digits) and read
back as float32. A file records how it was stored under ``"stored_as"``.
"""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

FORMAT = "course_utils.checkpoint/1"
STORAGE = ("float32", "float16")
"""How :func:`save_model` may store float32 parameters: as they are, or rounded to float16."""


def count_parameters(model):
    """The number of trained numbers (``nnx.Param`` entries) in ``model``."""
    return sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))


def provenance(module, argv, model):
    """What a shipped checkpoint records about how it was made: the command, date, versions, devices, size."""
    import datetime
    import shlex

    import flax

    devices = jax.local_devices()
    return {
        "command": f"python -m {module} " + " ".join(shlex.quote(a) for a in argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"jax": jax.__version__, "flax": flax.__version__},
        "device": f"{len(devices)} x {devices[0].device_kind}",
        "parameters": count_parameters(model),
    }


def train_command_parser(module, description, help):
    """``python -m MODULE train --out PATH ...``: the parser of a training script, and its ``train`` sub-parser."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    train = parser.add_subparsers(dest="command", required=True).add_parser("train", help=help)
    train.add_argument("--out", required=True, help="where to write the checkpoint (.msgpack)")
    train.add_argument("--seed", type=int, default=0)
    return parser, train


def describe_saved(path):
    """One line about a written checkpoint: its parameters and file size."""
    metadata = read_metadata(path)
    size = pathlib.Path(path).stat().st_size / 1024
    return f"{metadata.get('parameters', '?'):,} parameters; saved {path} ({size:.0f} KiB)"


def _check_model(where, model):
    if not isinstance(model, nnx.Module):
        raise TypeError(f"{where}: argument `model` must be a flax.nnx Module, got {type(model).__name__}")


def _saved_state(model):
    """The model's state without its random-number state, as a nested dict of arrays."""
    return nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.RngState)))


def _stored(array, stored_as):
    array = np.asarray(array)
    return array.astype(np.float16) if stored_as == "float16" and array.dtype == np.float32 else array


def save_model(model, path, metadata=None, *, stored_as="float32"):
    """Write ``model``'s weights and ``metadata`` (a JSON-serialisable dict) to ``path``; return the path.

    ``stored_as="float16"`` rounds the float32 parameters to float16 in the file
    (:func:`load_model` turns them back into float32). Parent folders are
    created; the file is written whole or not at all.
    """
    _check_model("save_model", model)
    if stored_as not in STORAGE:
        raise ValueError(f"save_model: argument `stored_as` must be one of {STORAGE}, got {stored_as!r}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"save_model: argument `metadata` must be a dict, got {type(metadata).__name__}")
    try:
        metadata_text = json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"save_model: argument `metadata` must be JSON-serialisable ({exc})") from None
    state = jax.tree_util.tree_map(lambda a: _stored(a, stored_as), _saved_state(model))
    payload = serialization.msgpack_serialize({"format": FORMAT, "metadata": metadata_text, "state": state,
                                               "stored_as": stored_as})
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(payload)
    os.replace(partial, path)
    return path


def _msgpack_restore(data):
    """``serialization.msgpack_restore``, also on flax < 0.12.8: those read msgpack maps with
    ``strict_map_key=True``, which refuses the integer keys of ``nnx.List`` entries."""
    try:
        return serialization.msgpack_restore(data)
    except ValueError as exc:
        if "strict_map_key" not in str(exc):
            raise
    tree = serialization.msgpack.unpackb(data, ext_hook=serialization._msgpack_ext_unpack, raw=False,
                                         strict_map_key=False)
    return serialization._unchunk_array_leaves_in_place(tree)


def _read(where, path):
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no checkpoint file at {str(path)!r}")
    try:
        payload = _msgpack_restore(path.read_bytes())
    except Exception as exc:  # msgpack raises several unrelated types on a damaged file
        raise ValueError(f"{where}: {path} is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{where}: {path} is not a checkpoint written by course_utils.checkpoints.save_model")
    return payload


def read_metadata(path):
    """The metadata dict stored in the checkpoint at ``path`` (without loading any weights into a model)."""
    return json.loads(_read("read_metadata", path)["metadata"])


def _leaves(tree):
    """{"a/b/0/kernel": array} for a nested dict of arrays."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in keys): leaf for keys, leaf in flat}


def load_model(model, path):
    """Load the weights at ``path`` into ``model`` (built with the same configuration); return the metadata.

    Every parameter must match in name, shape and dtype (float16 in a file
    stored as float16 stands for float32); otherwise a ValueError lists the
    differences and the model is left unchanged.
    """
    _check_model("load_model", model)
    payload = _read("load_model", path)
    stored_as = payload.get("stored_as", "float32")
    if stored_as not in STORAGE:
        raise ValueError(f"load_model: {path} says its parameters are stored as {stored_as!r}, not one of {STORAGE}")
    saved = jax.tree_util.tree_map(
        lambda a: a.astype(np.float32) if stored_as == "float16" and a.dtype == np.float16 else a, payload["state"])
    want, have = _leaves(_saved_state(model)), _leaves(saved)
    problems = [f"`{k}` is in the model but not in the file" for k in want.keys() - have.keys()]
    problems += [f"`{k}` is in the file but not in the model" for k in have.keys() - want.keys()]
    problems += [f"`{k}` has shape {tuple(have[k].shape)} {have[k].dtype} in the file but "
                 f"{tuple(want[k].shape)} {want[k].dtype} in the model"
                 for k in sorted(want.keys() & have.keys())
                 if (have[k].shape, have[k].dtype) != (want[k].shape, want[k].dtype)]
    if problems:
        shown = "; ".join(sorted(problems)[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise ValueError(f"load_model: the checkpoint {path} does not fit this model (was it built with another "
                         f"configuration? the file's metadata: {payload['metadata'][:300]}): {shown}")
    state = nnx.state(model, nnx.Not(nnx.RngState))
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_map(jnp.asarray, saved))
    nnx.update(model, state)
    return json.loads(payload["metadata"])
