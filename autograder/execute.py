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
- Test cells are judged here, not in the student's kernel (``grade_test_cell``).
  A test cell is a list of ``check("name", answer, ...)`` calls (its source
  and its role come from the release: ``autograder/roles.py``). For each
  call this process draws the inputs (``grading.plan``), has the kernel run
  the student's ``answer`` on them and send back only the outputs, as plain
  data (``course_utils/grading/wire.py``: ``kernel_code``, ``decode_outcome``: JSON and .npz,
  never pickle), and computes the references, the hints and the verdict
  itself (``grading.judge``). The test cell's outputs are then written by
  this process alone: the passing lines, or the checker's message as an
  error, which is all nbgrader scores. Nothing the student's code does to
  its own process (patching the checker, IPython, the display hook, stack
  frames) reaches the verdict; what it can do is return outputs, which are
  judged like any others.
- Warnings in test cells: nbgrader scores a test cell zero when anything
  reaches stderr; a test passes or fails by its exceptions only, so stderr
  text in a test cell is kept as ordinary output.
- Each kernel gets a fresh folder for its Unix sockets, made here before it
  starts and removed after it stops (``trees.remove_tree``: whatever it left
  there), so that nothing a kernel does to that folder reaches the next one;
  once the kernel has started, the folder takes no new file
  (``sandbox.freeze_socket_folder``).
- Messages are bounded: a message from the kernel larger than
  ``MAX_MESSAGE_BYTES`` is never read into this process (zmq's
  ``MAXMSGSIZE``): zmq drops the kernel's output channel for good, so the cell
  that sent it fails and the remaining cells are not run, as when a kernel
  dies. A message the client cannot decode (nested too deep, out of memory)
  fails the cell it came from. The checker's message in a test cell is cut to
  ``grading.MAX_MESSAGE`` characters.
"""

import ast
import tempfile
from pathlib import Path

import json
import time

import zmq
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_code_cell, new_output
from nbgrader.preprocessors import Execute
from traitlets import Bool, Integer, Unicode, default

from .trees import remove_tree

OUTPUT_LIMIT = "[autograder: output limit reached"
KERNEL_DIED = "KernelDied"
NOT_RUN = "NotRun"
SKIPPED = "[autograder: not run while grading: no graded cell comes after this one]"
GRADER_ERROR = "AutograderError"
MALFORMED = "MalformedMessage"
_CHECK_OPTIONS = {"n_cases": int, "seed": int, "edge_cases": bool}
_UNPARSED = {"SyntaxError", "IndentationError", "TabError", NOT_RUN}  # a cell that did not run as Python
MAX_MESSAGE_BYTES = 80 * 2**20  # largest message read from a kernel: a check's reply (64 MiB of text) and its envelope


class UnrunnableTestCell(ValueError):
    """A test cell that is not a list of ``check(...)`` calls the grader can run itself."""


def parse_test_cell(source: str) -> list:
    """The ``check`` calls of a test cell, as (exercise name, answer's name, options) triples.

    Allowed: imports from course_utils.grading, and calls ``check("name", answer, n_cases=N, seed=S,
    edge_cases=B)`` with literal options and a plain name as the answer. Anything else raises UnrunnableTestCell.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise UnrunnableTestCell(f"the test cell does not parse ({exc.msg})") from None
    calls = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "course_utils.grading":
            continue
        call = node.value if isinstance(node, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "check"
                and len(call.args) == 2 and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)
                and isinstance(call.args[1], ast.Name)):
            raise UnrunnableTestCell(f"line {node.lineno} of the test cell is not `check(\"name\", answer, ...)`")
        options = {}
        for keyword in call.keywords:
            kind = _CHECK_OPTIONS.get(keyword.arg)
            value = keyword.value.value if isinstance(keyword.value, ast.Constant) else None
            if kind is None or type(value) is not kind:
                raise UnrunnableTestCell(f"line {node.lineno} of the test cell has an option the grader does not know")
            options[keyword.arg] = value
        calls.append((call.args[0].value, call.args[1].id, options))
    if not calls:
        raise UnrunnableTestCell("the test cell has no check(...) call")
    return calls


