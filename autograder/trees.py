"""Removing, copying and walking folder trees that a submission may have shaped, safely.

A kernel can leave behind anything its sandbox lets it write: a folder 3,000 levels deep, names whose full
path is longer than the system allows (``PATH_MAX``), symbolic links to the grader's files, folders with mode
000. ``shutil.rmtree`` recurses (``RecursionError`` on Python 3.11 even with ``ignore_errors=True``),
``os.walk`` recurses on 3.11, and a path-based walk fails past ``PATH_MAX``. The functions here never recurse,
never follow a symbolic link, never build a path longer than two names below the folder they were given, and
never raise: a failure to clean up is reported (``remove_tree`` returns what it could not remove), so that it
never stops a batch.

This file is also imported by ``sandbox.py``, which runs as a script: it imports nothing of the package.
"""

import errno
import itertools
import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _open_dir(name, dir_fd=None) -> int:
    """An fd of the folder ``name`` (relative to ``dir_fd``), never through a link; a folder its owner made
    unreadable (mode 000) is opened to its owner again first."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=dir_fd, follow_symlinks=False)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _entries(fd: int) -> list:
    """(name, is a real folder) of each entry of the open folder ``fd``; links and files are not folders."""
    with os.scandir(fd) as it:
        return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]


def remove_tree(path) -> list[str]:
    """Remove ``path`` and everything under it; return what could not be removed (an empty list on success).

    Never raises, never recurses, never follows a link (a link is removed, not what it points to). Deep trees
    are flattened: the folders found inside a folder are moved up to ``path``'s own level (``rename``), so the
    work is linear in the number of entries and at most two folders are open at a time, whatever the depth.
    A ``path`` that is itself a link or a file is unlinked.
    """
    path = Path(path)
    problems = []
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"{path}: {exc.strerror or exc}"]
    if not stat.S_ISDIR(mode):
        try:
            os.unlink(path)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
        return problems
    try:
        top = _open_dir(path)
    except OSError as exc:
        return [f"{path}: {exc.strerror or exc}"]
    counter = itertools.count()
    try:
        for _round in itertools.count():
            try:
                entries = _entries(top)
            except OSError as exc:
                problems.append(f"{path}: {exc.strerror or exc}")
                break
            if not entries:
                break
            progress = False
            for name, is_dir in entries:
                if not is_dir:
                    try:
                        os.unlink(name, dir_fd=top)
                        progress = True
                    except OSError as exc:
                        problems.append(f"{path}/{name}: {exc.strerror or exc}")
                    continue
                try:
                    sub = _open_dir(name, dir_fd=top)
                except OSError as exc:
                    problems.append(f"{path}/{name}: {exc.strerror or exc}")
                    continue
                try:
                    for child, child_is_dir in _entries(sub):
                        if child_is_dir:  # hoisted to the top level under a fresh name
                            while True:
                                fresh = f".autograder-rm-{next(counter)}"
                                try:
                                    os.rename(child, fresh, src_dir_fd=sub, dst_dir_fd=top)
                                    break
                                except OSError as exc:
                                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                                        raise
                        else:
                            os.unlink(child, dir_fd=sub)
                    progress = True
                except OSError as exc:
                    problems.append(f"{path}/{name}: {exc.strerror or exc}")
                finally:
                    os.close(sub)
                try:
                    os.rmdir(name, dir_fd=top)
                except OSError:
                    pass  # not empty yet (an error above); reported if no round makes progress
            if not progress:
                problems.append(f"{path}: {len(entries)} entries could not be removed")
                break
    finally:
        os.close(top)
    if not problems:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
    return problems[:20]


def clear_tree(path) -> None:
    """``remove_tree``, for a folder the grader must have gone before it goes on (its own folders): raise if it stays."""
    problems = remove_tree(path)
    if problems:
        raise OSError(f"could not remove {path}: {problems[0]}")


def walk_tree(top):
    """(folder, names of its sub-folders, names of its files) for ``top`` and every folder below it, like
    ``os.walk(top)`` top-down, but iterative: no recursion limit, and links (to folders or files) are listed
    as files, never entered. Folders that cannot be read are skipped. The caller may prune the sub-folder list."""
    stack = [Path(top)]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError:
            continue
        dirs = [name for name, is_dir in entries if is_dir]
        files = [name for name, is_dir in entries if not is_dir]
        yield folder, dirs, files
        stack.extend(folder / d for d in reversed(dirs))


def copy_tree(src, dst, ignore=()) -> None:
    """Copy the folder ``src`` to ``dst`` (which must not exist): folders and regular files only, iteratively.

    Links and special files are not copied (and never followed); names in ``ignore`` are skipped at every
    level. Used for the grader's own trees (sources, releases, a student's prepared notebook): an error is
    the grader's and is raised.
    """
    import shutil

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True)
    for folder, dirs, files in walk_tree(src):
        dirs[:] = [d for d in dirs if d not in ignore]
        target = dst / folder.relative_to(src)
        for name in dirs:
            (target / name).mkdir()
        for name in files:
            if name in ignore or not stat.S_ISREG(os.lstat(folder / name).st_mode):
                continue
            shutil.copy2(folder / name, target / name, follow_symlinks=False)
