"""The role of every cell of a submission, taken from the released notebook, never from the submission.

nbgrader, the grader's Execute step (``autograder/execute.py``) and the source check (``autograder/provenance.py``)
all read a cell's role from its nbgrader metadata, which a student can edit: clear the ``solution`` flag of an
answer cell, add a cell with no metadata, mark a test cell as an answer. So before nbgrader sees a submission,
``apply_release_roles`` matches each of its cells to a cell of the release and rewrites the cell's nbgrader
metadata with the release's:

- match by cell id (nbformat 4.5 and later), then by nbgrader ``grade_id`` (kept by Colab and older Jupyter,
  which save no cell ids), then by position between two matched cells (the same cell type, and the same
  source or the same number of unmatched cells on both sides); a match needs the same cell type;
- a matched cell gets the release cell's nbgrader metadata; a test or read-only cell also gets its source
  back (nbgrader would restore it too, from the gradebook), so no student code runs in it;
- a cell that matches nothing is an added cell: it loses any nbgrader metadata (it is graded as an ordinary
  cell, and its code is read by the source check like an answer's);
- a released test cell that matches nothing is put back after the cell that precedes it in the release.

What differs from the release is returned as notes for the student's row (which flag it; no score changes):
added code cells, deleted cells, moved cells, changed roles, deleted or edited test cells.
"""

import bisect
import copy
import difflib

ANSWER, TEST, HAND_GRADED, TASK, READ_ONLY, ORDINARY = ("answer", "test", "hand-graded answer", "task",
                                                        "read-only", "ordinary")


def nbgrader_meta(cell) -> dict:
    """A cell's nbgrader metadata, or {} when it has none (or it is not a dict)."""
    meta = cell.get("metadata") if isinstance(cell, dict) else None
    nbgrader = meta.get("nbgrader") if isinstance(meta, dict) else None
    return nbgrader if isinstance(nbgrader, dict) else {}


def role(cell) -> str:
    """The role a cell's nbgrader metadata gives it (one of the constants above)."""
    meta = nbgrader_meta(cell)
    code = cell.get("cell_type") == "code"
    if meta.get("solution"):
        return ANSWER if code else HAND_GRADED
    if meta.get("grade"):
        return TEST if code else HAND_GRADED
    if meta.get("task"):
        return TASK
    return READ_ONLY if meta.get("locked") else ORDINARY


def restored(cell) -> bool:
    """Whether grading runs the release's source of this cell, whatever the student wrote (test and read-only cells)."""
    return role(cell) in (TEST, READ_ONLY)


def _source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _increasing(pairs: list) -> set:
    """The largest set of (submission index, release index) pairs, sorted by submission index, whose release
    indices increase too (the cells that kept their order; the others moved)."""
    best = []  # best[k]: the chain of length k + 1 ending at the smallest release index
    chains = []
    for pair in pairs:
        k = bisect.bisect_left(best, pair[1])
        chain = (chains[k - 1] if k else []) + [pair]
        if k == len(best):
            best.append(pair[1])
            chains.append(chain)
        else:
            best[k], chains[k] = pair[1], chain
    return set(chains[-1]) if chains else set()


def match_cells(cells: list, ids: list, release_cells: list) -> tuple[list, set]:
    """For each submission cell, the index of the release cell it is (or None), and the indices of the matched
    submission cells that moved. ``ids``: the cell ids as the submission's file has them (None where absent)."""
    matched = [None] * len(cells)
    used = set()

    def pair(i, j):
        if j not in used and cells[i].get("cell_type") == release_cells[j].get("cell_type"):
            matched[i] = j
            used.add(j)

    by_id = {c.get("id"): j for j, c in enumerate(release_cells) if c.get("id")}
    for i, cell_id in enumerate(ids):
        if isinstance(cell_id, str) and cell_id in by_id:
            pair(i, by_id[cell_id])
    by_grade_id = {nbgrader_meta(c).get("grade_id"): j for j, c in enumerate(release_cells) if nbgrader_meta(c).get("grade_id")}
    for i, cell in enumerate(cells):
        grade_id = nbgrader_meta(cell).get("grade_id")
        if matched[i] is None and isinstance(grade_id, str) and grade_id in by_grade_id:
            pair(i, by_grade_id[grade_id])
    anchors = sorted(_increasing([(i, j) for i, j in enumerate(matched) if j is not None]))
    moved = {i for i, j in enumerate(matched) if j is not None and (i, j) not in anchors}
    # Between two cells in order, the unmatched cells are matched by position: equal runs of (type, source)
    # first, then runs of the same length whose sources differ (an edited answer, a cell stripped of metadata).
    bounds = [(-1, -1)] + anchors + [(len(cells), len(release_cells))]
    for (i0, j0), (i1, j1) in zip(bounds, bounds[1:]):
        mine = [i for i in range(i0 + 1, i1) if matched[i] is None]
        theirs = [j for j in range(j0 + 1, j1) if j not in used]
        key = lambda c: (c.get("cell_type"), _source(c).strip())  # noqa: E731
        opcodes = difflib.SequenceMatcher(None, [key(cells[i]) for i in mine],
                                          [key(release_cells[j]) for j in theirs], autojunk=False).get_opcodes()
        for tag, a0, a1, b0, b1 in opcodes:
            if tag == "equal" or (tag == "replace" and a1 - a0 == b1 - b0):
                for i, j in zip(mine[a0:a1], theirs[b0:b1]):
                    pair(i, j)
    return matched, moved


