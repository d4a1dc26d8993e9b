"""Kernel launcher that starts a student's kernel inside a bubblewrap sandbox, within limits.

The autograder's kernel spec (``autograder.course.write_kernelspec``) starts
every grading kernel as::

    python autograder/sandbox.py --memory-mb 4096 [--jax-cache DIR] -- python -m ipykernel_launcher -f CONN

in the folder of the notebook it grades (nbclient's working directory). The
launcher sets the limits on itself and replaces itself (``exec``) with
``bwrap`` (bubblewrap), which starts the kernel in new namespaces (mount,
PID, network, IPC, UTS, and a user namespace of its own):

- files: the kernel sees a root of its own, read-only, holding only
  ``/usr`` (and the ``/bin``, ``/lib*`` links), a few files of ``/etc`` (the
  dynamic linker's cache, the time zone), the Python environment
  (``sys.prefix`` and the interpreter's prefix, read-only), the course_utils
  package (read-only: in a development install the repository's
  ``course_utils/`` folder, and nothing else of the repository; with
  ``--course-utils COPY``, the keyless copy of ``autograder/keyless.py``
  mounted at the package's place, so that neither the graded notebook's
  reference implementations nor their files are there), a new
  ``/proc`` and a minimal ``/dev``. Writable, and all in memory with a size
  limit (``TMPFS_BYTES`` each, 256 MiB): its working folder (a tmpfs at the
  path of the notebook's folder, starting with a copy of what that folder
  holds; nothing written there reaches the host's disk, and nbgrader needs
  nothing from it: the graded notebook is made from the kernel's messages), a
  private ``/tmp`` and an empty ``HOME``, which with ``--jax-cache`` also
  holds the kernel's own compilation cache. Besides these, only its Unix-socket
  folder (below), and the sealed warm cache, read-only. No
  gradebook, no course directory, no solutions, no other student, no real
  home.
- the connection with nbgrader: only this kernel's connection file
  (a read-only copy) and the folder of its ipc sockets (the connection file's
  ``ip`` with ``-N`` appended: ``KernelManager.transport = "ipc"``; the kernel
  binds them, nbgrader connects) are shared. The launcher requires the ipc
  transport unless the network is shared. The socket folder is new for each
  kernel (``autograder/execute.py`` makes it and removes it afterwards; the
  launcher empties whatever folder it is given, ``fresh_socket_folder``), and
  run by root it belongs to root: the kernel may create its sockets but not
  change the folder's mode, and once it listens the grader takes away its
  write permission (``freeze_socket_folder``).
- processes: a new PID namespace (the kernel cannot see or signal nbgrader
  or other kernels; when the kernel exits, bubblewrap's PID 1 exits and the
  Linux kernel kills every process left in the namespace), ``--die-with-parent``
  (the sandbox dies with the launcher's parent, nbgrader), ``--new-session``
  (no terminal to inject input into) and ``RLIMIT_NPROC`` (``--processes``).
  nbgrader interrupts a cell with an ``interrupt_request`` message (the kernel
  spec's ``interrupt_mode``): a signal to the launcher's process group would
  not reach the new session.
- users: ``RLIMIT_NPROC`` counts the processes of one user in one user
  namespace, so every sandbox has a user namespace of its own and one kernel
  cannot use up another's allowance. Run by root, bubblewrap makes the mounts
  as root without a user namespace (one made by bubblewrap would map the
  kernel to the real root, which ``RLIMIT_NPROC`` does not bind); the
  sandbox's first step (``INNER``) then becomes ``nobody`` (uid 65534) and
  makes a user namespace mapping that uid to itself, before the limit is set.
  Run by another user, bubblewrap makes the user namespace and the kernel
  keeps that user's uid. Either way it holds no capability and cannot gain
  one (``--cap-drop ALL``, no_new_privs).
- network: none (a new network namespace holding an unconnected loopback),
  unless ``--network``.
- memory: ``RLIMIT_AS`` (address space). JAX on CPU works under it (it was
  checked down to 2 GiB); an allocation past it raises ``MemoryError`` or
  XLA's ``RESOURCE_EXHAUSTED`` in the student's cell, or kills the kernel,
  and both are reported as a memory problem of that submission.
- files: ``RLIMIT_FSIZE`` caps the size of any file the kernel writes, and no
  core dumps are written.
- environment: only an allowed list of variables (``PATH``, locale, ``JAX_*``,
  ``XLA_*``, ``COURSE_*``, thread counts, ...) reaches the kernel, with
  ``HOME``, ``TMPDIR`` and Jupyter's folders inside the sandbox.
- compilation cache: with ``--jax-cache DIR`` (a cache warmed by grading the
  solution once, see ``autograder/grade.py``), DIR is mounted read-only at
  ``CACHE_SOURCE``, sealed by the grader (the folder mode ``0111``, its files
  ``0444``, all owned by the grader): the kernel may open an entry by its name,
  the hash of the program it compiles, but cannot list the folder, so the
  solution's compiled programs there are found only by compiling the same
  program. The kernel's own cache is an empty folder in HOME;
  ``course_utils.compile_cache.read_through`` (run by the kernel spec before
  any cell) makes a miss there look in ``CACHE_SOURCE``. What one kernel
  writes no other kernel reads. The seal holds only while the kernel cannot
  gain a capability over the folder: run by root, the folder is root's and the
  kernel ``nobody``; run by another user, bubblewrap forbids the kernel new
  user namespaces (``--disable-userns``), and a bubblewrap too old for that
  gets no warm cache (``warm_cache_allowed``). JAX puts the cache's path into
  the compile options of every program (``jax_persistent_cache_enable_xla_caches``
  names a GPU autotuning cache inside it), and the compile options are part of
  each entry's key: a cache read at another path would miss on every entry.
  The launcher turns that GPU-only cache off, so the keys do not depend on
  where the cache lies. The warm-up run (``AUTOGRADER_WARM_CACHE`` set)
  writes into DIR itself.

``--unsandboxed`` (what ``grade --allow-unsandboxed`` uses where bubblewrap is
missing or fails ``sandbox_problem()``) keeps only the limits and, with
``--no-network``, a network namespace (``unshare``) where one may be made.

It is a standalone script (run by path, not imported from the package) so
that the student's kernel needs nothing on its ``sys.path`` but course_utils.
"""

