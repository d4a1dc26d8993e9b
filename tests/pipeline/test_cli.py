"""The instructor's command line: an installed command that works from any directory, with help on everything."""

import argparse
import shutil
import subprocess
import sys

from autograder.__main__ import build_parser


def test_every_argument_of_every_command_has_help():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, command in sub.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"{name}: {action.dest} has no help"


def test_the_console_command_runs_from_any_directory_and_says_its_version(tmp_path):
    command = shutil.which("course-autograder", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert command, "course-autograder is not installed with the course (pyproject.toml [project.scripts])"
    out = subprocess.run([command, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("course ") and "nbgrader" in out.stdout
    out = subprocess.run([command, "export", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "course-autograder export" in out.stdout
    out = subprocess.run([sys.executable, "-m", "autograder", "--version"], capture_output=True, text=True, timeout=120,
                         cwd=__import__("autograder").course.REPO)
    assert out.returncode == 0 and out.stdout.startswith("course ")