def _listed(items: list, separator: str = ", ", most: int = 6) -> str:
    """The first ``most`` items, and how many more (a hostile notebook can have thousands)."""
    shown = separator.join(items[:most])
    return shown + (f"{separator}and {len(items) - most} more" if len(items) > most else "")


def _name(cell, number: int) -> str:
    return nbgrader_meta(cell).get("grade_id") or cell.get("id") or f"cell {number} of the release"


def _excerpt(cell) -> str:
    lines = [line.strip() for line in _source(cell).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text if len(text) <= 60 else text[:57] + "..."
    return ascii(text) if not text.isprintable() else repr(text)


def apply_release_roles(cells: list, ids: list, release_nb) -> list[str]:
    """Give every cell of ``cells`` (a submission's, changed in place) its role in ``release_nb``; return the notes.

    ``ids``: the cell ids as the submission's file has them (nbformat invents ids where a file has none)."""
    release = release_nb.cells
    stripped = not any(nbgrader_meta(c) for c in cells)  # an editor that drops nbgrader metadata: one note, not 40
    matched, moved = match_cells(cells, ids, release)
    notes, added, changed = [], [], []
    edited_tests = []
    for number, (cell, j) in enumerate(zip(cells, matched), start=1):
        if j is None:
            if cell.get("cell_type") == "code" and _source(cell).strip():
                added.append(f"cell {number} ({_excerpt(cell)})")
            cell.get("metadata", {}).pop("nbgrader", None)
            continue
        theirs = release[j]
        if role(cell) != role(theirs):
            changed.append(f"cell {number} ({_name(theirs, j + 1)}) is marked {role(cell)}, the release's is {role(theirs)}")
        if role(theirs) == TEST and _source(cell).strip() != _source(theirs).strip():
            edited_tests.append(_name(theirs, j + 1))
        if "nbgrader" in theirs.get("metadata", {}):
            cell.setdefault("metadata", {})["nbgrader"] = copy.deepcopy(theirs.metadata["nbgrader"])
        else:
            cell.get("metadata", {}).pop("nbgrader", None)
        if restored(theirs):
            cell["source"] = theirs.source
    moved_names = [f"{_name(release[matched[i]], matched[i] + 1)} (now cell {i + 1})" for i in sorted(moved)]
    used = set(matched)
    missing = [j for j in range(len(release)) if j not in used]
    deleted_tests = [_name(release[j], j + 1) for j in missing if role(release[j]) == TEST]
    deleted = [_name(release[j], j + 1) for j in missing if role(release[j]) != TEST]
    for j in (j for j in missing if role(release[j]) == TEST):  # put back after the cell that comes before it
        before = [i for i, k in enumerate(matched) if k is not None and k < j]
        at = max(before) + 1 if before else 0
        cells.insert(at, copy.deepcopy(release[j]))
        matched.insert(at, j)
    if added:
        notes.append("code cell(s) added, not in the release (graded as ordinary cells, their code read like "
                      f"an answer's): {_listed(added)}")
    if changed and stripped:
        notes.append("no cell has nbgrader metadata (an editor dropped it, or it was removed): "
                     "every cell is graded in the release's role")
    elif changed:
        notes.append(f"cell role(s) changed, graded as the release's: {_listed(changed, '; ')}")
    if deleted:
        notes.append(f"cell(s) of the release deleted: {_listed(deleted)}")
    if moved:
        notes.append(f"cell(s) moved from their place in the release: {_listed(moved_names)}")
    if deleted_tests:
        notes.append(f"test cell(s) deleted, restored from the release: {', '.join(deleted_tests)}")
    if edited_tests:
        notes.append(f"test cell(s) edited, the released version was run: {', '.join(edited_tests)}")
    return notes
