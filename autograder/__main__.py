"""python -m autograder {release,grade,feedback,export,report,demo}: the instructor's commands.

Installed with the course (``pip install -e ".[instructor]"``), the same commands run from any directory as
``course-autograder``; the course is the repository the package was installed from. ``grade`` works in a course
directory (``--workdir``, default ``grading/``) that ``feedback``, ``export``
and ``report`` read afterwards; see the README's instructor section.
"""

import argparse
import os
import sys
import zipfile
from pathlib import Path

from . import course

DEFAULT_WORKDIR = course.REPO / "grading"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def write_bundle(names: list[str], path: Path) -> Path:
    """A zip of the released notebooks (``NAME/NAME.ipynb`` and their files) to hand to students."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name in names:
            for file in sorted((course.NOTEBOOKS / name).rglob("*")):
                if file.is_file() and ".ipynb_checkpoints" not in file.parts:
                    bundle.write(file, file.relative_to(course.NOTEBOOKS))
    return path


def _printable(text: str) -> str:
    """Text from a submission as one terminal line: control characters escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _print_results(results) -> None:
    for r in results:
        score = f"{r.score:g} / {r.max_score:g}" if r.graded else "-"
        print(_printable(f"{r.student:>20}  {score:>9}  {r.status}{': ' + r.reason if r.reasons else ''}"))


