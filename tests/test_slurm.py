"""``report --plan --format slurm``: one sbatch job per command, afterok links in plan order.

The script is run under bash with a fake ``sbatch`` that records its arguments and hands out
job ids, so the structure is checked without a scheduler."""
from __future__ import annotations

import os
import re
import shlex
import subprocess

import pytest

from advkd.cli import main
from advkd.report import slurm

FAKE_SBATCH = """#!/usr/bin/env bash
n=$(( $(cat "$SBATCH_LOG.n" 2>/dev/null || echo 100) + 1 )); echo $n > "$SBATCH_LOG.n"
printf '%s\\0' "$@" > "$SBATCH_LOG.$n"
echo $n
"""


@pytest.mark.parametrize(("table", "preset"), [("table2", "paper"), ("bmtard-table3", "small")])
def test_the_slurm_plan_submits_every_command_after_the_runs_it_reads(tmp_path, capsys, monkeypatch, table, preset):
    runs = tmp_path / "runs"
    monkeypatch.setenv("ADVKD_SLURM_ARGS", "--partition=gpu")  # read when the script is written
    only = ["--only", "student=resnet18", "--only", "dataset=cifar10"]
    assert main(["report", table, "--plan", "--preset", preset, *only, "--runs-dir", str(runs)]) == 0
    sh = [c for c in capsys.readouterr().out.splitlines() if c.startswith("advkd ")]
    assert main(["report", table, "--plan", "--preset", preset, *only, "--format", "slurm", "--runs-dir", str(runs)]) == 0
    script = tmp_path / "plan.sh"
    script.write_text(capsys.readouterr().out)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sbatch").write_text(FAKE_SBATCH)
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    log = tmp_path / "sbatch.log"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SBATCH_LOG": str(log)}
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    submitted = []  # (job id, dependency ids, wrapped command, all arguments)
    for job_id in range(101, int((tmp_path / "sbatch.log.n").read_text()) + 1):
        job_id = str(job_id)
        args = (tmp_path / f"sbatch.log.{job_id}").read_text().split("\0")[:-1]
        deps = next((a.split(":", 1)[1].split(":") for a in args if a.startswith("--dependency=afterok:")), [])
        wrap = args[args.index("--wrap") + 1]
        assert wrap.startswith(slurm.HARNESS)
        submitted.append((job_id, deps, wrap.split(f"{slurm.REQUEUE_FUNCTION} ")[-1], args))
    assert [cmd for _, _, cmd, _ in submitted] == sh  # every command, once, in the plan's order
    ids = [job_id for job_id, *_ in submitted]
    creates = {}  # run dir -> job id
    for job_id, deps, cmd, args in submitted:
        assert all(ids.index(d) < ids.index(job_id) for d in deps)  # only earlier jobs: no cycle
        assert "--partition=gpu" in args and any(a.startswith("--time=") for a in args)
        assert "--signal=B:USR1@120" in args and "--requeue" in args
        verb = cmd.split()[1]
        read = set(re.findall(r"(\S+)/best\.safetensors", cmd))
        assert {creates[r] for r in read if r in creates} == set(deps)  # exactly the runs it reads
        if verb in ("pretrain-teacher", "distill"):
            assert "--resume" in cmd
            name = _run_of(cmd, runs)
            creates[name] = job_id
        else:
            assert deps, f"an attack waits for its checkpoint: {cmd}"
    assert any(deps for _, deps, cmd, _ in submitted if " --teacher " in cmd or " --robust-teacher " in cmd)


def _run_of(cmd: str, runs) -> str:
    """The run dir a training command creates, as the plan's later commands name it."""
    from advkd.core.runs import default_name, run_dir
    from advkd.training.config import TrainConfig, resolve_config

    w = shlex.split(cmd)
    opts = dict(zip(w[2::2], w[3::2]))
    kind = w[1]
    cfg = resolve_config(TrainConfig(kind=kind), preset=opts["--preset"], set_items=[v for k, v in zip(w[2::2], w[3::2]) if k == "--set"],
                         flags={"method": opts["--method"], "arch": opts.get("--arch") or opts["--student"], "dataset": opts["--dataset"],
                                "seed": int(opts.get("--seed", 0))})
    cfg = cfg.__class__(**{**cfg.__dict__, "paper_arch": opts.get("--arch") or opts["--student"]})
    teachers = {r: _paper_arch(opts[f"--{r.replace('_', '-')}"]) for r in ("teacher", "clean_teacher", "robust_teacher") if f"--{r.replace('_', '-')}" in opts}
    return str(run_dir(runs, kind, opts["--dataset"], default_name(cfg, teachers)))


def _paper_arch(path: str) -> str:
    name = path.rsplit("/", 2)[-2]
    return "-".join(name.split("-")[:2]) if name.startswith("wrn") else name.split("-")[0]


def test_an_unknown_plan_format_is_one_line(tmp_path, capsys):
    assert main(["report", "table2", "--plan", "--format", "latex", "--runs-dir", str(tmp_path)]) == 2
    assert "--plan --format latex: one of sh, slurm" in capsys.readouterr().err


FAKE_ADVKD = """#!/bin/sh
echo started > "$JOB_DIR/started"
[ "$1" = finish ] && exit 0
trap 'echo saved > "$JOB_DIR/saved"; exit 75' USR1 TERM
while :; do sleep 0.05; done
"""
FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "$JOB_DIR/scontrol"
"""


@pytest.mark.parametrize("sig", ["USR1", "TERM"])
def test_a_job_warned_before_its_limit_forwards_the_signal_and_requeues_itself(sig, tmp_path):
    import signal
    import time

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("advkd", FAKE_ADVKD), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_DIR": str(tmp_path), "SLURM_JOB_ID": "4242"}
    job = subprocess.Popen(["sh", "-c", slurm.wrapped("advkd distill --method rslad --resume")], env=env)
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # the harness is in its wait
    job.send_signal(getattr(signal, f"SIG{sig}"))  # what Slurm sends the batch shell (B:USR1@120) or every process (TERM)
    assert job.wait(timeout=30) == 75
    assert (tmp_path / "saved").exists()  # advkd got the signal and saved
    assert (tmp_path / "scontrol").read_text().split() == ["requeue", "4242"]


def test_a_job_that_finishes_is_not_requeued(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("advkd", FAKE_ADVKD), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_DIR": str(tmp_path), "SLURM_JOB_ID": "7"}
    assert subprocess.run(["sh", "-c", slurm.wrapped("advkd finish")], env=env, timeout=30).returncode == 0
    assert not (tmp_path / "scontrol").exists()
