"""What the first cell of every notebook calls."""

import jax
import matplotlib as mpl

from . import config
from .withheld import ReferenceWithheld


def setup() -> str:
    """Set the figure style and return a line naming JAX's backend and devices.

    Calling it initialises JAX's backend, so that JAX's one-time messages
    (such as "no GPU found") appear here and never under a test cell.
    """
    mpl.rcParams.update({
        "figure.dpi": 100,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "figure.constrained_layout.use": True,
    })
    devices = ", ".join(str(d) for d in jax.devices())
    mode = "grading mode (COURSE_FAST=1): runs are shortened" if config.fast_mode() else "full mode"
    return f"JAX {jax.__version__} on {jax.default_backend().upper()} ({devices}); {mode}"


def is_notebook_code(filename: str) -> bool:
    """True for code typed in a notebook cell: IPython compiles cells as ``<ipython-input-...>``
    (IPython < 8, Colab's older images) or as files in a folder ``ipykernel_<pid>`` (ipykernel 6+)."""
    return filename.startswith("<ipython-input") or "ipykernel_" in filename or filename.startswith("<cell")


def missing_piece(exc: BaseException) -> str | None:
    """The name of the notebook function or class whose stub raised ``exc`` (a NotImplementedError raised in a
    cell's code), or None: ``MLPDenoiser`` when its ``__init__`` is the stub, whatever called it."""
    if not isinstance(exc, NotImplementedError):
        return None
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None or not is_notebook_code(last.tb_frame.f_code.co_filename):
        return None
    frame = last.tb_frame
    owner = frame.f_locals.get("self")
    if owner is not None and frame.f_code.co_name in ("__init__", "__call__"):
        return type(owner).__name__
    return frame.f_code.co_name


class CellSkipped(RuntimeError):
    """The rest of a cell cannot run (what it needs is not written yet): one line in Jupyter, not a traceback."""

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {self}"]


def yours_or_reference(name: str, yours, reference):
    """``yours()``; when it raises (a stub, a bug, a missing cell), one printed line and ``reference()`` instead.

    For the cells that use an exercise's function after its test: a student who is stuck on
    ``name`` still sees the rest of the notebook work. Both arguments are functions of no
    arguments (``lambda: sample(model, ...)``), so that the whole computation is retried.
    """
    try:
        return yours()
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the cell goes on with the reference
        piece = missing_piece(exc)
        if piece not in (None, name):  # a stub this cell needs besides `name` (the model's class, say)
            name = piece
        if isinstance(exc, ReferenceWithheld):
            why = "calls a course function that is not available while grading"
        elif isinstance(exc, NotImplementedError):
            why = "is not written yet"
        else:
            lines = str(exc).strip().splitlines()
            why = f"raised {type(exc).__name__}: {(lines[0] if lines else '')[:150]}"
        try:
            result = reference()
        except ReferenceWithheld:  # while grading: the sandbox has no reference (autograder/keyless.py)
            raise ReferenceWithheld(f"your `{name}` {why}, and the course's reference is not available while grading: "
                                    "the rest of this cell is skipped") from None
        except Exception as again:  # noqa: BLE001 - the reference needs a piece of yours too (your model's class)
            other = missing_piece(again)
            needs = ("it too" if other == name else f"your `{other}`, which is not written yet" if other
                     else f"what failed ({type(again).__name__})")
            raise CellSkipped(f"your `{name}` {why}, and the course's version of this cell needs {needs}: "
                              "the rest of this cell is skipped") from None
        print(f"note: your `{name}` {why}; this cell uses the course's reference implementation instead.")
        return result
