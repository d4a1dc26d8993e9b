"""The answer key stays with the grader: inside the grading sandbox no reference of the graded notebook can be
called, read or loaded, by any route, and a submission that forges its outputs from the references scores what
honest grading of its answer cells gives.

The sandbox mounts the keyless copy of course_utils (``autograder/keyless.py``) in place of the installed package.
For every notebook, a sandboxed Python started exactly as a grading kernel is (``autograder/sandbox.py`` with the
same mounts) tries, for every exercise, a seeded random choice of ways to get the reference (imports through
aliases, attribute walks, ``getattr`` with a computed name, ``importlib``, ``inspect.unwrap``, ``jax.pure_callback``,
the module's source file executed anew, any file on the visible disk that defines it) and runs it as the answer on
the grader's own inputs (``grading.evaluate``, what the kernel runs for a check); the grader's process judges the
outputs (``grading.verdict``). Every forged answer must fail, because the reference it reached is withheld.
"""

import ast
import base64
import inspect
import json
import pickle
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from autograder import course, keyless
from autograder.sandbox import sandbox_problem
from course_utils import grading
from notebook_tools import ASSIGNMENTS, read, solution_path

pytestmark = [pytest.mark.xdist_group("answer-key"),
              pytest.mark.skipif(bool(sandbox_problem()), reason=f"no sandbox here: {sandbox_problem()}")]
SANDBOX = Path(course.REPO) / "autograder" / "sandbox.py"
WITHHELD = "not available while grading"

# Ways a forging cell reaches a reference (module, name): each is the body of ``forge(module, name)`` in the kernel.
STRATEGIES = {
    "import": "import importlib\nreturn getattr(importlib.import_module(module), name)",
    "alias": ("import course_utils\nobj = course_utils\nfor part in module.split('.')[1:]:\n"
              "    obj = getattr(obj, part)\n_L = obj\nreturn getattr(_L, name)"),
    "vars": ("import course_utils, sys\nmod = vars(sys.modules['course_utils'])[module.split('.')[1]]\n"
             "return vars(mod)[''.join(list(name))]"),
    "unwrap": ("import importlib, inspect\nfn = getattr(importlib.import_module(module), name)\n"
               "fn = getattr(fn, 'raw', fn)\nreturn inspect.unwrap(fn) if callable(fn) else fn"),
    "callback": ("import importlib, jax, inspect\nref = getattr(importlib.import_module(module), name)\n"
                 "if inspect.isclass(ref):\n    return ref\n"
                 "def answer(*args):\n"
                 "    out = jax.eval_shape(lambda *a: jax.tree.map(lambda x: x, a[0]), *args)\n"
                 "    return jax.pure_callback(lambda *a: ref(*a), out, *args)\n"
                 "return answer"),
    "source": ("import importlib, inspect\nmod = importlib.import_module(module)\n"
               "namespace = {'__name__': module + '_copy', '__package__': mod.__package__}\n"
               "exec(compile(open(mod.__file__).read(), mod.__file__, 'exec'), namespace)\nreturn namespace[name]"),
    "disk": ("import os, sys, ast\nfound = None\n"
             "for root in {sys.prefix, os.path.dirname(os.path.dirname(__import__('course_utils').__file__))}:\n"
             "    for folder, dirs, files in os.walk(root):\n"
             "        for f in files:\n"
             "            if not f.endswith('.py') or 'course_utils' not in folder:\n                continue\n"
             "            path = os.path.join(folder, f)\n"
             "            tree = ast.parse(open(path, errors='replace').read())\n"
             "            for node in tree.body:\n"
             "                if getattr(node, 'name', None) == name and 'withheld' not in ast.dump(node):\n"
             "                    found = path\n"
             "if found is None:\n    raise LookupError(f'no readable source of {name} on this disk')\n"
             "namespace = {}\nexec(compile(open(found).read(), found, 'exec'), namespace)\nreturn namespace[name]"),
}

