"""A grading kernel's compilation cache: its own folder first, then a warm folder it can read only by key.

The grader warms a JAX compilation cache once per class by grading the solution (see ``autograder/grade.py``,
``warm_compile_cache``), so that a right answer's programs are compiled once per class, not once per student.
That cache holds the solution's compiled programs. Every grading kernel gets it mounted read-only with its folder
sealed (mode ``0111``: it may be passed through, not listed), and without a user namespace of its own that could
lift the seal: a kernel opens an entry only by its name, which is the hash of the program it compiles. An answer
finds the solution's program only by being compiled to it, so the cache is no library of answers.

JAX reads one cache folder, and writes to it; the kernel's is a private, empty and writable one.
``read_through()``, run in the kernel before any cell (the kernel spec's ``exec_lines``), makes a miss there
look in the warm folder named by ``$AUTOGRADER_CACHE_SOURCE`` too. Without that variable (a student's own
Jupyter, the warm-up's kernel) it does nothing.
"""

import os

SOURCE_VARIABLE = "AUTOGRADER_CACHE_SOURCE"


def read_through(source: str | None = None) -> bool:
    """Make JAX's compilation cache look in ``source`` (default: ``$AUTOGRADER_CACHE_SOURCE``) for what its own
    folder lacks; return whether it does (False: no source, or a JAX whose cache this does not know)."""
    source = source or os.environ.get(SOURCE_VARIABLE, "")
    if not source:
        return False
    try:
        from jax._src import compilation_cache as cc
        from jax._src import lru_cache
        suffix = lru_cache._CACHE_SUFFIX
        make = cc.get_file_cache
    except (ImportError, AttributeError):
        return False

    def warm(key: str):
        if not key or os.sep in key or key.startswith("."):
            return None
        try:
            with open(os.path.join(source, key + suffix), "rb") as f:
                return f.read()
        except OSError:
            return None

    def with_warm(cache):
        own = cache.get

        def get(key):
            value = own(key)
            return warm(key) if value is None else value

        cache.get = get
        return cache

    if cc._cache is not None:  # already made (a program was compiled before this ran)
        with_warm(cc._cache)
        return True

    def get_file_cache(path):
        made = make(path)
        if made is not None:
            with_warm(made[0])
        return made

    cc.get_file_cache = get_file_cache
    return True
