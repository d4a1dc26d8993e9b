"""A class graded on several machines: shards, their merge, and the Slurm and Kubernetes examples (autograder/deploy).

The examples are not run here (no cluster); they are checked as their tools would read them: the shell scripts by
``bash -n`` and Slurm's option names, the Kubernetes files as an Indexed Job, and every command they run by the
course's own command-line parser, with the values the scheduler substitutes."""

import collections
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from autograder import course
from autograder.__main__ import build_parser
from autograder.shards import in_shard, parse_shard, shard_of

DEPLOY = course.REPO / "autograder" / "deploy"


def test_a_shard_is_k_of_n():
    assert parse_shard("2/5") == (2, 5) and parse_shard("1/1") == (1, 1)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["grade", "02_loss_comparison", "subs", "--shard", "5/4"])


def test_a_students_shard_depends_on_the_id_alone_and_the_shards_are_even():
    ids = [f"student{i:04d}" for i in range(2000)]
    counts = collections.Counter(shard_of(s, 8) for s in ids)
    assert set(counts) == set(range(1, 9)) and all(200 <= c <= 300 for c in counts.values()), counts
    assert [shard_of(s, 8) for s in ids[:50]] == [shard_of(s, 8) for s in reversed(ids[:50])][::-1]
    for s in ids[:200]:
        assert sum(in_shard(s, (k, 8)) for k in range(1, 9)) == 1
    assert in_shard("anyone", None)


def _commands(text: str, program: str = "course-autograder") -> list[list[str]]:
    """The course-autograder commands of a shell text (continuation lines joined, ``&&`` chains split)."""
    text = text.replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        for part in line.split("&&"):
            words = shlex.split(part.strip(), comments=True) if part.strip() else []
            if words and words[0] == program:
                out.append(words[1:])
    return out


def _substitute(text: str, values: dict) -> str:
    if "JOB_COMPLETION_INDEX" in values:
        text = re.sub(r"\$\(\(JOB_COMPLETION_INDEX \+ 1\)\)", str(values["JOB_COMPLETION_INDEX"] + 1), text)
    return re.sub(r"\$\{?([A-Z_]+)\}?", lambda m: str(values.get(m.group(1), m.group(0))), text)


SBATCH_OPTIONS = {"job-name", "array", "cpus-per-task", "mem", "time", "output", "error", "partition", "nodes",
                  "ntasks", "dependency", "export"}


@pytest.mark.parametrize("name", ["slurm_grade.sbatch", "slurm_merge.sbatch"])
def test_the_slurm_examples_are_valid_and_run_the_courses_commands(name):
    text = (DEPLOY / name).read_text()
    assert subprocess.run(["bash", "-n", str(DEPLOY / name)], capture_output=True).returncode == 0
    options = dict(re.findall(r"^#SBATCH --([a-z-]+)=(\S+)", text, flags=re.M))
    assert options and set(options) <= SBATCH_OPTIONS, options
    assert re.fullmatch(r"\d+G", options["mem"]) and re.fullmatch(r"\d\d:\d\d:\d\d", options["time"])
    values = {"ASSIGNMENT": "04_denoising_2d", "SUBMISSIONS": "/shared/subs.zip", "COURSE": "/shared/course",
              "SLURM_CPUS_PER_TASK": options["cpus-per-task"]}
    commands = []
    if "array" in options:
        first, last = map(int, options["array"].split("-"))
        shards = int(re.search(r"^SHARDS=(\d+)$", text, flags=re.M).group(1))
        assert (first, last) == (1, shards), "the array must run the shards 1..SHARDS exactly"
        for task in range(first, last + 1):
            commands += _commands(_substitute(text, values | {"SLURM_ARRAY_TASK_ID": task, "SHARDS": shards}))
        parsed = [build_parser().parse_args(c) for c in commands]
        assert sorted(p.shard for p in parsed) == [(k, shards) for k in range(1, shards + 1)]
        assert len({p.workdir for p in parsed}) == shards, "each shard needs a course folder of its own"
    else:
        commands = _commands(_substitute(text, values))
        parsed = [build_parser().parse_args(c) for c in commands]
        assert [p.command for p in parsed] == ["merge", "export", "feedback", "report"]
        assert len({p.workdir for p in parsed}) == 1


def test_the_kubernetes_examples_are_an_indexed_job_and_its_merge():
    grade_job = yaml.safe_load((DEPLOY / "kubernetes_grade.yaml").read_text())
    merge_job = yaml.safe_load((DEPLOY / "kubernetes_merge.yaml").read_text())
    for job in (grade_job, merge_job):
        assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job" and job["metadata"]["name"]
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] in ("Never", "OnFailure")
        (container,) = pod["containers"]
        assert container["image"] and container["command"] == ["/bin/sh", "-c"] and len(container["args"]) == 1
        mounts = {m["name"] for m in container["volumeMounts"]}
        assert mounts == {v["name"] for v in pod["volumes"]}
    spec = grade_job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    n = spec["completions"]
    container = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    shards, folders = [], set()
    for index in range(n):
        (command,) = _commands(_substitute(container["args"][0], env | {"JOB_COMPLETION_INDEX": index}))
        args = build_parser().parse_args(command)
        assert args.command == "grade" and args.workers == int(container["resources"]["requests"]["cpu"])
        shards.append(args.shard)
        folders.add(args.workdir)
    assert shards == [(k, n) for k in range(1, n + 1)] and len(folders) == n
    merge_container = merge_job["spec"]["template"]["spec"]["containers"][0]
    menv = {e["name"]: e["value"] for e in merge_container["env"]}
    parsed = [build_parser().parse_args(c) for c in _commands(_substitute(merge_container["args"][0], menv))]
    assert [p.command for p in parsed] == ["merge", "export", "feedback", "report"]
    assert all(str(f).startswith(str(Path(next(iter(folders))).parent)) for f in parsed[0].folders)
