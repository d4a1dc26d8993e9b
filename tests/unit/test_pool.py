"""How the worker pool cuts a class into ``nbgrader autograde`` calls (``autograder.pool.chunk_size``)."""

import pytest

from autograder import pool


def _chunks(students: int, workers: int) -> list:
    left, sizes = students, []
    while left:
        sizes.append(pool.chunk_size(left, workers))
        left -= sizes[-1]
    return sizes


@pytest.mark.parametrize("students,workers", [(1, 1), (2, 1), (3, 2), (7, 2), (100, 2), (100, 8), (1000, 16)])
def test_every_student_is_taken_once_in_chunks_of_bounded_size(students, workers):
    sizes = _chunks(students, workers)
    assert sum(sizes) == students
    assert all(1 <= s <= pool.MAX_CHUNK for s in sizes)
    assert all(s >= pool.MIN_CHUNK for s in sizes[:-1]), sizes  # only the last may be smaller


def test_a_class_of_100_on_2_workers_pays_the_start_up_a_dozen_times_not_eighteen():
    """The share 1/(2 * workers) of what is left, without a floor, ended a class of 100 with single students: 18
    calls, each paying nbgrader's start-up and the checker's per-process work (about 10 s on 2 cores)."""
    sizes = _chunks(100, 2)
    assert len(sizes) <= 12, sizes
    assert sizes[:3] == [16, 16, 16]  # big chunks while much is left
