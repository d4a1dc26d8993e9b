"""The course's address is set once (pyproject.toml) and written everywhere; the setup cell installs or explains."""

import json
import re
import subprocess
import sys
import textwrap

import nbformat
import pytest

from autograder import colab, course
from notebook_tools import ASSIGNMENTS, read, solution_path, student_path

SETTINGS = colab.settings()
FORK = dict(SETTINGS, repository="https://github.com/some-university/diffusion-course-fork", branch="spring")


def _notebooks():
    return [path for name in ASSIGNMENTS for path in (solution_path(name), student_path(name))]


def test_every_badge_and_setup_cell_uses_the_configured_address():
    for path in _notebooks():
        nb = read(path)
        name = path.stem
        text = "\n".join(cell.source for cell in nb.cells)
        assert colab.colab_url(SETTINGS, name) in nb.cells[0].source, f"{path}: no badge to {colab.colab_url(SETTINGS, name)}"
        assert f'COURSE_UTILS = "{colab.requirement(SETTINGS)}"' in nb.cells[1].source, path
        others = set(re.findall(r"github\.com/[\w.-]+/[\w.-]+", text)) - {SETTINGS["repository"].removeprefix("https://")}
        assert not others, f"{path}: addresses other than the configured one: {others}"
    readme = (course.REPO / "README.md").read_text()
    for name in ASSIGNMENTS:
        assert colab.colab_url(SETTINGS, name) in readme
    assert colab.stamp_text(readme, SETTINGS) == readme


def test_a_fork_rewrites_every_badge_and_install_line():
    for path in _notebooks():
        nb = read(path)
        colab.stamp_notebook(nb, FORK)
        text = "\n".join(cell.source for cell in nb.cells)
        assert SETTINGS["repository"] not in text
        assert colab.colab_url(FORK, path.stem) in text
        assert f"git+{FORK['repository']}@v{SETTINGS['version']}" in text
        compile(nb.cells[1].source, "setup", "exec")


def test_the_setup_cell_installs_a_fixed_version_and_keeps_jax():
    assert re.search(r"@v\d+\.\d+\.\d+$", colab.requirement(SETTINGS))
    assert 'command.append(f"jax=={jax.__version__}")' in colab.install_lines(SETTINGS)


_DRIVER = textwrap.dedent("""
    import json, sys
    lines = open(sys.argv[1]).read()
    try:
        exec(compile(lines, "setup-cell", "exec"), {})
    except Exception as exc:  # what the student would see
        rendered = exc._render_traceback_() if hasattr(exc, "_render_traceback_") else None
        print(json.dumps({"error": type(exc).__name__, "rendered": rendered, "chained": exc.__cause__ is not None}))
    else:
        import importlib.util
        print(json.dumps({"error": None, "installed": importlib.util.find_spec("course_utils") is not None}))
""")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory):
    """A new virtual environment without course_utils (or JAX), as on a new Colab runtime."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    return venv / "bin" / "python"


def _run_setup(python, requirement, tmp_path, env_extra=None):
    s = dict(SETTINGS)
    lines = colab.install_lines(s).replace(colab.requirement(s), requirement)
    cell = tmp_path / "setup.py"
    cell.write_text(lines)
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    import os

    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", **(env_extra or {}))
    env.pop("PYTHONPATH", None)
    out = subprocess.run([str(python), str(driver), str(cell)], capture_output=True, text=True, timeout=600,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stdout


def test_an_unreachable_address_gives_one_clear_paragraph(bare_python, tmp_path):
    requirement = "course_utils @ git+https://127.0.0.1:9/nobody/no-such-course@v0.1.0"
    result, stdout = _run_setup(bare_python, requirement, tmp_path)
    assert result["error"] == "CourseSetupError" and not result["chained"]
    text = "\n".join(result["rendered"])
    assert text.startswith("The course's helper package course_utils could not be installed")
    assert requirement in text and "pip said:" in text and "ask your instructor" in text
    assert "Traceback" not in text and len(result["rendered"]) <= 10
    # the cause (git's own line), not pip's generic closing lines
    assert "fatal: unable to access" in text and "See above" not in text and "exit code" not in text


def test_an_address_other_than_github_is_refused_in_one_sentence(tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "course_utils"\nversion = "0.1.0"\n'
                         '[project.urls]\nRepository = "https://gitlab.com/someone/course"\n[tool.course]\nbranch = "main"\n')
    with pytest.raises(SystemExit) as info:
        colab.settings(pyproject)
    message = str(info.value)
    assert "GitHub" in message and "https://gitlab.com/someone/course" in message and "\n" not in message


def test_the_setup_cell_installs_from_a_local_wheel(bare_python, tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(course.REPO)],
                   check=True, timeout=600, capture_output=True)
    (wheel,) = wheels.glob("course_utils-*.whl")
    # Without the dependencies (jax and the rest are Colab's own): the cell's install logic is what is tested.
    result, stdout = _run_setup(bare_python, f"course_utils @ {wheel.as_uri()}", tmp_path, {"PIP_NO_DEPS": "1"})
    assert result == {"error": None, "installed": True}, stdout
    assert "installing course_utils" in stdout
