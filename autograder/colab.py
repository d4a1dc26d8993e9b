"""Where the course is published, written into every notebook's badge and setup cell.

The address is set in one place, ``pyproject.toml``: ``[project.urls] Repository`` (the GitHub
repository) and ``[tool.course] branch`` (the branch the Colab badges open). The setup cell installs
the fixed version ``git+REPOSITORY@vVERSION`` (the tag of ``[project] version``). ``python -m
autograder release`` writes them into the solution notebooks (the badge in the title cell and the
install lines of the first code cell), the student notebooks it generates, and the README's table.

The install lines are the text of :data:`INSTALL_TEMPLATE`, between two marker lines. They run before
course_utils exists, so they cannot import it: they are written out in full in every notebook.
"""

import re
import tomllib
from pathlib import Path

from . import course

BEGIN = "# --- install course_utils when it is missing (Colab, for example); written by `python -m autograder release`"
END = "# --- end of the install lines"

INSTALL_TEMPLATE = '''\
COURSE_UTILS = "{requirement}"
import importlib.util
if importlib.util.find_spec("course_utils") is None:
    def install_course_utils(requirement):
        """pip install `requirement`, keeping the JAX already installed (Colab's matches its GPU or TPU)."""
        import importlib, subprocess, sys
        command = [sys.executable, "-m", "pip", "install", "-q", requirement]
        try:
            import jax
            command.append(f"jax=={{jax.__version__}}")
        except ImportError:
            pass
        print("installing course_utils (about a minute)...")
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [line.strip(" │╰─>×") for line in (done.stderr + "\\n" + done.stdout).splitlines()]
            lines = [line for line in lines if line and not line.lower().startswith(
                ("note:", "exit code", "error: subprocess-exited", "[end of output", "see above", "hint:"))]
            causes = [line for line in lines if line.lower().startswith(("fatal:", "error:", "could not", "no matching"))
                      or "requires a different python" in line.lower()]  # the lines that say why
            said = list(dict.fromkeys(causes))[:3] or lines[-3:] or ["(nothing)"]

            class CourseSetupError(RuntimeError):
                def _render_traceback_(self):     # IPython shows this instead of a traceback
                    return str(self).splitlines()

            raise CourseSetupError(
                "The course's helper package course_utils could not be installed, so this notebook cannot run.\\n"
                f"  tried: pip install \\"{{requirement}}\\"\\n  pip said: " + "\\n            ".join(said) + "\\n"
                "Check that this machine reaches the internet (on Colab: Runtime > Disconnect and delete runtime,\\n"
                "then run again), or install it yourself in a terminal with the command above. If the address\\n"
                "no longer exists, ask your instructor where their copy of the course lives.") from None
        importlib.invalidate_caches()
    install_course_utils(COURSE_UTILS)'''


def settings(pyproject: Path = course.REPO / "pyproject.toml") -> dict:
    """``repository`` (https URL, no trailing slash), ``branch``, ``version``, read from pyproject.toml."""
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)
    repository = project["project"]["urls"]["Repository"].rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repository):
        raise SystemExit(f"pyproject.toml: the course's address ([project.urls] Repository) must be a GitHub repository, "
                         f"https://github.com/OWNER/NAME, because Colab opens notebooks from GitHub only; it is "
                         f"{repository!r}. Set it to the GitHub copy of the course and run `release` again.")
    return {"repository": repository, "branch": project.get("tool", {}).get("course", {}).get("branch", "main"),
            "version": project["project"]["version"]}


def requirement(s: dict) -> str:
    """What the setup cell installs: the tagged version of the repository."""
    return f"course_utils @ git+{s['repository']}@v{s['version']}"


def install_lines(s: dict) -> str:
    return "\n".join([BEGIN, INSTALL_TEMPLATE.format(requirement=requirement(s)), END])


def colab_url(s: dict, assignment: str) -> str:
    path = s["repository"].removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/{s['branch']}/notebooks/{assignment}/{assignment}.ipynb"


_COLAB = re.compile(r"https://colab\.research\.google\.com/github/[^)\s\"']+?/notebooks/(\w+)/\1\.ipynb")


def stamp_text(text: str, s: dict) -> str:
    """``text`` with every Colab link to a course notebook pointing at the configured repository and branch."""
    return _COLAB.sub(lambda m: colab_url(s, m.group(1)), text)


def stamp_notebook(nb, s: dict) -> None:
    """Write the configured address into ``nb`` (an nbformat notebook) in place: badges and the install lines."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = stamp_text(cell.source, s)
    setup = next(cell for cell in nb.cells if cell.cell_type == "code")
    lines = setup.source.split("\n")
    if BEGIN in lines and END in lines:
        start, stop = lines.index(BEGIN), lines.index(END)
        lines[start:stop + 1] = [install_lines(s)]
    else:
        raise ValueError(f"the first code cell has no install lines (between {BEGIN!r} and {END!r})")
    setup.source = "\n".join(lines)


def stamp_sources(assignments=None, readme: Path = course.REPO / "README.md") -> list[Path]:
    """Stamp the solution notebooks (and the README's badges) with the configured address; return the files changed."""
    import nbformat

    s = settings()
    changed = []
    for name in assignments or course.assignments():
        path = course.SOLUTIONS / name / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        before = nbformat.writes(nb)
        stamp_notebook(nb, s)
        if nbformat.writes(nb) != before:
            nbformat.write(nb, path)
            changed.append(path)
    text = readme.read_text()
    if stamp_text(text, s) != text:
        readme.write_text(stamp_text(text, s))
        changed.append(readme)
    return changed
