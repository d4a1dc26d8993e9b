"""Kernel launcher that puts a student's kernel inside limits, then becomes the kernel.

The autograder's kernel spec (``autograder.course.write_kernelspec``) starts
every grading kernel as::

    python autograder/sandbox.py --memory-mb 4096 --no-network -- python -m ipykernel_launcher -f CONN

This script sets the limits on itself and replaces itself (``exec``) with the
kernel command, so the kernel and everything it starts inherit them:

- memory: ``RLIMIT_AS`` (address space). JAX on CPU works under it (it was
  checked down to 2 GiB); an allocation past it raises ``MemoryError`` or
  XLA's ``RESOURCE_EXHAUSTED`` in the student's cell, or kills the kernel,
  and both are reported as a memory problem of that submission.
- files: ``RLIMIT_FSIZE`` caps the size of any file the kernel writes, and no
  core dumps are written.
- compilation cache: with ``--jax-cache DIR`` (a cache warmed by running the
  solution notebook), the kernel gets a private copy of DIR as its JAX
  compilation cache: the course's own code compiles once per class instead of
  once per student, and what one kernel writes there no other kernel reads.
  JAX puts the cache's path into the compile options of every program
  (``jax_persistent_cache_enable_xla_caches`` names a GPU autotuning cache
  inside it), and the compile options are part of each entry's key: a copy
  at another path would miss on every entry. The launcher turns that GPU-only
  cache off, so the keys do not depend on where the cache lies.
- network: with ``--no-network`` the kernel runs in a new network namespace of
  its own (``unshare --user --map-root-user --net``), where only an unconnected
  loopback exists. The kernel then talks to nbgrader over Unix sockets
  (``KernelManager.transport = "ipc"``), which need no network. Where user
  namespaces are not allowed (``network_isolation_available()`` is false),
  the kernel runs with the machine's network.

It is a standalone script (run by path, not imported from the package) so
that the student's kernel needs nothing on its ``sys.path`` but course_utils.
"""

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--"]
# No extra XLA cache (the default, a GPU autotuning cache, writes its path into every cache key).
RELOCATABLE_CACHE = "none"


def network_isolation_available() -> bool:
    """True when an unprivileged process may start a command in a network namespace of its own."""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _limit(which: int, value: int) -> None:
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, required=True, help="address-space limit of the kernel, in MiB")
    parser.add_argument("--file-mb", type=int, default=1024, help="largest file the kernel may write, in MiB")
    parser.add_argument("--no-network", action="store_true", help="run the kernel in a network namespace of its own")
    parser.add_argument("--jax-cache", type=Path, default=None,
                        help="a warm JAX compilation cache: the kernel gets a private copy of it")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the kernel command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no kernel command given after --")
    if args.memory_mb < 256:
        parser.error(f"--memory-mb must be at least 256 (JAX needs room to start), got {args.memory_mb}")
    _limit(resource.RLIMIT_AS, args.memory_mb * 2**20)
    _limit(resource.RLIMIT_FSIZE, args.file_mb * 2**20)
    _limit(resource.RLIMIT_CORE, 0)
    if args.jax_cache is not None:
        os.environ.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                          JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES=RELOCATABLE_CACHE)
        if os.environ.get("AUTOGRADER_WARM_CACHE"):  # the warm-up run of the solution fills the cache itself
            os.environ["JAX_COMPILATION_CACHE_DIR"] = str(args.jax_cache)
        elif args.jax_cache.is_dir():
            private = Path(tempfile.mkdtemp(prefix="kernel-", dir=args.jax_cache.parent / "scratch"))
            shutil.copytree(args.jax_cache, private / "jax-cache")
            os.environ["JAX_COMPILATION_CACHE_DIR"] = str(private / "jax-cache")
    if args.no_network:
        command = [*UNSHARE, *command]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
