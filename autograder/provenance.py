"""What the grader reads in a submission's code before trusting its outputs.

The verdict of every check is made in the grader's process (``autograder/execute.py``), so an answer cannot
change how it is judged; what it can still do is compute its outputs in a way that earns no points: call the
course's reference, or reach into the interpreter (frames, closures, the checker's modules, exec of hidden
code) to find it. The kernel reports the reference calls it sees in the compiled code, but the kernel runs
the student's code and can lie. So the grader also reads the source of every code cell that runs what the
student wrote (answers and added cells: roles are the release's, ``autograder/roles.py``), which no code can
change, as IPython runs it (``read_cell``: after IPython's own input transformation, with the Python inside
``%%time``, ``%%capture`` and ``%%timeit`` read too), and flags for the instructor:

- any other magic and every shell escape (what they run cannot be read), and a cell that does not parse
  yet ran without a SyntaxError (``unreadable``; the kernel was taught to read cells differently);
- uses of the interpreter's internals that an answer has no reason for (``__wrapped__``, ``__closure__``,
  frames, ``sys.modules``, ``exec``/``eval``, imports of the checker, ``inspect``, ``ctypes``, ...);
- calls of a course function named like an exercise (``cu.forward.q_sample(...)``);
- an answer whose code is the reference's own, up to names, comments and formatting (references of at
  least ``MIN_COPY_NODES`` syntax nodes only: a one-line answer is the same as the reference by necessity).

A flag changes no score: the submission is graded and its status is ``flagged``, with the reasons.
"""

import ast
import functools
import inspect
import re

FLAG = "[autograder: flagged for the instructor:"
MIN_COPY_NODES = 120  # see the README: shorter references are what their formula dictates

_ATTRIBUTES = {
    "__wrapped__": "reads `__wrapped__` (the function inside a decorated one)",
    "__closure__": "reads a function's `__closure__`",
    "cell_contents": "reads closure cells (`cell_contents`)",
    "__code__": "reads or replaces a function's `__code__`",
    "__globals__": "reads a function's `__globals__`",
    "__builtins__": "reads `__builtins__`",
    "__subclasses__": "lists classes with `__subclasses__`",
    "__dict__": "reads an object's `__dict__`",
    "_getframe": "reads the interpreter's stack frames (`sys._getframe`)",
    "f_back": "reads the interpreter's stack frames (`f_back`)",
    "f_locals": "reads the interpreter's stack frames (`f_locals`)",
    "f_globals": "reads the interpreter's stack frames (`f_globals`)",
    "tb_frame": "reads a traceback's frames",
    "modules": "uses `sys.modules`",
    "displayhook": "replaces the display hook",
    "excepthook": "replaces the exception hook",
    "settrace": "installs a trace function",
    "setprofile": "installs a profile function",
    "meta_path": "changes the import system",
    "input_transformers_post": "changes how IPython reads cells",
    "input_transformers_cleanup": "changes how IPython reads cells",
    "ast_transformers": "changes how IPython reads cells",
    "register_magic_function": "registers an IPython magic",
}
_CALLS = {"exec", "eval", "compile", "__import__", "globals", "vars", "get_ipython", "breakpoint"}
# sys and os are not listed: what is flagged is what they are used for (the attributes above).
_MODULES = {"inspect", "ctypes", "gc", "importlib", "builtins", "IPython", "traceback", "subprocess",
            "socket", "pickle", "marshal", "types", "dis", "code", "pty", "signal", "threading", "multiprocessing",
            "operator",
            "course_utils.grading", "course_utils.exercises", "course_utils._validate", "autograder", "nbgrader"}


def _module_flag(name: str):
    for module in _MODULES:
        if name == module or name.startswith(module + "."):
            return f"imports `{name}`"
    return None


def course_aliases(trees) -> set:
    """The names a notebook binds to course_utils or one of its modules (``cu`` for ``import course_utils as cu``)."""
    aliases = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "course_utils":
                        aliases.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "course_utils":
                aliases.update(alias.asname or alias.name for alias in node.names)
    return aliases