import argparse
import functools
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    from .trees import remove_tree, walk_tree
except ImportError:  # run as a script (the kernel spec's command): its own folder is on sys.path
    from trees import remove_tree, walk_tree

REPO = Path(__file__).resolve().parent.parent
UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--"]
# No extra XLA cache (the default, a GPU autotuning cache, writes its path into every cache key).
RELOCATABLE_CACHE = "none"
SANDBOX_UID = 65534  # nobody: the kernel's user when the grader is root
HOME = "/home/student"
TMPFS_BYTES = 256 * 2**20  # each of the kernel's writable folders: working folder, /tmp, HOME
CACHE_OWN = f"{HOME}/.cache/jax"  # the kernel's own compilation cache, empty at the start (in HOME's tmpfs)
CACHE_SOURCE = "/run/autograder/jax-cache"  # the warm cache, read-only and sealed: read by key, never listed
WORKDIR_SOURCE = "/run/autograder/workdir"  # the host's working folder, read-only, copied into the kernel's tmpfs
PROCESSES = 512  # RLIMIT_NPROC: processes and threads (JAX starts a few dozen threads)
ETC = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "fonts", "mime.types"]
ETC_NETWORK = ["resolv.conf", "hosts", "nsswitch.conf", "ssl", "ca-certificates", "gai.conf"]
ENV_KEEP = {"LANG", "LANGUAGE", "TZ", "TERM", "PYTHONWARNINGS", "PYTHONHASHSEED", "MPLBACKEND", "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES"}
ENV_PREFIXES = ("LC_", "JAX_", "XLA_", "COURSE_", "TF_CPP_", "MALLOC_", "AUTOGRADER_")
# Run inside the sandbox as the kernel command's first step. Run by root: become the kernel's user, then make a user
# namespace of its own (mapping that uid to itself), so that RLIMIT_NPROC counts this sandbox's processes only: the
# kernel runs as ``nobody`` in every sandbox, and without a namespace of its own the limit would count all of them
# together (one kernel holding threads would make the others fail to start theirs). The mounts were made by
# bubblewrap before, as root, so the namespace needs no access to the host's files. Then: the process limit, the
# own (empty) compilation cache folder in HOME, a size-limited tmpfs, the working
# folder (a tmpfs, which starts with a copy of what the host's folder holds), exec. Run by another user, bubblewrap
# has already made the user namespace (uid -1: no step). Inside the namespace, files of the real root show as owned
# by the overflow uid (65534 too), but permissions are checked against the real uids: they give the kernel nothing.
INNER = ("import os, resource, sys\n"
         "uid, n, folder, own = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]\n"
         "if uid >= 0:\n"
         "    import ctypes\n"
         "    os.setgroups([]); os.setgid(uid); os.setuid(uid)\n"
         "    libc = ctypes.CDLL(None, use_errno=True)\n"
         "    libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, which setuid cleared: /proc/self is its own again\n"
         "    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER\n"
         "        sys.exit('sandbox: no user namespace for the kernel: ' + os.strerror(ctypes.get_errno()))\n"
         "    for name, text in (('setgroups', 'deny'), ('uid_map', f'{uid} {uid} 1'), ('gid_map', f'{uid} {uid} 1')):\n"
         "        with open(f'/proc/self/{name}', 'w') as f:\n"
         "            f.write(text)\n"
         "resource.setrlimit(resource.RLIMIT_NPROC, (n, n))\n"
         "import shutil\n"
         "if own:\n"
         "    os.makedirs(own)\n"
         f"for e in os.scandir({WORKDIR_SOURCE!r}):\n"
         "    to = os.path.join(folder, e.name)\n"
         "    shutil.copytree(e.path, to, symlinks=True) if e.is_dir(follow_symlinks=False) else shutil.copy2(e.path, to, follow_symlinks=False)\n"
         "os.chdir(folder)\n"
         "os.execvp(sys.argv[5], sys.argv[5:])\n")


