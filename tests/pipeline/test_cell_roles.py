"""Every cell that runs is judged as the release defines it (issue 25, item 2).

Cell roles (answer, test, hand-graded, read-only, ordinary) come from the released notebook, matched by cell
id, grade_id or position (``autograder/roles.py``), never from the submission's nbgrader metadata; the source
check (``autograder/provenance.py``) reads every code cell that runs the student's code, as IPython runs it.
Unit tests of the matching and the parsing first (no kernel), then one small class of notebook 02 graded
for real: untouched stubs with the kernel's reply function replaced from an added cell, behind `%%time`,
with `>>>` prompts and in an answer cell whose solution flag was cleared (all flagged), and the solution saved
without cell ids as Colab does (graded, not flagged).
"""

import copy
import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder import course, provenance
from autograder.grade import FLAGGED, GRADED, Submission, grade, prepare_notebook
from autograder.roles import ANSWER, ORDINARY, READ_ONLY, TEST, match_cells, role
from notebook_tools import nbgrader_meta, read, solution_path, student_path, with_solutions

NAME = "02_loss_comparison"
NB = f"{NAME}.ipynb"
FULL = 11
# What issue 25 found earning 11/11 on untouched stubs: the kernel's reply function replaced so that it
# answers every check with the course's references.
SERVE = '''import course_utils.grading as _g
from course_utils import losses as _losses
_real_serve = _g.serve
def _serve(payload, get_fn):
    name = get_fn.__name__ if hasattr(get_fn, "__name__") else ""
    return _real_serve(payload, lambda: _losses.posterior_mean)
_g.serve = _serve
'''

DIALECT = '''
def _dialect(lines):
    return [line[2:] if line.startswith("@@") else line for line in lines]
get_ipython().input_transformers_cleanup.append(_dialect)
'''


@pytest.fixture(scope="module")
def release_nb():
    return read(student_path(NAME))


def _raw(nb) -> dict:
    return json.loads(nbformat.writes(nb))


def _without_ids(raw: dict) -> dict:
    """The notebook as nbformat 4.4 (Colab, older Jupyter) saves it: no cell ids."""
    raw = copy.deepcopy(raw)
    raw["nbformat_minor"] = 4
    for cell in raw["cells"]:
        cell.pop("id", None)
    return raw


def _prepared(tmp_path, release_nb, raw):
    path = tmp_path / "in.ipynb"
    path.write_text(json.dumps(raw))
    sub = Submission("alice", path)
    prepare_notebook(sub, release_nb, tmp_path / "out" / NB)
    assert not sub.problem, sub.problem
    return sub, read(tmp_path / "out" / NB)


