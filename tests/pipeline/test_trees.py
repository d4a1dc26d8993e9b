"""The grader's tree helpers (``autograder/trees.py``) on trees a kernel could leave: deep, linked, unreadable."""

import os
import sys

import pytest

from autograder.trees import copy_tree, remove_tree, walk_tree


def _deep(top, depth: int) -> None:
    """``top/d/d/.../d`` ``depth`` levels deep (past PATH_MAX and the recursion limit), a file every 500 levels."""
    os.mkdir(top)
    fd = os.open(top, os.O_RDONLY)
    for level in range(depth):
        os.mkdir("d", dir_fd=fd)
        nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nxt
        if level % 500 == 0:
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
    os.symlink("/", "root-link", dir_fd=fd)
    os.close(fd)


@pytest.fixture
def deep(tmp_path):
    """Makes deep trees under ``tmp_path`` and removes whatever is left of them afterwards: pytest's own clean-up
    of old temporary folders recurses and fails on a tree deeper than the recursion limit (CI stopped on one)."""
    made = []

    def make(name: str, depth: int):
        made.append(tmp_path / name)
        _deep(made[-1], depth)
        return made[-1]

    yield make
    for top in made:
        assert remove_tree(top) == []


def test_a_tree_deeper_than_the_recursion_limit_is_removed(tmp_path):
    depth = sys.getrecursionlimit() + 2000
    _deep(tmp_path / "t", depth)
    assert remove_tree(tmp_path / "t") == []
    assert not (tmp_path / "t").exists()


def test_links_are_removed_never_followed_and_unreadable_folders_are_removed(tmp_path):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "file").write_text("kept")
    t = tmp_path / "t"
    (t / "a" / "b").mkdir(parents=True)
    (t / "a" / "b" / "x").write_text("x")
    (t / "to-keep").symlink_to(keep)
    (t / "to-file").symlink_to(keep / "file")
    os.chmod(t / "a" / "b", 0)
    os.chmod(t / "a", 0)
    assert remove_tree(t) == []
    assert not t.exists() and (keep / "file").read_text() == "kept"
    (tmp_path / "link").symlink_to(keep)
    assert remove_tree(tmp_path / "link") == [] and (keep / "file").exists()  # the link, not its target
    assert remove_tree(tmp_path / "missing") == []


def test_walk_and_copy_never_enter_a_link(tmp_path, deep):
    deep("t", 1200)
    seen = sum(1 for _ in walk_tree(tmp_path / "t"))
    assert seen == 1201
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("f")
    (src / "outside").symlink_to(tmp_path / "t")
    (src / "__pycache__").mkdir()
    copy_tree(src, tmp_path / "dst", ignore=("__pycache__",))
    assert sorted(p.relative_to(tmp_path / "dst").as_posix() for p in (tmp_path / "dst").rglob("*")) == ["sub", "sub/f.txt"]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to show that root's removal needs no permission change")
def test_a_folder_of_mode_000_owned_by_another_user_is_removed_by_root(tmp_path):
    t = tmp_path / "t"
    (t / "x").mkdir(parents=True)
    os.chown(t / "x", 65534, 65534)
    os.chmod(t / "x", 0)
    assert remove_tree(t) == []