def network_isolation_available() -> bool:
    """True when an unprivileged process may start a command in a network namespace of its own (``--unsandboxed``)."""
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=None)
def sandbox_problem() -> str:
    """"" when a kernel can be sandboxed here, else why not: bubblewrap is missing, or a sandboxed Python
    (this launcher's own bwrap command) fails to see what a kernel needs or sees what it must not."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = ("import importlib.util, os, sys\n"
             f"assert not os.path.exists({str(REPO / 'autograder')!r}), 'the repository is visible'\n"
             "assert importlib.util.find_spec('course_utils') is not None, 'course_utils cannot be found'\n"
             "open('probe', 'w').write('ok')\n"
             "assert open('probe').read() == 'ok', 'the kernel could not write its working folder'\n"
             "print(len([p for p in os.listdir('/proc') if p.isdigit()]))\n")
    with tempfile.TemporaryDirectory(prefix="sandbox-probe-") as folder:
        os.chmod(folder, 0o755)
        try:
            out = subprocess.run([sys.executable, __file__, "--memory-mb", "1024", "--", sys.executable, "-c", probe],
                                 cwd=folder, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"the sandbox self-test did not run: {exc}"
        if out.returncode != 0 or out.stdout.strip() not in ("1", "2"):
            lines = (out.stderr.strip() or out.stdout.strip() or f"exit status {out.returncode}").splitlines()
            return f"the sandbox self-test failed: {lines[-1]}"
        if (Path(folder) / "probe").exists():
            return "the sandbox self-test failed: the kernel's working folder is the host's, not a tmpfs"
    return ""


def _limit(which: int, value: int) -> None:
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value if hard == resource.RLIM_INFINITY else hard))


def _connection_file(command: list[str]) -> Path | None:
    for i, arg in enumerate(command):
        if arg in ("-f", "--f", "--connection-file", "--ConnectionFileMixin.connection_file") and i + 1 < len(command):
            return Path(command[i + 1])
        for flag in ("--f=", "--connection-file=", "--ConnectionFileMixin.connection_file="):
            if arg.startswith(flag):
                return Path(arg[len(flag):])
    return None


def _chown_tree(path: Path, uid: int) -> None:
    for root, dirs, files in walk_tree(path):
        if root == path:
            os.lchown(root, uid, uid)
        for name in dirs + files:
            os.lchown(root / name, uid, uid)


@functools.lru_cache(maxsize=None)
def _bwrap_disables_userns() -> bool:
    """Whether this bubblewrap can forbid new user namespaces inside the sandbox (``--disable-userns``, 0.8.0)."""
    try:
        out = subprocess.run([shutil.which("bwrap") or "bwrap", "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--disable-userns" in out.stdout + out.stderr


def warm_cache_allowed() -> bool:
    """Whether a sandboxed kernel may be given the sealed warm cache: run by root (the kernel is ``nobody`` and the
    cache root's), or by a bubblewrap that forbids the kernel the user namespace in which it could unseal it."""
    return os.getuid() == 0 or _bwrap_disables_userns()


def seal_cache(folder: Path) -> None:
    """Make the warm cache readable by key only: its files ``0444``, the folder ``0111`` (no listing), all the
    grader's (run by root, the warm-up's kernel, ``nobody``, wrote them)."""
    me = os.getuid(), os.getgid()
    for root, _dirs, files in walk_tree(folder):
        for name in files:
            os.lchown(root / name, *me)
            os.chmod(root / name, 0o444)
    os.lchown(folder, *me)
    os.chmod(folder, 0o111)


def unseal_cache(folder: Path) -> None:
    """Open a sealed cache to its owner again (to remove it)."""
    try:
        os.chmod(folder, 0o700)
    except FileNotFoundError:
        pass


def fresh_socket_folder(sockets: Path, root: bool) -> None:
    """Make ``sockets`` a new, empty folder for one kernel's Unix sockets (whatever was there is removed first).

    Run by root it belongs to root with mode 0733: the kernel (``nobody``) may create its sockets there but not
    list the folder or change its mode, and the grader takes away its write permission once the kernel has
    started (``freeze_socket_folder``), so nothing else can be written there. Run by another user it is 0700
    (the kernel has that user's uid)."""
    problems = remove_tree(sockets)
    if problems:
        raise SystemExit(f"sandbox: the socket folder {sockets} could not be emptied: {problems[0]}")
    sockets.mkdir(parents=True, mode=0o700)
    os.chmod(sockets, 0o733 if root else 0o700)


def freeze_socket_folder(sockets: Path) -> None:
    """Once the kernel listens (its sockets exist): no new file in its socket folder, so that all a kernel
    writes stays in its size-limited tmpfs. Only when the grader is root: otherwise the kernel has the grader's
    uid, owns the folder and could open it again."""
    if os.getuid() == 0:
        os.chmod(sockets, 0o511)


def _under(path: Path, folders) -> bool:
    return any(path == f or f in path.parents for f in folders)


def python_folders(executable: str) -> list[Path]:
    """The folders of the Python environment the kernel needs (read-only): prefixes, the interpreter's, course_utils."""
    exe = Path(executable).resolve()
    folders = [Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}]
    folders.append(exe.parent.parent if exe.parent.name == "bin" else exe.parent)
    folders += course_utils_folders()
    kept = []
    for folder in sorted(set(folders), key=lambda p: len(p.parts)):
        if folder == Path("/") or folder in REPO.parents or folder == REPO or _under(folder, [Path("/usr"), *kept]):
            continue  # never the root or the whole repository; /usr is bound anyway
        kept.append(folder)
    return kept


