"""Finding the course's references in a compiled program, and measuring its size.

Every reference implementation of the course runs inside a named scope (``course_utils._validate.marked``): the
traced program of an answer that calls one carries its marker in the name stack of its equations, however the call
was reached (an alias, ``getattr``, a callback). :func:`references_in` reads them; :func:`count_equations` measures a
program before it is compiled (a Python loop over T unrolls into T copies of its body).
"""

from .._validate import REFERENCE_SCOPE
from .jitting import call_with_modules, split_modules
from .kept import isinstance as _isinstance, len as _len, make_jaxpr as _make_jaxpr


def jaxpr_of(fn, args, static_argnums, module_argnums):
    """The traced program of ``fn(*args)`` as :func:`~.jitting.jit_call` would compile it (no compilation)."""
    if module_argnums:
        graphdefs, statics, states, dynamic = split_modules(args, static_argnums, module_argnums)
        return _make_jaxpr(lambda st, dyn: call_with_modules(fn, graphdefs, statics, st, dyn))(states, dynamic)
    return _make_jaxpr(fn, static_argnums=static_argnums)(*args)


def _nested_jaxprs(jaxpr):
    """``jaxpr`` and every jaxpr nested in its equations (the bodies of scan, while, cond, pjit...)."""
    todo = [jaxpr]
    while todo:
        jaxpr = todo.pop()
        yield jaxpr
        for eqn in jaxpr.eqns:
            for value in eqn.params.values():
                for sub in (value if _isinstance(value, (tuple, list)) else (value,)):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        todo.append(inner)


def count_equations(jaxpr) -> int:
    """The equations of ``jaxpr`` and of the jaxprs nested in it."""
    return sum(_len(inner.eqns) for inner in _nested_jaxprs(jaxpr))


def references_in(jaxpr) -> set:
    """The reference markers in the name stacks of ``jaxpr`` and of the jaxprs nested in it."""
    found = set()
    for inner in _nested_jaxprs(jaxpr):
        for eqn in inner.eqns:
            for part in str(eqn.source_info.name_stack).split("/"):
                if part.startswith(REFERENCE_SCOPE + ":"):
                    found.add(part[_len(REFERENCE_SCOPE) + 1:])
    return found


def traced_references(fn, *args) -> list:
    """The reference markers in the program that ``fn(*args)`` traces to, sorted."""
    return sorted(references_in(_make_jaxpr(fn)(*args).jaxpr))
