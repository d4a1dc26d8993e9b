"""Nothing in a student notebook answers a written question before the student does, and no exercise stub spells
out the expression the student must write.

Two checks, both static (no execution):

* **Model answers.** Each model answer (the text between the solution markers of a written-answer cell of a solution
  notebook) is cut into word 5-grams after normalising (lower case, formulas left out, punctuation dropped). A
  5-gram is *distinctive* when it is not in the question's own prompt (an answer may repeat the question) and has at
  least three words that are not among the most common English words. A student-visible cell of the released
  notebook (prose, takeaways, code, prints, docstrings) that shares two or more distinctive 5-grams with a model
  answer states that answer's conclusion in the answer's words: the test fails and names the cell and the phrases.
* **Docstrings.** The docstrings of every exercise stub in the released notebook are cut into tokens of code
  (names, numbers, operators; `jnp.`, `np.`, `*` and brackets dropped, `**` read as `^`) and compared with the
  solution's code of the same cell: a run of five tokens in common with at least one operator is the exercise's
  expression in the docstring. A docstring gives the contract (arguments, shapes, what is returned); the markdown
  gives the mathematics the student turns into code.

Both checks catch a give-away that repeats the model answer's or the solution's wording; a paraphrase escapes them,
so each model answer states its conclusion in the words a give-away would use. The fixtures `give_aways_*.json` hold
the sentences that reviews found (issue 26's second review, the fresh review of notebook 07), which the test must
flag when they are put back.
"""

import ast
import json
import re
from pathlib import Path

import pytest

from notebook_tools import ASSIGNMENTS, nbgrader_meta, read, solution_path, student_path

STOPWORDS = set("""a an the of to in on at by for with from and or but not no is are was were be been being it its this
that these those as than then so if when where which what who how why do does did done can could should would may might
must will shall has have had one two each every all any some more most less least very much many only also just same
other such own into over under about after before while there here their they them we our you your he she his her i
x t""".split())
N = 5
MIN_SHARED = 2


def _words(text: str) -> list[str]:
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", " ", text, flags=re.S)   # formulas are the notebook's shared notation
    return re.findall(r"[a-z0-9]+", text.lower())


def _grams(text: str) -> set[tuple[str, ...]]:
    words = _words(text)
    return {tuple(words[i:i + N]) for i in range(len(words) - N + 1)}


def _distinctive(gram) -> bool:
    return sum(1 for w in gram if w not in STOPWORDS and not w.isdigit()) >= 3


def _solution_text(source: str) -> str:
    match = re.search(r"### BEGIN SOLUTION(.*?)### END SOLUTION", source, re.S)
    text = match.group(1) if match else source
    return re.sub(r"^Grading:.*$", "", text.replace("*Model answer.*", ""), flags=re.M)


def model_answers(solution_nb) -> list[tuple[str, str, str]]:
    """(grade id, model answer, prompt) for every written-answer cell; the prompt is the markdown cell before it."""
    found = []
    for i, cell in enumerate(solution_nb.cells):
        meta = nbgrader_meta(cell)
        if cell.cell_type == "markdown" and meta.get("solution") and meta.get("grade"):
            prompt = solution_nb.cells[i - 1].source if i else ""
            found.append((meta["grade_id"], _solution_text(cell.source), prompt))
    return found


def visible_cells(student_nb) -> list[tuple[int, str]]:
    """(index, source) of every cell a student reads before writing an answer: all but the answer cells."""
    return [(i, c.source) for i, c in enumerate(student_nb.cells)
            if not (nbgrader_meta(c).get("solution") and nbgrader_meta(c).get("grade") and c.cell_type == "markdown")]


def answers_given_away(answers, cells) -> list[str]:
    """'ANSWER in cell N: "phrase"; "phrase"' for each visible cell that shares MIN_SHARED distinctive 5-grams with a
    model answer."""
    found = []
    for grade_id, answer, prompt in answers:
        grams = {g for g in _grams(answer) - _grams(prompt) if _distinctive(g)}
        for index, source in cells:
            shared = sorted(grams & _grams(source))
            if len(shared) >= MIN_SHARED:
                found.append(f"model answer {grade_id} in cell {index}: " + "; ".join(f'"{" ".join(g)}"' for g in shared[:6]))
    return found


def _code_tokens(text: str) -> list[str]:
    text = re.sub(r"\b(?:jnp|np|jax\.numpy|jax|math|lax|nnx)\.", "", text)
    text = re.sub(r"_\{([^}]*)\}", lambda m: "_" + re.sub(r"\W", "", m.group(1)), text)   # x_{t-1}: one name
    text = text.replace("**", " ^ ")
    return [t for t in re.findall(r"[A-Za-z_][A-Za-z_0-9]*|\d+(?:\.\d+)?|[-+/^@=<>]", text)
            if t not in ("sum", "mean", "return", "self")]