def course_utils_folders() -> list[Path]:
    """Where the installed course_utils lives (a development install: the repository's ``course_utils/``)."""
    spec = importlib.util.find_spec("course_utils")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p).resolve() for p in spec.submodule_search_locations]


def bwrap_command(command: list[str], workdir: Path, *, network: bool = False, writable: list[Path] = (),
                  processes: int = PROCESSES, cache: Path | None = None,
                  course_utils: Path | None = None) -> tuple[list[str], dict, list[int]]:
    """The bwrap command line that runs ``command`` in the sandbox with ``workdir`` as its working folder,
    its environment, and the file descriptors it must inherit.

    ``workdir`` is where the kernel works, a fresh tmpfs at that path (the host's folder is not shared);
    ``writable``: host folders it may write (the warm-up's compilation cache); ``cache``: the sealed warm
    compilation cache (``seal_cache``), mounted read-only at ``CACHE_SOURCE``."""
    root = os.getuid() == 0
    args = ["bwrap", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if root:  # bwrap makes the mounts as root; INNER becomes nobody in a user namespace of its own (setuid/setgid
        # kept for that step only: a user namespace made here would map the kernel to the real root, unlimited)
        args += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                 "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-all"]
        if cache is not None:  # no user namespace of its own, where the kernel could read past the cache's seal
            args += ["--unshare-user", "--disable-userns"]
    if network:
        args += ["--share-net"]
    # First, as binds below may lie under /tmp: a private tmpfs /tmp and HOME (1777: made by root for nobody)
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
             "--perms", "1777" if root else "0700", "--size", str(TMPFS_BYTES),
             "--tmpfs", HOME,
             "--perms", "1777" if root else "0700", "--size", str(TMPFS_BYTES), "--tmpfs", str(workdir)]
    args += ["--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    for name in ETC + (ETC_NETWORK if network else []):
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for folder in python_folders(command[0] if os.path.isabs(command[0]) else sys.executable):
        args += ["--ro-bind", str(folder), str(folder)]
    if course_utils is not None:  # the keyless copy (autograder/keyless.py) in place of the installed package
        for folder in course_utils_folders():
            args += ["--ro-bind", str(course_utils), str(folder)]
    fds = []
    conn = _connection_file(command)
    shared = list(writable)
    if conn is not None:
        info = json.loads(conn.read_text())
        if info.get("transport") == "ipc":
            ip = Path(info["ip"])
            sockets = ip.parent
            if _under(conn.parent, [sockets]) or sockets == Path("/") or _under(REPO, [sockets]):
                raise SystemExit(f"sandbox: the ipc folder {sockets} must be a folder of its own, "
                                 "not the connection file's (KernelManager.ip = RUNTIME/ipc/kernel)")
            fresh_socket_folder(sockets, root)
            args += ["--bind", str(sockets), str(sockets)]
        elif not network:
            raise SystemExit("sandbox: a kernel without network must use the ipc transport "
                             "(KernelManager.transport = 'ipc')")
        fd = os.open(conn, os.O_RDONLY)
        os.set_inheritable(fd, True)
        fds.append(fd)
        args += ["--perms", "0444", "--ro-bind-data", str(fd), str(conn)]
    if root:  # the kernel's user reads its working folder (to copy it) and writes the warm-up's cache
        for path in [workdir, *shared]:
            _chown_tree(path, SANDBOX_UID)
    for path in shared:
        args += ["--bind", str(path), str(path)]
    if cache is not None:
        args += ["--ro-bind", str(cache), CACHE_SOURCE]
    args += ["--ro-bind", str(workdir), WORKDIR_SOURCE]
    # The folders bwrap makes above the bound ones copy their modes (/root: 0700): open them to the kernel's user.
    bound = [Path(args[i + 2]) for i, a in enumerate(args) if a in ("--bind", "--ro-bind", "--ro-bind-try")]
    bound.append(workdir)
    above = {p for b in bound for p in b.parents if p not in (Path("/"), Path("/tmp"), Path(HOME))}
    for folder in sorted(above, key=lambda p: len(p.parts)):
        if not _under(folder, bound):
            args += ["--chmod", "0755", str(folder)]
    args += ["--remount-ro", "/", "--chdir", "/"]
    env = {k: v for k, v in os.environ.items() if k in ENV_KEEP or k.startswith(ENV_PREFIXES)}
    env.update(HOME=HOME, USER="student", LOGNAME="student", TMPDIR="/tmp", IPYTHONDIR=f"{HOME}/.ipython",
               MPLCONFIGDIR=f"{HOME}/.config/matplotlib", JUPYTER_RUNTIME_DIR=f"{HOME}/.jupyter/runtime",
               JUPYTER_CONFIG_DIR=f"{HOME}/.jupyter", JUPYTER_DATA_DIR=f"{HOME}/.jupyter/data",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]))
    if "JPY_PARENT_PID" in os.environ:  # the kernel's parent in its PID namespace: bwrap's init (ipykernel polls none)
        env["JPY_PARENT_PID"] = "1"
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=CACHE_OWN, AUTOGRADER_CACHE_SOURCE=CACHE_SOURCE)
    inner = [sys.executable, "-c", INNER, str(SANDBOX_UID if root else -1), str(processes), str(workdir),
             CACHE_OWN if cache is not None else ""]
    return [*args, "--", *inner, *command], env, fds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, required=True, help="address-space limit of the kernel, in MiB")
    parser.add_argument("--file-mb", type=int, default=1024, help="largest file the kernel may write, in MiB")
    parser.add_argument("--processes", type=int, default=PROCESSES,
                        help=f"most processes and threads in the sandbox (default {PROCESSES})")
    parser.add_argument("--network", action="store_true", help="let the kernel use the machine's network")
    parser.add_argument("--unsandboxed", action="store_true",
                        help="no bubblewrap: limits only (grade --allow-unsandboxed, where bwrap is unavailable)")
    parser.add_argument("--no-network", action="store_true",
                        help="with --unsandboxed: run the kernel in a network namespace of its own (unshare)")
    parser.add_argument("--jax-cache", type=Path, default=None,
                        help="the warm JAX compilation cache, sealed: the kernel reads its entries by key")
    parser.add_argument("--course-utils", type=Path, default=None,
                        help="a copy of course_utils to mount in place of the installed one (the keyless build of "
                             "autograder/keyless.py: the assignment's references withheld)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the kernel command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no kernel command given after --")
    if args.memory_mb < 256:
        parser.error(f"--memory-mb must be at least 256 (JAX needs room to start), got {args.memory_mb}")
    workdir = Path.cwd().resolve()
    if not args.unsandboxed and (workdir == Path("/") or workdir == REPO or workdir in REPO.parents
                                 or workdir == Path.home().resolve()):
        parser.error(f"the working folder {workdir} would expose the repository or the home directory: "
                     "start the kernel in the notebook's own folder")
    _limit(resource.RLIMIT_AS, args.memory_mb * 2**20)
    _limit(resource.RLIMIT_FSIZE, args.file_mb * 2**20)
    _limit(resource.RLIMIT_CORE, 0)
    writable, cache = [], None
    if args.jax_cache is not None:
        os.environ.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
                          JAX_PERSISTENT_CACHE_ENABLE_XLA_CACHES=RELOCATABLE_CACHE)
        if os.environ.get("AUTOGRADER_WARM_CACHE"):  # the warm-up run of the solution fills the cache itself
            os.environ["JAX_COMPILATION_CACHE_DIR"] = str(args.jax_cache.resolve())
            writable.append(args.jax_cache.resolve())
        elif args.jax_cache.is_dir() and (args.unsandboxed or warm_cache_allowed()):
            cache = args.jax_cache.resolve()
    course_copy = args.course_utils.resolve() if args.course_utils is not None else None
    if course_copy is not None and not (course_copy / "__init__.py").is_file():
        parser.error(f"--course-utils {course_copy} is not a course_utils package")
    if args.unsandboxed:  # no mount namespace: the kernel imports the installed package, answer key included
        if cache is not None:  # no tmpfs without the sandbox: its own cache on disk, next to the warm one, left to the grader
            private = Path(tempfile.mkdtemp(prefix="kernel-", dir=cache.parent / "scratch"))
            os.environ.update(JAX_COMPILATION_CACHE_DIR=str(private / "jax-cache"), AUTOGRADER_CACHE_SOURCE=str(cache))
        if args.no_network:
            command = [*UNSHARE, *command]
        os.execvp(command[0], command)
    argv, env, fds = bwrap_command(command, workdir, network=args.network, writable=writable,
                                   processes=args.processes, cache=cache, course_utils=course_copy)
    os.execvpe(shutil.which("bwrap") or "bwrap", argv, env)


if __name__ == "__main__":
    main()
