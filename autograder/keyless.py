"""The course_utils a grading kernel sees: the package without the answer key of the notebook being graded.

A student's kernel needs course_utils (the notebooks import data, plotting and training loops from it, and the
checks' trials unpickle their stand-in models from it), but the full package holds the reference implementation of
every exercise: an answer cell, or a cell that replaces the kernel's reply function, could compute its outputs with
them. So the sandbox (``autograder/sandbox.py --course-utils``) mounts, in place of the installed package, a copy
built here for one assignment:

- the *withheld* functions have their body replaced by a call of :func:`course_utils.withheld.withheld` (signature
  and decorators kept, docstring and code gone): the reference of every exercise the notebook's test cells check,
  each reference class (its ``__init__`` and ``__call__`` raise), and, found by reading the package's source, every
  other function or method of the package that calls one of those (``ddpm_sample`` runs ``ddpm_step``; a function
  that runs a reference is as good as the reference). Functions of other notebooks stay: a schedule built in
  notebook 04 uses notebook 01's ``alpha_bars``, which is no answer there.
- ``course_utils/exercises`` keeps only ``kinds`` and ``parts`` (what the trials need in the kernel): the exercise
  definitions, whose hints are near-copies of the references, are not in the copy at all.
- no ``__pycache__``: the bytecode of the full package is not there either.

The copy is plain source: :func:`withheld_names` says what it withholds, and the tests read the copy to show that no
withheld function's code is in it.
"""

import ast
import inspect
import shutil
from pathlib import Path

import course_utils
from course_utils import grading

PACKAGE = Path(course_utils.__file__).resolve().parent
KEPT_EXERCISE_MODULES = ("kinds.py", "parts.py")
_STUB = "course_utils.withheld"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _definition(obj) -> tuple[str, str] | None:
    """(module, top-level name) where ``obj`` (a function, a jitted or marked wrapper, a class) is defined."""
    obj = getattr(obj, "raw", obj)
    obj = inspect.unwrap(obj) if callable(obj) else obj
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(qualname, str) and module.startswith("course_utils.")):
        return None
    return module, qualname.split(".")[0]


def references_of(exercise_names) -> set[tuple[str, str]]:
    """(module, name) of the reference function or class of each exercise (train-step kinds: the reference step)."""
    found = set()
    for name in exercise_names:
        ex = grading.exercise(name)
        for obj in (ex.reference, ex.reference_class, getattr(ex.judge, "reference", None)):
            where = _definition(obj) if obj is not None else None
            if where is not None:
                found.add(where)
    return found


def _sources() -> dict[str, Path]:
    """{module name: file} of the package's modules, without the exercise definitions."""
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        if path.parent.name == "exercises" and path.name not in KEPT_EXERCISE_MODULES + ("__init__.py",):
            continue
        files[_module_name(path)] = path
    return files


def _resolve_relative(module: str, level: int, name: str | None, is_package: bool) -> str:
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