PROBE = textwrap.dedent('''
    import base64, json, pickle, sys
    from course_utils import grading
    jobs = pickle.loads(base64.b64decode(open("jobs.b64").read()))
    STRATEGIES = json.loads(open("strategies.json").read())
    replies = []
    for exercise, module, name, strategy, request in jobs:
        scope = {}
        exec("def forge(module, name):\\n" + "".join("    " + line + "\\n" for line in STRATEGIES[strategy].splitlines()), scope)
        def answer_fn(module=module, name=name, forge=scope["forge"]):
            return forge(module, name)
        try:
            fn = answer_fn()
        except Exception as exc:
            replies.append(grading.encode_outcome({"missing": {"type": type(exc).__name__, "message": str(exc)[:300]}}))
            continue
        with grading.at_precision():
            replies.append(grading.encode_outcome(grading.evaluate(request, fn)))
    print(json.dumps(replies))  # on stdout: the sandbox's working folder is a tmpfs of its own
''')

READ_PROBE = textwrap.dedent('''
    import ast, json, os, sys
    import course_utils
    package = os.path.dirname(course_utils.__file__)
    fingerprints = set(json.loads(open("fingerprints.json").read()))
    found, bytecode, copies = [], [], []
    roots = {package, sys.prefix, sys.base_prefix}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for f in files:
                path = os.path.join(folder, f)
                if "course_utils" not in path.split(os.sep)[:-1] and not f.startswith("course_utils"):
                    continue  # not in a course_utils folder (an editable install's finder only names the folder)
                if f.endswith((".pyc", ".whl", ".egg", ".zip")):
                    bytecode.append(path)
                if not f.endswith(".py"):
                    continue
                if not path.startswith(package):
                    copies.append(path)
                try:
                    tree = ast.parse(open(path, errors="replace").read())
                except SyntaxError:
                    continue
                for node in ast.walk(tree):
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        body = node.body[1:] if (node.body and isinstance(node.body[0], ast.Expr)
                                                 and isinstance(node.body[0].value, ast.Constant)) else node.body
                        if ast.dump(ast.Module(body=body, type_ignores=[])) in fingerprints:
                            found.append(f"{path}:{node.name}")
    print(json.dumps({"found": found, "bytecode": bytecode, "copies": copies, "package": package}))
''')


def _run_sandboxed(folder: Path, build: Path, code: str) -> subprocess.CompletedProcess:
    folder.chmod(0o755)
    (folder / "probe.py").write_text(code)
    return subprocess.run([sys.executable, str(SANDBOX), "--memory-mb", "4096", "--course-utils", str(build), "--",
                           sys.executable, "probe.py"], cwd=folder, capture_output=True, text=True, timeout=600,
                          env={**course.environment(folder), "JAX_PLATFORMS": "cpu"})


def _build(tmp_path_factory, assignment):
    exercises = keyless.assignment_exercises(read(solution_path(assignment)))
    build = keyless.build(exercises, tmp_path_factory.mktemp(f"keyless-{assignment}"))
    build.parent.chmod(0o755)
    return exercises, build


def _targets(exercises):
    """(exercise, module, name) of each exercise's reference (function, class or reference step)."""
    for exercise in exercises:
        for module, name in sorted(keyless.references_of([exercise])):
            yield exercise, module, name


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_forged_answer_reaches_a_reference(tmp_path_factory, assignment):
    exercises, build = _build(tmp_path_factory, assignment)
    rng = random.Random(assignment)
    jobs = []
    for exercise, module, name in _targets(exercises):
        # every exercise: the plain import, and three other strategies drawn at random
        for strategy in ["import", *rng.sample(sorted(set(STRATEGIES) - {"import"}), 3)]:
            jobs.append((exercise, module, name, strategy, grading.plan(exercise)))
    assert jobs or assignment not in {a for a in ASSIGNMENTS if a[:2] in {"01", "02", "03", "04", "05", "06"}}
    folder = tmp_path_factory.mktemp(f"forge-{assignment}")
    (folder / "jobs.b64").write_text(base64.b64encode(pickle.dumps(jobs)).decode())
    (folder / "strategies.json").write_text(json.dumps(STRATEGIES))
    out = _run_sandboxed(folder, build, PROBE)
    assert out.returncode == 0, out.stderr[-3000:]
    replies = json.loads(out.stdout.strip().splitlines()[-1])
    withheld_seen = set()
    for (exercise, module, name, strategy, request), reply in zip(jobs, replies, strict=True):
        outcome = grading.decode_outcome(reply)
        ok, message = grading.verdict(request, outcome)
        assert not ok, f"{exercise} forged through {strategy} ({module}.{name}) passed: {message[:300]}"
        if WITHHELD in json.dumps(outcome, default=str) or WITHHELD in message:
            withheld_seen.add((exercise, strategy))
    # the forged answers fail because the reference they reached is withheld (not by accident): the plain import
    # of every exercise's reference says so
    for exercise, _module, _name in _targets(exercises):
        assert (exercise, "import") in withheld_seen, f"{exercise}: the forged answer failed for another reason"


