"""Helpers of the notebook and pipeline tests: reading, changing and executing notebooks (needs the dev extra)."""

import copy
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for `import autograder`

from autograder import course  # noqa: E402

ASSIGNMENTS = course.assignments()


def solution_path(name: str) -> Path:
    return course.SOLUTIONS / name / f"{name}.ipynb"


def student_path(name: str) -> Path:
    return course.NOTEBOOKS / name / f"{name}.ipynb"


def read(path: Path):
    return nbformat.read(path, as_version=4)


def nbgrader_meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def is_test_cell(cell) -> bool:
    meta = nbgrader_meta(cell)
    return cell.cell_type == "code" and meta.get("grade") and not meta.get("solution")


def is_solution_cell(cell) -> bool:
    return nbgrader_meta(cell).get("solution", False)


def with_solutions(student_nb, solution_nb):
    """The student notebook with every solution cell's source taken from the solution notebook."""
    nb = copy.deepcopy(student_nb)
    sources = {nbgrader_meta(c)["grade_id"]: c.source for c in solution_nb.cells if is_solution_cell(c)}
    for cell in nb.cells:
        if is_solution_cell(cell):
            cell.source = sources[nbgrader_meta(cell)["grade_id"]]
    return nb


# Jupyter's inline backend: at the end of every cell each open figure is drawn to a PNG (an image/png output), as a
# student sees it. A figure that cannot be drawn (for example mathtext that matplotlib does not know) leaves an error
# output in its cell, which the tests report like any other error. Agg, the grading kernels' backend, never draws.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def execute(nb, workdir: Path, timeout: int = 300, fast: bool = True):
    """Execute a copy of ``nb`` in grading mode (or full mode, ``fast=False``), in ``workdir``, with errors
    recorded in the outputs and every figure drawn by Jupyter's inline backend."""
    from nbclient import NotebookClient

    nb = copy.deepcopy(nb)
    env = course.environment(workdir, fast=fast)
    env["MPLBACKEND"] = INLINE_BACKEND
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(workdir)}})
    import os
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb


def errors(cell) -> list[str]:
    """The errors of a cell, and every figure it showed that was not drawn (a display of a figure whose PNG is
    missing: the inline backend could not render it)."""
    found = [f"{o.ename}: {o.evalue}" for o in cell.get("outputs", []) if o.output_type == "error"]
    found += [f"figure not drawn: {o.data['text/plain']}" for o in cell.get("outputs", [])
              if o.output_type == "display_data" and str(o.get("data", {}).get("text/plain", "")).startswith("<Figure")
              and "image/png" not in o.get("data", {})]
    return found


def figures(cell) -> int:
    """How many drawn figures (image/png outputs) a cell shows."""
    return sum(1 for o in cell.get("outputs", []) if o.output_type == "display_data" and "image/png" in o.get("data", {}))


def stderr(cell) -> str:
    return "".join(o.text for o in cell.get("outputs", []) if o.output_type == "stream" and o.name == "stderr")


def processes_mentioning(text: str) -> list[int]:
    """The ids of the processes (other than this one) whose command line contains ``text``."""
    import os

    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def thread_holder(count: int, then: str = "") -> str:
    """Python code that starts up to ``count`` threads (small stacks, so that the memory limit does not stop it
    first), prints how many started, then runs ``then`` (for instance a sleep, holding them)."""
    return ("import threading, time\n"
            "threading.stack_size(65536)\n"
            "_hold, _n = threading.Event(), 0\n"
            "try:\n"
            f"    for _ in range({count}):\n"
            "        threading.Thread(target=_hold.wait, daemon=True).start()\n"
            "        _n += 1\n"
            "except RuntimeError:\n"
            "    pass\n"
            f"print('threads held:', _n, flush=True)\n{then}\n")


def disk_filler(folders: str, files: int = 100) -> str:
    """Python code that writes files of 64 MiB into each folder of the Python expression ``folders`` (a list of
    (label, path)) until the disk refuses (at most ``files`` each), and prints ``MiB written: {label: MiB}``."""
    return ("import json, os\n"
            "_written = {}\n"
            f"for _label, _folder in {folders}:\n"
            "    _written[_label] = 0\n"
            "    try:\n"
            f"        for _k in range({files}):\n"
            "            with open(os.path.join(_folder, f'fill-{_k}'), 'wb') as _f:\n"
            "                for _ in range(64):\n"
            "                    _f.write(bytes(2**20))\n"
            "                    _written[_label] += 1\n"
            "    except OSError:\n"
            "        pass\n"
            "print('MiB written:', json.dumps(_written))\n")


def disk_filled(text: str) -> dict:
    """What :func:`disk_filler` printed in ``text``: {label: MiB}."""
    import json

    return json.loads(text.split("MiB written: ", 1)[1].splitlines()[0])


def chromium() -> str:
    """The headless Chromium on this machine (CI installs it); skips the test where there is none, fails it in CI."""
    import os
    import shutil

    import pytest

    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.environ.get("CI"):
        pytest.fail("Chromium is missing in CI: .ci/run installs the chromium-headless-shell package")
    pytest.skip("no Chromium on this machine (apt-get install chromium-headless-shell)")
