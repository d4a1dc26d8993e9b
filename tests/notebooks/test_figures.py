"""Figures are drawn in the tests, as Jupyter's inline backend draws them for a student.

`notebook_tools.execute` runs every notebook with the inline backend, so each figure a cell shows is rendered to a
PNG at the end of the cell; a figure that cannot be drawn leaves an error output (or a figure display without its
PNG), and `notebook_tools.errors` reports both, so the notebook tests and the full-mode test fail on it. Under Agg,
the backend of the grading kernels, a figure is never drawn and such an error passes unseen: notebook 02's figure of
the loss weight once had `\\lVert` in its title (matplotlib's mathtext has no such symbol) and showed students a
traceback instead of the figure while every test passed.

This file checks that machinery on that very cell: the cell as it is draws its figure, and the same cell with
`\\lVert` put back fails.
"""

import nbformat

from notebook_tools import errors, execute, figures, nbgrader_meta, read, solution_path

NAME = "02_loss_comparison"


def _cell(nb, grade_id):
    (cell,) = [c for c in nb.cells if nbgrader_meta(c).get("grade_id") == grade_id]
    return cell


def test_the_loss_weight_figure_of_02_is_drawn_and_lVert_would_fail(tmp_path):
    solution = read(solution_path(NAME))
    setup, weights = _cell(solution, "setup"), _cell(solution, "weight-over-t")
    assert r"\Vert" in weights.source and r"\lVert" not in weights.source
    broken = weights.source.replace(r"\Vert\epsilon", r"\lVert\epsilon").replace(r"\epsilon_\theta\Vert", r"\epsilon_\theta\rVert")
    assert broken != weights.source
    nb = nbformat.v4.new_notebook()
    nb.metadata = solution.metadata
    written = "noise_loss_weight = cu.losses.noise_loss_weight   # the student's function, written (the cell uses no other)"
    nb.cells = [nbformat.v4.new_code_cell(setup.source), nbformat.v4.new_code_cell(written),
                nbformat.v4.new_code_cell(weights.source), nbformat.v4.new_code_cell(broken)]
    ran = execute(nb, tmp_path, timeout=120)
    _, _, ok, put_back = ran.cells
    assert not errors(ok), f"the loss weight figure of {NAME} cannot be drawn: {errors(ok)}"
    assert figures(ok) == 1, f"the loss weight cell of {NAME} should show one drawn figure, shows {figures(ok)}"
    assert any("lVert" in e for e in errors(put_back)), (
        f"with \\lVert put back the figure cannot be drawn, but the test saw no error: {put_back.outputs}")