def _body_dump(fn) -> str | None:
    body = fn.body[1:] if (fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant)) else fn.body
    return ast.dump(ast.Module(body=body, type_ignores=[])) if body else None


def _fingerprints(exercises) -> list[str]:
    """ast dumps of the bodies (docstring left out) of every withheld function and method, read from the full
    package's source files."""
    prints = []
    for module, name in keyless.withheld_names(exercises):
        path = Path(course.REPO, *module.split(".")).with_suffix(".py")
        if not path.is_file():
            path = Path(course.REPO, *module.split("."), "__init__.py")
        scope = ast.parse(path.read_text()).body
        for part in name.split("."):
            node = next(n for n in scope if getattr(n, "name", None) == part)
            scope = getattr(node, "body", [])
        functions = [node] if not isinstance(node, ast.ClassDef) else [n for n in node.body if isinstance(n, ast.FunctionDef)]
        prints += [d for d in map(_body_dump, functions) if d]
    return prints


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_no_reference_can_be_read_in_the_sandbox(tmp_path_factory, assignment):
    exercises, build = _build(tmp_path_factory, assignment)
    folder = tmp_path_factory.mktemp(f"read-{assignment}")
    prints = _fingerprints(exercises)
    assert len(prints) >= len(list(_targets(exercises)))
    (folder / "fingerprints.json").write_text(json.dumps(prints))
    out = _run_sandboxed(folder, build, READ_PROBE)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["found"] == [], "the code of a withheld reference is readable in the sandbox"
    assert seen["bytecode"] == [], "bytecode or an archive of course_utils is visible in the sandbox"
    assert seen["copies"] == [], "another copy of course_utils is visible in the sandbox"
    # the probe did look: the same fingerprints are found in the full package, outside the sandbox
    full = [p for p in Path(course.REPO, "course_utils").rglob("*.py")]
    dumps = set()
    for path in full:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                body = node.body[1:] if (node.body and isinstance(node.body[0], ast.Expr)
                                         and isinstance(node.body[0].value, ast.Constant)) else node.body
                dumps.add(ast.dump(ast.Module(body=body, type_ignores=[])))
    assert set(prints) <= dumps


def test_the_keyless_copy_withholds_every_reference_and_keeps_the_trials_parts(tmp_path):
    for assignment in ASSIGNMENTS:
        exercises = keyless.assignment_exercises(read(solution_path(assignment)))
        withheld = keyless.withheld_names(exercises)
        for exercise in exercises:
            ex = grading.exercise(exercise)
            has_reference = any(x is not None for x in (ex.reference, ex.reference_class, getattr(ex.judge, "reference", None)))
            assert has_reference == bool(keyless.references_of([exercise])), exercise
        assert keyless.references_of(exercises) <= withheld
    build = keyless.build(["q_sample", "alpha_bars"], tmp_path)
    assert sorted(p.name for p in (build / "exercises").glob("*.py")) == ["__init__.py", "kinds.py", "parts.py"]
    assert not list(build.rglob("__pycache__"))
    text = (build / "forward.py").read_text()
    assert "def q_sample" in text and "_withheld_module.withheld('course_utils.forward.q_sample')" in text
    # make_schedule computes alpha_bars by calling it: withheld with it, so no back door through the schedule
    assert ("course_utils.schedules", "make_schedule") in keyless.withheld_names(["alpha_bars"])


