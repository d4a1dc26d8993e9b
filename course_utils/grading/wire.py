"""The wire between the student's kernel and the grader: plain data only, the same format on both sides.

While grading, the grader (``autograder/execute.py``) draws the inputs of a check, pickles them into a
:class:`Request` and has the kernel run :func:`kernel_code`, which calls :func:`serve`: the kernel evaluates the
student's function on the request (:func:`~.trials.evaluate`) and displays the outcome under the :data:`MIME`
type, written by :func:`encode_outcome` (JSON, arrays in an .npz archive: no pickle, so reading it runs no code).
The grader reads it back with :func:`decode_outcome`, which refuses anything malformed or too large
(:class:`ReplyError`) before it is decoded. In the student's own notebook, :func:`course_utils.grading.check`
sends its outcome through the same two functions, so that a verdict is the same in both places.
"""

import base64
import binascii
import dataclasses
import io
import json
import math
import pickle
import zipfile

import numpy as np
from numpy.lib import format as npy

from .jitting import MAX_TEXT, at_precision
from .kept import abs as _abs, asarray as _asarray, isinstance as _isinstance, len as _len, to_float as _float
from .trials import Thunk, evaluate


MIME = "application/x-course-check+json"  # the display type of a reply (see :func:`serve`)
MAX_REPLY = 64 * 2**20  # bytes of one reply
_MAX_DEPTH = 20
# What a reply may decode to, checked before it is decoded (a reply is judged in the grader's process): the bytes of
# all its arrays, read from each .npy header (savez stores them uncompressed, so an honest reply's arrays are smaller
# than its text; a forged one may deflate a GiB into a MiB), the number of arrays, and the number of JSON values,
# counted from the commas and opening brackets of the text (an upper bound: strings may hold some) before parsing.
# Nesting is bounded while parsing: json's parser raises RecursionError past the interpreter's recursion limit
# (about 1,000 levels), and the structure itself is read at most _MAX_DEPTH + 2 levels deep.
_MAX_ARRAY_BYTES = MAX_REPLY
MAX_ARRAYS = 10_000
_MAX_JSON_VALUES = 200_000
MAX_MESSAGE = 20_000  # characters of a checker's message (the rest is cut, with a line that says so)


@dataclasses.dataclass(frozen=True)
class Request:
    """Everything the student's process needs to evaluate one ``check``: data chosen by the grader, nothing secret.

    ``trials`` are argument tuples (``fn(*trial)``) or :class:`Build` objects (class exercises). It is
    pickled from the grader to the kernel; the answer comes back as plain data (:func:`encode_outcome`).
    """

    name: str
    trials: tuple
    static_argnums: tuple = ()
    module_argnums: tuple = ()
    requires: tuple = ()
    reference_class: type | None = None
    max_equations: int | None = None


def encode_outcome(outcome) -> str:
    """``outcome`` as JSON, arrays in an .npz archive (base64): no pickle, so reading it runs no code."""
    arrays = {}

    def spec(value, depth=0):
        if depth > _MAX_DEPTH:
            return {"other": "deeply nested value"}
        if value is None:
            return {"none": 1}
        if _isinstance(value, bool):
            return {"bool": bool(value)}
        if _isinstance(value, str):
            return {"str": value[:MAX_TEXT]}
        if _isinstance(value, (tuple, list)):
            return {"seq": [spec(v, depth + 1) for v in value], "type": "list" if _isinstance(value, list) else "tuple"}
        if _isinstance(value, dict):
            return {"dict": [[str(k)[:200], spec(v, depth + 1)] for k, v in value.items()]}
        if _isinstance(value, int) and not _isinstance(value, np.integer):
            return {"int": int(value)} if _abs(value) < 2**62 else {"float": _float(value)}
        if _isinstance(value, float):
            return {"float": _float(value)}
        try:
            arr = _asarray(value)
        except Exception:  # noqa: BLE001
            arr = None
        if arr is None or arr.dtype == object:
            return {"other": type(value).__name__[:100]}
        key = f"a{_len(arrays)}"
        arrays[key] = arr
        return {"array": key}

    body = spec(outcome)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return json.dumps({"body": body, "arrays": base64.b64encode(buffer.getvalue()).decode("ascii")})


class ReplyError(ValueError):
    """The student's process sent something that is not a well-formed reply."""


