"""Shared settings of the test suite.

Nothing here imports more than pytest: the unit tests of course_utils run with the package's own
dependencies and pytest alone. The notebook and pipeline tests take their helpers from
``notebook_tools`` (nbformat, nbclient and the autograder: the dev extra).
"""

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))            # for `import notebook_tools`
sys.path.insert(0, str(TESTS.parent))     # for `import autograder`


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keep `--dist loadgroup` working on pytest 9: pytest-xdist 3.8 marks a test's group by
    setting ``item._nodeid`` (suffix ``@group``), which pytest 9 no longer reads (it keeps the
    id in ``item._id``), so every xdist_group was silently split over the workers."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            from _pytest.nodeid import coerce_node_id

            item._id = coerce_node_id(item.nodeid + suffix)
