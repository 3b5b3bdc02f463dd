"""A markdown table of the diagnosis runs: one row per run, from its config.yaml, metrics.jsonl and results.jsonl.

Usage: python docs/scales/summarize.py RUNS_DIR
RUNS_DIR is a runs dir, or docs/scales/records (the same files without the checkpoints). The monitor
columns are the per-epoch clean / PGD-10 evaluation on test images 0-499 at the selected (best
PGD-10) epoch; the attack columns are `advkd attack --suite quick --n-examples 1000` records, where run.
"""
import json
import sys
from pathlib import Path

import yaml


def main() -> None:
    runs = Path(sys.argv[1])
    results = runs / "results.jsonl"
    records = [json.loads(line) for line in results.read_text().splitlines() if line.strip()] if results.exists() else []
    attacked: dict[str, dict[str, float]] = {}
    for r in records:
        if r.get("n_examples") == 1000:
            attacked.setdefault(Path(r["checkpoint"]).parent.name, {})[r["attack"]] = r["accuracy"]
    print("| run | method | net (stand-in) | epochs x images | teacher | monitor clean | monitor PGD-10 | best epoch | clean (1000) | FGSM (1000) | PGD-10 (1000) |")
    print("|---|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for cfg_path in sorted(runs.glob("*/cifar10/*/config.yaml")):
        cfg = yaml.safe_load(cfg_path.read_text())
        if not (cfg_path.parent / "metrics.jsonl").exists():
            continue  # still in its first epoch
        rows = [json.loads(line) for line in (cfg_path.parent / "metrics.jsonl").read_text().splitlines() if line.strip()]
        done = [r for r in rows if "robust_acc" in r]
        if not done:
            continue
        best = max(done, key=lambda r: (r["robust_acc"], -r["epoch"]))
        a = attacked.get(cfg_path.parent.name, {})
        teacher = ", ".join(Path(t).parent.name if "/" in t else t for t in (cfg.get("teachers") or {}).values()) or "-"
        setting = "".join(f" {k}={v}" for k, v in (cfg.get("method_params") or {}).items())
        status = "" if len(rows) >= cfg["epochs"] else f" (stopped after {len(rows)})"
        cells = [f"{a[k]:.1f}" if k in a else "-" for k in ("clean", "fgsm", "pgd10")]
        print(f"| {cfg_path.parent.name} | {cfg['method']}{setting} | {cfg['paper_arch']} ({cfg['arch']}) | {cfg['epochs']}{status} x "
              f"{cfg['train_subset']} | {teacher} | {best['clean_acc']:.1f} | {best['robust_acc']:.1f} | {best['epoch']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
