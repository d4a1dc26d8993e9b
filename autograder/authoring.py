"""Edit solution notebooks as plain text, for developers who prefer an editor to Jupyter.

    python -m autograder.authoring export solutions/01_forward_process/01_forward_process.ipynb > /tmp/01.py
    (edit /tmp/01.py)
    python -m autograder.authoring build /tmp/01.py solutions/01_forward_process/01_forward_process.ipynb

The notebook stays the single source of truth: the text form is a temporary
view of it, and export followed by build gives the notebook back unchanged.
Each cell starts with a header line

    # %% md|code [solution|tests|manual|free] [id=GRADE_ID] [points=N]

A cell with no role is a read-only (locked) cell; `solution` is an exercise
cell, `tests` an autograded test cell, `manual` a written answer graded by
hand, and `free` a cell without nbgrader metadata.
"""

import re
import sys

import nbformat

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def build(text: str):
    """A notebook from the text form."""
    parts = re.split(r"^# %% (.*)$", text, flags=re.M)
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}}
    for number, (header, body) in enumerate(zip(parts[1::2], parts[2::2]), start=1):
        words = header.split()
        kind = words[0]
        opts = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        role = next((w for w in words[1:] if "=" not in w), "readonly")
        body = body.strip("\n")
        cell = nbformat.v4.new_markdown_cell(body) if kind == "md" else nbformat.v4.new_code_cell(body)
        grade_id = opts.get("id", f"cell-{number:02d}")
        cell.id = grade_id
        meta = {"grade": False, "grade_id": grade_id, "locked": True, "schema_version": 3, "solution": False, "task": False}
        if role == "solution":
            meta.update(solution=True, locked=False)
        elif role == "tests":
            meta.update(grade=True, points=int(opts.get("points", 1)))
        elif role == "manual":
            meta.update(grade=True, solution=True, locked=False, points=int(opts.get("points", 1)))
        elif role not in ("readonly", "free"):
            raise ValueError(f"cell {number}: unknown role {role!r}")
        if role != "free":
            cell.metadata["nbgrader"] = meta
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def export(nb) -> str:
    """The text form of a notebook."""
    chunks = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader")
        words = ["md" if cell.cell_type == "markdown" else "code"]
        if meta is None:
            words.append("free")
        elif meta.get("solution") and meta.get("grade"):
            words.append("manual")
        elif meta.get("solution"):
            words.append("solution")
        elif meta.get("grade"):
            words.append("tests")
        words.append(f"id={meta['grade_id'] if meta else cell.id}")
        if meta and meta.get("grade"):
            words.append(f"points={meta['points']:g}")
        chunks.append(f"# %% {' '.join(words)}\n{cell.source}\n")
    return "\n".join(chunks)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "export":
        sys.stdout.write(export(nbformat.read(args[1], as_version=4)))
        return 0
    if len(args) == 3 and args[0] == "build":
        with open(args[1]) as f:
            nbformat.write(build(f.read()), args[2])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
