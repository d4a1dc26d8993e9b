"""What stands in for an exercise's reference implementation while a class is graded.

The grading sandbox does not get the full course_utils: the autograder builds a copy of the package in which the
reference of every exercise of the notebook being graded (and every course function that would run it) has its
body replaced by a call of :func:`withheld` (``autograder/keyless.py``). The answer key stays with the grader: in
the kernel the reference cannot be called, read or loaded. A student working on their own has the full package.
"""


class ReferenceWithheld(NotImplementedError):
    """Raised by a reference implementation that is not available in the grading sandbox.

    A subclass of NotImplementedError, so that the notebooks' fallbacks treat it like an exercise not written yet;
    in Jupyter it shows as one line, not a traceback.
    """

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {self}"]


def withheld(name: str):
    """Raise :class:`ReferenceWithheld` for the course function ``name`` (what a withheld reference's body does)."""
    raise ReferenceWithheld(f"the course's `{name}` is not available while grading: "
                            "the grader runs your own functions (this cell is skipped)")
