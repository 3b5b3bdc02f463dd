"""Calibrate the reduced-scale optimiser once, on PGD-AT and one element-mean method (RSLAD).

    python docs/scales/calibrate_optimizer.py [--preset mini] [--lrs 3e-3,6e-3,1e-2] [--runs-dir runs-calibration]
                                              [--seeds 0] [--sgd] [--render-only]

For each AdamW lr (decoupled weight decay 0.05, the preset's schedule, nothing else changed) it
trains the preset's TRADES teacher, a PGD-AT student and an RSLAD student of that teacher, and
attacks the last checkpoint of each with PGD-10 on test images 0-999 (fp32); ``--sgd`` adds the
same three runs under SGD (``optimizer=sgd lr=0.1 weight_decay=5e-4``: the previous recipe).
Every run is ``--resume``d and every attack skipped when its record exists, so an interrupted
sweep continues. The table goes to stdout and to ``docs/scales/calibration-<preset>.md``; the
records and each run's metrics to ``docs/scales/records-calibration/``.

The target: PGD-AT at least as good as under SGD, and RSLAD's PGD-10 within 3 points
of the lower of PGD-AT's and its teacher's. The recipe is chosen on these two methods only and
then applies to every method alike.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not an installed package: its sweep helpers are shared from the checkout

from advkd.evaluation.records import RESULTS_FILE, read_records  # noqa: E402
from benchmarks.precision_accuracy import advkd, attack_once  # noqa: E402

OUT = ROOT / "docs" / "scales"
WD = 0.05
SGD = ["--set", "optimizer=sgd", "--set", "lr=0.1", "--set", "weight_decay=5e-4"]


def recipes(lrs: list[str], sgd: bool) -> dict[str, list[str]]:
    out = {f"adamw-lr{lr}": ["--set", "optimizer=adamw", "--set", f"lr={lr}", "--set", f"weight_decay={WD}"] for lr in lrs}
    return {**({"sgd-lr0.1": SGD} if sgd else {}), **out}


def sweep(runs_dir: Path, preset: str, recipe: dict[str, list[str]], seeds: list[int], also: list[str]) -> None:
    for seed in seeds:
        for tag, flags in recipe.items():
            teacher = f"teacher-{tag}-s{seed}"
            from_teacher = ["--student", "resnet18", "--teacher", str(runs_dir / "pretrain-teacher" / "cifar10" / teacher / "last.safetensors")]
            runs = [("pretrain-teacher", teacher, ["--arch", "wrn34-10", "--method", "trades"]),
                    ("distill", f"pgd-at-{tag}-s{seed}", ["--method", "pgd-at", "--student", "resnet18"]),
                    *(("distill", f"{m}-{tag}-s{seed}", ["--method", m, *from_teacher]) for m in ["rslad", *also])]
            for kind, name, args in runs:
                advkd("--seed", str(seed), kind, *args, "--preset", preset, "--name", name, "--resume", *flags, runs_dir=runs_dir)
                attack_once(runs_dir, runs_dir / kind / "cifar10" / name / "last.safetensors")


def table(recs: list[dict]) -> str:
    """Markdown: one row per recipe and seed, clean / PGD-10 of teacher, PGD-AT and RSLAD, and the target."""
    acc = {(r["run"], r["attack"]): float(r["accuracy"]) for r in recs}
    rows = sorted({r["run"].split("-", 1)[1] for r in recs if r["run"].startswith("teacher-")})
    runs = {r["run"] for r in recs}
    also = sorted({run[: -len(key) - 1] for run in runs for key in rows if run.endswith(f"-{key}")} - {"teacher", "pgd-at", "rslad"})  # e.g. adaad
    who_all = ["teacher", "pgd-at", "rslad", *also]
    lines = ["| recipe | seed | " + " | ".join(f"{w if w != 'pgd-at' else 'PGD-AT'} clean / PGD-10".replace("rslad", "RSLAD").replace("adaad", "AdaAD")
                                                 for w in who_all) + " | RSLAD PGD-10 − min(PGD-AT, teacher) |",
             "|---|---:|" + "---:|" * (len(who_all) + 1)]
    for key in rows:  # "<tag>-s<seed>"
        tag, seed = key.rsplit("-s", 1)
        cell = {who: (acc.get((f"{who}-{key}", "clean")), acc.get((f"{who}-{key}", "pgd10"))) for who in who_all}
        text = {w: "–" if c[0] is None else f"{c[0]:.1f} / {c[1]:.1f}" for w, c in cell.items()}
        gap = "–"
        if None not in (cell["rslad"][1], cell["pgd-at"][1], cell["teacher"][1]):
            gap = f"{cell['rslad'][1] - min(cell['pgd-at'][1], cell['teacher'][1]):+.1f}"
        lines.append(f"| {tag} | {seed} | " + " | ".join(text[w] for w in who_all) + f" | {gap} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="docs/scales/calibrate_optimizer.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mini")
    p.add_argument("--lrs", default="3e-3,6e-3,1e-2")
    p.add_argument("--seeds", default="0")
    p.add_argument("--sgd", action="store_true", help="also the previous SGD recipe, for comparison")
    p.add_argument("--also", default="", help="more distillation methods from the same teacher, e.g. adaad (not part of the calibration)")
    p.add_argument("--runs-dir", default="runs-calibration")
    p.add_argument("--render-only", action="store_true")
    args = p.parse_args(argv)
    runs_dir = Path(args.runs_dir).resolve()
    saved = OUT / "records-calibration" / args.preset
    if not args.render_only:
        os.environ.setdefault("ADVKD_DATA_DIR", str(ROOT.parent / "shared" / "data"))
        sweep(runs_dir, args.preset, recipes([x.strip() for x in args.lrs.split(",")], args.sgd), [int(s) for s in args.seeds.split(",")],
              [m.strip() for m in args.also.split(",") if m.strip()])
        saved.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(runs_dir / RESULTS_FILE, saved / RESULTS_FILE)
        for metrics in runs_dir.glob("*/cifar10/*/metrics.jsonl"):
            shutil.copyfile(metrics, saved / f"{metrics.parent.name}.metrics.jsonl")
    md = table(read_records(saved / RESULTS_FILE))
    (OUT / f"calibration-{args.preset}.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
