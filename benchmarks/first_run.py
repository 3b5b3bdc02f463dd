"""First run vs warm run: AutoAttack and one training epoch, with and without advkd's malloc tuning.

    python -m benchmarks.first_run --checkpoint runs/distill/cifar10/<run>/best.safetensors
                                   [--aa-n 32] [--train-n 512] [--dataset cifar10] [--data-dir DIR]
                                   [--jobs autoattack,train-epoch] [--device cpu]
                                   [--out benchmarks/results/first-run.json]
    python -m benchmarks.first_run --quick            # smoke run: tinycnn, 8 points, 64 images
    python -m benchmarks.first_run --markdown benchmarks/results/first-run.json

Why a fresh process per measurement: the first call in a process pays one-time costs (lazy
imports, oneDNN primitive creation, the heap growing to the working set; with glibc's default
thresholds, also the page faults of every large buffer mapped afresh) that a warm call does not.
``bench.py`` discards them as warm-up; this script measures them. For each malloc setting
(``tuned``: ``accel.tune_malloc()`` as every advkd entry point calls it; ``untuned``: the child is
started with ``ADVKD_NO_MALLOPT=1`` in its environment, so no advkd code can tune it) and each job,
a new ``python -m benchmarks.first_run --child JOB`` process runs the job twice and prints both
wall times (and minor page faults) as one JSON line; the parent collects them, writes the JSON
file and prints the Markdown table.

Jobs, both through the public Python API (``advkd.api``):

- ``autoattack``: ``advkd.api.evaluate_model(model, (x, y), attacks=["aa"])`` -- clean pass, then
  standard AutoAttack on the BN-folded copy -- on the first ``--aa-n`` test images of
  ``--checkpoint``'s dataset (the checkpoint is loaded before the timing);
- ``train-epoch``: ``advkd.api.distill("pgd-at", student=resnet8, epochs=1, train_subset=--train-n,
  eval_attack="", eval_examples=64)`` into a temporary runs folder (a new one per run). Timed: the
  whole call (``wall``: data loading, model build, the epoch, checkpoint writes) and the loop's own
  epoch time (``epoch``: the training batches and the clean evaluation, read from the returned
  metrics); the table shows the epoch time.

Modules the jobs import lazily (``pyautoattack``, the training loop) are imported in the child
before the first run, so module loading is charged to neither run.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = "benchmarks/results/first-run.json"
JOBS = ("autoattack", "train-epoch")
MALLOC = ("tuned", "untuned")
FULL = {"aa_n": 32, "train_n": 512, "arch": "resnet8", "dataset": "cifar10", "eval_n": 64}
QUICK = {"aa_n": 8, "train_n": 64, "arch": "tinycnn", "dataset": "synthetic", "eval_n": 16}
CHILD_TIMEOUT_S = 3600


# ============================================================================ child: one job, twice


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed_twice(job: Callable[[], dict[str, Any]]) -> dict[str, list[Any]]:
    """Run ``job()`` twice; wall seconds, minor page faults and whatever it returns, per run."""
    out: dict[str, list[Any]] = {"seconds": [], "minor_faults": [], "info": []}
    for _ in range(2):
        f0, t0 = _faults(), time.perf_counter()
        info = job()
        out["seconds"].append(time.perf_counter() - t0)
        out["minor_faults"].append(_faults() - f0)
        out["info"].append(info)
    return out


def _aa_points(args: argparse.Namespace):
    """(model, x, y) of the AutoAttack job: the checkpoint and its dataset's first test images, or
    (``--quick`` without one) a seeded random-init tinycnn on synthetic test images."""
    import torch

    from advkd.data.batches import to_float
    from advkd.data.loaders import load_split
    from advkd.models import build_model
    from benchmarks.autoattack_pair import load_points

    if args.checkpoint:
        model, x, y, _ = load_points(args.checkpoint, n=args.aa_n, data_dir=args.data_dir, device=torch.device(args.device))
        return model, x, y
    torch.manual_seed(0)
    data = load_split("synthetic", "test", args.data_dir).head(args.aa_n)
    return build_model(args.arch, num_classes=10).eval(), to_float(data.images), data.labels


def _preimport() -> None:
    """Import what the jobs import lazily (the library, the training loop), so neither run is
    charged for module loading: the first run's extra time is then allocator and kernel warm-up."""
    import pyautoattack  # noqa: F401

    import advkd.training.loop  # noqa: F401


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One job run twice in this (fresh) process. Malloc is tuned first, as the CLI does at start
    (a no-op returning False when the parent set ADVKD_NO_MALLOPT=1)."""
    import torch

    import advkd.api as api
    from advkd.core import accel

    mallopt = accel.tune_malloc()
    _preimport()
    tmp = Path(tempfile.mkdtemp(prefix="advkd-first-run-"))
    try:
        if args.child == "autoattack":
            model, x, y = _aa_points(args)

            def job() -> dict[str, Any]:
                records = api.evaluate_model(model, (x, y), attacks=["aa"], device=args.device)
                return {r["attack"]: r["accuracy"] for r in records}
        else:
            runs = iter(range(2))

            def job() -> dict[str, Any]:  # a new runs folder each time: the second run must not resume the first
                summary = api.distill(
                    "pgd-at", student=args.arch, dataset=args.dataset, runs_dir=tmp / f"run{next(runs)}", data_dir=args.data_dir,
                    device=args.device, epochs=1, train_subset=args.train_n, eval_examples=args.eval_n, eval_attack="", select="clean",
                )
                return {"epoch_s": summary.last_metrics.get("seconds"), "clean_acc": summary.last_metrics.get("clean_acc")}

        result = _timed_twice(job)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"job": args.child, "mallopt": mallopt, "torch": torch.__version__, "env_no_mallopt": os.environ.get("ADVKD_NO_MALLOPT"), "pid": os.getpid(),
            "threads": torch.get_num_threads(), **result}


# ============================================================================ parent


def child_command(args: argparse.Namespace, job: str) -> list[str]:
    cmd = [sys.executable, "-m", "benchmarks.first_run", "--child", job, "--aa-n", str(args.aa_n), "--train-n", str(args.train_n),
           "--arch", args.arch, "--dataset", args.dataset, "--eval-n", str(args.eval_n), "--data-dir", str(args.data_dir),
           "--device", args.device]
    return cmd + (["--checkpoint", str(args.checkpoint)] if args.checkpoint else [])


def child_env(malloc: str) -> dict[str, str]:
    """The parent's environment, with ADVKD_NO_MALLOPT=1 set (untuned) or removed (tuned) before
    the child starts, so it holds before advkd is imported."""
    env = dict(os.environ)
    env.pop("ADVKD_NO_MALLOPT", None)
    if malloc == "untuned":
        env["ADVKD_NO_MALLOPT"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_child(args: argparse.Namespace, job: str, malloc: str) -> dict[str, Any]:
    """Start one fresh child, return its JSON line (the last line of its stdout)."""
    proc = subprocess.run(child_command(args, job), cwd=ROOT, env=child_env(malloc), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{job} ({malloc}) failed with exit code {proc.returncode}:\n{proc.stderr[-2000:]}")
    out = json.loads(lines[-1])
    if malloc == "untuned" and out["mallopt"]:
        raise RuntimeError(f"{job} ({malloc}): malloc was tuned despite ADVKD_NO_MALLOPT=1")
    return {"malloc": malloc, **out}  # tuned but mallopt False: not glibc (or not Linux); the JSON says so


def row_seconds(r: dict[str, Any]) -> list[float]:
    """The two times the table shows: the epoch time for train-epoch, the API call's wall time otherwise."""
    if r["job"] == "train-epoch" and all(i.get("epoch_s") is not None for i in r["info"]):
        return [float(i["epoch_s"]) for i in r["info"]]
    return [float(s) for s in r["seconds"]]