def test_the_compilation_cache_is_warmed_by_grading_the_solution_then_sealed(tmp_path, monkeypatch):
    """The warm-up grades the solution, hidden tests included (what a right answer's kernel compiles), judging
    nothing; then the cache is sealed: every kernel reads it by key only (``test_the_sealed_warm_cache_is_hit_by_key_
    and_cannot_be_listed`` in test_autograde.py shows that from inside the sandbox)."""
    import nbformat

    from autograder import execute
    from autograder import grade as grading_run

    assignment = "02_loss_comparison"
    executed = []

    def preprocess(self, nb, resources=None, km=None):
        executed.append(nb)
        return nb, resources

    monkeypatch.setattr(execute.CompileOnly, "preprocess", preprocess)
    workdir = course.prepare_workdir(tmp_path / "work", assignment, course.Limits(), tmp_path / "work" / "jax-cache")
    (workdir / "scratch").mkdir()
    (workdir / "source" / assignment).mkdir(parents=True, exist_ok=True)
    solution = read(solution_path(assignment))
    nbformat.write(solution, workdir / "source" / assignment / f"{assignment}.ipynb")
    assert grading_run.warm_compile_cache(workdir, assignment, course.Limits()) == ""
    (nb,) = executed
    text = "\n".join(c.source for c in nb.cells)
    assert "BEGIN SOLUTION" in text and "BEGIN HIDDEN TESTS" in text and "check(" in text
    assert (workdir / "jax-cache").stat().st_mode & 0o777 == 0o111


def test_the_warm_up_judges_nothing_and_keeps_no_reply(monkeypatch):
    """``CompileOnly`` runs each check's request in the kernel and drops the reply: no verdict, no reference run."""
    from autograder.execute import CompileOnly
    from course_utils import grading

    asked = []
    monkeypatch.setattr(grading, "verdict", lambda *a, **k: pytest.fail("the warm-up must not judge"))
    runner = CompileOnly()
    monkeypatch.setattr(runner, "_ask_kernel", lambda code, index: asked.append(code) or ('{"x": 1}', ""), raising=False)
    cell = nbformat_cell('check("posterior_mean", posterior_mean)\ncheck("posterior_variance", posterior_variance)')
    out = runner.grade_test_cell(cell, 0)
    assert len(asked) == 2 and "posterior_mean" in asked[0] and out.outputs == []


def nbformat_cell(source):
    import nbformat

    return nbformat.v4.new_code_cell(source)


# ---------------------------------------------------------------- forged answers, graded for real (notebook 02)

NAME = "02_loss_comparison"
EXERCISES_02 = ["posterior_mean", "posterior_variance", "mean_loss", "mean_from_noise", "noise_loss_weight",
                "noise_loss", "simple_loss"]
# The kernel reports the reference markers it sees in compiled code; a forger makes it report none.
QUIET = '''import course_utils.grading as g
_evaluate = g.wire.evaluate  # what serve calls
def _quiet(request, fn):
    outcome = _evaluate(request, fn)
    if isinstance(outcome, dict) and "calls" in outcome:
        outcome["calls"] = {"references": [], "has_required": True, "inherits_call": False}
    return outcome
g.wire.evaluate = _quiet
'''
SERVE_FORGER = QUIET + '''import base64, pickle
import course_utils.losses as L
_serve = g.serve
def _forged(payload, get_fn):
    request = pickle.loads(base64.b64decode(payload))
    return _serve(payload, lambda: getattr(L, request.name))
g.serve = _forged
'''
ALIAS = QUIET + "import course_utils\n_L = course_utils.losses\n" + "".join(f"{n} = _L.{n}\n" for n in EXERCISES_02)
CALLBACK = QUIET + "import jax\nfrom course_utils import losses\n" + "".join(
    f"def {n}(*args):\n    return jax.pure_callback(getattr(losses, {n!r}), jax.ShapeDtypeStruct(jax.numpy.shape(args[0]), "
    f"jax.numpy.float32), *args)\n" for n in EXERCISES_02)