def _token_runs(tokens: list[str], n: int = 5) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def expressions_in_docstrings(stub_source: str, solution_source: str) -> list[str]:
    """The runs of five code tokens, with an operator among them, that a stub's docstrings share with the solution."""
    match = re.search(r"### BEGIN SOLUTION(.*?)### END SOLUTION", solution_source, re.S)
    solution_runs = _token_runs(_code_tokens(match.group(1) if match else solution_source))
    try:
        tree = ast.parse(stub_source)
    except SyntaxError:
        return []
    docstrings = [ast.get_docstring(node) or "" for node in ast.walk(tree)
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    found = []
    for doc in docstrings:
        for run in sorted(_token_runs(_code_tokens(doc)) & solution_runs):
            if any(t in "-+/^@" for t in run):
                found.append(f'"{" ".join(run)}" in the docstring "{doc.splitlines()[0][:80]}"')
    return found


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_no_student_visible_cell_states_a_model_answer(name):
    found = answers_given_away(model_answers(read(solution_path(name))), visible_cells(read(student_path(name))))
    assert not found, (f"{name}: student-visible cells that state a model answer in its own words (say less there, "
                       f"or point to the question):\n  " + "\n  ".join(found))


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_no_exercise_docstring_spells_out_the_solution(name):
    solution, student = read(solution_path(name)), read(student_path(name))
    solutions = {nbgrader_meta(c)["grade_id"]: c.source for c in solution.cells
                 if nbgrader_meta(c).get("solution") and c.cell_type == "code"}
    found = []
    for cell in student.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in solutions and cell.cell_type == "code":
            found += [f"{grade_id}: {f}" for f in expressions_in_docstrings(cell.source, solutions[grade_id])]
    assert not found, (f"{name}: exercise docstrings that spell out the solution's expression (give the contract: "
                       f"arguments, shapes, what is returned):\n  " + "\n  ".join(found))


# The give-aways that reviews found, as they stood (give_aways_issue26.json: the second review of issue 26;
# give_aways_review07.json: the fresh review of notebook 07): put back, each must be flagged.
_FIXTURE_FILES = sorted((Path(__file__).parent / "fixtures").glob("give_aways_*.json"))
FIXTURES = {kind: [case for f in _FIXTURE_FILES for case in json.loads(f.read_text())[kind]]
            for kind in ("prose", "docstrings")}


@pytest.mark.parametrize("case", FIXTURES["prose"], ids=[c["finding"].split(":")[0] + " " + c["answer"] for c in FIXTURES["prose"]])
def test_the_check_flags_the_give_aways_that_reviews_found(case):
    answers = [a for a in model_answers(read(solution_path(case["notebook"]))) if a[0] == case["answer"]]
    assert answers, f"no written-answer cell {case['answer']} in {case['notebook']}"
    assert answers_given_away(answers, [(0, case["text"])]), f"not flagged when put back: {case['finding']}"


@pytest.mark.parametrize("case", FIXTURES["docstrings"], ids=[c["finding"].split(":")[0] + " " + c["cell"] for c in FIXTURES["docstrings"]])
def test_the_check_flags_the_docstrings_that_reviews_found(case):
    solution = read(solution_path(case["notebook"]))
    (cell,) = [c for c in solution.cells if nbgrader_meta(c).get("grade_id") == case["cell"]]
    assert expressions_in_docstrings(case["stub"], cell.source), f"not flagged when put back: {case['finding']}"


def test_the_check_passes_a_contract_and_prose_that_points_to_a_question():
    solution = "def f(x0, alpha_bar_t, noise):\n    ### BEGIN SOLUTION\n    return jnp.sqrt(alpha_bar_t) * x0 + jnp.sqrt(1 - alpha_bar_t) * noise\n    ### END SOLUTION"
    stub = 'def f(x0, alpha_bar_t, noise):\n    """x_t given x_0 (any shape) and alpha_bar_t (broadcasts against x0); same shape as x0."""'
    assert not expressions_in_docstrings(stub, solution)
    answers = [("q", "Guidance trades diversity for recognisability: the samples become more typical of their class "
                     "and more alike, and at large weights the strokes saturate.", "What does w buy?")]
    assert not answers_given_away(answers, [(0, "Question 3 asks what the weight buys and what it costs; read the "
                                                 "two comparison lines first.")])
    assert answers_given_away(answers, [(0, "So guidance trades diversity for recognisability: the samples become "
                                            "more typical of their class.")])
