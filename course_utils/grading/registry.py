"""The registry: every exercise of the course, by the name of the function the student writes.

An :class:`Exercise` holds what the checker needs to test one exercise (its reference, a generator of random
inputs, its edge cases, its tolerance) and its :class:`Hint` objects (known wrong variants and the slip each
reveals). The definitions live in :mod:`course_utils.exercises`, one module per notebook, each calling
:func:`register`. Nothing imports them at module level: :func:`load`, called by
:func:`exercise` and :func:`exercise_names` (so by every check), imports ``course_utils.exercises`` the first time the
registry is read. The exercises import the checker at module level; the checker reaches the exercises only from
inside that function, after every module is loaded (``tests/unit/test_imports.py`` counts module-level imports).
In the grading kernel's copy of the package the exercise definitions are absent (``autograder/keyless.py``) and
nothing reads the registry there.
"""

import dataclasses
from typing import Callable, Sequence


@dataclasses.dataclass(frozen=True)
class Hint:
    """A known wrong variant of an exercise and the slip it reveals."""

    variant: Callable
    message: str


@dataclasses.dataclass(frozen=True)
class Exercise:
    """What the checker needs to test one exercise.

    ``make_case(rng)`` returns the positional arguments of one random input
    (a tuple); ``edge_cases`` are fixed inputs added to the hidden tests, or a
    function that returns them (for inputs that are slow to make, such as
    models: made when a test first asks for them, not when the course imports).
    ``static_argnums`` are the positions of arguments that must be Python
    values under jit (sizes such as T). ``requires`` names a loop primitive
    the compiled function must contain (for exercises that teach lax.scan).
    Exercises tested by their properties, and class exercises, give
    ``trials(edge_cases)`` (argument tuples, or :class:`Build` objects for a
    class) in place of ``make_case``, and ``judge(ex, trials, results)``, which
    returns the summary line or raises CheckFailure; ``reference_class`` is the
    course's own class (a student's class must not run its ``__call__``).
    Both run in the grader's process while grading; only the trials' outputs
    come from the student's. ``module_argnums`` are the
    positions of flax.nnx modules (a model passed to a loss, say): they are
    split into graph and state so that the function can be jitted.
    ``output_names`` name the elements of an exercise that returns a tuple
    (``("mean", "variance")``): each is compared on its own, and messages
    say which one is wrong. ``depends_on`` names earlier exercises whose
    functions the student's answer may call: a wrong output says to check
    them first. ``max_equations``: the most equations the traced answer may
    have on one input to be compiled (checked in the kernel before compiling,
    see :func:`evaluate`): a Python loop over T unrolls under jit and compiling
    it can take minutes and gigabytes, so such an answer runs op by op without
    jit instead (right but slow passes, with ``unrolled_message``, the advice
    on what to use).
    """

    name: str
    reference: Callable | None
    make_case: Callable | None = None
    hints: Sequence[Hint] = ()
    edge_cases: Sequence[tuple] | Callable[[], Sequence[tuple]] = ()
    static_argnums: tuple = ()
    rtol: float = 1e-4
    atol: float = 1e-6
    requires: tuple = ()
    requires_message: str = ""
    trials: Callable | None = None
    judge: Callable | None = None
    module_argnums: tuple = ()
    output_names: tuple = ()
    reference_class: type | None = None
    depends_on: tuple = ()
    max_equations: int | None = None
    unrolled_message: str = ""

    def fixed_cases(self) -> list:
        """The edge cases, made now if they are given as a function."""
        return list(self.edge_cases() if callable(self.edge_cases) else self.edge_cases)


_REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add ``exercise`` to the registry under its name (a later one of the same name replaces it); return it."""
    _REGISTRY[exercise.name] = exercise
    return exercise


def load() -> None:
    """Register every exercise of the course: import :mod:`course_utils.exercises` (once; later calls do nothing)."""
    from .. import exercises  # noqa: F401 - importing the definitions registers them


def exercise(name: str) -> Exercise:
    """The registered exercise ``name``; a KeyError that lists the known names when there is none."""
    load()
    if name not in _REGISTRY:
        raise KeyError(f"check: unknown exercise {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def exercise_names() -> list[str]:
    """The names of every registered exercise, sorted."""
    load()
    return sorted(_REGISTRY)
