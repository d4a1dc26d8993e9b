"""Writing the grader's own files so that a process killed at any moment leaves the old file or the new one, whole.

Used for the gradebook (:mod:`autograder.gradebook`), the resume journal (:mod:`autograder.journal`) and the
results file (:mod:`autograder.results`).
"""

import os
import threading
from pathlib import Path


def fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path`` (a file, or with ``directory`` a folder, so that a rename in it is on disk) to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError:
        pass  # a file system that cannot sync a folder: the rename is still atomic
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a process killed meanwhile) sees the old file or the new
    one, never a part: a temporary file next to it, synced, then renamed over it (``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync(path.parent, directory=True)