def markdown(result: dict[str, Any]) -> str:
    """The README table: job | malloc | first run s | second run s | first/second."""
    meta = result["meta"]
    lines = [
        f"`{meta['command']}`: {meta['device']} ({meta['cpu_count']} cores, {meta['threads']} threads), torch {meta['torch']}, "
        f"{meta['date']}, git {str(meta.get('git_sha') or '?')[:10]}{' (dirty)' if meta.get('git_dirty') else ''}, "
        f"load average before/after {meta['load_avg_before']} / {meta['load_avg_after']}. One fresh process per row.",
        "",
        "| job | malloc | first run s | second run s | first/second |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["runs"]:
        first, second = row_seconds(r)
        lines.append(f"| {r['job']} | {r['malloc']} | {first:.2f} | {second:.2f} | {first / second:.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.first_run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: tinycnn, synthetic data, 8 points, 64 images, no checkpoint needed")
    p.add_argument("--checkpoint", default=None, help="model of the autoattack job (advkd checkpoint, ARCH:weights.pt); required unless --quick")
    p.add_argument("--aa-n", type=int, default=None, help="autoattack points (default 32; quick 8)")
    p.add_argument("--train-n", type=int, default=None, help="training images of the epoch (default 512; quick 64)")
    p.add_argument("--arch", default=None, help="student of the epoch (default resnet8; quick tinycnn)")
    p.add_argument("--dataset", default=None, help="dataset of the epoch (default cifar10; quick synthetic)")
    p.add_argument("--eval-n", type=int, default=None, help="test images of the epoch's clean evaluation (default 64; quick 16)")
    p.add_argument("--jobs", default=",".join(JOBS), help=f"comma-separated, of {', '.join(JOBS)}")
    p.add_argument("--data-dir", default=os.environ.get("ADVKD_DATA_DIR", "./data"), help="datasets folder (env ADVKD_DATA_DIR; default ./data)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result file (default {DEFAULT_OUT})")
    p.add_argument("--markdown", metavar="JSON", default=None, help="print the table of an existing result file and exit")
    p.add_argument("--child", choices=JOBS, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = [j for j in args.jobs if j not in JOBS]
    if unknown:
        p.error(f"unknown job(s) {', '.join(unknown)}; valid: {', '.join(JOBS)}")
    if args.child is None and args.markdown is None and "autoattack" in args.jobs and not (args.checkpoint or args.quick):
        p.error("the autoattack job needs --checkpoint (or --quick, or --jobs train-epoch)")
    args.data_dir = str(Path(args.data_dir).expanduser().resolve())
    if args.checkpoint and ":" not in args.checkpoint:
        args.checkpoint = str(Path(args.checkpoint).expanduser().resolve())  # the children run in the repository root
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        real_stdout = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):  # progress lines must not mix with the JSON line
            out = child(args)
        print(json.dumps(out), file=real_stdout, flush=True)
        return 0
    from benchmarks.bench import cpu_name, git_info, load_avg, write_json

    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    import torch

    load_before = load_avg()
    t0 = time.perf_counter()
    runs = []
    for job in args.jobs:
        for malloc in MALLOC:
            print(f"{job} ({malloc}) in a fresh process ...", file=sys.stderr, flush=True)
            try:
                runs.append(run_child(args, job, malloc))
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                print(f"error: {e}", file=sys.stderr)
                return 1
    meta = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": args.device,
        "device_name": cpu_name() if args.device == "cpu" else args.device,
        "cpu_count": os.cpu_count(),
        "threads": runs[0]["threads"] if runs else torch.get_num_threads(),
        "quick": args.quick,
        "checkpoint": args.checkpoint,
        "aa_n": args.aa_n,
        "train": {"method": "pgd-at", "arch": args.arch, "dataset": args.dataset, "train_subset": args.train_n, "eval_examples": args.eval_n,
                  "eval_attack": "", "epochs": 1},
        "order": [f"{r['job']}/{r['malloc']}" for r in runs],
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "OMP_", "MKL_", "KMP_")) or k == "LD_PRELOAD"},
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t0,
        "command": "python -m benchmarks.first_run " + " ".join(sys.argv[1:] if argv is None else argv),
        **git_info(),
    }
    result = {"schema": 1, "meta": meta, "runs": runs}
    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    write_json(out, result)
    print(markdown(result))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
