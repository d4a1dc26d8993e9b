"""Where things are, and how nbgrader is configured and called.

nbgrader works in a "course directory" (source/, release/, submitted/, ...).
The repository keeps its own layout (solutions/ and notebooks/), so every
nbgrader command runs in a separate work directory that this module builds
and fills; nothing nbgrader writes (gradebook, logs) lands in the repository.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
NOTEBOOKS = REPO / "notebooks"
COURSE_ID = "diffusion-jax"

# Written into each work directory as nbgrader_config.py.
CONFIG_TEMPLATE = '''\
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = {course_id!r}
c.CourseDirectory.root = {root!r}
# Per-cell time limit while autograding (seconds). Execute.timeout is the one
# nbgrader reads; ExecutePreprocessor.timeout is ignored once it is set.
c.Execute.timeout = {timeout}
c.Execute.interrupt_on_timeout = True
# A student who deleted a test cell gets it back (and fails it if it fails).
c.OverwriteCells.add_missing_cells = True
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
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
    jupyter = workdir / ".jupyter"
    env.update(
        JUPYTER_CONFIG_DIR=str(jupyter / "config"),
        JUPYTER_DATA_DIR=str(jupyter / "data"),
        JUPYTER_RUNTIME_DIR=str(jupyter / "runtime"),
        IPYTHONDIR=str(jupyter / "ipython"),
        MPLBACKEND="Agg",
        PYTHONWARNINGS="ignore",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    for name in ("config", "data", "runtime", "ipython"):
        (jupyter / name).mkdir(parents=True, exist_ok=True)
    if fast:
        env["COURSE_FAST"] = "1"
    return env


def prepare_workdir(workdir: Path, assignment: str, timeout: int = 120) -> Path:
    """Create the course directory and copy the assignment's source into it."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "nbgrader_config.py").write_text(
        CONFIG_TEMPLATE.format(course_id=COURSE_ID, root=str(workdir), timeout=int(timeout)))
    source = workdir / "source" / assignment
    if source.exists():
        shutil.rmtree(source)
    shutil.copytree(SOLUTIONS / assignment, source, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return workdir


def nbgrader(workdir: Path, *args: str, fast: bool = True, check: bool = True) -> subprocess.CompletedProcess:
    """Run one nbgrader command in ``workdir``; raise with its log when it fails and ``check`` is set."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    result = subprocess.run(cmd, cwd=workdir, env=environment(workdir, fast), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"`nbgrader {' '.join(args)}` failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result