def _index(raw, grade_id):
    return next(i for i, c in enumerate(raw["cells"]) if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def _code(source):
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": [], "execution_count": None}


# ------------------------------------------------------------------ matching cells to the release

def _release():
    nb = new_notebook()
    for i, (kind, meta) in enumerate([("markdown", {"locked": True}), ("code", {"solution": True}),
                                      ("code", {"grade": True, "locked": True, "points": 1}),
                                      ("code", {"locked": True})]):
        cell = (new_markdown_cell if kind == "markdown" else new_code_cell)(f"cell {i}")
        cell.id = f"c{i}"
        cell.metadata["nbgrader"] = {"grade_id": f"g{i}", "grade": False, "solution": False, "locked": False, **meta}
        nb.cells.append(cell)
    return nb


def test_the_roles_of_a_cell_are_its_nbgrader_metadata():
    assert [role(c) for c in _release().cells] == [READ_ONLY, ANSWER, TEST, READ_ONLY]
    assert role(new_code_cell("x = 1")) == ORDINARY


@pytest.mark.parametrize("how", ["ids", "grade_ids", "position"])
def test_cells_are_matched_by_id_grade_id_or_position(how):
    release = _release()
    cells = copy.deepcopy(release.cells)
    for cell in cells:
        cell.source = "edited"
        if how != "ids":
            cell.pop("id")
        if how == "position":
            cell.metadata.pop("nbgrader")
    ids = [c.get("id") for c in cells]
    assert match_cells(cells, ids, release.cells) == ([0, 1, 2, 3], set())


def test_added_moved_and_deleted_cells():
    release = _release()
    cells = copy.deepcopy(release.cells)
    added = new_code_cell("print('mine')")
    cells = [cells[0], added, cells[3], cells[1]]  # answer after the read-only cell, test deleted
    ids = [c.get("id") for c in cells]
    matched, moved = match_cells(cells, ids, release.cells)
    assert matched == [0, None, 3, 1] and (moved == {2} or moved == {3})


def test_an_added_cell_in_a_notebook_without_ids_or_metadata_is_not_taken_for_a_released_one():
    release = _release()
    cells = copy.deepcopy(release.cells)
    for cell in cells:
        cell.pop("id")
        cell.metadata.pop("nbgrader")
    cells.insert(2, new_code_cell("print('mine')"))  # after the answer: the counts differ, the sources tell
    matched, _ = match_cells(cells, [None] * len(cells), release.cells)
    assert matched == [0, 1, None, 2, 3]


def test_a_notebook_without_cell_ids_is_not_an_oddity(tmp_path, release_nb):
    solved = with_solutions(release_nb, read(solution_path(NAME)))
    sub, nb = _prepared(tmp_path, release_nb, _without_ids(_raw(solved)))
    assert sub.notes == []
    assert [nbgrader_meta(c) for c in nb.cells] == [nbgrader_meta(c) for c in release_nb.cells]


def test_a_notebook_stripped_of_all_nbgrader_metadata_gets_one_note_and_the_release_roles(tmp_path, release_nb):
    solved = with_solutions(release_nb, read(solution_path(NAME)))
    raw = _without_ids(_raw(solved))
    for cell in raw["cells"]:
        cell["metadata"].pop("nbgrader")
    sub, nb = _prepared(tmp_path, release_nb, raw)
    assert sub.notes == ["no cell has nbgrader metadata (an editor dropped it, or it was removed): "
                         "every cell is graded in the release's role"]
    assert [nbgrader_meta(c) for c in nb.cells] == [nbgrader_meta(c) for c in release_nb.cells]
    answers = [c.source for c in nb.cells if role(c) == ANSWER]
    assert answers == [c.source for c in solved.cells if role(c) == ANSWER]


def test_truly_duplicated_ids_are_noted(tmp_path, release_nb):
    raw = _raw(release_nb)
    raw["cells"][5]["id"] = raw["cells"][3]["id"]
    sub, nb = _prepared(tmp_path, release_nb, raw)
    assert sub.notes == ["duplicated cell ids were renumbered"]
    assert len({c.id for c in nb.cells}) == len(nb.cells)


def test_roles_come_from_the_release_and_changes_are_noted(tmp_path, release_nb):
    raw = _raw(release_nb)
    answer, test = _index(raw, "posterior_mean"), _index(raw, "test_mean_loss")
    raw["cells"][answer]["metadata"]["nbgrader"].update(solution=False, locked=True)  # no longer an answer
    raw["cells"][test]["metadata"]["nbgrader"].update(grade=False, solution=True)  # a test made an answer
    raw["cells"][test]["source"] = "print('mean_loss: passed')"
    raw["cells"].insert(answer + 1, _code(SERVE))
    raw["cells"][_index(raw, "setup")]["source"] = "print('my own setup')"  # read-only: restored, like a test cell
    raw["cells"].insert(0, _code(""))  # an empty cell runs nothing: not worth a note
    sub, nb = _prepared(tmp_path, release_nb, raw)
    reasons = "\n".join(sub.notes)
    assert f"code cell(s) added, not in the release (graded as ordinary cells, their code read like an answer's): " \
           f"cell {answer + 3} ('import course_utils.grading as _g')" in reasons, reasons
    assert f"cell {answer + 2} (posterior_mean) is marked read-only, the release's is answer" in reasons
    assert "(test_mean_loss) is marked answer, the release's is test" in reasons
    assert "test cell(s) edited, the released version was run: test_mean_loss" in reasons
    released = {nbgrader_meta(c)["grade_id"]: c for c in release_nb.cells}
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id:
            assert nbgrader_meta(cell) == nbgrader_meta(released[grade_id])
            if role(cell) in (TEST, READ_ONLY):
                assert cell.source == released[grade_id].source
    added = next(c for c in nb.cells if c.source == SERVE)
    assert "nbgrader" not in added.metadata
    # The source check reads the added cell and the answer cell, whatever their metadata said.
    found = provenance.flags(nb)
    assert any("course_utils.grading" in r for r in found[nb.cells.index(added)]), found


def test_a_deleted_test_cell_is_put_back_in_its_place(tmp_path, release_nb):
    raw = _raw(release_nb)
    del raw["cells"][_index(raw, "test_simple_loss")]
    sub, nb = _prepared(tmp_path, release_nb, raw)
    assert sub.notes == ["test cell(s) deleted, restored from the release: test_simple_loss"]
    ids = [nbgrader_meta(c).get("grade_id") for c in nb.cells]
    assert ids == [nbgrader_meta(c).get("grade_id") for c in release_nb.cells]


# ------------------------------------------------------------------ reading cells as IPython runs them

@pytest.mark.parametrize("source", [
    "%%time\n" + SERVE,
    "%%capture out\n" + SERVE,
    "%%timeit -n 1 -r 1\n" + SERVE,
    "%%time\n%%capture\n" + SERVE,
    "".join(">>> " + line + "\n" if not line.startswith(" ") else "... " + line + "\n" for line in SERVE.splitlines()),
    "In [1]: import course_utils.grading as _g\nIn [2]: _g.serve = lambda *args: None\n",
    "%time import course_utils.grading as _g",
    "    import course_utils.grading as _g\n    _g.serve = print\n",
])
def test_code_behind_magics_and_prompts_is_read(source):
    tree, reasons = provenance.read_cell(source)
    assert reasons == []
    assert any(getattr(n, "module", None) == "course_utils.grading" or
               any(a.name == "course_utils.grading" for a in getattr(n, "names", [])) for n in tree.body), source
    found = provenance.flags(new_notebook(cells=[new_code_cell(source)]))
    assert any("course_utils.grading" in r for r in found[0]), found


@pytest.mark.parametrize("source, reason", [
    ("!pip install cheat", "runs a shell command (`!pip install cheat`)"),
    ("files = !ls ..", "runs a shell command"),
    ("%%bash\nls\n", "runs the cell magic `%%bash`"),
    ("%%writefile x.py\nprint(1)\n", "runs the cell magic `%%writefile`"),
    ("%run other.py", "runs the line magic `%run`"),
    ("%pip install x", "runs the line magic `%pip`"),
    ("%%time\n!ls\n", "runs a shell command"),
])
def test_magics_the_check_cannot_read_are_reported(source, reason):
    _, reasons = provenance.read_cell(source)
    assert any(reason in r for r in reasons), reasons
    found = provenance.flags(new_notebook(cells=[new_code_cell(source)]))
    assert any(reason in r for r in found[0]), found


def test_quiet_magics_and_plain_python_are_not_reported():
    source = "%matplotlib inline\n%load_ext autoreload\n%autoreload 2\nimport numpy as np\nx = np.ones(3)\n%time y = x + 1\n"
    assert provenance.read_cell(source)[1] == []
    assert provenance.flags(new_notebook(cells=[new_code_cell(source)])) == {}


def test_a_cell_that_does_not_parse_is_unreadable_and_listed():
    with pytest.raises(provenance.Unreadable):
        provenance.read_cell("def f(:\n    pass\n")
    nb = new_notebook(cells=[new_code_cell("x = 1"), new_code_cell("def f(:\n")])
    assert list(provenance.unreadable(nb)) == [1]
    # read-only and test cells run the release's source: not read
    nb.cells[1].metadata["nbgrader"] = {"grade_id": "t", "grade": True, "solution": False, "locked": True, "points": 1}
    assert provenance.unreadable(nb) == {} and provenance.flags(nb) == {}


# ------------------------------------------------------------------ graded for real

def _class():
    release = read(student_path(NAME))
    stubs = _raw(release)
    answer = _index(stubs, "posterior_mean")

    added = copy.deepcopy(stubs)
    added["cells"].insert(answer + 1, _code(SERVE))
    magic = copy.deepcopy(stubs)
    magic["cells"][answer]["source"] = "%%time\n" + SERVE
    prompts = copy.deepcopy(stubs)
    prompts["cells"][answer]["source"] = "".join(">>> " + line + "\n" if not line.startswith(" ") else "... " + line + "\n"
                                                 for line in SERVE.splitlines())
    cleared = copy.deepcopy(stubs)
    cleared["cells"][answer]["source"] = SERVE
    cleared["cells"][answer]["metadata"]["nbgrader"]["solution"] = False
    solved = _raw(with_solutions(release, read(solution_path(NAME))))
    colab = _without_ids(solved)
    dialect = copy.deepcopy(solved)  # a cell only a kernel taught a new syntax can run
    dialect["cells"][answer]["source"] = "".join(dialect["cells"][answer]["source"]) + DIALECT
    second = _index(dialect, "posterior_variance")
    dialect["cells"][second]["source"] = "".join(
        "@@" + line + "\n" for line in ("".join(dialect["cells"][second]["source"]) + "\n" + SERVE).splitlines())
    typo = copy.deepcopy(solved)  # an honest slip: the cell runs nothing, its test fails, nothing to flag
    typo["cells"][_index(typo, "simple_loss")]["source"] = "def simple_loss(eps, eps_theta:\n    return 0.0\n"
    return {  # student: (notebook, text expected in the reasons; "" for a notebook graded without a flag)
        "added": (added, f"cell {answer + 2} ('import course_utils.grading as _g')"),
        "magic": (magic, f"cell {answer + 1}: imports `course_utils.grading`"),
        "prompts": (prompts, f"cell {answer + 1}: imports `course_utils.grading`"),
        "cleared": (cleared, "(posterior_mean) is marked ordinary, the release's is answer"),
        "colab": (colab, ""),
        "dialect": (dialect, f"cell {second + 1}: the source check cannot read this cell (SyntaxError: invalid syntax), "
                             "yet the kernel ran it without a SyntaxError"),
        "typo": (typo, ""),
    }


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("roles")
    for student, (raw, _) in _class().items():
        (root / "submissions" / student).mkdir(parents=True)
        (root / "submissions" / student / NB).write_text(json.dumps(raw))
    results = grade(NAME, root / "submissions", root / "work", course.Limits(timeout=120, memory_mb=2048), workers=2)
    return {r.student: r for r in results}


@pytest.mark.parametrize("student", ["added", "magic", "prompts", "cleared"])
def test_replacing_the_reply_function_from_any_cell_is_flagged(graded, student):
    result, (_, reason) = graded[student], _class()[student]
    assert result.status == FLAGGED, result.reasons
    assert reason in result.reason, result.reasons
    assert "course_utils.grading" in result.reason, result.reasons
    assert result.max_score == FULL


def test_a_notebook_saved_without_cell_ids_is_graded_in_full(graded):
    result = graded["colab"]
    assert (result.status, result.score, result.reasons) == (GRADED, FULL, [])


def test_a_cell_the_check_cannot_read_but_the_kernel_ran_is_flagged(graded):
    result, (_, reason) = graded["dialect"], _class()["dialect"]
    assert result.status == FLAGGED and reason in result.reason, result.reasons
    assert "changes how IPython reads cells" in result.reason, result.reasons


def test_an_answer_with_a_syntax_error_is_graded_not_flagged(graded):
    result = graded["typo"]
    assert (result.status, result.score, result.reasons) == (GRADED, FULL - 1, [])
