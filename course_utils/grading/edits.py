"""Wrong variants of a reference found by search: the slips nobody wrote a hint for (issue 27).

A student's wrong answer is usually the right code with one small edit: an index shifted by one, a square root
added or dropped, a sign flipped, a term or a factor dropped, two arguments swapped, a product for a quotient, a
cumulative sum for a cumulative product, a final step (``exp``) missing. :func:`candidates` makes every such edit
of an exercise's reference, and of the course functions it calls (``ddpm_step`` calls ``mean_from_noise``), from
their source: each candidate is the reference with one edit, and its description is generated from the edit and
the reference's own names (```alpha_bars[t]`` where the reference has ``alpha_bars[t - 1]```).

The checker (:func:`course_utils.grading.judge`, through :mod:`.diagnosis`) runs them on the inputs the student's
function ran on and names the edit when exactly one candidate's outputs (or several that agree on every input) match the student's: see
:func:`search`. This runs in the grader's process only, where the references are; the candidates of an exercise
are built once and cached. Candidates run op by op (``jax.disable_jit``): compiling each would cost more than
running it on a few small inputs.
"""

import ast
import copy
import dataclasses
import importlib
import inspect
import itertools
import textwrap
import time

import jax

from .memo import fingerprint, once

# Modules whose functions a reference may call and an edit may change.
_COURSE_MODULES = ("course_utils.forward", "course_utils.schedules", "course_utils.losses", "course_utils.sampling",
                   "course_utils.guidance", "course_utils.embeddings", "course_utils.analytic", "course_utils.training")

# Unary jnp functions whose call an edit may drop (``jnp.sqrt(x)`` -> ``x``), and pairs an edit may exchange.
_DROPPABLE = {"sqrt", "exp", "log", "log1p", "expm1", "square", "abs", "cumprod", "cumsum", "sin", "cos", "mean", "sum"}
_EXCHANGE = {"cumprod": "cumsum", "cumsum": "cumprod", "sin": "cos", "cos": "sin", "mean": "sum", "sum": "mean",
             "exp": "log", "log": "exp"}

SEARCH_WORK = 4000
"""How much one search may do (the checker's budget per exercise, issue 27), counted in the reference's operations:
trying a candidate on a test input costs the number of operations the reference runs on that input
(:func:`operation_count`). Candidates are tried in order of how common their kind of slip is, and the search stops
when the next try would pass the budget. The budget is counted, not timed, so that an answer gets the same message
on any machine and under any load (a timed budget once named a slip on a quiet machine and missed it under CI's).
On a 2-core laptop a search of this size takes about 2 s in a fresh process and far less for the next student,
whose candidates' outputs are kept (:mod:`.memo`)."""

SEARCH_SECONDS = 60.0
"""A guard only, far above what :data:`SEARCH_WORK` takes: a search still running after this long stops."""


def operation_count(jaxpr) -> int:
    """The operations a program runs (``jax.make_jaxpr``'s equations), a loop's body counted once per step (``scan``'s
    length; a ``while`` loop's body once) and a conditional's costliest branch: the same on every machine."""
    from jax.extend.core import ClosedJaxpr, Jaxpr

    total = 0
    for eqn in jaxpr.eqns:
        inner = [j.jaxpr if isinstance(j, ClosedJaxpr) else j
                 for value in eqn.params.values()
                 for j in (value if isinstance(value, (tuple, list)) else (value,))
                 if isinstance(j, (ClosedJaxpr, Jaxpr))]
        if not inner:
            total += 1
            continue
        counts = [operation_count(j) for j in inner]
        body = max(counts) if eqn.primitive.name == "cond" else sum(counts)
        total += body * int(eqn.params.get("length", 1))
    return total


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One edit of the reference: ``run(args)`` computes the edited reference's output."""

    description: str
    kind: int  # the order of its kind of edit (lower: more common, tried first)
    run: object


