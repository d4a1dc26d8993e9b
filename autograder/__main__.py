"""python -m autograder {release,grade} ...: the instructor's commands."""

import argparse
import sys
from pathlib import Path

from . import course


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_release = sub.add_parser("release", help="regenerate notebooks/ (student versions) from solutions/")
    p_release.add_argument("assignments", nargs="*", help="assignment names (default: all)")

    p_grade = sub.add_parser("grade", help="autograde a folder of submissions and write a grade table")
    p_grade.add_argument("assignment", help="for example 01_forward_process")
    p_grade.add_argument("submissions", type=Path, help="a folder with one folder per student")
    p_grade.add_argument("--workdir", type=Path, default=course.REPO / "grading",
                         help="nbgrader's course directory (default: grading/ in the repository)")
    p_grade.add_argument("--timeout", type=int, default=120, help="time limit per cell, in seconds (default 120)")
    p_grade.add_argument("--out", type=Path, default=None, help="the grade table (default: WORKDIR/grades_ASSIGNMENT.csv)")

    args = parser.parse_args(argv)
    if args.command == "release":
        from .release import release

        for name in args.assignments or course.assignments():
            print(f"released {release(name).relative_to(course.REPO)}")
        return 0
    from .grade import grade, write_table

    results = grade(args.assignment, args.submissions, args.workdir, args.timeout)
    out = write_table(results, args.out or Path(args.workdir) / f"grades_{args.assignment}.csv")
    for r in results:
        score = f"{r.score:g} / {r.max_score:g}" if r.status == "graded" else "-"
        print(f"{r.student:>20}  {score:>9}  {r.status}")
    print(f"grade table: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
