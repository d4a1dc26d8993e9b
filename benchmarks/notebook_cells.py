"""Time a notebook's code cells: run them in order as plain Python (no Jupyter), print per cell the wall time and the
user + system CPU time of this process, and the load average at the start and the end; every figure is saved as a PNG
in $FIGDIR (default /tmp/notebook_figures).

usage: env -u COURSE_FAST python benchmarks/notebook_cells.py solutions/05_guided_two_pixel/05_guided_two_pixel.ipynb
(full mode; COURSE_FAST=1 for grading mode). On a machine shared with other work the wall time grows with the load;
the CPU time much less, which is why both are printed.
"""
import json, os, sys, time, traceback
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
figdir = os.environ.get("FIGDIR", "/tmp/notebook_figures")
os.makedirs(figdir, exist_ok=True)
state = {"cell": -1, "k": 0}
def _show(*a, **k):
    for num in plt.get_fignums():
        plt.figure(num).savefig(f"{figdir}/cell{state['cell']:03d}_{state['k']}.png", dpi=70)
        state["k"] += 1
    plt.close("all")
plt.show = _show
path = os.path.abspath(sys.argv[1])
nb = json.load(open(path))
os.chdir(os.path.dirname(path))
sys.path.insert(0, os.getcwd())
g = {"__name__": "__main__"}
bad = 0
t_all = time.time(); c_all = os.times()
print("load at start", os.getloadavg(), flush=True)
for i, c in enumerate(nb["cells"]):
    if c["cell_type"] != "code":
        continue
    src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
    meta = c.get("metadata", {}).get("nbgrader", {})
    test = meta.get("grade") and not meta.get("solution")
    state["cell"] = i; state["k"] = 0
    t = time.time(); c0 = os.times()
    try:
        exec(compile(src, f"<cell {i}>", "exec"), g)
        _show()
        status = "ok"
    except BaseException as e:  # noqa
        bad += 1
        status = "ERROR " + "".join(traceback.format_exception_only(type(e), e)).strip().replace("\n", " | ")[:600]
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    print(f"@@ cell {i:3d} {'TEST ' if test else '     '}wall {time.time() - t:7.2f}s cpu {cpu:7.2f}s {status}", flush=True)
c1 = os.times()
print(f"@@ total wall {time.time() - t_all:.1f}s cpu {(c1.user-c_all.user)+(c1.system-c_all.system):.1f}s, {bad} cell(s) raised; load at end {os.getloadavg()}", flush=True)
sys.exit(1 if bad else 0)