class _Wrapped:
    """A built function that can be called both as ``f(...)`` and ``f.raw(...)``, like the course's references."""

    def __init__(self, fn):
        self.fn = fn
        self.raw = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def _plain(obj):
    """The undecorated Python function behind a reference, a marked function or a jitted one (or None)."""
    from .._validate import unmarked

    try:
        return unmarked(obj)
    except Exception:  # noqa: BLE001 - not a marked reference
        pass
    fn = getattr(obj, "raw", obj)
    fn = getattr(fn, "__wrapped__", fn)
    return fn if inspect.isfunction(fn) else None


@dataclasses.dataclass
class _Function:
    """One function of the search: its parsed definition, its module's globals and the course functions it calls."""

    name: str
    module: str
    tree: ast.FunctionDef
    globals: dict
    callees: dict  # name in its code -> _Function


def _parse(fn) -> ast.FunctionDef:
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    tree.decorator_list = []
    if ast.get_docstring(tree):
        tree.body = tree.body[1:]
    return tree


def _resolve(name: str, fn_globals: dict, local_imports: dict):
    if name in local_imports:
        module, attr = local_imports[name]
        return getattr(importlib.import_module(module), attr, None)
    return fn_globals.get(name)


def _load(obj, seen: dict, depth: int = 0):
    """The :class:`_Function` of ``obj`` and of the course functions it calls (three levels deep at most)."""
    fn = _plain(obj)
    if fn is None or fn.__module__ not in _COURSE_MODULES:
        return None
    key = f"{fn.__module__}.{fn.__qualname__}"
    if key in seen:
        return seen[key]
    try:
        tree = _parse(fn)
    except (OSError, TypeError, SyntaxError):
        return None
    local_imports = {}
    for node in ast.walk(tree):  # ``from .guidance import guided_eps`` inside the body: resolved, then removed
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            for alias in node.names:
                local_imports[alias.asname or alias.name] = (f"course_utils.{node.module}", alias.name)
    tree = _StripImports().visit(tree)
    found = _Function(fn.__name__, fn.__module__, tree, fn.__globals__, {})
    seen[key] = found
    if depth < 3:
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for name in sorted(names):
            target = _resolve(name, fn.__globals__, local_imports)
            if target is None or isinstance(target, type) or not callable(target):
                continue
            callee = _load(target, seen, depth + 1)
            if callee is not None and callee is not found:
                found.callees[name] = callee
    for name, (module, attr) in local_imports.items():
        if name not in found.callees:
            found.callees[name] = getattr(importlib.import_module(module), attr)  # used as it is
    return found


class _StripImports(ast.NodeTransformer):
    def visit_ImportFrom(self, node):
        return ast.Pass() if node.level == 1 else node


def _build(function: _Function, edited: dict, cache: dict):
    """The callable of ``function`` with the edited trees of ``edited`` (name -> tree) in place of their originals."""
    key = id(function)
    if key in cache:
        return cache[key]
    namespace = dict(function.globals)
    for name, callee in function.callees.items():
        namespace[name] = _build(callee, edited, cache) if isinstance(callee, _Function) else callee
    tree = edited.get(key, function.tree)
    module = ast.Module(body=[tree], type_ignores=[])
    ast.fix_missing_locations(module)
    exec(compile(module, f"<edit of {function.module}.{function.name}>", "exec"), namespace)  # noqa: S102
    built = _Wrapped(namespace[function.name])
    cache[key] = built
    return built


# ---------------------------------------------------------------- the edits

def _unparse(node) -> str:
    return ast.unparse(node)


