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
the sentences that reviews found (issue 26's second review, the fresh reviews of notebook 07 and of notebooks 04-06),
which the test must flag when they are put back.
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
    text = re.sub(r":math:`[^`]*`", " ", text)                       # and so are a docstring's (reST)
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


COURSE_MODULE = re.compile(r"\b(?:cu|course_utils)\.([a-z_]+)\b")
IMPORTED_MODULES = re.compile(r"^from course_utils import ([\w, ]+)$", re.M)


def named_course_docstrings(student_nb) -> list[tuple[str, str]]:
    """(name, docstring) of every course_utils function or class that a student-visible cell names, with or without
    its module (``scores.eps_from_x0``, or `eps_from_x0` in prose about ``course_utils.scores``): ``help()`` shows the
    student that text too."""
    import importlib

    cells = [source for _, source in visible_cells(student_nb)]
    text = "\n".join(cells)
    modules = set(COURSE_MODULE.findall(text)) | {m.strip() for line in IMPORTED_MODULES.findall(text)
                                                  for m in line.split(",")}
    words = set(re.findall(r"\b[A-Za-z_][A-Za-z_0-9]*\b", text))
    found = {}
    for module in sorted(modules):
        try:
            namespace = importlib.import_module(f"course_utils.{module}")
        except ImportError:
            continue
        for attribute in sorted(words):
            obj = getattr(namespace, attribute, None)
            if (callable(obj) and getattr(obj, "__doc__", None)
                    and str(getattr(obj, "__module__", "")).startswith("course_utils")):
                found[f"{module}.{attribute}"] = obj.__doc__
    return sorted(found.items())


# Notebook 07, whose review asked for this check. On 03 it flags `analytic.ddpm_reverse_mean_var` against the model
# answer q_variance ("posterior mean is linear in", "exactly the mean of because"): left for that notebook's review.
DOCSTRINGS_REVIEWED = ["07_scores_and_flows"]


@pytest.mark.parametrize("name", DOCSTRINGS_REVIEWED)
def test_no_docstring_of_a_named_course_function_states_a_model_answer(name):
    """Docstrings give the contract: the reference of a function the notebook names must not state a model answer
    (the second review of notebook 07 found Question 4's amplification in ``scores.eps_from_x0``)."""
    found = answers_given_away(model_answers(read(solution_path(name))), named_course_docstrings(read(student_path(name))))
    assert not found, (f"{name}: docstrings of course functions the notebook names that state a model answer in its "
                       f"own words (give the contract):\n  " + "\n  ".join(found))


# The give-aways that reviews found, as they stood (give_aways_issue26.json: the second review of issue 26;
# give_aways_review07.json: the fresh review of notebook 07; give_aways_review04_06.json: the fresh review of notebooks
# 04-06): put back, each must be flagged.
_FIXTURE_FILES = sorted((Path(__file__).parent / "fixtures").glob("give_aways_*.json"))
FIXTURES = {kind: [case for f in _FIXTURE_FILES for case in json.loads(f.read_text()).get(kind, [])]
            for kind in ("prose", "docstrings", "task_prose", "reference_docstrings", "prompts")}


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


# ---------------------------------------------------------------------------------------------------------------
# Issue 26 item 7 (the review of notebooks 01-03): three more ways to give an answer away.
#
# * **Task prose that spells out the code.** The markdown before an exercise gives the mathematics; naming the
#   library function that does the work (`jnp.linspace`, `jnp.cumprod`, `jnp.concatenate`) or showing a template
#   of the solution's structure (a scan body that returns the state, then the call) writes the code for the student.
#   Flagged: a `jnp.`/`lax.`/`jax.` function in a code span of that prose which the solution calls, unless it is
#   elementary arithmetic or the exercise's contract (`EXERCISE_TOOLS`); and a fenced code block whose structure
#   (keywords, library calls and operators, every other name blanked) shares a run of six tokens, a library call
#   among them, with the solution.
# * **Docstrings of the course's references.** A notebook that names `cu.module.f`, where `f` is one of its
#   exercises, shows the student that function's docstring: it must not state the exercise's expression (the same
#   token runs as above, the LaTeX read as code) unless the notebook's markdown gives it anyway.
# * **A prompt that states the result of its own step.** A formula of a question's prompt that the model answer
#   derives (a normalised LaTeX run of `PROMPT_FORMULA` characters in common) hands the student that step.

# The fresh review of notebooks 04-06 found `jnp.full((N,), t)` and `jnp.full_like(y, -1)` spelled out before the
# exercises that write them: `full` and `full_like` are no longer elementary.
ELEMENTARY = set("""sqrt exp log log1p expm1 cos sin tan pi abs sum mean asarray array float32 float64 int32 zeros ones
zeros_like ones_like minimum maximum where clip square power""".split())
EXERCISE_TOOLS = {"diffuse": {"scan"},     # COURSE.md: diffuse is "written with jax.lax.scan"
                  # the samplers' tests check that they loop with jax.lax.scan, and their prose says so
                  "sample": {"scan"}, "guided_sample": {"scan"}, "guided_ddim_sample": {"scan"}}
KEYWORDS = {"def", "return", "for", "in", "lambda", "if", "else", "while"}
# `nnx.` counts too (the same review: `nnx.value_and_grad` named before each training step), and `jax.random.f(`
# names f (the same review: `jax.random.bernoulli(key, p_uncond, y.shape)` before drop_labels).
LIBRARY_CALL = re.compile(r"\b(?:jnp|np|jax\.numpy|jax\.lax|lax|jax\.random|jax|random|nnx)\.([a-z_][a-z_0-9]*)\s*\(")
SPAN_NAME = re.compile(r"\b(?:jnp|np|lax|jax|nnx)\.(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)\b(?!\.)")


def _solution_code(source: str) -> str:
    match = re.search(r"### BEGIN SOLUTION(.*?)### END SOLUTION", source, re.S)
    return match.group(1) if match else source


def _structure(code: str) -> list[str]:
    code = re.sub(r"#.*", "", code)
    calls = set(LIBRARY_CALL.findall(code))
    tokens = []
    for token in re.findall(r"(?:[A-Za-z_][A-Za-z_0-9]*\.)*[A-Za-z_][A-Za-z_0-9]*|[-+*/=]", code):
        name = token.rsplit(".", 1)[-1]
        tokens.append(token if token in KEYWORDS or token in "-+*/=" else name if name in calls else "_")
    return tokens


def recipes_in_prose(prose: str, solution_source: str, tools=frozenset()) -> list[str]:
    """What the markdown before an exercise spells out of its solution: library calls and templates."""
    code = _solution_code(solution_source)
    calls = set(LIBRARY_CALL.findall(code)) - ELEMENTARY - set(tools)
    fenced = re.findall(r"```[a-z]*\n(.*?)```", prose, re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", " ", prose, flags=re.S)) + fenced
    found = sorted({f"names `{name}`" for span in spans for name in SPAN_NAME.findall(span) if name in calls})
    # an inline code span that writes the solution's own expression (five code tokens, an operator among them), such as
    # the review's `.reshape((-1,) + (1,) * (x0.ndim - 1))` before ddpm_loss
    code_runs = _token_runs(_code_tokens(code))
    for span in spans:
        for run in sorted(_token_runs(_code_tokens(span)) & code_runs):
            if any(t in "-+/^@" for t in run):
                found.append(f'the solution\'s expression in `{span[:60]}`: "{" ".join(run)}"')
                break
    solution_runs = {tuple(s[i:i + 6]) for s in [_structure(code)] for i in range(len(s) - 5)}
    for block in fenced:
        tokens = _structure(block)
        for i in range(len(tokens) - 5):
            run = tuple(tokens[i:i + 6])
            if run in solution_runs and any(t not in KEYWORDS and t not in "-+*/=_" for t in run):
                found.append(f'a template of the solution: "{" ".join(run)}"')
                break
    return found


def task_prose(student_nb, grade_id: str) -> str:
    """The markdown cells right before the exercise cell `grade_id` (back to the previous code cell)."""
    cells = student_nb.cells
    (index,) = [i for i, c in enumerate(cells) if nbgrader_meta(c).get("grade_id") == grade_id]
    prose = []
    for cell in reversed(cells[:index]):
        if cell.cell_type != "markdown":
            break
        prose.insert(0, cell.source)
    return "\n\n".join(prose)


# The notebooks the review of item 7 read (01-03), and 04-06 since their prose was rewritten (notebook 05's before
# TwoPixelUNet named `concatenate` for the skip connections, notebook 06's before SelfAttention named `einsum`).
REVIEWED = ["01_forward_process", "02_loss_comparison", "03_reverse_1d", "04_denoising_2d", "05_guided_two_pixel", "06_mnist"]


@pytest.mark.parametrize("name", REVIEWED)
def test_no_task_prose_spells_out_the_code(name):
    solution, student = read(solution_path(name)), read(student_path(name))
    found = []
    for cell in solution.cells:
        meta = nbgrader_meta(cell)
        if meta.get("solution") and cell.cell_type == "code":
            tools = EXERCISE_TOOLS.get(meta["grade_id"], set())
            found += [f"{meta['grade_id']}: {f}" for f in recipes_in_prose(task_prose(student, meta["grade_id"]), cell.source, tools)]
    assert not found, (f"{name}: the prose before an exercise spells out its code (give the mathematics, not the "
                       f"function that does it):\n  " + "\n  ".join(found))


LATEX_AS_CODE = [   # the course's notation, read as the names its code uses
    (r"\bar\alpha_{t-1}", " alpha_bar_prev "), (r"\bar\alpha_t", " alpha_bar_t "), (r"\alpha_t", " alpha_t "),
    (r"\tilde\beta_t", " beta_tilde "), (r"\beta_t", " beta_t "), (r"\sigma_t^2", " sigma2 "),
    (r"\tilde\mu_t", " mu_tilde "), (r"\mu_\theta", " mu_theta "), (r"\epsilon_\theta", " eps_theta "),
    (r"\epsilon", " eps "), (r"x_{t-1}", " x_prev "), (r"v_{t-1}", " v_prev "), (r"x_0", " x0 "),
    ("}{", " / "), (r"\sqrt", " sqrt "), (r"\frac", " "),
]


def latex_tokens(text: str) -> list[str]:
    text = re.sub(r"\\(?:,|;|!|quad|qquad|left|right|big|Big|bigl|bigr|Bigl|Bigr|mathrm|mathbb|lVert|rVert|mid)", " ", text)
    for latex, code in LATEX_AS_CODE:
        text = text.replace(latex, code)
    return _code_tokens(text.replace("{", " ").replace("}", " ").replace("\\", " "))


def expressions_in_reference_docstring(doc: str, solution_source: str, given: str = "") -> list[str]:
    """Runs of five tokens, an operator among them, that a reference's docstring (LaTeX read as code) shares with the
    exercise's solution and that the notebook's markdown (`given`) does not already show."""
    shared = (_token_runs(latex_tokens(doc)) & _token_runs(_code_tokens(_solution_code(solution_source))))
    shared -= _token_runs(latex_tokens(given))
    return sorted(f'"{" ".join(run)}"' for run in shared if any(t in "-+/^@=" for t in run))


def _reference(module: str, function: str):
    import importlib

    try:
        return getattr(importlib.import_module(f"course_utils.{module}"), function)
    except (ImportError, AttributeError):
        return None


REFERENCE_MODULES = ("schedules", "forward", "losses", "analytic")


@pytest.mark.parametrize("name", REVIEWED)
def test_no_reference_docstring_spells_out_an_exercise(name):
    """The student can read the docstring of any course function (`help(cu.losses.noise_loss_weight)`): the
    reference of an exercise gives its contract, not its expression."""
    solution, student = read(solution_path(name)), read(student_path(name))
    exercises = {nbgrader_meta(c)["grade_id"]: c.source for c in solution.cells
                 if nbgrader_meta(c).get("solution") and c.cell_type == "code"}
    markdown = "\n".join(c.source for c in student.cells if c.cell_type == "markdown")
    all_code = "\n".join(_solution_code(source) for source in exercises.values())
    found = []
    for grade_id, source in exercises.items():
        for function in re.findall(r"^def (\w+)", _solution_code(source), re.M):
            for module in REFERENCE_MODULES:
                reference = _reference(module, function)
                if reference is not None:   # against every exercise: noise_loss's docstring may state noise_loss_weight's
                    found += [f"cu.{module}.{function}: {r}" for r in
                              expressions_in_reference_docstring(reference.__doc__ or "", all_code, markdown)]
    assert not found, (f"{name}: docstrings of the course's references that state an exercise's expression "
                       f"(give the contract):\n  " + "\n  ".join(found))


PROMPT_FORMULA = 40


def _normalised_formulas(text: str) -> list[str]:
    formulas = re.findall(r"\$\$(.*?)\$\$|\$([^$]+)\$", text, re.S)
    return [re.sub(r"\s+|\\(?:,|;|!|big|Big|bigl|bigr|Bigl|Bigr|left|right)(?![a-zA-Z])", "", a or b) for a, b in formulas]


def prompt_states_its_result(prompt: str, answer: str) -> list[str]:
    """Runs of PROMPT_FORMULA characters of a prompt's formulas that the model answer's formulas contain too."""
    answer_formulas = "\n".join(_normalised_formulas(answer))
    found = []
    for formula in _normalised_formulas(prompt):
        for i in range(len(formula) - PROMPT_FORMULA + 1):
            if formula[i:i + PROMPT_FORMULA] in answer_formulas:
                found.append(formula[i:i + PROMPT_FORMULA])
                break
    return found


# The questions that ask for a derivation in numbered steps. Elsewhere a prompt may give, as a hint, an identity the
# answer uses (notebook 02's Derivation 1 gives the closed form and sqrt(alpha_bar_t) = sqrt(alpha_t alpha_bar_{t-1})),
# which this check cannot tell from a step's result.
STEPPED_QUESTIONS = {"02_loss_comparison": ["q_derivation"]}


@pytest.mark.parametrize("name", list(STEPPED_QUESTIONS))
def test_no_prompt_states_the_result_of_its_own_step(name):
    found = [f"{grade_id}: {r}" for grade_id, answer, prompt in model_answers(read(solution_path(name)))
             if grade_id in STEPPED_QUESTIONS[name] for r in prompt_states_its_result(prompt, answer)]
    assert not found, f"{name}: prompts that write out what their model answer derives (ask for it):\n  " + "\n  ".join(found)


@pytest.mark.parametrize("case", FIXTURES["task_prose"], ids=[c["finding"].split(":")[0] + " " + c["cell"] for c in FIXTURES["task_prose"]])
def test_the_check_flags_the_recipes_of_issue_26_item_7(case):
    solution = read(solution_path(case["notebook"]))
    (cell,) = [c for c in solution.cells if nbgrader_meta(c).get("grade_id") == case["cell"]]
    assert recipes_in_prose(case["text"], cell.source, EXERCISE_TOOLS.get(case["cell"], set())), \
        f"not flagged when put back: {case['finding']}"


@pytest.mark.parametrize("case", FIXTURES["reference_docstrings"],
                         ids=[c["finding"].split(":")[0] + " " + c["function"] for c in FIXTURES["reference_docstrings"]])
def test_the_check_flags_the_reference_docstrings_of_issue_26_item_7(case):
    solution, student = read(solution_path(case["notebook"])), read(student_path(case["notebook"]))
    all_code = "\n".join(_solution_code(c.source) for c in solution.cells
                         if nbgrader_meta(c).get("solution") and c.cell_type == "code")
    assert case["cell"] in [nbgrader_meta(c).get("grade_id") for c in solution.cells]
    markdown = "\n".join(c.source for c in student.cells if c.cell_type == "markdown")
    assert expressions_in_reference_docstring(case["docstring"], all_code, markdown), \
        f"not flagged when put back: {case['finding']}"


@pytest.mark.parametrize("case", FIXTURES["prompts"], ids=[c["finding"].split(":")[0] for c in FIXTURES["prompts"]])
def test_the_check_flags_the_prompts_of_issue_26_item_7(case):
    answers = [a for a in model_answers(read(solution_path(case["notebook"]))) if a[0] == case["answer"]]
    assert answers and prompt_states_its_result(case["prompt"], answers[0][1]), f"not flagged when put back: {case['finding']}"