def clip_message(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to at most about ``limit`` characters, with a visible line saying how much was cut."""
    text = str(text)
    if _len(text) <= limit:
        return text
    return text[:limit] + f"\n[... truncated: {_len(text) - limit} more characters not shown]"


def _read_arrays(packed: bytes) -> dict:
    """The arrays of the .npz archive ``packed``, refused before any is inflated when their headers declare more
    than _MAX_ARRAY_BYTES in all, more than MAX_ARRAYS arrays, or Python objects."""
    total = 0
    with zipfile.ZipFile(io.BytesIO(packed)) as archive:
        members = archive.infolist()
        if _len(members) > MAX_ARRAYS:
            raise ReplyError(f"the reply has more than {MAX_ARRAYS} arrays")
        for info in members:
            if not info.filename.endswith(".npy"):
                raise ReplyError("the reply has an unexpected structure")
            with archive.open(info) as member:
                version = npy.read_magic(member)
                read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                shape, _fortran, dtype = read(member)
            if dtype.hasobject:
                raise ReplyError("the reply has an array of Python objects")
            total += math.prod(shape) * dtype.itemsize
            if total > _MAX_ARRAY_BYTES:
                raise ReplyError(f"the reply's arrays hold more than {_MAX_ARRAY_BYTES // 2**20} MiB")
        with np.load(io.BytesIO(packed), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}


def opaque(name: str):
    """A stand-in for an object the student's code returned that is not data (shown by its type's name)."""
    safe = "".join(c for c in str(name) if c.isalnum() or c == "_")[:100] or "object"
    return type(safe, (), {"__repr__": lambda self: f"<{safe}>"})()


def decode_outcome(text) -> dict:
    """Read what :func:`encode_outcome` wrote; raise ReplyError for anything else. Safe on hostile input."""
    if not _isinstance(text, str) or _len(text) > MAX_REPLY:
        raise ReplyError("the reply is not text of a reasonable size")
    try:
        if text.count(",") + text.count("{") + text.count("[") > _MAX_JSON_VALUES:
            raise ReplyError(f"the reply holds more than {_MAX_JSON_VALUES} values")
        try:
            doc = json.loads(text)
        except RecursionError:
            raise ReplyError("the reply is nested deeper than the grader reads") from None
        packed = base64.b64decode(doc["arrays"], validate=True)
        arrays = _read_arrays(packed)
    except ReplyError:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error, OSError, EOFError, zipfile.BadZipFile, OverflowError,
            RecursionError, MemoryError) as exc:  # a reply that cannot be decoded, whatever the reason, is malformed
        raise ReplyError(f"the reply could not be read ({type(exc).__name__})") from None

    def value(node, depth=0):
        if depth > _MAX_DEPTH + 2 or not _isinstance(node, dict) or _len(node) not in (1, 2):
            raise ReplyError("the reply has an unexpected structure")
        (key, content), *_ = node.items()
        if key == "none":
            return None
        if key in ("bool", "str", "int", "float"):
            kind = {"bool": bool, "str": str, "int": int, "float": (float, int)}[key]
            if not _isinstance(content, kind):
                raise ReplyError("the reply has a value of the wrong type")
            return content
        if key == "seq" and _isinstance(content, list):
            items = [value(v, depth + 1) for v in content]
            return items if node.get("type") == "list" else tuple(items)
        if key == "dict" and _isinstance(content, list):
            out = {}
            for pair in content:
                if not (_isinstance(pair, list) and _len(pair) == 2 and _isinstance(pair[0], str)):
                    raise ReplyError("the reply has an unexpected structure")
                out[pair[0]] = value(pair[1], depth + 1)
            return out
        if key == "array" and content in arrays:
            return arrays[content]
        if key == "other" and _isinstance(content, str):
            return opaque(content)
        raise ReplyError("the reply has an unexpected structure")

    if not _isinstance(doc, dict):
        raise ReplyError("the reply has an unexpected structure")
    try:
        return value(doc.get("body"))
    except (RecursionError, MemoryError) as exc:
        raise ReplyError(f"the reply could not be read ({type(exc).__name__})") from None


def text_list(value) -> list:
    """The strings of a list the student's process sent, each cut to MAX_TEXT characters (anything else: [])."""
    return [str(v)[:MAX_TEXT] for v in value] if _isinstance(value, (list, tuple)) else []


def serve(payload: str, get_fn) -> None:
    """Kernel side of a check while grading: evaluate the grader's request on the student's function and
    display the outcome as plain data (see ``autograder/execute.py``). Nothing it shows can decide a verdict
    except through the outputs it reports."""
    from IPython.display import display

    with at_precision():
        outcome = evaluate(pickle.loads(base64.b64decode(payload)), Thunk(get_fn))
    display({MIME: encode_outcome(outcome)}, raw=True)


def kernel_code(request: Request, expression: str) -> str:
    """The code the grader runs in the student's kernel for one check: ``expression`` names the student's function."""
    payload = base64.b64encode(pickle.dumps(request)).decode("ascii")
    return f"__import__('course_utils.grading').grading.serve({payload!r}, lambda: ({expression}))"
