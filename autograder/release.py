"""Regenerate the student notebooks in notebooks/ from the solution notebooks in solutions/.

nbgrader's generate_assignment removes the solutions and hidden tests, locks
the read-only cells and records checksums. The result is copied over
notebooks/NAME/, which is committed; a test regenerates it and fails on any
difference, so the two can never drift apart.
"""

import tempfile
from pathlib import Path

from . import course
from .trees import clear_tree, copy_tree


def release(assignment: str, out_dir: Path = course.NOTEBOOKS) -> Path:
    """Generate the student version of ``assignment`` into ``out_dir/assignment``; return that folder."""
    course.check_assignment(assignment)
    with tempfile.TemporaryDirectory(prefix="release-") as tmp:
        workdir = course.prepare_workdir(Path(tmp), assignment, keyless=False)
        course.nbgrader(workdir, "generate_assignment", assignment, "--force", "--no-db")
        released = workdir / "release" / assignment
        target = Path(out_dir) / assignment
        clear_tree(target)
        copy_tree(released, target)
    return target


def release_all(out_dir: Path = course.NOTEBOOKS) -> list[Path]:
    return [release(name, out_dir) for name in course.assignments()]
