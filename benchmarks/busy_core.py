"""One mini PGD-AT epoch on a quiet machine and beside a process that holds one core, with the
thread count fixed at torch's default (before: ``ADVKD_FOLLOW_CORES=0``) and following the idle
cores (after: advkd's default, :mod:`advkd.core.idle_cores`).

    python -m benchmarks.busy_core [--repeats 2] [--before-busy-repeats 1] [--out benchmarks/results/busy-core-<cpu>.json]

The foreign work is either a plain busy loop (one Python process spinning) or a second advkd run
(a mini PGD-AT training with torch's default threads, restarted until the measurement ends). Each
arm is the training time of ``advkd distill --method pgd-at --preset mini --epochs 1`` (the epoch's
"N/N batches in S" line, evaluation excluded), arms alternated, scenario by scenario; the ratio
to the quiet median is what the busy machine costs. Needs ADVKD_DATA_DIR.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.speed_paths import cpu_id, machine_slug
from benchmarks.timing import load_avg

ADVKD = [sys.executable, "-m", "advkd"]
EPOCH = ["distill", "--method", "pgd-at", "--preset", "mini", "--dataset", "cifar10", "--epochs", "1", "--n", "100", "--no-amp", "--channels-last"]
BATCHES = re.compile(r"epoch 1/1: (\d+)/\d+ batches in ([\d.]+)s")
ARMS = {"before": {"ADVKD_FOLLOW_CORES": "0"}, "after": {}}


def epoch_seconds(runs: Path, arm: str, i: int) -> float:
    env = {**os.environ, **ARMS[arm], "ADVKD_RUNS_DIR": str(runs), "ADVKD_NO_LOAD_WARNING": "1"}
    env.pop("ADVKD_THREADS", None)
    out = subprocess.run([*ADVKD, *EPOCH, "--name", f"{arm}-{i}-{time.monotonic_ns()}"], env=env, capture_output=True, text=True, check=True)
    found = BATCHES.findall(out.stderr)
    if not found:
        raise RuntimeError(f"no epoch line in:\n{out.stderr[-2000:]}")
    changes = [line for line in out.stderr.splitlines() if "advkd runs" in line or "advkd now runs" in line]
    print(f"  {arm}: {float(found[-1][1]):.1f} s {changes[:2]}", file=sys.stderr)
    return float(found[-1][1])


class Foreign:
    """A process that keeps one core (busy loop) or the machine (a second advkd run) busy."""

    def __init__(self, kind: str, runs: Path) -> None:
        self.kind, self.runs, self.proc = kind, runs, None

    def __enter__(self) -> Foreign:
        if self.kind == "busy-loop":
            cmd = [sys.executable, "-c", "while True: pass"]
        else:  # a second advkd run: mini PGD-AT epochs, one after the other, torch's default threads, never adapting
            loop = (f"import subprocess, sys, itertools\nfor i in itertools.count():\n"
                    f"    subprocess.run({[*ADVKD, *EPOCH]!r} + ['--name', f'foreign-{{i}}'], capture_output=True)")
            cmd = [sys.executable, "-c", loop]
        env = {**os.environ, "ADVKD_RUNS_DIR": str(self.runs / "foreign"), "ADVKD_FOLLOW_CORES": "0", "ADVKD_NO_LOAD_WARNING": "1"}
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        time.sleep(3 if self.kind == "busy-loop" else 12)  # the second run past its start-up, training
        return self

    def __exit__(self, *exc: Any) -> None:
        os.killpg(self.proc.pid, 9)
        self.proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--before-busy-repeats", type=int, default=1, help="repeats of the fixed-threads arm beside foreign work (each is minutes)")
    ap.add_argument("--scenarios", default="quiet,busy-loop,second-advkd")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from advkd.core.accel import cpu_model

    result: dict[str, Any] = {"date": _dt.datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(), **cpu_id(),
                              "cores": os.cpu_count(), "load_before": load_avg(), "command": "advkd " + " ".join(EPOCH), "seconds": {}}
    with tempfile.TemporaryDirectory() as tmp:
        runs = Path(tmp)
        subprocess.run([*ADVKD, *EPOCH, "--name", "warm-up"], env={**os.environ, "ADVKD_RUNS_DIR": str(runs)}, capture_output=True, check=True)
        for scenario in args.scenarios.split(","):
            print(f"{scenario}:", file=sys.stderr)
            times: dict[str, list[float]] = {arm: [] for arm in ARMS}
            ctx = Foreign(scenario, runs) if scenario != "quiet" else None
            if ctx:
                ctx.__enter__()
            try:
                for i in range(args.repeats):
                    for arm in ARMS:
                        if arm == "before" and ctx and i >= args.before_busy_repeats:
                            continue
                        times[arm].append(epoch_seconds(runs, arm, i))
            finally:
                if ctx:
                    ctx.__exit__(None, None, None)
            result["seconds"][scenario] = times
    quiet = statistics.median(result["seconds"]["quiet"]["before"] + result["seconds"]["quiet"]["after"]) if "quiet" in result["seconds"] else None
    result["slowdown_vs_quiet"] = {s: {a: round(statistics.median(t) / quiet, 2) for a, t in arms.items()}
                                   for s, arms in result["seconds"].items()} if quiet else {}
    result["load_after"] = load_avg()
    out = Path(args.out or f"benchmarks/results/busy-core-{machine_slug()}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["slowdown_vs_quiet"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