def _root(node):
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _reasons_in(tree, exercise_names: set, class_exercises: set, aliases: set) -> list:
    reasons = []
    bases = {id(b) for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for b in node.bases}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            if node.attr in _ATTRIBUTES:
                reasons.append(_ATTRIBUTES[node.attr])
            elif node.attr in exercise_names and id(node) not in bases and _root(node) in aliases:
                reasons.append(f"uses `{ast.unparse(node)}`, the course's own `{node.attr}`")
        elif isinstance(node, ast.Import):
            reasons += [r for alias in node.names if (r := _module_flag(alias.name))]
        elif isinstance(node, ast.ImportFrom) and node.module:
            flag = _module_flag(node.module)
            if flag:
                reasons.append(flag)
            reasons += [r for alias in node.names if (r := _module_flag(f"{node.module}.{alias.name}")) and not flag]
            if node.module.split(".")[0] == "course_utils":
                reasons += [f"imports the course's `{alias.name}` from {node.module}" for alias in node.names
                            if alias.name in exercise_names and alias.name not in class_exercises]
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _CALLS:
                reasons.append(f"calls `{func.id}`")
            elif isinstance(func, ast.Name) and func.id in ("getattr", "setattr", "delattr"):
                name = node.args[1] if len(node.args) > 1 else None
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str) and not name.value.startswith("__")):
                    reasons.append(f"calls `{func.id}` with a computed or special attribute name")
    return reasons


class _Canonical(ast.NodeTransformer):
    """Rename every variable and argument by order of appearance, blank the strings, drop docstrings (for comparing code)."""

    def __init__(self):
        self.names = {}

    def _name(self, name):
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id=self._name(node.id), ctx=node.ctx), node)

    def visit_Constant(self, node):  # messages and docstrings: wording is formatting
        return ast.copy_location(ast.Constant(value="" if isinstance(node.value, str) else node.value), node)

    def visit_arg(self, node):
        return ast.copy_location(ast.arg(arg=self._name(node.arg)), node)

    def visit_FunctionDef(self, node):
        node.name = "f"
        node.decorator_list = []
        node.returns = None
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            body = body[1:]
        node.body = body or [ast.Pass()]
        self.generic_visit(node)
        return node


def canonical(function_source: str):
    """(a canonical dump, the number of syntax nodes) of the first function defined in ``function_source``."""
    import textwrap

    tree = ast.parse(textwrap.dedent(function_source))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))
    for arg in ast.walk(fn):
        if isinstance(arg, ast.arg):
            arg.annotation = None
    fn = _Canonical().visit(fn)
    return ast.dump(fn, annotate_fields=False), sum(1 for _ in ast.walk(fn))


@functools.cache  # the same for every submission graded by this process
def _reference_code() -> dict:
    """{exercise name: canonical code of its reference} for the references large enough to compare."""
    from course_utils import grading
    from course_utils._validate import unmarked

    found = {}
    for name in grading.exercise_names():
        reference = grading.exercise(name).reference
        if reference is None:
            continue
        try:
            fn = unmarked(reference)
        except ValueError:
            fn = getattr(reference, "raw", reference)
        try:
            dump, size = canonical(inspect.getsource(fn))
        except (OSError, TypeError, StopIteration, SyntaxError):
            continue
        if size >= MIN_COPY_NODES:
            found[name] = dump
    return found


# ------------------------------------------------------------------ reading a cell as IPython runs it

# Magics whose cell body (or line) is Python that IPython runs: it is read like the rest of the cell.
_CODE_CELL_MAGICS = {"time", "timeit", "capture"}
_CODE_LINE_MAGICS = {"time", "timeit"}
# Line magics that run no code of the cell's and change nothing a grade depends on.
_QUIET_LINE_MAGICS = {"matplotlib", "autoreload", "pwd", "who", "whos", "precision", "pinfo", "pinfo2"}
_TIMEIT_OPTIONS = re.compile(r"^\s*(?:(?:-[nrp]\s*\d+|-[tcqo])(?:\s+|$))*")
_MAX_NESTING = 20  # magics inside magics (`%%time` over `%%capture` ...): deeper is unreadable


class Unreadable(ValueError):
    """A cell that does not parse as Python even after IPython's own input transformation."""


