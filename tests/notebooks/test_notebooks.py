"""Every solution notebook runs in grading mode with every test cell passing; every
released notebook fails every exercise test, and passes them all once the
solution cells are put back (so the tests can fail, and the stubs are the only
difference).

The released notebook is executed up to its last test cell only, as the grader's kernels are: the cells after it
are the solution notebook's own (checked statically below), and the solution's run executes them in full."""

import ast
import re

import pytest

from notebook_tools import (ASSIGNMENTS, errors, execute, is_test_cell, nbgrader_meta, read, solution_path, stderr,
                            student_path, with_solutions)

# One xdist group per notebook (run with `--dist loadgroup`): the executions of a
# notebook are cached per worker, and different notebooks run on different workers.
GROUPED = [pytest.param(name, marks=pytest.mark.xdist_group(name)) for name in ASSIGNMENTS]


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Each notebook executed once per variant, shared by the tests below (session scope: with
    xdist a worker may interleave these tests with other modules', which would tear down a
    module-scoped cache)."""
    cache = {}

    def run(name, variant):
        if (name, variant) not in cache:
            solution, student = read(solution_path(name)), read(student_path(name))
            nb = {"solution": solution, "student": student, "restored": with_solutions(student, solution)}[variant]
            if variant != "solution":
                nb = up_to_last_test_cell(nb)
            cache[name, variant] = execute(nb, tmp_path_factory.mktemp(f"{name}-{variant}"))
        return cache[name, variant]

    return run


def up_to_last_test_cell(nb):
    """A copy of ``nb`` without the cells after its last test cell."""
    import copy

    nb = copy.deepcopy(nb)
    last = max(i for i, c in enumerate(nb.cells) if is_test_cell(c))
    nb.cells = nb.cells[:last + 1]
    return nb


def _bound_names(source: str) -> set[str]:
    """The names a cell binds at the top level (assignments, definitions, imports; IPython magics left out)."""
    tree = ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))
    names = set()
    for node in tree.body:
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else [node]:
            if isinstance(sub, (ast.FunctionDef, ast.ClassDef)):
                names.add(sub.name)
            elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                names.add(sub.id)
            elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in sub.names)
    return names


def release_differences(solution, restored) -> list[str]:
    """Why running the released notebook (solutions put back) only up to its last test cell could miss a failure
    that running it to the end would show: a cell other than a test cell that differs from the solution's, or a name
    that a solution test cell binds and its released version does not, used by a later cell."""
    problems = []
    if [c.cell_type for c in solution.cells] != [c.cell_type for c in restored.cells]:
        return ["the released notebook's cells are not the solution's, one for one"]
    for i, (a, b) in enumerate(zip(solution.cells, restored.cells)):
        if a.cell_type != "code" or a.source == b.source:
            continue
        if not is_test_cell(a):
            problems.append(f"cell {i} ({nbgrader_meta(a).get('grade_id', a.get('id'))}) differs and is not a test cell")
            continue
        later = "\n".join(c.source for c in solution.cells[i + 1:] if c.cell_type == "code")
        for name in sorted(_bound_names(a.source) - _bound_names(b.source)):
            if re.search(rf"\b{re.escape(name)}\b", later):
                problems.append(f"test cell {nbgrader_meta(a)['grade_id']} binds `{name}` only in the solution, "
                                f"and a later cell uses it")
    return problems


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_release_changes_nothing_that_later_cells_depend_on(name):
    solution, student = read(solution_path(name)), read(student_path(name))
    problems = release_differences(solution, with_solutions(student, solution))
    assert not problems, f"{name}: " + "; ".join(problems)


def test_the_release_check_catches_a_hidden_name_used_later():
    import nbformat

    def nb(test_source):
        cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell(test_source),
                 nbformat.v4.new_code_cell("print(helper(x))")]
        cells[1].metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "test_x", "points": 1}
        return nbformat.v4.new_notebook(cells=cells)

    solution, released = nb("check('x', x)\nhelper = abs"), nb("check('x', x)")
    assert release_differences(solution, released) == [
        "test cell test_x binds `helper` only in the solution, and a later cell uses it"]
    released.cells[0].source = "x = 2"
    assert re.fullmatch(r"cell 0 \(.*\) differs and is not a test cell", release_differences(solution, released)[0])
    assert release_differences(solution, solution) == []


@pytest.mark.parametrize("name", GROUPED)
def test_solution_passes_every_test_cell(executed, name):
    nb = executed(name, "solution")
    failures = {c.metadata.nbgrader["grade_id"]: errors(c) for c in nb.cells if is_test_cell(c) and errors(c)}
    assert not failures, f"test cells failing in the solution of {name}: {failures}"


@pytest.mark.parametrize("name", GROUPED)
def test_solution_runs_without_errors_or_stderr_in_test_cells(executed, name):
    nb = executed(name, "solution")
    broken = {c.id: errors(c) for c in nb.cells if c.cell_type == "code" and errors(c)}
    assert not broken, f"cells raising in the solution of {name}: {broken}"
    # nbgrader gives zero points to a test cell that writes to stderr.
    noisy = {c.metadata.nbgrader["grade_id"]: stderr(c) for c in nb.cells if is_test_cell(c) and stderr(c)}
    assert not noisy, f"test cells writing to stderr in {name}: {noisy}"


@pytest.mark.parametrize("name", GROUPED)
def test_released_notebook_fails_every_test_cell(executed, name):
    nb = executed(name, "student")
    passing = [c.metadata.nbgrader["grade_id"] for c in nb.cells if is_test_cell(c) and not errors(c)]
    assert not passing, f"test cells of {name} that pass on the unsolved stubs (they cannot fail): {passing}"
    for cell in nb.cells:
        if is_test_cell(cell):
            assert any("not implemented yet" in e for e in errors(cell)), (
                f"{cell.metadata.nbgrader['grade_id']} should tell the student the exercise is not implemented yet: {errors(cell)}")


@pytest.mark.parametrize("name", GROUPED)
def test_released_notebook_passes_with_solutions_put_back(executed, name):
    nb = executed(name, "restored")
    failures = {c.metadata.nbgrader["grade_id"]: errors(c) for c in nb.cells if is_test_cell(c) and errors(c)}
    assert not failures, f"{name}: released test cells failing with the solutions put back: {failures}"


# The claims of the text that grading mode can check: notebooks 01-03 print one line per claim, ending in PASS or FAIL,
# computed from what the run measured (with its standard errors, so that the same line holds with the few samples of
# grading mode and the many of full mode). At least this many such lines per notebook, and none may fail.
CLAIMS = {"01_forward_process": 1, "02_loss_comparison": 5, "03_reverse_1d": 12}


def _printed_lines(nb) -> list[str]:
    return [line for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
            if out.get("output_type") == "stream" and out.get("name") == "stdout"
            for line in "".join(out.get("text", "")).splitlines()]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xdist_group(n)) for n in CLAIMS])
def test_the_claims_of_the_text_hold_in_grading_mode(executed, name):
    verdicts = [line.strip() for line in _printed_lines(executed(name, "solution")) if line.rstrip().endswith(("PASS", "FAIL"))]
    assert len(verdicts) >= CLAIMS[name], f"{name}: expected at least {CLAIMS[name]} verdict lines, found {verdicts}"
    failed = [line for line in verdicts if line.endswith("FAIL")]
    assert not failed, f"{name}: claims of the text that this run does not bear out: {failed}"


@pytest.mark.parametrize("name", GROUPED)
def test_the_text_agrees_with_the_output(executed, name):
    """Every claim of the text (prose and model answers) of a form the printed lines can check, checked against them,
    and every printed "slower"/"faster" against the ratios on its line (test_text_numbers.contradictions)."""
    from test_text_numbers import contradictions

    nb = executed(name, "solution")
    text = "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    found = contradictions(text, _printed_lines(nb))
    assert not found, f"{name}: the text or a verdict says what the output contradicts:\n  " + "\n  ".join(found)
