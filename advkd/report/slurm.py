"""``advkd report ID --plan --format slurm``: the plan as Slurm jobs with ``afterok`` dependencies.

A paper table at paper scale is dozens of GPU runs. Each command of the plan becomes one
``sbatch --wrap`` job; a job depends (``--dependency=afterok:``) on every earlier job whose run
it reads (a teacher's or student's ``best.safetensors`` named in its command), so teachers run
before their students and students before their attacks. Every training command carries
``--resume``, so a requeued job continues where it stopped. Requests come from a per-scale table
that environment variables override.

Preemption: every job asks for USR1 :data:`WARNING_SECONDS` before its time limit
(``--signal=B:USR1@120``, to the batch shell) and is ``--requeue``-able. The wrapped shell
(:data:`HARNESS`) forwards USR1 and TERM to advkd, which finishes its batch, saves a mid-epoch
resume state and exits 75 (an attack keeps its finished attacks); on 75 the job requeues itself
(``scontrol requeue``), keeping its job id, so the ``afterok`` chain of the plan still holds.
"""
from __future__ import annotations

import os
import shlex
from typing import Any

from advkd.core.runs import BEST

# scale -> sbatch requests (time limits per job kind); override with ADVKD_SLURM_GRES,
# ADVKD_SLURM_TIME_TRAIN, ADVKD_SLURM_TIME_ATTACK, and extra sbatch flags in ADVKD_SLURM_ARGS
REQUESTS: dict[str, dict[str, str]] = {
    "paper": {"gres": "gpu:1", "train": "72:00:00", "attack": "12:00:00", "cpus": "8"},
    "small": {"gres": "gpu:1", "train": "02:00:00", "attack": "01:00:00", "cpus": "4"},
    "mini": {"gres": "gpu:1", "train": "00:30:00", "attack": "00:30:00", "cpus": "4"},
}
TRAIN_VERBS = ("pretrain-teacher", "distill")
WARNING_SECONDS = 120  # USR1 this long before the time limit: time to finish a batch and save
REQUEUE_FUNCTION = "advkd_requeueing"
# POSIX sh (sbatch --wrap): run the command in the background, forward USR1/TERM to it, wait for it
# (a trapped signal interrupts wait, so wait again while it lives), requeue on advkd's exit 75
HARNESS = (
    f'{REQUEUE_FUNCTION}() {{ "$@" & p=$!; trap \'kill -USR1 $p 2>/dev/null\' USR1; trap \'kill -TERM $p 2>/dev/null\' TERM; '
    "while :; do wait $p; rc=$?; kill -0 $p 2>/dev/null || break; done; "
    'if [ "$rc" -eq 75 ]; then scontrol requeue "$SLURM_JOB_ID" || true; fi; exit $rc; }; '
)


def wrapped(command: str) -> str:
    """The ``--wrap`` text of one job: :data:`HARNESS` around ``command``."""
    return f"{HARNESS}{REQUEUE_FUNCTION} {command}"


def requests(scale: str) -> dict[str, str]:
    out = dict(REQUESTS.get(scale, REQUESTS["paper"]))
    for key, env in (("gres", "ADVKD_SLURM_GRES"), ("train", "ADVKD_SLURM_TIME_TRAIN"), ("attack", "ADVKD_SLURM_TIME_ATTACK")):
        if os.environ.get(env):
            out[key] = os.environ[env]
    return out


def slurm_script(jobs: list[Any], header: list[str], scale: str) -> str:
    """A bash script that submits ``jobs`` (objects with ``command`` and ``run``, in plan order)."""
    req = requests(scale)
    extra = shlex.split(os.environ.get("ADVKD_SLURM_ARGS", ""))
    lines = [
        "#!/usr/bin/env bash",
        *header,
        f"# {len(jobs)} Slurm jobs at {scale} scale: submit with `bash THIS_FILE` (each job waits for the runs it reads: afterok)",
        f"# requests: --gres={req['gres']} --cpus-per-task={req['cpus']}, --time={req['train']} per training, {req['attack']} per attack;",
        "# override with ADVKD_SLURM_GRES, ADVKD_SLURM_TIME_TRAIN, ADVKD_SLURM_TIME_ATTACK, ADVKD_SLURM_ARGS (e.g. '--partition=gpu --account=me')",
        f"# preemption: USR1 {WARNING_SECONDS} s before the time limit; advkd saves and exits 75, and the job requeues itself (same job id, same afterok chain)",
        "set -euo pipefail",
    ]
    done: list[tuple[str, Any]] = []  # (job variable, job) of the jobs submitted so far
    for i, job in enumerate(jobs, 1):
        var = f"j{i}"
        deps = [v for v, earlier in done if earlier.run is not None and str(earlier.run / BEST) in job.command]
        verb = job.command.split()[1]
        args = ["sbatch", "--parsable", f"--job-name=advkd-{i}-{verb}", f"--gres={req['gres']}", f"--cpus-per-task={req['cpus']}",
                f"--time={req['train'] if verb in TRAIN_VERBS else req['attack']}", f"--output=advkd-{i}-%j.log",
                f"--signal=B:USR1@{WARNING_SECONDS}", "--requeue", "--open-mode=append", *extra]
        dependency = f" --dependency=afterok:{':'.join('$' + d for d in deps)}" if deps else ""
        lines.append(f"{var}=$({' '.join(shlex.quote(a) for a in args)}{dependency} --wrap {shlex.quote(wrapped(job.command))})")
        lines.append(f'echo "submitted {var} = ${var}: {verb}"')
        done.append((var, job))
    return "\n".join(lines)
