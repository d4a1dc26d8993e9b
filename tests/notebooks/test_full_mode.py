"""Every solution notebook in full mode (the runs a self-learner sees): no error, and every verdict it prints
is a PASS. Slow (minutes per notebook): run with `python -m pytest tests/notebooks/test_full_mode.py -m slow`.

The notebooks print their own verdicts on what they measure (for example notebook 06's quality goals,
"goal >= 95 %   PASS"); a text that states a result the code does not reach shows up here as a FAIL line. Every
figure is drawn (Jupyter's inline backend, tests/notebook_tools.py), and the text's claims that the printed lines can
check are checked against them (test_text_numbers.contradictions).
"""

import time

import pytest

from notebook_tools import ASSIGNMENTS, errors, execute, read, solution_path

pytestmark = pytest.mark.slow


def _printed(nb) -> list[str]:
    return [line for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if out.get("output_type") == "stream" and out.get("name") == "stdout"
            for line in "".join(out.get("text", "")).splitlines()]


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_full_mode_runs_and_every_printed_verdict_passes(name, tmp_path):
    started = time.monotonic()
    nb = execute(read(solution_path(name)), tmp_path, timeout=1800, fast=False)
    seconds = time.monotonic() - started
    failed = {i: errors(c) for i, c in enumerate(nb.cells) if errors(c)}
    assert not failed, failed
    verdicts = [line for line in _printed(nb) if "PASS" in line or "FAIL" in line]
    assert not [line for line in verdicts if "FAIL" in line], verdicts
    from test_text_numbers import contradictions     # the text's checkable claims against this run's output

    text = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert not contradictions(text, _printed(nb)), contradictions(text, _printed(nb))
    print(f"{name}: full mode in {seconds:.0f} s; verdicts: {verdicts}")
