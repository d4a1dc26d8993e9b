"""The imports of course_utils and autograder go one way: no circle, and no module takes another's private names.

The graph is read from the source with ``ast`` (nothing is imported). Its nodes are the modules of the two
packages; its edges:

- every ``import`` and ``from ... import`` that runs when the module is imported: at the top, under ``if``/``try``,
  in a class body; not one inside a function, which runs later, once every module is loaded (that is how the
  checker's registry loads the exercises that import the checker: ``course_utils.grading.registry.load``). The
  circles counted are the import-time ones: a module that imports, while it is being imported, one that imports it
  back (guidance and sampling did, through ``guided_eps``, until it moved to sampling);
- ``from package import name`` where ``name`` is a module of that package counts as an import of that module;
- importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``: an edge to each package above the module
  imported, except the importing module's own packages (they are always initialised before it). This is what
  makes ``course_utils.exercises.kinds`` (which imports ``course_utils.grading.compiled``) depend on
  ``course_utils/grading/__init__.py``, so that the checker's top module may never import the exercises back.

Imports only for type checkers (``if TYPE_CHECKING:``) would not be edges; there are none today.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("course_utils", "autograder")


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = REPO) -> dict:
    """{module name: (path, is_package)} of every module of course_utils and autograder under ``root``."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[_module_name(path, root)] = (path, path.name == "__init__.py")
    return found


def _absolute(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[:len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _ancestors(module: str) -> list:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _import_time_nodes(tree):
    """The nodes of ``tree`` that run when the module is imported (not the bodies of functions and lambdas)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        todo += [c for c in ast.iter_child_nodes(node)
                 if not isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]


def imports(module: str, path: Path, is_package: bool, known) -> list:
    """[(imported module, imported names or None, line)] of every import statement in ``module``'s source."""
    found = []
    for node in _import_time_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_package, node.level, node.module) if node.level else (node.module or "")
            names = [alias.name for alias in node.names]
            found.append((source, names, node.lineno))
            found += [(f"{source}.{n}", None, node.lineno) for n in names if f"{source}.{n}" in known]
    return found


def graph(root: Path = REPO) -> dict:
    """{module: {module it depends on: the line of the import}} over the modules of course_utils and autograder."""
    known = modules(root)
    edges = {name: {} for name in known}
    for name, (path, is_package) in known.items():
        own = set(_ancestors(name)) | ({name} if is_package else set())
        for target, _names, line in imports(name, path, is_package, known):
            for dep in [*_ancestors(target), target]:
                if dep in known and dep != name and dep not in own:
                    edges[name].setdefault(dep, line)
    return edges


def find_cycle(edges: dict) -> list | None:
    """One circle of ``edges`` as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def private_imports(root: Path = REPO) -> list:
    """``module:line imports _name from other`` for every ``from other import _name`` between two modules of the
    packages (a module's own privates stay inside it; dunder names such as ``__version__`` are public)."""
    known = modules(root)
    found = []
    for name, (path, is_package) in known.items():
        for target, names, line in imports(name, path, is_package, known):
            if names is None or target.split(".")[0] not in PACKAGES:
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in known:
                    found.append(f"{name}:{line} imports {n} from {target}")
    return found


def test_the_graph_sees_the_edges_it_should():
    edges = graph()
    assert "course_utils.grading.compiled" in edges["course_utils.exercises.kinds"]
    assert "course_utils.grading" in edges["course_utils.exercises.kinds"], "importing a.b.c runs a.b's __init__"
    assert "course_utils.exercises" not in edges["course_utils.exercises.nb01"], "its own package is not an edge"
    assert "course_utils.exercises.common" in edges["course_utils.exercises.nb01"]
    assert "course_utils.grading.edits" not in edges["course_utils.grading.diagnosis"], "inside a function: not counted"
    assert "course_utils.sampling" in edges["course_utils.guidance"]


def test_no_import_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


@pytest.mark.parametrize("where, line, circle", [
    # the two circles this test was written against (issue 28), put back in a copy of the source
    ("course_utils/grading/__init__.py", "from .. import exercises as _exercises  # noqa\n",
     ["course_utils.grading", "course_utils.exercises"]),
    ("course_utils/sampling.py", "from .guidance import Guided  # noqa\n",
     ["course_utils.sampling", "course_utils.guidance"]),
])
def test_a_circle_put_back_is_found(tmp_path, where, line, circle):
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "__pycache__" not in path.parts:
                copy = tmp_path / path.relative_to(REPO)
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_text(path.read_text())
    target = tmp_path / where
    target.write_text(target.read_text() + "\n\n" + line)
    assert find_cycle(graph(REPO)) is None
    cycle = find_cycle(graph(tmp_path))
    assert cycle is not None and set(circle) <= set(cycle), cycle


def test_a_private_import_is_found(tmp_path):
    (tmp_path / "course_utils").mkdir()
    (tmp_path / "autograder").mkdir()
    (tmp_path / "course_utils" / "__init__.py").write_text("")
    (tmp_path / "course_utils" / "a.py").write_text("_secret = 1\n__version__ = 2\n")
    (tmp_path / "course_utils" / "b.py").write_text("from .a import _secret, __version__\n")
    assert private_imports(tmp_path) == ["course_utils.b:1 imports _secret from course_utils.a"]