def _jnp_call(node):
    """The jnp function name of ``jnp.f(...)`` (or None)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
            and node.func.value.id in ("jnp", "np"):
        return node.func.attr
    return None


def _jnp(name: str, arg) -> ast.Call:
    return ast.Call(ast.Attribute(ast.Name("jnp", ast.Load()), name, ast.Load()), [arg], [])


def _num(value) -> ast.Constant:
    return ast.Constant(value)


def _edits_of(node, parent) -> list:
    """(kind, replacement) of every edit of ``node``; the kind orders them (lower: tried first)."""
    out = []
    if isinstance(node, ast.Subscript) and not isinstance(node.slice, (ast.Slice, ast.Tuple)):
        index = node.slice
        shifted = []
        if isinstance(index, ast.BinOp) and isinstance(index.op, (ast.Sub, ast.Add)) and isinstance(index.right, ast.Constant):
            k = index.right.value if isinstance(index.op, ast.Add) else -index.right.value
            if isinstance(k, int):
                for d in (-1, 1):
                    shifted.append(k + d)
                base = index.left
            else:
                base = None
        elif isinstance(index, ast.Constant):
            base = None
            if isinstance(index.value, int) and not isinstance(index.value, bool):
                for d in (-1, 1):
                    out.append((0, ast.Subscript(copy.deepcopy(node.value), _num(index.value + d), ast.Load())))
        else:
            base, k = index, 0
            shifted = [-1, 1]
        if base is not None:
            for m in shifted:
                new_index = base if m == 0 else ast.BinOp(copy.deepcopy(base), ast.Add() if m > 0 else ast.Sub(), _num(abs(m)))
                out.append((0, ast.Subscript(copy.deepcopy(node.value), new_index, ast.Load())))
    name = _jnp_call(node)
    if name is not None and len(node.args) >= 1:
        if name in _DROPPABLE:
            out.append((1, copy.deepcopy(node.args[0])))
        if name in _EXCHANGE:
            swapped = copy.deepcopy(node)
            swapped.func.attr = _EXCHANGE[name]
            out.append((4, swapped))
        if name == "cumprod":  # the product in log space, without the final exp
            out.append((4, _jnp("cumsum", _jnp("log", copy.deepcopy(node.args[0])))))
        if name in ("sum", "mean") and isinstance(node.args[0], ast.BinOp) and isinstance(node.args[0].op, ast.Pow):
            inner = copy.deepcopy(node)  # the square outside the sum: jnp.sum(d) ** 2
            inner.args[0] = copy.deepcopy(node.args[0].left)
            out.append((4, ast.BinOp(inner, ast.Pow(), copy.deepcopy(node.args[0].right))))
        if name in _DROPPABLE and isinstance(node.args[0], ast.BinOp) and len(node.args) == 1:
            arg = node.args[0]  # the function applied to one operand only: 1 - jnp.sqrt(beta)
            out.append((5, ast.BinOp(_jnp(name, copy.deepcopy(arg.left)), copy.deepcopy(arg.op), copy.deepcopy(arg.right))))
            out.append((5, ast.BinOp(copy.deepcopy(arg.left), copy.deepcopy(arg.op), _jnp(name, copy.deepcopy(arg.right)))))
        if name == "where" and len(node.args) == 3:
            out.append((3, copy.deepcopy(node.args[1])))
            out.append((3, copy.deepcopy(node.args[2])))
        if name in ("concatenate", "stack") and isinstance(node.args[0], (ast.List, ast.Tuple)):
            items = node.args[0].elts
            if len(items) == 2:
                for keep in items:
                    if name == "concatenate":
                        out.append((5, copy.deepcopy(keep)))
                swapped = copy.deepcopy(node)
                swapped.args[0].elts = swapped.args[0].elts[::-1]
                out.append((4, swapped))
        if name in ("maximum", "minimum", "clip") and len(node.args) >= 2:
            out.append((3, copy.deepcopy(node.args[0])))
    if isinstance(node, ast.Name) and isinstance(parent, ast.Call) and _jnp_call(parent) in ("linspace", "arange", "full", "where"):
        out.append((3, _num(0)))  # an argument left at zero: jnp.linspace(0, beta_end, T)
    if isinstance(node, ast.Call) and len(node.args) >= 2 and _jnp_call(node) not in ("where", "concatenate", "full", "arange", "linspace"):
        for i in range(min(len(node.args), 5) - 1):
            swapped = copy.deepcopy(node)
            swapped.args[i], swapped.args[i + 1] = swapped.args[i + 1], swapped.args[i]
            out.append((4, swapped))
    if isinstance(node, ast.BinOp):
        left, right = node.left, node.right
        op = type(node.op)
        flip = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
        if op in flip:
            out.append((2, ast.BinOp(copy.deepcopy(left), flip[op](), copy.deepcopy(right))))
        if op in (ast.Sub, ast.Div):
            out.append((2, ast.BinOp(copy.deepcopy(right), node.op.__class__(), copy.deepcopy(left))))
        if op is ast.Mult:  # a product written as a quotient the other way round, or as a sum
            out.append((2, ast.BinOp(copy.deepcopy(right), ast.Div(), copy.deepcopy(left))))
            out.append((3, ast.BinOp(copy.deepcopy(left), ast.Add(), copy.deepcopy(right))))
        if op in (ast.Add, ast.Sub, ast.Mult, ast.Div):
            out.append((3, copy.deepcopy(left)))
            if op in (ast.Add, ast.Mult):
                out.append((3, copy.deepcopy(right)))
            if op is ast.Sub:
                out.append((3, ast.UnaryOp(ast.USub(), copy.deepcopy(right))))
                out.append((3, copy.deepcopy(right)))
        additive, multiplicative = (ast.Add, ast.Sub), (ast.Mult, ast.Div)
        if isinstance(left, ast.BinOp) and isinstance(left.op, additive) and op in multiplicative:
            # (a - b) / c written a - b / c: the parentheses forgotten
            out.append((3, ast.BinOp(copy.deepcopy(left.left), copy.deepcopy(left.op),
                                     ast.BinOp(copy.deepcopy(left.right), node.op.__class__(), copy.deepcopy(right)))))
        if isinstance(right, ast.BinOp) and op in multiplicative and (
                isinstance(right.op, additive) or (op is ast.Div and isinstance(right.op, multiplicative))):
            # a / (2 * s) written a / 2 * s, a * (b - c) written a * b - c
            out.append((3, ast.BinOp(ast.BinOp(copy.deepcopy(left), node.op.__class__(), copy.deepcopy(right.left)),
                                     copy.deepcopy(right.op), copy.deepcopy(right.right))))
        if op is ast.Pow:
            out.append((1, copy.deepcopy(left)))
            if isinstance(right, ast.Constant) and right.value == 2:
                out.append((1, _jnp("sqrt", copy.deepcopy(left))))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        out.append((2, copy.deepcopy(node.operand)))
    if isinstance(node, (ast.Name, ast.Subscript, ast.BinOp, ast.Call)) and isinstance(getattr(node, "ctx", ast.Load()), ast.Load) \
            and not _is_callee(node, parent) and not (isinstance(parent, ast.Call) and _jnp_call(parent) == "sqrt") \
            and _jnp_call(node) != "sqrt":
        if not isinstance(node, ast.Name) or node.id not in ("jnp", "jax", "np", "self"):
            out.append((6, _jnp("sqrt", copy.deepcopy(node))))
            out.append((7, ast.BinOp(copy.deepcopy(node), ast.Pow(), _num(2))))
            if isinstance(node, (ast.Name, ast.Subscript)):  # a probability for its complement: alpha_bar for 1 - alpha_bar
                out.append((6, ast.BinOp(_num(1), ast.Sub(), copy.deepcopy(node))))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.comparators[0], ast.Constant) \
            and isinstance(node.comparators[0].value, int):
        for d in (-1, 1):
            changed = copy.deepcopy(node)
            changed.comparators[0] = _num(node.comparators[0].value + d)
            out.append((5, changed))
    return out


def _is_callee(node, parent) -> bool:
    return isinstance(parent, (ast.Call, ast.Attribute)) and (getattr(parent, "func", None) is node or getattr(parent, "value", None) is node)


def _sites(tree):
    """(position, node, parent) of every expression of ``tree`` an edit may change, numbered in ``ast.walk``'s
    order (the same in a copy of the tree)."""
    found = []
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            if isinstance(child, ast.expr) and not isinstance(child, (ast.Constant,)) and not _in_error_message(child):
                found.append((child, parent))
    return [(i, node, parent) for i, (node, parent) in enumerate(found)]


def _in_error_message(node) -> bool:
    return isinstance(node, ast.JoinedStr)


class _Replace(ast.NodeTransformer):
    """Replace the node ``target`` (one site of :func:`_sites`) with ``new``."""

    def __init__(self, target, new):
        self.target, self.new = target, new

    def generic_visit(self, node):
        for field, value in ast.iter_fields(node):
            if isinstance(value, list):
                value[:] = [self.new if item is self.target else item for item in value]
                for item in value:
                    if isinstance(item, ast.AST) and item is not self.new:
                        self.visit(item)
            elif isinstance(value, ast.AST):
                if value is self.target:
                    setattr(node, field, self.new)
                else:
                    self.visit(value)
        return node


def _all_functions(function: _Function, out=None) -> list:
    out = [] if out is None else out
    if function not in out:
        out.append(function)
        for callee in function.callees.values():
            if isinstance(callee, _Function):
                _all_functions(callee, out)
    return out


_CACHE: dict = {}


def candidates(reference, name: str) -> list:
    """Every one-edit variant of ``reference`` (an exercise's reference function), cached per exercise ``name``."""
    if name in _CACHE:
        return _CACHE[name]
    found = []
    try:
        root = _load(reference, {})
    except Exception:  # noqa: BLE001 - a reference the search cannot read: no candidates
        root = None
    if root is not None:
        for function in _all_functions(root):
            checks = _check_nodes(function.tree)
            sites = _sites(function.tree)
            for position, node, parent in sites:
                if id(node) in checks:
                    continue
                for kind, new in _edits_of(node, parent):
                    found.append(_candidate(root, function, position, node, new, kind))
            found += _shared_edits(root, function, sites, checks)
    found = [c for c in found if c is not None]
    found.sort(key=lambda c: c.kind)
    _CACHE[name] = found
    return found


def _check_nodes(tree) -> set:
    """ids of the nodes inside an ``if`` whose body raises (argument checks) and of shape expressions."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and any(isinstance(s, ast.Raise) for s in node.body):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.Attribute) and node.attr in ("shape", "ndim", "dtype"):
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.Subscript):  # an index is shifted as a whole (the subscript's own edit)
            skip.update(id(n) for n in ast.walk(node.slice))
            skip.update(id(n) for n in ast.walk(node.value))
            if isinstance(node.value, ast.Attribute) and node.value.attr == "shape":
                skip.add(id(node))
        if isinstance(node, ast.Expr):  # a bare call, such as v.check_same_shape(...)
            skip.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("reshape", "full", "astype", "asarray"):
            skip.update(id(n) for n in ast.walk(node.func))
            kept = {"full": node.args[1:2], "asarray": node.args[:1]}.get(node.func.attr, [])
            for arg in node.args:
                if not any(arg is k for k in kept):
                    skip.update(id(n) for n in ast.walk(arg))
            for kw in node.keywords:
                skip.update(id(n) for n in ast.walk(kw))
    return skip


def _candidate(root: _Function, function: _Function, position: int, node, new, kind, also=(), everywhere=False,
               replace=None):
    """The candidate that replaces the ``position``-th site of ``function`` (``node``) with ``new`` (or with
    ``replace`` when ``new`` only describes it), and the sites of ``also``, (position, new) pairs, with theirs;
    its code is built when it first runs."""
    old_text, new_text = _unparse(node), _unparse(new)
    if old_text == new_text:
        return None
    if isinstance(node, ast.Tuple):  # several sites: "`a[t], b[t]` where the reference has `a[t - 1], b[t - 1]`"
        old_text, new_text = old_text.strip("()"), new_text.strip("()")
    else:
        old_text, new_text = _unique_context(function, node, new)
    where = "" if function is root else f" (in `{function.name}`, which the reference calls)"
    description = f"`{new_text}` where the reference has `{old_text}`{' (everywhere)' if everywhere else ''}{where}"
    changes = [(position, new if replace is None else replace), *also]
    built = []

    def run(args):
        if not built:
            tree = copy.deepcopy(function.tree)
            sites = _sites(tree)  # the copy's sites are numbered like the original's
            for at, replacement in changes:
                tree = _Replace(sites[at][1], copy.deepcopy(replacement)).visit(tree)
            built.append(_build(root, {id(function): tree}, {}))
        return built[0].fn(*args)

    return Candidate(description, kind, run)


def _unique_context(function: _Function, node, new) -> tuple:
    """(old, new) texts of the smallest expression around ``node`` whose text occurs once in ``function``, with
    ``node`` replaced by ``new`` in the new one: "`ab_t` where the reference has `ab_prev`" is ambiguous where
    ``ab_prev`` appears twice, "`jnp.sqrt(1 - ab_t) * eps` where the reference has `jnp.sqrt(1 - ab_prev) * eps`"
    is not. The whole statement's expression is as far as it widens."""
    texts, parents = _layout(function)
    current, replacement = node, new
    while texts.get(_unparse(current), 0) > 1:
        parent = parents.get(id(current))
        if not isinstance(parent, ast.expr):
            break
        replacement = copy.deepcopy(parent, {id(current): replacement})
        current = parent
    return _unparse(current), _unparse(replacement)


_LAYOUTS: dict = {}


def _layout(function: _Function) -> tuple:
    """({text: how many expressions of ``function`` have it}, {id(node): its parent}), once per function."""
    key = id(function.tree)
    if key not in _LAYOUTS:
        texts, parents = {}, {}
        for parent in ast.walk(function.tree):
            for child in ast.iter_child_nodes(parent):
                parents[id(child)] = parent
                if isinstance(child, ast.expr):
                    text = _unparse(child)
                    texts[text] = texts.get(text, 0) + 1
        _LAYOUTS[key] = (texts, parents, function.tree)  # the tree kept, so that its id is not reused
    return _LAYOUTS[key][:2]


def _shared_edits(root: _Function, function: _Function, sites, checks) -> list:
    """Edits of several sites at once: every index ``[t - 1]`` shifted together (``betas[t]`` and
    ``alpha_bars[t]``), and an index variable shifted where it is used outside an index (``model(x, t - 1)``)."""
    out = []
    by_index = {}
    for position, node, _ in sites:
        if isinstance(node, ast.Subscript) and id(node) not in checks and not isinstance(node.slice, (ast.Slice, ast.Tuple)) \
                and not isinstance(node.slice, ast.Constant):
            by_index.setdefault(_unparse(node.slice), []).append((position, node))
    for index, group in by_index.items():
        if _len_distinct(group) < 2:
            continue
        subsets = [group] + ([list(pair) for pair in itertools.combinations(group, 2)] if 2 < len(group) <= 4 else [])
        for subset in subsets:
            for d in (-1, 1):
                news = [(position, ast.Subscript(copy.deepcopy(node.value), _shift(node.slice, d), ast.Load()))
                        for position, node in subset]
                if subset is group:
                    new_index = _unparse(_shift(group[0][1].slice, d))
                    old_node, new_node = ast.Name(f"[{index}]"), ast.Name(f"[{new_index}]")
                else:
                    old_node = ast.Tuple([node for _, node in subset], ast.Load())
                    new_node = ast.Tuple([new for _, new in news], ast.Load())
                out.append(_candidate(root, function, news[0][0], old_node, new_node, 0, also=news[1:],
                                      everywhere=subset is group, replace=news[0][1]))
    names = _variables(function.tree)
    for position, node, parent in sites:  # a variable for another of a similar name (alpha_bar_t for alpha_bar_prev)
        if isinstance(node, ast.Name) and node.id in names and id(node) not in checks and not _is_callee(node, parent):
            for other in sorted(names):
                if other != node.id and other[:1] == node.id[:1]:
                    out.append(_candidate(root, function, position, node, ast.Name(other, ast.Load()), 5))
    index_names = {n.id for _, node, _ in sites if isinstance(node, ast.Subscript)
                   for n in ast.walk(node.slice) if isinstance(n, ast.Name)}
    for position, node, parent in sites:
        if isinstance(node, ast.Name) and node.id in index_names and id(node) not in checks and not _is_callee(node, parent):
            for d in (-1, 1):
                out.append(_candidate(root, function, position, node, _shift(node, d), 5))
    return out


def _variables(tree) -> set:
    """The names of the arguments and the assigned variables of a function (and of the functions inside it)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names - {"model", "self"}


def _len_distinct(group) -> int:
    return len({_unparse(node.value) for _, node in group})


def _shift(index, d: int):
    """``index + d``, folded into a constant term: ``t - 1`` shifted by 1 is ``t``."""
    if isinstance(index, ast.BinOp) and isinstance(index.op, (ast.Add, ast.Sub)) and isinstance(index.right, ast.Constant) \
            and isinstance(index.right.value, int):
        k = (index.right.value if isinstance(index.op, ast.Add) else -index.right.value) + d
        base = copy.deepcopy(index.left)
    else:
        k, base = d, copy.deepcopy(index)
    if k == 0:
        return base
    return ast.BinOp(base, ast.Add() if k > 0 else ast.Sub(), _num(abs(k)))


def search(matches, reference, name: str, runner, cost, work: int | None = None) -> list:
    """The descriptions of the candidates for which ``matches(run)`` is true, where ``run(args)`` is the
    candidate's output on ``args`` (computed by ``runner(candidate.run, args)``), tried in order until the next
    run would bring the work done past ``work`` (:data:`SEARCH_WORK` by default), a run on ``args`` costing
    ``cost(args)`` (the reference's :func:`operation_count` there). The candidate that would pass the budget is left
    undecided and the search ends, so what is found depends only on the answer and the inputs, never on the
    machine. A candidate's output on a trial does not depend on the student, nor does a trial's cost: both are kept,
    so that the next search (the next student of a class, or the same student again) is quicker; a kept output is
    charged all the same."""
    work = SEARCH_WORK if work is None else work
    start = time.perf_counter()
    found, tried, done = [], 0, [0]
    trials = {}  # id(args) -> (fingerprint, cost), for this search's inputs

    def output(candidate, args):
        if id(args) not in trials:
            fp = fingerprint(args)
            trials[id(args)] = fp, once(reference, ("operations", fp), lambda: max(1, int(cost(args))))
        fp, price = trials[id(args)]
        if done[0] + price > work or time.perf_counter() - start > SEARCH_SECONDS:
            raise _TimeUp
        done[0] += price
        return once(candidate, fp, lambda: runner(candidate.run, args))

    with jax.disable_jit():
        for candidate in candidates(reference, name):
            tried += 1
            try:
                if matches(lambda args, c=candidate: output(c, args)):
                    found.append(candidate.description)
            except _TimeUp:  # the budget is spent: this candidate is left undecided, and the search ends
                break
    TIMES.append((name, time.perf_counter() - start, tried, len(candidates(reference, name)), done[0]))
    return found


class _TimeUp(Exception):
    pass


TIMES: list = []
"""(exercise, seconds, candidates tried, candidates, work done) of every search in this process, for measurements."""
