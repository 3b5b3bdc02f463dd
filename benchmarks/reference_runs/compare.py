"""The side-by-side table: each method's reference script against advkd, over seeds.

Reads ``<runs-dir>/results.jsonl``; a row is a run name without its seed (``-sN``) and the
``-reference`` suffix, so a reference run and advkd's run of the same config share a row. Only
the final students (``last.safetensors``) count, scored on the first ``--n-examples`` test images.
The test is Welch's t over seeds (:func:`advkd.report.uncertainty.welch`): the two sides' seeds
share nothing, so there is no pairing to exploit.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from advkd.report.uncertainty import mean_sd, welch

SIDES = ("reference", "advkd")
METRICS = ("clean", "pgd10")


def collect(runs_dir: Path, preset: str, n: int) -> dict[str, dict[str, dict[int, dict[str, float]]]]:
    """row -> side -> seed -> metric -> accuracy (the newest record wins)."""
    rows: dict[str, dict[str, dict[int, dict[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    store = runs_dir / "results.jsonl"
    for line in store.read_text().splitlines() if store.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        ckpt = rec.get("checkpoint", "")
        if rec.get("preset") != preset or rec.get("n_examples") != n or not ckpt.endswith("last.safetensors"):
            continue
        if rec.get("attack") not in METRICS:
            continue
        run = Path(ckpt).parent.name
        side = "reference" if run.endswith("-reference") else "advkd"
        base = re.sub(r"-s\d+$", "", run.removesuffix("-reference"))
        seed = int(rec.get("seed", -1))
        rows[base][side].setdefault(seed, {})[rec["attack"]] = float(rec["accuracy"])
    return rows


def render(rows, *, markdown: bool = True) -> str:
    head = ("| run (both sides) | metric | reference: seeds | reference mean ± s.d. | advkd: seeds | advkd mean ± s.d. "
            "| advkd − reference [95 % CI] | Welch p | verdict |")
    out = [head, "|" + "---|" * 9]
    for base in sorted(rows):
        for metric in METRICS:
            vals = {s: [v[metric] for _, v in sorted(rows[base][s].items()) if metric in v] for s in SIDES}
            cells = []
            for s in SIDES:
                m, sd = mean_sd(vals[s])
                cells += [", ".join(f"{x:.1f}" for x in vals[s]) or "–", f"{m:.1f} ± {sd:.1f}" if len(vals[s]) > 1 else (f"{m:.1f}" if vals[s] else "–")]
            if len(vals["reference"]) > 1 and len(vals["advkd"]) > 1:
                w = welch(vals["advkd"], vals["reference"])
                test = [f"{w.diff:+.1f} [{w.low:+.1f}, {w.high:+.1f}]", f"{w.p:.2f}",
                        "differ (p < 0.05)" if w.resolved else "no difference beyond seed noise"]
            else:
                test = ["–", "–", "needs 2 seeds a side"]
            out.append(f"| {base} | {metric} | " + " | ".join(cells + test) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference_runs.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--preset", default="mini")
    p.add_argument("--n-examples", type=int, default=1000)
    args = p.parse_args(argv)
    rows = collect(args.runs_dir, args.preset, args.n_examples)
    if not rows:
        print(f"error: no final-student records of preset {args.preset} on {args.n_examples} images in {args.runs_dir}/results.jsonl", file=sys.stderr)
        return 2
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