def _forged_class():
    import copy

    import nbformat

    from notebook_tools import is_solution_cell, nbgrader_meta, student_path, with_solutions

    stubs = read(student_path(NAME))
    correct = with_solutions(stubs, read(solution_path(NAME)))

    def added(source, where=3):
        nb = copy.deepcopy(stubs)
        nb.cells.insert(where, nbformat.v4.new_code_cell(source))
        return nb

    def in_answers(source, clear_flag=False):  # every code answer cell (each one's test runs after it)
        nb = copy.deepcopy(stubs)
        for cell in [c for c in nb.cells if is_solution_cell(c) and c.cell_type == "code"]:
            cell.source = source
            if clear_flag:
                nbgrader_meta(cell)["solution"] = False
        return nb

    prompts = "".join(f">>> {line}\n" if not line.startswith((" ", "\t")) else f"... {line}\n"
                      for line in SERVE_FORGER.splitlines())
    return {"correct": correct, "stubs": stubs, "serve": added(SERVE_FORGER), "magic": added("%%time\n" + SERVE_FORGER),
            "prompts": added(prompts), "alias": in_answers(ALIAS), "callback": in_answers(CALLBACK),
            "unflagged": in_answers(ALIAS, clear_flag=True)}


@pytest.fixture(scope="module")
def forged_grades(tmp_path_factory):
    import nbformat

    from autograder.grade import grade

    root = tmp_path_factory.mktemp("forged")
    for student, nb in _forged_class().items():
        (root / "submissions" / student).mkdir(parents=True)
        nbformat.write(nb, root / "submissions" / student / f"{NAME}.ipynb")
    results = grade(NAME, root / "submissions", root / "work", course.Limits(timeout=120, memory_mb=2048), workers=2)
    return {r.student: r for r in results}


def test_forged_outputs_score_what_the_stubs_score(forged_grades):
    """Untouched stubs plus a cell that computes the outputs with the course's references (replacing the kernel's
    reply function, behind a cell magic, with prompts, through an alias, a callback, or an answer cell whose
    solution flag was cleared) score exactly what the untouched stubs score; the correct notebook scores full."""
    stubs, correct = forged_grades["stubs"], forged_grades["correct"]
    assert correct.score == correct.max_score > 0, {k: c.message[:200] for k, c in correct.cells.items()}
    assert stubs.score == 0
    for student, result in forged_grades.items():
        if student in ("correct", "stubs"):
            continue
        assert result.graded, (student, result.reason)
        assert result.cell_scores == stubs.cell_scores, (student, {k: c.message[:200] for k, c in result.cells.items()})


def test_every_request_unpickles_from_the_keyless_copy(tmp_path):
    """What the grader sends the kernel for a check (visible and hidden inputs) names only modules the keyless copy
    has, and none of its names is withheld: the trials run in the sandbox with stand-ins, never with a reference."""
    import pickletools

    for assignment in ASSIGNMENTS:
        exercises = keyless.assignment_exercises(read(solution_path(assignment)))
        build = keyless.build(exercises, tmp_path / assignment)
        withheld = keyless.withheld_names(exercises)
        for exercise in exercises:
            for edge_cases in (False, True):
                strings, named = [], set()
                for op, arg, _ in pickletools.genops(pickle.dumps(grading.plan(exercise, edge_cases=edge_cases))):
                    if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                        strings.append(arg)
                    elif op.name == "STACK_GLOBAL":
                        named.add((strings[-2], strings[-1]))
                for module, name in named:
                    if not module.startswith("course_utils"):
                        continue
                    path = build.parent.joinpath(*module.split("."))
                    assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), (exercise, module)
                    ex = grading.exercise(exercise)
                    if (module, name) in withheld:  # only the reference class itself, as the request's label
                        assert getattr(ex.reference_class, "__name__", None) == name, (exercise, module, name)