def version() -> str:
    """The course's version (pyproject.toml), where its repository is, and the nbgrader that grades."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        nbgrader = installed("nbgrader")
    except PackageNotFoundError:
        nbgrader = "not installed (pip install -e \".[instructor]\")"
    from .colab import settings

    return f"course {settings()['version']} at {course.REPO}; nbgrader {nbgrader}; Python {sys.version.split()[0]}"


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per instructor's step, every argument with its help."""
    parser = argparse.ArgumentParser(prog=os.path.basename(sys.argv[0]) if sys.argv[0].endswith("course-autograder")
                                     else "python -m autograder", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("release", help="regenerate notebooks/ (student versions) from solutions/")
    p.add_argument("assignments", nargs="*", help="assignment names (default: all)")
    p.add_argument("--bundle", type=Path, default=None, help="also write a zip of the released notebooks for students")

    p = sub.add_parser("grade", help="autograde a folder or zip of submissions")
    p.add_argument("assignment", help="for example 01_forward_process")
    p.add_argument("submissions", type=Path,
                   help="a folder (or zip) with one folder per student, or notebooks named STUDENT_anything.ipynb")
    p.add_argument("--workers", type=_positive, default=os.cpu_count() or 1,
                   help="submissions graded at once (default: the number of cores)")
    p.add_argument("--timeout", type=_positive, default=120, help="time limit per cell, in seconds (default 120)")
    p.add_argument("--notebook-timeout", type=_positive, default=900,
                   help="time limit for a whole notebook, in seconds (default 900)")
    p.add_argument("--memory-mb", type=_positive, default=4096, help="memory limit of a kernel, in MiB (default 4096)")
    p.add_argument("--output-kb", type=_positive, default=200, help="output kept per cell, in kB (default 200)")
    p.add_argument("--allow-network", action="store_true", help="let the kernels use the network")
    p.add_argument("--allow-unsandboxed", action="store_true",
                   help="grade even where the bubblewrap sandbox is unavailable (every grade is marked NOT ISOLATED)")
    p.add_argument("--run-all-cells", action="store_true",
                   help="also run the cells after the last graded cell (the figures and experiments: slower, same scores)")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not warm a JAX compilation cache by grading the solution first (slower, same scores)")
    p.add_argument("--restart", action="store_true",
                   help="grade everyone again (by default a rerun in the same WORKDIR keeps the results of the students "
                        "an earlier run completely graded, if their notebook, the assignment, the limits and the code "
                        "are unchanged)")
    p.add_argument("--shard", type=_shard, default=None, metavar="K/N",
                   help="grade only the K-th of N shards of the class (each student's shard comes from a hash of the "
                        "id), into a WORKDIR of its own; `merge` then joins the N folders (several machines)")
    p.add_argument("--out", type=Path, default=None, help="the grade table (default: WORKDIR/grades_ASSIGNMENT.csv)")

    p = sub.add_parser("merge", help="merge the course folders of a class graded in shards (grade --shard K/N) into one")
    p.add_argument("folders", type=Path, nargs="+", help="the N shards' course folders (their --workdir)")
    p.add_argument("--assignment", default=None,
                   help="the graded notebook (default: the one the folders hold results of, when there is one)")

    for name, what in (("feedback", "write one feedback page per student (WORKDIR/feedback/STUDENT/ASSIGNMENT.html)"),
                       ("export", "write the grade table, hand-graded points included (CSV)"),
                       ("report", "write the HTML class report")):
        p = sub.add_parser(name, help=what)
        p.add_argument("assignment", help="the graded notebook, for example 02_loss_comparison")
        p.add_argument("--out", type=Path, default=None, help="where to write it (default: in WORKDIR)")
        if name == "export":
            p.add_argument("--format", choices=("csv", "canvas", "moodle"), default="csv",
                           help="csv: every test cell's score (default); canvas: Canvas's gradebook import; moodle: "
                                "Moodle's CSV grade import (see the README for their columns)")
            p.add_argument("--column", default=None,
                           help="the assignment's name on the platform, the grade column's title (default: ASSIGNMENT)")

    p = sub.add_parser("gradescope", help="write the Gradescope autograder zip of a notebook (setup.sh, run_autograder)")
    p.add_argument("assignment", help="the notebook, for example 02_loss_comparison")
    p.add_argument("--out", type=Path, default=Path("dist"), help="folder of the zip (default: dist/)")

    p = sub.add_parser("demo", help="grade a synthetic class end to end and write export, feedback and report")
    p.add_argument("--assignment", default="02_loss_comparison", help="the notebook (default 02_loss_comparison)")
    p.add_argument("--workers", type=_positive, default=os.cpu_count() or 1,
                   help="submissions graded at once (default: the number of cores)")

    for p in sub.choices.values():
        if p.prog.split()[-1] not in ("release", "gradescope"):
            p.add_argument("--workdir", type=Path,
                           default=DEFAULT_WORKDIR if p.prog.split()[-1] != "demo" else course.REPO / "grading-demo",
                           help="nbgrader's course directory (default: grading/, or grading-demo/ for demo)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "release":
        from .colab import settings, stamp_sources
        from .release import release

        names = [course.check_assignment(n) for n in args.assignments] or course.assignments()
        for path in stamp_sources(names):
            print(f"wrote the course's address ({settings()['repository']}) into {path.relative_to(course.REPO)}")
        for name in names:
            print(f"released {release(name).relative_to(course.REPO)}")
        if args.bundle:
            print(f"student bundle: {write_bundle(names, args.bundle)}")
        return 0
    if args.command == "gradescope":
        from .gradescope import write_zip

        print(f"Gradescope autograder: {write_zip(course.check_assignment(args.assignment), args.out)}")
        return 0
    if args.command == "demo":
        from .demo import run_demo

        course.check_assignment(args.assignment)
        out = run_demo(args.assignment, args.workdir, args.workers)
        _print_results(out["results"])
        print(f"gradebook: {args.workdir / 'gradebook.db'}\nexport: {out['export']}\n"
              f"feedback: {out['feedback'][0].parent.parent}/STUDENT/{args.assignment}.html\nreport: {out['report']}")
        return 0

    from .grade import grade
    from .results import NOT_ISOLATED, load_results, write_table

    if args.command == "merge":
        from .shards import merge

        assignment = course.check_assignment(args.assignment or _graded_assignment(args.folders))
        results = merge(assignment, args.folders, args.workdir)
        out = write_table(results, args.workdir / f"grades_{assignment}.csv")
        _print_results(results)
        print(f"grade table: {out}")
        return 0
    course.check_assignment(args.assignment)
    if args.command == "grade":
        limits = course.Limits(timeout=args.timeout, notebook_timeout=args.notebook_timeout,
                               memory_mb=args.memory_mb, output_bytes=args.output_kb * 1000,
                               network=args.allow_network, run_all_cells=args.run_all_cells)
        results = grade(args.assignment, args.submissions, args.workdir, limits, workers=args.workers,
                        compile_cache=not args.no_compile_cache, allow_unsandboxed=args.allow_unsandboxed,
                        restart=args.restart, shard=args.shard)
        out = write_table(results, args.out or args.workdir / f"grades_{args.assignment}.csv")
        _print_results(results)
        print(f"grade table: {out}" + ("" if course.sandboxed(args.workdir) else f" [{NOT_ISOLATED}]"))
        return 0
    results = load_results(args.workdir, args.assignment)
    if args.command == "export" and args.format != "csv":
        from .lms import write_lms

        out = write_lms(results, args.out or args.workdir / f"grades_{args.assignment}_{args.format}.csv", args.format,
                        args.column or args.assignment)
        print(f"{args.format} grade import: {out}")
    elif args.command == "export":
        print(f"grade table: {write_table(results, args.out or args.workdir / f'grades_{args.assignment}.csv')}")
    elif args.command == "feedback":
        from .feedback import write_feedback

        paths = write_feedback(results, args.assignment, args.out or args.workdir / "feedback", log=print)
        print(f"feedback for {len(paths)} students in {paths[0].parent.parent if paths else args.out}")
    else:
        from .report import write_report

        out = write_report(results, args.assignment, args.out or args.workdir / f"report_{args.assignment}.html")
        print(f"report: {out}")
    return 0


def _shard(text: str) -> tuple[int, int]:
    from .shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _graded_assignment(folders) -> str:
    """The one assignment the folders hold grading results of (``merge`` without ``--assignment``)."""
    names = {p.name[len("results_"):-len(".json")] for f in folders for p in Path(f).glob("results_*.json")}
    if len(names) != 1:
        raise SystemExit(f"merge: the folders hold results of {', '.join(sorted(names)) or 'no assignment'}: "
                         "name one with --assignment")
    return names.pop()


def cli() -> None:
    """The ``course-autograder`` console command: refuses clearly where the course's repository is not installed."""
    if not course.SOLUTIONS.is_dir():
        sys.exit(f"course-autograder: no course at {course.REPO} (no solutions/ folder): install the course's "
                 "repository in place, `pip install -e PATH/TO/REPOSITORY[instructor]`, so the command finds it")
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
