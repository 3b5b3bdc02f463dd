"""Accuracy evidence for the CPU defaults: mini students trained under the CPU default paths and
under fp32 NCHW, two seeds each, attacked alike (clean and PGD-10 on test images 0-999, fp32).

    python -m benchmarks.precision_accuracy [--runs-dir runs-precision] [--seeds 0,1]
                                            [--methods pgd-at,rslad,adaad] [--render-only]

Every run is ``advkd distill --preset mini`` (ResNet-8 students, the mini demo teacher) with
``--resume``, every attack is skipped when its record exists, so an interrupted sweep continues
where it stopped. The table (mean +- spread per method and path, and whether the default's mean
stays within max(seed spread, 1.5 points) of fp32's) is printed and written as
``benchmarks/results/precision-accuracy.md``; the records are copied to
``benchmarks/results/precision-accuracy.jsonl`` so the table re-renders from the repo.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from advkd.evaluation.records import RESULTS_FILE, read_records

ROOT = Path(__file__).resolve().parent.parent
ARMS = {"default": [], "fp32-nchw": ["--no-amp", "--no-channels-last"]}
TOLERANCE = 1.5  # points: the floor on the allowed gap
N_EXAMPLES = 1000
RESULTS = ROOT / "benchmarks" / "results"


def advkd(*args: str, runs_dir: Path) -> None:
    cmd = [str(Path(sys.executable).with_name("advkd")), "--runs-dir", str(runs_dir), *args]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def run_name(method: str, seed: int, arm: str) -> str:
    return f"{method}-s{seed}-{arm}"


def attack_once(runs_dir: Path, ckpt: Path, n_examples: int = N_EXAMPLES) -> None:
    """PGD-10 (and clean) on the first ``n_examples`` test images, unless ``ckpt`` already has a PGD-10 record."""
    if not any(r.get("checkpoint") == str(ckpt) and r.get("attack") == "pgd10" for r in read_records(runs_dir / RESULTS_FILE)):
        advkd("attack", str(ckpt), "--attacks", "pgd10", "--n-examples", str(n_examples), "--format", "json", runs_dir=runs_dir)


def sweep(runs_dir: Path, methods: list[str], seeds: list[int]) -> None:
    advkd("pretrain-teacher", "--arch", "wrn34-10", "--method", "trades", "--preset", "mini", "--resume", runs_dir=runs_dir)
    for seed in seeds:
        for method in methods:
            for arm, flags in ARMS.items():
                name = run_name(method, seed, arm)
                t0 = time.perf_counter()
                advkd("--seed", str(seed), "distill", "--method", method, "--student", "resnet18", "--preset", "mini",
                      "--name", name, "--resume", *flags, runs_dir=runs_dir)
                attack_once(runs_dir, runs_dir / "distill" / "cifar10" / name / "last.safetensors")
                print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)


def table(recs: list[dict]) -> str:
    """Markdown: per method and path, clean and PGD-10 mean +- spread (max - min) over seeds."""
    acc: dict[tuple[str, str, str], list[float]] = {}
    for r in recs:
        name = r["run"]
        method, _, arm = name.partition("-s")
        arm = arm.split("-", 1)[1] if "-" in arm else arm
        acc.setdefault((method, arm, r["attack"]), []).append(float(r["accuracy"]))
    lines = ["| method | path | seeds | clean (mean ± spread) | PGD-10 (mean ± spread) | default − fp32 (clean / PGD-10) | within tolerance |",
             "|---|---|---:|---:|---:|---:|---|"]
    for method in sorted({k[0] for k in acc}):
        for arm in ARMS:
            clean, rob = acc.get((method, arm, "clean"), []), acc.get((method, arm, "pgd10"), [])
            if not clean:
                continue
            cells = [f"{statistics.mean(v):.2f} ± {(max(v) - min(v)) / 2:.2f}" for v in (clean, rob)]
            verdict = diff = ""
            if arm == "default" and acc.get((method, "fp32-nchw", "pgd10")):
                gaps, oks = [], []
                for kind in ("clean", "pgd10"):
                    a, b = acc[(method, "default", kind)], acc[(method, "fp32-nchw", kind)]
                    gap = statistics.mean(a) - statistics.mean(b)
                    allowed = max(TOLERANCE, max(a) - min(a), max(b) - min(b))  # the seed spread, or 1.5 points
                    gaps.append(f"{gap:+.2f}")
                    oks.append(abs(gap) <= allowed)
                diff, verdict = " / ".join(gaps), "yes" if all(oks) else "**no**"
            lines.append(f"| {method} | {arm} | {len(clean)} | {cells[0]} | {cells[1]} | {diff} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.precision_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-dir", default="runs-precision")
    p.add_argument("--methods", default="pgd-at,rslad,adaad")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--render-only", action="store_true", help="render the committed records only")
    args = p.parse_args(argv)
    runs_dir = Path(args.runs_dir).resolve()
    committed = RESULTS / "precision-accuracy.jsonl"
    if not args.render_only:
        os.environ.setdefault("ADVKD_DATA_DIR", str(ROOT.parent / "shared" / "data"))
        sweep(runs_dir, [m.strip() for m in args.methods.split(",")], [int(s) for s in args.seeds.split(",")])
        shutil.copyfile(runs_dir / RESULTS_FILE, committed)
    md = table(read_records(committed))
    (RESULTS / "precision-accuracy.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
