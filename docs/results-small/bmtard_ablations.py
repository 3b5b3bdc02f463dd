"""The B-MTARD ablation table at small scale, from the records of bmtard-ablations.sh.

Usage: python docs/results-small/bmtard_ablations.py RUNS_OR_RECORDS_DIR
Each row is a run without its seed; clean and PGD-10 of the selected student (best.safetensors)
on test images 0-999, mean ± s.d. over seeds, W-Robust = (clean + PGD-10) / 2, and the gap to the
PGD-AT bar of the same budget as a paired bootstrap over the seeds both share
(advkd.report.uncertainty.paired_bootstrap).
"""
from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from advkd.evaluation.records import unpack_flags
from advkd.report.uncertainty import mean_sd, paired_bootstrap

LABELS = [  # (run name pattern without -sN, label); the first match wins
    (r"^resnet18-pgd-at-small$", "PGD-AT (the bar)"),
    (r"^pgd-at-small-2x$", "PGD-AT, 2x budget"),
    (r"^resnet18-rslad-wrn34-10-small$", "RSLAD"),
    (r"^resnet18-bmtard-resnet56-wrn34-10-small$", "B-MTARD (the reference's rates)"),
    (r"-nlbfalse$", "B-MTARD, NLB off (weights fixed at 0.5)"),
    (r"-ebbfalse$", "B-MTARD, EBB off (temperatures fixed at 1)"),
    (r"-tau_rate0.2065-weight_rate1.0$", "B-MTARD, both rates scaled to the budget"),
    (r"-tau_rate0.2065$", "B-MTARD, EBB's rate scaled to the budget"),
    (r"^bmtard-clean-teacher-1ep$", "B-MTARD, weaker clean teacher (1 epoch)"),
    (r"^bmtard-clean-teacher-24ep$", "B-MTARD, stronger clean teacher (24 epochs)"),
    (r"^bmtard-small-2x$", "B-MTARD, 2x budget"),
]
BAR = {"": "PGD-AT (the bar)", "2x": "PGD-AT, 2x budget"}


def load(root: Path) -> dict[str, dict[int, dict[str, list[bool]]]]:
    """label -> seed -> attack -> per-image flags of the newest record of its best.safetensors."""
    out: dict[str, dict[int, dict[str, list[bool]]]] = defaultdict(dict)
    for line in (root / "results.jsonl").read_text().splitlines():
        rec = json.loads(line)
        ckpt = Path(rec.get("checkpoint", ""))
        if ckpt.name != "best.safetensors" or "/distill/" not in str(ckpt) or rec.get("n_examples") != 1000 or rec.get("attack") not in ("clean", "pgd10"):
            continue
        base = re.sub(r"-s\d+$", "", ckpt.parent.name)
        label = next((name for pat, name in LABELS if re.search(pat, base)), None)
        if label is None or rec.get("preset") != "small":
            continue
        out[label].setdefault(int(rec["seed"]), {})[rec["attack"]] = unpack_flags(rec["robust_flags"], 1000).tolist()
    return out


def main() -> None:
    data = load(Path(sys.argv[1]))
    print("| run | seeds | clean | PGD-10 | W-Robust | PGD-10 − the bar's [95 % interval] |")
    print("|---|---:|---:|---:|---:|---|")
    for _, label in LABELS:
        seeds = {s: v for s, v in data.get(label, {}).items() if {"clean", "pgd10"} <= set(v)}
        if not seeds:
            continue
        cols = []
        for attack in ("clean", "pgd10"):
            m, sd = mean_sd([100 * sum(v[attack]) / 1000 for v in seeds.values()])
            cols.append(f"{m:.1f} ± {sd:.1f}" if len(seeds) > 1 else f"{m:.1f}")
        w, wsd = mean_sd([50 * (sum(v["clean"]) + sum(v["pgd10"])) / 1000 for v in seeds.values()])
        bar = data.get(BAR["2x" if "2x" in label else ""], {})
        shared = sorted(set(seeds) & set(bar))
        gap = "–"
        if shared and not label.startswith("PGD-AT"):
            p = paired_bootstrap([[seeds[s]["pgd10"]] for s in shared], [[bar[s]["pgd10"]] for s in shared])
            gap = f"{p.diff:+.1f} [{p.low:+.1f}, {p.high:+.1f}]" + (" (resolved)" if p.resolved else "")
        print(f"| {label} | {len(seeds)} | {cols[0]} | {cols[1]} | {w:.1f}" + (f" ± {wsd:.1f}" if len(seeds) > 1 else "") + f" | {gap} |")


if __name__ == "__main__":
    main()
