"""What the grader reads in a submission's answer cells before trusting its outputs.

The verdict of every check is made in the grader's process (``autograder/execute.py``), so an answer cannot
change how it is judged; what it can still do is compute its outputs in a way that earns no points: call the
course's reference, or reach into the interpreter (frames, closures, the checker's modules, exec of hidden
code) to find it. The kernel reports the reference calls it sees in the compiled code, but the kernel runs
the student's code and can lie. So the grader also reads the answer cells' source, which no code can change,
and flags for the instructor:

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


def flags(nb) -> dict:
    """{index of an answer cell: [reasons to flag it]} for the submission ``nb`` (its answer cells' source)."""
    from course_utils import grading

    names = set(grading.exercise_names())
    classes = {n for n in names if grading.exercise(n).reference_class is not None}
    references = _reference_code()
    trees = []
    for cell in nb.cells:
        try:
            trees.append(ast.parse(cell.get("source", "")) if cell.get("cell_type") == "code" else ast.Module([], []))
        except (SyntaxError, ValueError):
            trees.append(ast.Module([], []))
    aliases = course_aliases(trees)
    found = {}
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.get("cell_type") != "code" or not isinstance(meta, dict) or not meta.get("solution"):
            continue
        tree = trees[index]
        reasons = _reasons_in(tree, names, classes, aliases)
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