class _Module:
    """One module's top-level definitions and what each refers to in the package."""

    def __init__(self, name: str, path: Path):
        self.name, self.path = name, path
        self.tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        self.modules, self.names = {}, {}  # local alias -> module; local name -> (module, name)
        for node in self.tree.body:
            if isinstance(node, ast.ImportFrom):
                source = (_resolve_relative(name, node.level, node.module, is_package) if node.level
                          else node.module or "")
                if not source.startswith("course_utils"):
                    continue
                for alias in node.names:
                    local = alias.asname or alias.name
                    self.modules[local] = f"{source}.{alias.name}"  # a submodule, if it is one
                    self.names[local] = (source, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("course_utils"):
                        self.modules[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name or alias.name.split(".")[0]
        self.defined = {n.name for n in self.tree.body
                        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}

    def refers_to(self, node) -> set[tuple[str, str]]:
        """The package's (module, name) pairs that ``node`` reads (a function's own arguments and local variables
        shadow the module's names: ``alpha_bars[t]`` of an argument named ``alpha_bars`` is not the function)."""
        found, local = set(), _locals(node)
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in local:
                if sub.id in self.defined:
                    found.add((self.name, sub.id))
                elif sub.id in self.names:
                    found.add(self.names[sub.id])
            elif isinstance(sub, ast.Attribute):
                chain, value = [sub.attr], sub.value
                while isinstance(value, ast.Attribute):
                    chain.append(value.attr)
                    value = value.value
                if isinstance(value, ast.Name) and value.id in self.modules:
                    module = self.modules[value.id]
                    for attr in reversed(chain[1:]):
                        module = f"{module}.{attr}"
                    found.add((module, sub.attr))
        return found


def _locals(node) -> set:
    """The names bound inside a function (its arguments, assignments, loop and with targets, inner functions)."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        return set()
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.arg):
            names.add(sub.arg)
        elif isinstance(sub, ast.Name) and isinstance(sub.ctx, (ast.Store, ast.Del)):
            names.add(sub.id)
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node:
            names.add(sub.name)
    return names


def _units(module: _Module):
    """(key, node, body-or-None): the withholdable pieces of ``module``: its top-level functions and classes, and
    the methods of its classes (key (module, "Class.method"))."""
    for node in module.tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield (module.name, node.name), node
        elif isinstance(node, ast.ClassDef):
            yield (module.name, node.name), node
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield (module.name, f"{node.name}.{item.name}"), item


def withheld_names(exercise_names) -> set[tuple[str, str]]:
    """Everything the copy for these exercises withholds: their references, and every function or method of the
    package that names a withheld one (to a fixed point). Classes are withheld whole only when they are a
    reference; another class loses the methods that would run a reference."""
    modules = {name: _Module(name, path) for name, path in _sources().items()}
    withheld = set(references_of(exercise_names))
    refs = {}
    for module in modules.values():
        for key, node in _units(module):
            if isinstance(node, ast.ClassDef):
                # a class is withheld whole only through its non-method statements (class attributes)
                body = [n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                refs[key] = set().union(*(module.refers_to(n) for n in body)) if body else set()
            else:
                refs[key] = module.refers_to(node)
    changed = True
    while changed:
        changed = False
        for key, named in refs.items():
            if key in withheld:
                continue
            owner = (key[0], key[1].split(".")[0])
            if owner in withheld or named & withheld:
                withheld.add(key)
                changed = True
    return withheld


def _raise(name: str, like: ast.AST) -> list:
    call = ast.Expr(ast.Call(func=ast.Attribute(ast.Name("_withheld_module", ast.Load()), "withheld", ast.Load()),
                             args=[ast.Constant(name)], keywords=[]))
    return [ast.copy_location(call, like)]


def _stub_function(node, name: str):
    node.body = _raise(name, node)
    return node


def _stub_class(node: ast.ClassDef, name: str):
    args = ast.arguments(posonlyargs=[], args=[ast.arg("self")], vararg=ast.arg("args"), kwonlyargs=[],
                         kw_defaults=[], kwarg=ast.arg("kwargs"), defaults=[])
    node.body = [ast.FunctionDef(name=method, args=args, body=_raise(name, node), decorator_list=[], returns=None,
                                 type_params=[], lineno=node.lineno, col_offset=4)
                 for method in ("__init__", "__call__")]
    return node


def keyless_source(module: str, source: str, withheld: set) -> str:
    """``source`` of ``module`` with every withheld function, method and class replaced by a stub."""
    tree = ast.parse(source)
    touched = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (module, node.name) in withheld:
            _stub_function(node, f"{module}.{node.name}")
            touched = True
        elif isinstance(node, ast.ClassDef):
            if (module, node.name) in withheld:
                _stub_class(node, f"{module}.{node.name}")
                touched = True
                continue
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (module, f"{node.name}.{item.name}") in withheld:
                    _stub_function(item, f"{module}.{node.name}.{item.name}")
                    touched = True
    if not touched:
        return source
    first = 1 if tree.body and isinstance(tree.body[0], ast.Expr) and isinstance(tree.body[0].value, ast.Constant) else 0
    while first < len(tree.body) and isinstance(tree.body[first], ast.ImportFrom) and tree.body[first].module == "__future__":
        first += 1
    tree.body.insert(first, ast.Import(names=[ast.alias(_STUB, "_withheld_module")]))
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"


def build(exercise_names, dest: Path) -> Path:
    """Write the keyless copy of course_utils for ``exercise_names`` to ``dest/course_utils``; return that folder."""
    dest = Path(dest)
    target = dest / "course_utils"
    if target.exists():
        shutil.rmtree(target)
    withheld = withheld_names(exercise_names)
    sources = _sources()
    kept = {path.resolve() for path in sources.values()}

    def ignore(folder, names):
        skip = {"__pycache__", ".ipynb_checkpoints"}
        for name in names:
            path = (Path(folder) / name).resolve()
            if path.suffix == ".py" and path not in kept:
                skip.add(name)
        return skip

    shutil.copytree(PACKAGE, target, ignore=ignore, symlinks=False)
    for module, path in sources.items():
        out = target / path.relative_to(PACKAGE)
        if module == "course_utils.exercises":
            out.write_text('"""The exercise definitions are not part of the grading sandbox (autograder/keyless.py)."""\n')
            continue
        out.write_text(keyless_source(module, path.read_text(), withheld))
    (target / "WITHHELD.txt").write_text(
        "Withheld in this copy (autograder/keyless.py):\n" + "".join(f"{m}.{n}\n" for m, n in sorted(withheld)))
    return target


def assignment_exercises(release_nb) -> list[str]:
    """The exercises that the test cells of a released notebook check."""
    from . import roles
    from .execute import UnrunnableTestCell, parse_test_cell

    names = []
    for cell in release_nb.cells:
        if roles.role(cell) == roles.TEST:
            try:
                names += [name for name, _, _ in parse_test_cell(cell.source)]
            except UnrunnableTestCell:
                continue
    return list(dict.fromkeys(names))
