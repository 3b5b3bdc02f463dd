"""How close `report --plan`'s budget came to a measured `make reproduce-small` (or `reproduce-mini`) run.

    python docs/results-small/budget_check.py RUNS_DIR [--pauses FILE] > docs/results-small/budget.md
    python docs/results-small/budget_check.py RUNS_DIR --target reproduce-mini > docs/results-small/budget-mini.md

Plans the tables of the Makefile target against an empty runs dir (so every job is priced, as a plan on a
fresh clone prices it), prices them with this machine's calibration, and sets each estimate beside
what the run in RUNS_DIR measured: a training job's epoch seconds (metrics.jsonl, each epoch's
training and monitor), an attack job's record seconds (results.jsonl, every attack of that
checkpoint, less any pause of the run that `--pauses` lists as `stop EPOCH_S` / `cont EPOCH_S`
lines). Other processes shared this machine during parts of the run, and noise only adds time, so
the "quiet" column takes a training job's fastest epoch times its epoch count (an under-estimate
for IAD / AdaIAD, whose epochs after the warm-up cost one more student pass). The summary compares
the estimates with the quiet column.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import torch

from advkd.core.distributed import pick_device
from advkd.evaluation.records import RESULTS_FILE, read_records
from advkd.report.budget import device_text, estimate_works, train_config
from advkd.report.plan import table_planner

TARGETS = {  # Makefile target -> (preset, --n-examples, [(table, --only filters)]), as the Makefile plans it
    "reproduce-small": ("small", None, [
        ("table2", {"student": "resnet18", "teacher": "wrn34-10"}),
        ("bmtard-table3", {"student": "resnet18", "dataset": "cifar10", "method": "rslad,mtard,bmtard"}),
    ]),
    "reproduce-mini": ("mini", 200, [("table2", {"student": "resnet18", "teacher": "wrn34-10"})]),
}


def planned_jobs(empty: Path, target: str) -> list:
    preset, n_examples, plans = TARGETS[target]
    jobs, seen = [], set()
    for table, only in plans:
        planner, _ = table_planner(table, preset=preset, runs_dir=empty, only=only, n_examples=n_examples)
        for job in planner.pending():
            if job.key not in seen:
                seen.add(job.key)
                jobs.append(job)
    return jobs


def read_pauses(path: Path | None) -> list[tuple[float, float]]:
    """(stop, cont) epoch-second intervals during which the run was paused."""
    if path is None:
        return []
    out, stop = [], None
    for line in path.read_text().splitlines():
        what, _, when = line.partition(" ")
        if what == "stop":
            stop = float(when)
        elif what == "cont" and stop is not None:
            out.append((stop, float(when)))
            stop = None
    return out


def _paused_within(start: float, end: float, pauses: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in pauses)


def measured(job, empty: Path, runs: Path, pauses: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(seconds as recorded, quiet seconds) of the job in ``runs``: its epochs, or its checkpoint's attacks."""
    if job.run is not None:
        metrics = runs / job.run.relative_to(empty) / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.is_file() else []
        epochs = train_config(job.work).epochs
        if len(rows) < epochs:
            return None
        seconds = [float(r["seconds"]) for r in rows]
        return sum(seconds), min(seconds) * epochs
    ckpt = Path(job.command.split()[2]).relative_to(empty)
    newest: dict[str, float] = {}
    for r in read_records(runs / RESULTS_FILE):
        recorded = str(r.get("checkpoint", ""))
        if recorded == str(ckpt) or recorded.endswith(f"/{ckpt}"):  # relative, or absolute under whichever runs dir ran it
            end = datetime.strptime(r["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()
            seconds = float(r["seconds"])
            newest[r["attack"]] = seconds - _paused_within(end - seconds, end, pauses)
    wanted = set(job.work.attacks) | {"clean"}
    if not wanted <= set(newest):
        return None
    total = sum(v for a, v in newest.items() if a in wanted)
    return total, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs_dir", type=Path)
    p.add_argument("--target", choices=sorted(TARGETS), default="reproduce-small", help="the Makefile target that filled RUNS_DIR")
    p.add_argument("--pauses", type=Path, default=None, help="file of 'stop EPOCH_S' / 'cont EPOCH_S' lines: when the run was paused")
    args = p.parse_args(argv)
    pauses = read_pauses(args.pauses)
    device = pick_device("auto")
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp)
        jobs = planned_jobs(empty, args.target)
        prices = estimate_works([j.work for j in jobs], runs_dir=args.runs_dir, device=device,
                                log=lambda line: print(line, file=sys.stderr))
        rows, ratios, est_total, got_total = [], [], 0.0, 0.0
        for job, price in zip(jobs, prices):
            took = measured(job, empty, args.runs_dir, pauses)
            name = job.run.name if job.run else Path(job.command.split()[2]).parent.name
            verb = job.command.split()[1]
            if took is None:
                rows.append(f"| {verb} | {name} | {price.seconds / 60:.1f} | (not run) | | |")
                continue
            recorded, quiet = took
            rows.append(f"| {verb} | {name} | {price.seconds / 60:.1f} | {recorded / 60:.1f} | {quiet / 60:.1f} | {price.seconds / quiet:.2f} |")
            ratios.append(price.seconds / quiet)
            est_total += price.seconds
            got_total += quiet
    print(f"Estimates on {device_text(device)}, torch {torch.__version__}; measured: the jobs of `make {args.target}` recorded in `{args.runs_dir}` (a job without records: not run).\n")
    print("| command | run / checkpoint | estimate (min) | recorded (min) | quiet (min) | estimate / quiet |")
    print("|---|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    if ratios:
        print(f"\nOver the {len(ratios)} jobs: estimate / quiet median {statistics.median(ratios):.2f}, "
              f"range {min(ratios):.2f}-{max(ratios):.2f}; total {est_total / 3600:.2f} h estimated vs {got_total / 3600:.2f} h quiet "
              f"({est_total / got_total:.2f}x).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