def _magic_call(node):
    """(method, [its string arguments]) when ``node`` is ``get_ipython().run_cell_magic(...)``, ``.run_line_magic``,
    ``.system`` or ``.getoutput`` with literal strings: what IPython makes of ``%%magic``, ``%magic`` and ``!cmd``."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("run_cell_magic", "run_line_magic", "system", "getoutput")):
        return None
    target = node.func.value
    if not (isinstance(target, ast.Call) and isinstance(target.func, ast.Name) and target.func.id == "get_ipython"
            and not target.args and not target.keywords and not node.keywords):
        return None
    if not all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args):
        return None
    return node.func.attr, [a.value for a in node.args]


def read_cell(source: str, depth: int = 0) -> tuple:
    """(the syntax tree of what IPython runs for this cell, [reasons to flag its magics and shell escapes]).

    The cell goes through IPython's own input transformation (``TransformerManager().transform_cell``: cell and
    line magics, ``!shell``, ``>>>`` and ``In [1]:`` prompts, indentation) and is then parsed. A magic that runs
    Python (``%%time``, ``%%capture``, ``%%timeit``, ``%time``, ``%timeit``) has that Python read as part of the
    cell; any other magic or shell escape is a reason, since the check cannot see what it does.
    Raises ``Unreadable`` when the result does not parse."""
    from IPython.core.inputtransformer2 import TransformerManager

    if depth > _MAX_NESTING:
        raise Unreadable(f"magics nested more than {_MAX_NESTING} deep")
    try:
        tree = ast.parse(TransformerManager().transform_cell(source))
    except (SyntaxError, ValueError) as exc:  # ValueError: a null byte
        raise Unreadable(f"{type(exc).__name__}: {getattr(exc, 'msg', None) or exc}") from None
    reasons, inner = [], []

    def code(text):
        sub, why = read_cell(text, depth + 1)
        inner.extend(sub.body)
        reasons.extend(why)

    class Magics(ast.NodeTransformer):
        def visit_Call(self, node):
            found = _magic_call(node)
            if found is None:
                return self.generic_visit(node)
            method, args = found
            name = args[0].split()[0] if args and args[0].split() else ""
            if method in ("system", "getoutput"):
                reasons.append(f"runs a shell command (`!{_short(args[0] if args else '')}`)")
            elif method == "run_cell_magic" and len(args) == 3 and name in _CODE_CELL_MAGICS:
                code(args[2])
                if name == "timeit" and _TIMEIT_OPTIONS.sub("", args[1]).strip():
                    code(_TIMEIT_OPTIONS.sub("", args[1]))  # %%timeit's line is setup code
            elif method == "run_cell_magic":
                reasons.append(f"runs the cell magic `%%{name}`, which the source check cannot read")
            elif len(args) == 2 and name in _CODE_LINE_MAGICS:
                code(_TIMEIT_OPTIONS.sub("", args[1]) if name == "timeit" else args[1])
            elif not (name in _QUIET_LINE_MAGICS or name == "load_ext" and len(args) == 2 and args[1].strip() == "autoreload"):
                reasons.append(f"runs the line magic `%{name}`, which the source check cannot read")
            return ast.copy_location(ast.Constant(None), node)

    tree = Magics().visit(tree)
    tree.body.extend(inner)
    return tree, reasons


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 40 else text[:37] + "..."


def _checked(cell) -> bool:
    """Whether the source check reads this cell: every code cell that runs what the student wrote, that is all but
    the test and read-only cells (whose source grading takes from the release). Roles are the release's: the
    grader rewrote them before grading (``autograder/roles.py``)."""
    from .roles import restored

    return cell.get("cell_type") == "code" and not restored(cell)


def unreadable(nb) -> dict:
    """{index of a checked cell: why} for the cells that do not parse as Python even after IPython's transformation.

    IPython runs nothing of such a cell (it raises SyntaxError), unless code that ran before changed how the
    kernel reads cells; ``autograder/execute.py`` reports the ones the kernel ran without a SyntaxError."""
    found = {}
    for index, cell in enumerate(nb.cells):
        if _checked(cell) and cell.get("source", "").strip():
            try:
                read_cell(cell.get("source", ""))
            except Unreadable as exc:
                found[index] = str(exc)
    return found


TOOLS = {"drop_labels"}
"""Exercises of an earlier notebook that a later one tells students to call from the course (notebook 06's
``image_train_step`` hides labels with ``cu.guidance.drop_labels``, so that it hides the same ones as the reference):
calling them is not flagged. In their own notebook the checker still gives a call of the reference nothing."""


def flags(nb) -> dict:
    """{index of a code cell: [reasons to flag it]} for the submission ``nb``: the source of every code cell that
    runs what the student wrote (answers, added cells; see ``_checked``), read as IPython runs it (``read_cell``)."""
    from course_utils import grading

    names = set(grading.exercise_names()) - TOOLS
    classes = {n for n in names if grading.exercise(n).reference_class is not None}
    references = _reference_code()
    trees, magics = [], []
    for cell in nb.cells:
        try:
            tree, why = read_cell(cell.get("source", "")) if cell.get("cell_type") == "code" else (ast.Module([], []), [])
        except Unreadable:
            tree, why = ast.Module([], []), []
        trees.append(tree)
        magics.append(why)
    aliases = course_aliases(trees)
    found = {}
    for index, cell in enumerate(nb.cells):
        if not _checked(cell):
            continue
        tree = trees[index]
        reasons = magics[index] + _reasons_in(tree, names, classes, aliases)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in references:
                try:
                    dump, _ = canonical(ast.unparse(node))
                except (SyntaxError, StopIteration):
                    continue
                if dump == references[node.name]:
                    reasons.append(f"`{node.name}` is the course's reference code, up to names and formatting")
        if reasons:
            found[index] = list(dict.fromkeys(reasons))
    return found
