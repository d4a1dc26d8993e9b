"""nbgrader's Execute step with the limits that a class of real submissions needs.

Used by the nbgrader configuration of every grading directory
(``autograder.course.CONFIG_TEMPLATE``) in place of nbgrader's ``Execute``.
It runs in nbgrader's process, outside the student's reach:

- Output size: a cell's outputs are counted as they arrive; past
  ``max_output_bytes`` the rest is dropped and one line says so
  (``OUTPUT_LIMIT``). The notebook and nbgrader's memory stay small
  whatever the student prints.
- Kernel death (``os._exit``, a crash, the memory limit): nbgrader would give
  up on the whole notebook and grade nothing. Here the cell gets a
  ``KernelDied`` error and every later code cell a ``NotRun`` error, so the
  tests that ran keep their points and the others score zero (an unexecuted
  test cell would otherwise count as passed).
- A cell whose output stalls after it ran (nbclient's IOPub timeout, seen on an
  overloaded machine) fails alone instead of failing the whole notebook.
- Whole-notebook time: after ``notebook_timeout`` seconds the remaining code
  cells are not run (``NotRun``), so a kernel that ignores interrupts cannot
  hold a worker for cells x per-cell timeout.
- Cells after the last graded code cell (the course's demonstrations:
  training runs, experiments, figures) are not run unless ``run_all_cells``
  is set: nothing they compute can change a grade, and in notebook 04 they
  are 60 % of the running time. Each gets one line of output saying so
  (``SKIPPED``), which the student sees in the feedback.
- Warnings in test cells: nbgrader scores a test cell zero when anything
  reaches stderr; a test passes or fails by its exceptions only, so stderr
  text in a test cell is kept as ordinary output.
"""

import json
import time

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_output
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer

OUTPUT_LIMIT = "[autograder: output limit reached"
KERNEL_DIED = "KernelDied"
NOT_RUN = "NotRun"
SKIPPED = "[autograder: not run while grading: no graded cell comes after this one]"


def _is_test_cell(cell) -> bool:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def last_graded_cell(nb) -> int:
    """Index of the last code cell that carries points (a test, or a hand-graded code answer).

    A notebook without one runs whole: the index of its last cell.
    """
    graded = [i for i, c in enumerate(nb.cells)
              if c.get("cell_type") == "code" and c.get("metadata", {}).get("nbgrader", {}).get("grade")]
    return graded[-1] if graded else len(nb.cells) - 1


def last_cell_to_run(nb, run_all_cells: bool) -> int:
    """Index of the last cell that grading runs: the last graded cell, or with ``run_all_cells`` the last cell."""
    return len(nb.cells) - 1 if run_all_cells else last_graded_cell(nb)


def _first_line(exc) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _error(ename: str, evalue: str):
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class LimitedExecute(Execute):
    max_output_bytes = Integer(200_000, help="most bytes of output kept per cell").tag(config=True)
    notebook_timeout = Integer(900, help="seconds after which the remaining cells are not run").tag(config=True)
    run_all_cells = Bool(False, help="also run the code cells after the last graded one").tag(config=True)

    def preprocess(self, nb, resources=None, km=None):
        self._output_bytes = {}
        self._stopped = None  # why the remaining cells are not run
        self._started = time.monotonic()
        self._last_run = last_cell_to_run(nb, self.run_all_cells)
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or not cell.source.strip():
            return cell, resources
        if index > self._last_run:
            cell.outputs = [new_output("stream", name="stdout", text=SKIPPED + "\n")]
            return cell, resources
        if self._stopped is None and time.monotonic() - self._started > self.notebook_timeout:
            self._stopped = f"the notebook's time limit of {self.notebook_timeout} s was reached before this cell"
        if self._stopped is not None:
            cell.outputs = [_error(NOT_RUN, f"not run: {self._stopped}")]
            return cell, resources
        try:
            return super().preprocess_cell(cell, resources, index)
        except CellTimeoutError as exc:  # the kernel replied but its output stalled: fail this cell only
            cell.outputs.append(_error("CellTimeoutError", f"the cell's output did not arrive in time ({_first_line(exc)})"))
            return cell, resources
        except DeadKernelError:
            cell.outputs.append(_error(KERNEL_DIED, "the kernel died while running this cell "
                                                    "(os._exit, a crash, or the memory limit)"))
            self._stopped = f"the kernel died in cell {index + 1}"
            return cell, resources

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        used = self._output_bytes.get(cell_index, 0)
        if used + size > self.max_output_bytes:
            if used <= self.max_output_bytes:
                outs.append(new_output("stream", name="stdout",
                                       text=f"\n{OUTPUT_LIMIT} of {self.max_output_bytes} bytes; the rest of this cell's output was dropped]\n"))
                self._output_bytes[cell_index] = self.max_output_bytes + 1
            return None
        self._output_bytes[cell_index] = used + size
        if (msg["msg_type"] == "stream" and msg["content"].get("name") == "stderr"
                and _is_test_cell(self.nb.cells[cell_index])):
            msg = {**msg, "content": {**msg["content"], "name": "stdout"}}
        return super().output(outs, msg, display_id, cell_index)