def _is_test_cell(cell) -> bool:
    """A test cell: the grader judges it itself. Its role is the release's (``autograder/roles.py`` rewrote it)."""
    from .roles import TEST, role

    return role(cell) == TEST


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
    """An error output written by the grader; its text is cut to ``grading.MAX_MESSAGE`` characters (it may quote
    what the kernel sent, such as an exception's message)."""
    from course_utils.grading import clip_message

    evalue = clip_message(evalue)
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


def _use_compilation_cache(folder: str) -> None:
    """Keep this process's compiled references in ``folder`` (one writer: one nbgrader run at a time per worker)."""
    import jax

    if jax.config.jax_compilation_cache_dir != folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", folder)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _plan(name: str, options: dict):
    """``grading.plan(name, **options)``, drawn once per process (``course_utils.grading.memo``): every student of the
    class gets the same trials (a fixed seed), and this process grades several in a row. Only the grader's own code
    touches them: the kernel gets copies on the wire."""
    from course_utils import grading
    from course_utils.grading.memo import once

    key = ("plan", name, tuple(sorted(options.items())))
    try:
        hash(key)
    except TypeError:  # options no test cell of the course has: drawn afresh
        return grading.plan(name, **options)
    return once(grading.plan, key, lambda: grading.plan(name, **options))


