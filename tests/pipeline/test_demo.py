"""`python -m autograder demo` end to end, the commands that read its results, and the class report in Chromium."""

import csv
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from autograder import course
from notebook_tools import chromium

NAME = "02_loss_comparison"
pytestmark = pytest.mark.xdist_group("demo")


def cli(*args, cwd=course.REPO):
    out = subprocess.run([sys.executable, "-m", "autograder", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, f"python -m autograder {' '.join(map(str, args))} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo") / "work"
    stdout = cli("demo", "--workdir", work, "--workers", 2)
    return work, stdout


def test_demo_grades_the_class_with_the_default_gradebook(demo):
    work, stdout = demo
    assert (work / "gradebook.db").exists() and "gradebook:" in stdout
    rows = {r["student"]: r for r in csv.DictReader((work / f"grades_{NAME}.csv").open())}
    assert rows["ada"]["score"] == rows["ada"]["max_score"] == "11" and rows["ada"]["status"] == "graded"
    assert rows["edsger"]["score"] == "0"
    assert 0 < float(rows["barbara"]["score"]) < 11 and 0 < float(rows["alan"]["score"]) < 11
    assert rows["john"]["status"] == "flagged" and "kernel died" in rows["john"]["reason"]
    for student in ("linus", "margaret"):  # corrupt, missing: never a plain 0
        assert rows[student]["status"] == "needs attention" and rows[student]["score"] == ""
    assert sorted(p.name for p in (work / "feedback").iterdir()) == sorted(rows)


def test_export_feedback_and_report_commands(demo, tmp_path):
    work, _ = demo
    cli("export", NAME, "--workdir", work, "--out", tmp_path / "export.csv")
    assert (tmp_path / "export.csv").read_text() == (work / f"grades_{NAME}.csv").read_text()
    cli("feedback", NAME, "--workdir", work, "--out", tmp_path / "feedback")
    assert "donald" in os.listdir(tmp_path / "feedback")
    text = (tmp_path / "feedback" / "donald" / f"{NAME}.html").read_text()
    assert "it raised ValueError: I got stuck here" in text and "Traceback" not in text
    cli("report", NAME, "--workdir", work, "--out", tmp_path / "report.html")
    report = (tmp_path / "report.html").read_text()
    assert report.count("<svg class='plot'") == 8  # the total and each of the 7 exercises
    assert "linus" in report and "corrupt notebook" in report and "margaret" in report


def test_commands_explain_bad_arguments(tmp_path):
    out = subprocess.run([sys.executable, "-m", "autograder", "grade", "no_such_notebook", tmp_path],
                         cwd=course.REPO, capture_output=True, text=True)
    assert out.returncode != 0 and "unknown assignment 'no_such_notebook'" in out.stderr
    out = subprocess.run([sys.executable, "-m", "autograder", "grade", NAME, tmp_path / "nothing", "--workers", "0"],
                         cwd=course.REPO, capture_output=True, text=True)
    assert out.returncode != 0 and "--workers" in out.stderr and "positive integer" in out.stderr
    out = subprocess.run([sys.executable, "-m", "autograder", "report", NAME, "--workdir", tmp_path],
                         cwd=course.REPO, capture_output=True, text=True)
    assert out.returncode != 0 and "run `python -m autograder grade" in out.stderr


def test_student_bundle(tmp_path):
    from autograder.__main__ import write_bundle

    with zipfile.ZipFile(write_bundle([NAME, "01_forward_process"], tmp_path / "bundle.zip")) as z:
        names = z.namelist()
    assert f"{NAME}/{NAME}.ipynb" in names and "01_forward_process/01_forward_process.ipynb" in names
    assert not any(n.startswith("solutions") for n in names)


def test_report_renders_with_its_plots_in_headless_chromium(demo, tmp_path):
    from matplotlib.image import imread

    work, _ = demo
    report = work / f"report_{NAME}.html"
    browser = chromium()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,3000"]
    shot = tmp_path / "report.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120, check=True)
    dom = subprocess.run([browser, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    assert "class report" in dom and len(re.findall(r"<svg class=\"plot\"", dom)) == 8
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    bars = ((abs(pixels[..., 0] - 0x4C / 255) < 0.02) & (abs(pixels[..., 1] - 0x72 / 255) < 0.02)
            & (abs(pixels[..., 2] - 0xB0 / 255) < 0.02))
    assert bars.sum() > 2000, "the histogram bars are not on the page"
