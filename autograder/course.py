"""Where things are, and how nbgrader is configured and called.

nbgrader works in a "course directory" (source/, release/, submitted/, ...).
The repository keeps its own layout (solutions/ and notebooks/), so every
nbgrader command runs in a separate work directory that this module builds
and fills; nothing nbgrader writes (gradebook, logs) lands in the repository.
"""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .trees import clear_tree, copy_tree

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
NOTEBOOKS = REPO / "notebooks"
COURSE_ID = "diffusion-jax"
KERNEL_NAME = "autograder-sandbox"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one submission may use while it is graded (see README, "Limits")."""

    timeout: int = 120  # seconds per cell (nbgrader's Execute.timeout)
    notebook_timeout: int = 900  # seconds for the whole notebook
    memory_mb: int = 4096  # address space of the kernel (RLIMIT_AS)
    output_bytes: int = 200_000  # output kept per cell
    network: bool = False  # allow the kernel to use the network
    sandbox: bool = True  # run the kernel in the bubblewrap sandbox (False: grade --allow-unsandboxed, no bwrap)
    run_all_cells: bool = False  # also run the cells after the last graded one (demonstrations; no points)

    def __post_init__(self):
        for name, low in (("timeout", 1), ("notebook_timeout", 1), ("memory_mb", 256), ("output_bytes", 1000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"Limits: `{name}` must be an integer of at least {low}, got {value!r}")

# Written into each work directory as nbgrader_config.py.
CONFIG_TEMPLATE = '''\
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.root = {root!r}
# Per-cell time limit while autograding (seconds). Execute.timeout is the one
# nbgrader reads; ExecutePreprocessor.timeout is ignored once it is set.
c.Execute.timeout = {timeout}
c.Execute.interrupt_on_timeout = True
# Output that arrives late (a busy machine) is waited for, not an error that fails the notebook.
c.Execute.iopub_timeout = 30
c.Execute.error_on_timeout = {{
    "ename": "CellTimeoutError",
    "evalue": "the cell ran longer than the time limit of {timeout} s and was interrupted",
    "traceback": ["CellTimeoutError: the cell ran longer than the time limit of {timeout} s and was interrupted"],
}}
# Grading kernels start through autograder/sandbox.py (a bubblewrap sandbox:
# files, processes, network; memory and file size limits), and nbgrader's Execute step is replaced by one that limits
# output, survives a dead kernel and keeps warnings from zeroing a test cell.
import sys  # noqa: E402
sys.path.insert(0, {repo!r})
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput, SaveAutoGrades  # noqa: E402
from autograder.execute import LimitedExecute  # noqa: E402
c.Autograde.autograde_preprocessors = [LimitedExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
                                       SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
c.Execute.kernel_name = {kernel!r}
c.LimitedExecute.max_output_bytes = {output_bytes}
c.LimitedExecute.notebook_timeout = {notebook_timeout}
# Cells after the last graded one cannot change a grade: not run unless asked (grade --run-all-cells).
c.LimitedExecute.run_all_cells = {run_all_cells}
# The grader's own compilation cache (its references and hints), kept between the nbgrader runs of a worker.
c.LimitedExecute.grader_jax_cache = {grader_cache!r}
{transport}
# A student who deleted a test cell gets it back (and fails it if it fails).
c.OverwriteCells.add_missing_cells = True
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
# nbgrader's own commands run by hand in this folder (`nbgrader export`, `nbgrader generate_feedback`, the formgrader
# of `jupyter lab` or `jupyter server` started here) find its kernel spec. `nbgrader autograde` by hand is refused
# before it touches anything: it would skip the grader's reading of each notebook (roles, limits, intake), and
# nbgrader deletes a student's graded notebook when autograding it fails. Grade with `course-autograder grade`.
import os  # noqa: E402
os.environ["JUPYTER_PATH"] = os.pathsep.join([{data!r}, *filter(None, [os.environ.get("JUPYTER_PATH")])])
if "autograde" in sys.argv[1:3] and os.environ.get("AUTOGRADER_RUN") != "1":
    sys.exit("nbgrader autograde is not run by hand in this course folder (nothing was changed): grade with "
             "`course-autograder grade ASSIGNMENT SUBMISSIONS --workdir {root}`, which reads each notebook first, "
             "runs nbgrader in the sandbox and keeps every graded notebook; a rerun grades only what changed.")
'''


def assignments() -> list[str]:
    """The assignment names: one folder per notebook under solutions/."""
    return sorted(p.name for p in SOLUTIONS.iterdir() if (p / f"{p.name}.ipynb").exists())


def check_assignment(name: str) -> str:
    known = assignments()
    if name not in known:
        raise SystemExit(f"unknown assignment {name!r}; the assignments are: {', '.join(known)}")
    return name


def environment(workdir: Path, fast: bool = True) -> dict:
    """The environment of nbgrader and its kernels.

    Jupyter's directories live inside the work directory (never in $HOME),
    the environment's bin/ is on PATH (nbgrader calls `alembic` from there),
    and grading mode shortens every training run.
    """
    env = dict(os.environ)
    jupyter = Path(workdir) / ".jupyter"
    env.update(
        JUPYTER_CONFIG_DIR=str(jupyter / "config"),
        JUPYTER_DATA_DIR=str(jupyter / "data"),
        JUPYTER_RUNTIME_DIR=str(runtime_dir(workdir)),
        IPYTHONDIR=str(jupyter / "ipython"),
        MPLBACKEND="Agg",
        PYTHONWARNINGS="ignore",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    for name in ("config", "data", "ipython"):
        (jupyter / name).mkdir(parents=True, exist_ok=True)
    runtime_dir(workdir).mkdir(parents=True, exist_ok=True)
    if fast:
        env["COURSE_FAST"] = "1"
    else:
        env.pop("COURSE_FAST", None)
    return env


def runtime_dir(workdir: Path) -> Path:
    """Jupyter's runtime directory for ``workdir``: short, because kernels talk over Unix sockets there
    (a socket path is limited to about 100 characters)."""
    digest = hashlib.sha1(str(Path(workdir).resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"ag-{digest}"


def kernel_transport(workdir: Path) -> dict:
    """How the grading process reaches a kernel: over Unix sockets (the kernel has no network), in a folder of
    their own in the runtime directory, the only one the sandbox shares with the kernel besides its connection
    file. This is the warm-up's folder; while grading, ``LimitedExecute`` gives every kernel a fresh one there,
    and the launcher empties whichever it is given before the kernel starts."""
    return {"transport": "ipc", "ip": str(runtime_dir(workdir) / "ipc" / "kernel")}


def transport_config(workdir: Path) -> str:
    return "\n".join(f"c.KernelManager.{k} = {v!r}" for k, v in kernel_transport(workdir).items())


def write_config(workdir: Path, limits: Limits = Limits(), jax_cache: Path | None = None,
                 course_build: Path | None = None) -> None:
    """nbgrader_config.py and the sandboxed kernel spec of the course directory ``workdir``."""
    (workdir / "nbgrader_config.py").write_text(CONFIG_TEMPLATE.format(
        course_id=COURSE_ID, root=str(workdir), timeout=limits.timeout, repo=str(REPO), kernel=KERNEL_NAME,
        output_bytes=limits.output_bytes, notebook_timeout=limits.notebook_timeout, run_all_cells=limits.run_all_cells,
        transport=transport_config(workdir), grader_cache=str(workdir / "grader-jax-cache") if jax_cache is not None else "",
        data=str(Path(workdir) / ".jupyter" / "data")))
    write_kernelspec(workdir, limits, jax_cache, course_build)


def write_kernelspec(workdir: Path, limits: Limits = Limits(), jax_cache: Path | None = None,
                     course_build: Path | None = None) -> dict:
    """The kernel spec of ``workdir``: every kernel starts through ``autograder/sandbox.py`` (bubblewrap).

    ``course_build``: the keyless copy of course_utils (``autograder/keyless.py``) that every kernel gets in place
    of the installed package. ``jax_cache``: the warm JAX compilation cache, which every kernel reads by key (sealed, see
    ``autograder/sandbox.py``). Cells are interrupted
    by message (``interrupt_mode``): the sandboxed kernel runs in a session of its own, which a signal to
    the launcher's process group does not reach. With ``limits.sandbox`` false (no bubblewrap, and the
    instructor allowed it) only the limits apply, and the network is cut where ``unshare`` may.
    """
    from .sandbox import network_isolation_available

    launcher = [sys.executable, str(REPO / "autograder" / "sandbox.py"), "--memory-mb", str(limits.memory_mb)]
    if jax_cache is not None:
        launcher += ["--jax-cache", str(jax_cache)]
    if course_build is not None:
        launcher += ["--course-utils", str(course_build)]
    if limits.sandbox:
        isolate = not limits.network
        launcher += ["--network"] if limits.network else []
    else:
        isolate = not limits.network and network_isolation_available()
        launcher += ["--unsandboxed", *(["--no-network"] if isolate else [])]
    kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    if jax_cache is not None:  # before any cell: a miss in the kernel's own cache looks in the sealed warm one
        kernel.append("--IPKernelApp.exec_lines=__import__('course_utils.compile_cache').compile_cache.read_through()")
    spec = {
        "argv": [*launcher, "--", *kernel],
        "display_name": "Python 3 (autograder sandbox)",
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {"network_isolated": isolate, "sandboxed": limits.sandbox},
    }
    kernel_dir = workdir / ".jupyter" / "data" / "kernels" / KERNEL_NAME
    kernel_dir.mkdir(parents=True, exist_ok=True)
    (kernel_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec


def kernel_metadata(workdir: Path) -> dict:
    spec = Path(workdir) / ".jupyter" / "data" / "kernels" / KERNEL_NAME / "kernel.json"
    return json.loads(spec.read_text())["metadata"]


def network_isolated(workdir: Path) -> bool:
    """Whether the kernels of ``workdir`` run without network (from its kernel spec)."""
    return kernel_metadata(workdir)["network_isolated"]


def sandboxed(workdir: Path) -> bool:
    """Whether the kernels of ``workdir`` run in the bubblewrap sandbox (from its kernel spec)."""
    return kernel_metadata(workdir).get("sandboxed", False)


def course_build_path(workdir: Path, assignment: str) -> Path:
    """Where the keyless copy of course_utils for ``assignment`` lies in the course directory ``workdir``."""
    return Path(workdir) / "keyless" / assignment / "course_utils"


def build_keyless(workdir: Path, assignment: str) -> Path:
    """Build the keyless course_utils of ``assignment`` (its exercises' references withheld) in ``workdir``."""
    import nbformat

    from . import keyless

    nb = nbformat.read(SOLUTIONS / assignment / f"{assignment}.ipynb", as_version=4)
    return keyless.build(keyless.assignment_exercises(nb), course_build_path(workdir, assignment).parent)


def prepare_workdir(workdir: Path, assignment: str, limits: Limits = Limits(), jax_cache: Path | None = None,
                    keyless: bool = True) -> Path:
    """Create the course directory (configuration, kernel spec whose kernels get the keyless course_utils) and copy
    the assignment's source into it."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    write_config(workdir, limits, jax_cache, build_keyless(workdir, assignment) if keyless else None)
    source = workdir / "source" / assignment
    clear_tree(source)
    copy_tree(SOLUTIONS / assignment, source, ignore=(".ipynb_checkpoints", "__pycache__"))
    return workdir


def nbgrader(workdir: Path, *args: str, fast: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """Run one nbgrader command in ``workdir``; raise with its log when it fails and ``check`` is set."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    env = environment(workdir, fast) | {"AUTOGRADER_RUN": "1"}  # the grader's own run (nbgrader_config.py)
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