class LimitedExecute(Execute):
    max_output_bytes = Integer(200_000, help="most bytes of output kept per cell").tag(config=True)
    notebook_timeout = Integer(900, help="seconds after which the remaining cells are not run").tag(config=True)
    run_all_cells = Bool(False, help="also run the code cells after the last graded one").tag(config=True)
    grader_jax_cache = Unicode("", help="a JAX compilation cache for this process (the references it judges with)").tag(config=True)

    @default("shutdown_kernel")
    def _kill_when_done(self):
        """The kernel is killed when the notebook is done (its process group, the sandbox with it), not asked to shut
        down: every output is in by then, and a graceful shutdown waited about 1 s per student, idle (benchmark)."""
        return "immediate"

    def preprocess(self, nb, resources=None, km=None):
        if self.grader_jax_cache:
            _use_compilation_cache(self.grader_jax_cache)
        self._output_bytes = {}
        self._stopped = None  # why the remaining cells are not run
        self._started = time.monotonic()
        self._last_run = last_cell_to_run(nb, self.run_all_cells)
        from course_utils.grading import clip_message

        from .provenance import FLAG, flags, unreadable

        try:
            flagged, unread = flags(nb), unreadable(nb)  # read before anything runs
        except Exception as exc:  # noqa: BLE001 - reading the source must not stop grading
            flagged, unread = {0: [f"the answer cells could not be read ({type(exc).__name__})"]}, {}
        # The kernel works in an empty folder of its own, not in nbgrader's autograded folder: that one holds the
        # notebook with its hidden tests restored (nbgrader writes it there before running it).
        metadata = resources.setdefault("metadata", {})
        path = metadata.get("path")
        scratch = tempfile.mkdtemp(prefix=".kernel-", dir=Path(path).parent if path else None)
        metadata["path"] = scratch
        self._sockets, self._monitor, self._lost = None, None, False
        try:
            nb, resources = super().preprocess(nb, resources, km)
        finally:
            metadata["path"] = path
            self._close_monitor()
            remove_tree(scratch)  # a failure to clean up never stops grading
            if self._sockets is not None:
                remove_tree(self._sockets)
        for index, why in unread.items():  # IPython runs nothing of a cell it cannot parse, unless it was made to
            if index <= self._last_run and not any(o.get("output_type") == "error" and o.get("ename") in _UNPARSED
                                                   for o in nb.cells[index].get("outputs", [])):
                flagged.setdefault(index, []).append(f"the source check cannot read this cell ({why}), "
                                                     "yet the kernel ran it without a SyntaxError")
        for index, reasons in flagged.items():
            nb.cells[index].setdefault("outputs", []).append(
                new_output("stream", name="stdout", text=f"{FLAG} {clip_message('; '.join(reasons), 2000)}]\n"))
        return nb, resources

    def create_kernel_manager(self):
        """nbclient's kernel manager, with a fresh folder for this kernel's Unix sockets (see the module docstring)
        and a bound on the size of the messages its clients accept."""
        km = super().create_kernel_manager()
        if km.transport == "ipc":
            from jupyter_core.paths import jupyter_runtime_dir

            runtime = Path(jupyter_runtime_dir())
            runtime.mkdir(parents=True, exist_ok=True)
            self._sockets = Path(tempfile.mkdtemp(prefix="k-", dir=runtime))
            km.ip = str(self._sockets / "kernel")
        client = km.client

        def bounded_client(**kwargs):
            kc = client(**kwargs)
            kc.context.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # for the sockets it creates from now on
            return kc

        km.client = bounded_client
        return km

    def start_new_kernel_client(self):
        kc = super().start_new_kernel_client()
        if self._sockets is not None:  # the kernel listens: its socket folder takes nothing more
            from .sandbox import freeze_socket_folder

            try:
                freeze_socket_folder(self._sockets)
            except OSError:
                pass
        # Watch the output channel: zmq drops it for good when the kernel sends a message past MAXMSGSIZE.
        iopub = kc.iopub_channel.socket
        address = f"inproc://iopub-monitor-{id(iopub)}"
        iopub.monitor(address, zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED)
        self._monitor = zmq.Context.shadow(kc.context.underlying).socket(zmq.PAIR)
        self._monitor.connect(address)
        return kc

    def _close_monitor(self) -> None:
        """Stop watching the output channel: before the kernel's client is cleaned up, whose context waits for every
        socket of its own to be closed (the monitor's included) before it ends."""
        if getattr(self, "_monitor", None) is not None:
            try:
                self.kc.iopub_channel.socket.disable_monitor()
            except Exception:  # noqa: BLE001 - the channel is already gone
                pass
            self._monitor.close(linger=0)
            self._monitor = None

    def _cleanup_kernel(self):
        self._close_monitor()
        return super()._cleanup_kernel()

    def _output_lost(self) -> bool:
        """Whether the kernel's output channel was dropped (a message past MAX_MESSAGE_BYTES) since the kernel started."""
        from zmq.utils.monitor import recv_monitor_message

        monitor = getattr(self, "_monitor", None)
        while monitor is not None and not self._lost and monitor.poll(0):
            self._lost = recv_monitor_message(monitor)["event"] in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CLOSED)
        return self._lost

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
            if _is_test_cell(cell):
                cell = self.grade_test_cell(cell, index)
            else:
                cell, resources = super().preprocess_cell(cell, resources, index)
        except CellTimeoutError as exc:  # the kernel replied but its output stalled: fail this cell only
            if not self._output_lost():
                cell.outputs.append(_error("CellTimeoutError", f"the cell's output did not arrive in time ({_first_line(exc)})"))
                return cell, resources
        except DeadKernelError:
            cell.outputs.append(_error(KERNEL_DIED, "the kernel died while running this cell "
                                                    "(os._exit, a crash, or the memory limit)"))
            self._stopped = f"the kernel died in cell {index + 1}"
            return cell, resources
        except (RecursionError, MemoryError) as exc:  # a message the client could not decode: this cell fails
            self._reply = None
            cell.outputs = [_error("CheckFailure" if _is_test_cell(cell) else MALFORMED,
                                   f"the kernel sent a message the grader cannot read ({type(exc).__name__}); "
                                   "this cell fails")]
            return cell, resources
        if self._output_lost():
            cell.outputs = [*cell.get("outputs", []), _error(
                "CheckFailure" if _is_test_cell(cell) else MALFORMED,
                f"the kernel's output channel was dropped: it sent a message larger than the grader reads "
                f"({MAX_MESSAGE_BYTES // 2**20} MiB), or closed it; the later cells were not run")]
            self._stopped = f"the kernel sent a message larger than {MAX_MESSAGE_BYTES // 2**20} MiB in cell {index + 1}"
        return cell, resources

    def grade_test_cell(self, cell, index):
        """Judge the test cell's checks in this process (see the module docstring); the kernel only runs answers."""
        from course_utils import grading
        from course_utils.grading import wire

        try:
            calls = parse_test_cell(cell.source)
        except UnrunnableTestCell as exc:
            cell.outputs = [_error(GRADER_ERROR, f"the grader cannot run this test cell: {exc}; tell your instructor")]
            return cell
        passed = []
        for name, answer, options in calls:
            try:
                request = _plan(name, options)
            except Exception as exc:  # noqa: BLE001 - a test of an exercise this course does not have
                cell.outputs = [_error(GRADER_ERROR, f"the grader cannot run this test cell: {type(exc).__name__}: {_first_line(exc)}")]
                return cell
            reply, problem = self._ask_kernel(wire.kernel_code(request, answer), index)
            if reply is None:
                if problem.startswith("CellTimeoutError"):
                    failure = _error("CellTimeoutError", f"{name}: the test did not finish: {problem}")
                else:
                    failure = _error("CheckFailure", f"{name}: the test could not run your answer in the notebook's kernel "
                                                     f"({problem}). Run every cell in order in a fresh kernel and try again.")
                cell.outputs = [*self._passed(passed), failure]
                return cell
            try:
                outcome = wire.decode_outcome(reply)
            except wire.ReplyError as exc:
                outcome = {"malformed": str(exc)}
            ok, text = grading.verdict(request, outcome)
            if not ok:
                cell.outputs = [*self._passed(passed), new_output("error", ename="CheckFailure", evalue=text,
                                                                  traceback=text.splitlines())]
                return cell
            passed.append(text)
        cell.outputs = self._passed(passed)
        return cell

    @staticmethod
    def _passed(lines):
        return [new_output("stream", name="stdout", text="\n".join(lines) + "\n")] if lines else []

    def _ask_kernel(self, code: str, index: int):
        """Run ``code`` in the kernel; return (the reply it displayed, "") or (None, what went wrong).

        While it runs, the kernel's output is not kept (``output``): only the first reply of the checker's type."""
        from course_utils.grading import wire

        probe = new_code_cell(code)
        cell = self.nb.cells[index]
        self._reply = {"data": None, "bytes": 0, "error": ""}
        try:
            self.execute_cell(probe, index, store_history=False)
        finally:
            reply, self._reply = self._reply, None
            self.nb.cells[index] = cell  # nbclient puts the cell it ran in the notebook
        for out in probe.get("outputs", []):
            if out.get("output_type") == "error":
                reply["error"] = reply["error"] or f"{out.get('ename')}: {_first_line(out.get('evalue', ''))}"
        if reply["data"] is None:
            return None, reply["error"] or "it sent no result"
        if reply["bytes"] > wire.MAX_REPLY:
            return None, "its result was larger than the grader accepts"
        return reply["data"], ""

    def output(self, outs, msg, display_id, cell_index):
        if getattr(self, "_reply", None) is not None:  # a check's answer run (_ask_kernel): keep the reply only
            content = msg.get("content", {})
            if msg["msg_type"] == "error":
                self._reply["error"] = self._reply["error"] or f"{content.get('ename')}: {_first_line(content.get('evalue', ''))}"
            data = content.get("data", {}) if msg["msg_type"] == "display_data" else {}
            from course_utils.grading.wire import MIME

            if MIME in data and self._reply["data"] is None:
                text = data[MIME]
                self._reply["bytes"] = len(text) if isinstance(text, str) else 0
                self._reply["data"] = text if isinstance(text, str) else None
            return None
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


class CompileOnly(LimitedExecute):
    """Runs a notebook as grading does, test cells included, to compile what a grading kernel compiles (the warm-up
    of ``grade``); judges nothing: each check's request runs on the notebook's answer in the kernel and its reply is
    dropped. The grader's side of a check (the references) is compiled by each worker's grading process.
    ``progress``, when set, is called after each cell (a progress bar)."""

    progress = None

    @default("shutdown_kernel")
    def _shut_down_gracefully(self):  # nbclient's default: the warm-up runs once per class
        return "graceful"

    def on_cell_executed(self, **kwargs):
        super().on_cell_executed(**kwargs)
        if self.progress is not None:
            self.progress()

    def grade_test_cell(self, cell, index):
        from course_utils import grading
        from course_utils.grading import wire

        try:
            calls = parse_test_cell(cell.source)
        except UnrunnableTestCell:
            return cell
        for name, answer, options in calls:
            self._ask_kernel(wire.kernel_code(_plan(name, options), answer), index)
        cell.outputs = []
        return cell
