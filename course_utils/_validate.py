"""Argument checks shared by the reference implementations.

Every public function checks its arguments before it runs, and raises an error
that names the function, the argument and what was expected. Checks of shapes
always run (shapes are known while tracing); checks of values run only when the
values are concrete, i.e. when the function is not called inside ``jax.jit``.
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np


def _is_traced(value) -> bool:
    return isinstance(value, jax.core.Tracer)


def _concrete(where: str, name: str, value):
    """``value`` as a float64 numpy array, or a TypeError naming the argument."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: argument `{name}` must be a number or an array of numbers, "
                        f"got {type(value).__name__} {value!r:.40}") from None


def _describe(value) -> str:
    arr = np.asarray(value)
    if arr.size <= 6:
        return np.array2string(arr, precision=4)
    return f"array of shape {arr.shape} with min {arr.min():.4g} and max {arr.max():.4g}"


def check_open_unit(where: str, name: str, value) -> None:
    """Every element of ``value`` lies strictly between 0 and 1."""
    if _is_traced(value):
        return
    arr = _concrete(where, name, value)
    if not np.all(np.isfinite(arr)) or not np.all((arr > 0) & (arr < 1)):
        raise ValueError(f"{where}: argument `{name}` must lie strictly between 0 and 1, got {_describe(arr)}")


def check_unit_interval(where: str, name: str, value, *, lower_open: bool = True) -> None:
    """Every element lies in (0, 1] (or [0, 1] with ``lower_open=False``)."""
    if _is_traced(value):
        return
    arr = _concrete(where, name, value)
    low_ok = (arr > 0) if lower_open else (arr >= 0)
    if not np.all(np.isfinite(arr)) or not np.all(low_ok & (arr <= 1)):
        interval = "(0, 1]" if lower_open else "[0, 1]"
        raise ValueError(f"{where}: argument `{name}` must lie in {interval}, got {_describe(arr)}")


def check_positive(where: str, name: str, value) -> None:
    if _is_traced(value):
        return
    arr = _concrete(where, name, value)
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(f"{where}: argument `{name}` must be positive, got {_describe(arr)}")


def check_positive_int(where: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{where}: argument `{name}` must be a Python int (the number of steps), got {value!r}")
    if value < 1:
        raise ValueError(f"{where}: argument `{name}` must be at least 1, got {value}")
    return int(value)


def check_ndim(where: str, name: str, value, ndim: int) -> None:
    if jnp.ndim(value) != ndim:
        raise ValueError(f"{where}: argument `{name}` must have {ndim} dimension(s), got shape {jnp.shape(value)}")


def check_same_shape(where: str, name_a: str, a, name_b: str, b) -> None:
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{where}: arguments `{name_a}` and `{name_b}` must have the same shape, "
            f"got {jnp.shape(a)} and {jnp.shape(b)}"
        )


def check_broadcastable(where: str, names_and_values: dict) -> None:
    shapes = {name: jnp.shape(v) for name, v in names_and_values.items()}
    try:
        np.broadcast_shapes(*shapes.values())
    except ValueError:
        listed = ", ".join(f"`{n}` {s}" for n, s in shapes.items())
        raise ValueError(f"{where}: the shapes of {listed} cannot be broadcast together") from None


def check_time_index(where: str, name: str, t, T: int) -> None:
    """``t`` is an integer time step in 1..T."""
    if _is_traced(t):
        return
    arr = np.asarray(t)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{where}: argument `{name}` must be an integer time step, got dtype {arr.dtype}")
    if np.any(arr < 1) or np.any(arr > T):
        raise ValueError(f"{where}: argument `{name}` must lie in 1..{T} (time steps count from 1), got {_describe(arr)}")


# Every reference runs inside a jax.named_scope named REFERENCE_SCOPE + ":" + its
# qualified name, so that the checker can see in the jaxpr of a student's
# function whether it calls a reference (jitted, or through ``.raw``).
REFERENCE_SCOPE = "course_utils_reference"


def reference_marker(fn) -> str:
    """The scope name that marks calls of the reference ``fn`` (``course_utils.losses.mean_loss``)."""
    fn = getattr(fn, "raw", fn)
    return f"{fn.__module__}.{fn.__qualname__}"


def marked(fn):
    """Mark ``fn`` as a reference without jitting it: its calls trace inside its ``REFERENCE_SCOPE`` name.

    For references that take flax modules or keys and are jitted by their
    callers (``ddpm_loss``, ``ddpm_step``), and for the ``__call__`` of
    reference classes (``course_utils.unet.ResidualBlock``).
    """
    scope = f"{REFERENCE_SCOPE}:{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with jax.named_scope(scope):
            return fn(*args, **kwargs)

    _hide_unmarked(wrapper, fn)
    return wrapper


def _hide_unmarked(wrapper, fn, marked_fn=None) -> None:
    """``functools.wraps`` keeps the unmarked function as ``__wrapped__``, a way around the marker. Point it at a
    marked function instead (or remove it), keeping the signature that ``inspect`` reports."""
    wrapper.__signature__ = inspect.signature(fn)
    if marked_fn is None:
        del wrapper.__wrapped__
    else:
        wrapper.__wrapped__ = marked_fn


def unmarked(reference):
    """The body of a reference without its marker (what a student would write): for the course's own tests."""
    fn = getattr(reference, "raw", reference)
    for cell in fn.__closure__ or ():
        if callable(cell.cell_contents) and getattr(cell.cell_contents, "__name__", "") == fn.__name__:
            return cell.cell_contents
    raise ValueError(f"{fn!r} is not a marked reference")


def reference(static_argnames=(), **checks):
    """Jit a reference function and check its arguments before each call.

    ``checks`` maps argument names to check functions ``f(where, name, value)``;
    they run on the arguments as passed (before jit), so that a bad value gives
    a clear error instead of a NaN. The undecorated function is kept as
    ``.raw`` (to inline it in other traced code without a nested jit). Both
    trace inside a named scope that marks them as this reference (see
    ``REFERENCE_SCOPE``).
    """

    def decorate(fn):
        scoped = marked(fn)
        jitted = jax.jit(scoped, static_argnames=static_argnames)
        signature = inspect.signature(fn)
        where = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                bound = signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{where}{signature}: {exc}") from None
            bound.apply_defaults()
            for name, value in bound.arguments.items():
                if name not in checks and (value is None or isinstance(value, (str, bytes))):
                    raise TypeError(f"{where}: argument `{name}` must be a number or an array of numbers, "
                                    f"got {type(value).__name__} {value!r:.40}")
            for name, check in checks.items():
                check(where, name, bound.arguments[name])
            return jitted(*bound.args, **bound.kwargs)

        wrapper.raw = scoped
        _hide_unmarked(wrapper, fn, scoped)
        return wrapper

    return decorate
