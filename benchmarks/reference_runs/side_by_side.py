"""Reference script and advkd, same method, same settings, several seeds: train, evaluate, compare.

    python -m benchmarks.reference_runs.side_by_side --methods rslad --seeds 0,1,2 --preset mini \
        --repo zibojia/RSLAD=/path/to/RSLAD

For every (method, seed): the teachers the preset names are trained first if the runs dir lacks
them (``advkd pretrain-teacher --resume``), then the reference script
(:mod:`benchmarks.reference_runs.run`), then ``advkd distill`` with the same preset and seed, in
fp32 NCHW as the reference runs (``--no-amp --no-channels-last``), and both final students
(the last epoch: the reference scripts select nothing at this budget) are attacked by
``advkd attack --attacks clean,pgd10`` on the same test images. Everything is resumable: run the
same command again and finished pieces are skipped. The table at the end is
:mod:`benchmarks.reference_runs.compare` on the runs dir.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.reference_runs import compare
from benchmarks.reference_runs.catalog import REFERENCES
from benchmarks.reference_runs.run import ATTACKS, records_exist
from benchmarks.reference_runs.run import main as run_reference

TEACHERS = {  # the preset's teacher roles as advkd pretrain-teacher builds them (CIFAR-10)
    "teacher": ("wrn34-10", "trades"),
    "robust_teacher": ("wrn34-10", "trades"),
    "clean_teacher": ("resnet56", "natural"),
}


def advkd(*args: str) -> None:
    cmd = [sys.executable, "-m", "advkd", *args]
    print("+ advkd " + " ".join(args), flush=True)
    if subprocess.run(cmd, check=False).returncode != 0:
        raise SystemExit(f"failed: advkd {' '.join(args)}")


def ensure_teachers(method: str, preset: str, common: list[str], runs_dir: Path) -> list[str]:
    """Train the preset's teachers of ``method`` unless done (waiting while another process trains
    one); returns the flags that name their checkpoints, so both sides use exactly these files
    (the teacher store's 'newest run of that architecture' could be another preset's, or one still
    training)."""
    from advkd.methods import METHODS
    flags: list[str] = []
    for role in METHODS.get(method).roles:
        arch, how = TEACHERS[role]
        args = ["pretrain-teacher", "--arch", arch, "--method", how, "--dataset", "cifar10", "--preset", preset,
                "--no-amp", "--channels-last", "--resume", *common]
        print("+ advkd " + " ".join(args), flush=True)
        while True:
            out = subprocess.run([sys.executable, "-m", "advkd", *args], capture_output=True, text=True, check=False)
            if out.returncode == 0:
                break
            if "is being trained by process" not in out.stderr:
                raise SystemExit(f"failed: advkd {' '.join(args)}: {out.stderr.strip().splitlines()[-1:]}")
            time.sleep(30)
        ckpt = runs_dir / "pretrain-teacher" / "cifar10" / f"{arch}-{how}-{preset}-s0" / "best.safetensors"
        flags += [f"--{role.replace('_', '-')}", str(ckpt)]
    return flags


def advkd_side(method: str, preset: str, seed: int, n: int, runs_dir: Path, common: list[str], extra: list[str]) -> None:
    """advkd's run of the same config, unless its final student is trained and attacked already."""
    config = subprocess.run([sys.executable, "-m", "advkd", "distill", "--method", method, "--student", "resnet18", "--dataset", "cifar10",
                             "--preset", preset, "--seed", str(seed), *extra, *common, "--print-config"],
                            capture_output=True, text=True, check=True).stdout
    name = next(line.split(":", 1)[1].strip() for line in config.splitlines() if line.startswith("name:"))
    ckpt = runs_dir / "distill" / "cifar10" / name / "last.safetensors"
    if records_exist(runs_dir, ckpt, ATTACKS, n):
        print(f"{name}: done ({ckpt})", flush=True)
        return
    advkd("distill", "--method", method, "--student", "resnet18", "--dataset", "cifar10", "--preset", preset,
          "--seed", str(seed), "--no-amp", "--no-channels-last", "--resume", *extra, *common)
    advkd("attack", str(ckpt), "--attacks", ATTACKS, "--n-examples", str(n), "--format", "json", "--no-channels-last", *common)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference_runs.side_by_side", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="adaad,rslad,mtard,bmtard")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--preset", default="mini")
    p.add_argument("--repo", action="append", default=[], metavar="OWNER/NAME=PATH")
    p.add_argument("--set", action="append", default=[], help="key=value for both sides (an ablation)")
    p.add_argument("--n-examples", type=int, default=1000)
    p.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("ADVKD_RUNS_DIR", "runs")))
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("ADVKD_DATA_DIR", "data")))
    p.add_argument("--only", choices=["reference", "advkd"], help="run one side only")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in REFERENCES]
    if unknown:
        print(f"error: no reference script for {unknown[0]!r} (have: {', '.join(sorted(REFERENCES))})", file=sys.stderr)
        return 2
    common = ["--runs-dir", str(args.runs_dir), "--data-dir", str(args.data_dir)]
    sets = [x for s in args.set for x in ("--set", s)]
    for method in methods:
        teachers = ensure_teachers(method, args.preset, common, args.runs_dir)
        for seed in (int(s) for s in args.seeds.split(",")):
            if args.only != "advkd":
                code = run_reference(["--ref", method, "--preset", args.preset, "--seed", str(seed), "--n-examples", str(args.n_examples),
                                      *[x for r in args.repo for x in ("--repo", r)], *sets, *teachers, *common])
                if code:
                    return code
            if args.only != "reference":
                advkd_side(method, args.preset, seed, args.n_examples, args.runs_dir, common, sets + teachers)
    return compare.main(["--runs-dir", str(args.runs_dir), "--preset", args.preset, "--n-examples", str(args.n_examples)])


if __name__ == "__main__":
    raise SystemExit(main())
