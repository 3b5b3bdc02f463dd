"""A markdown table of the runs of a runs dir: one row per run, from its config.yaml, metrics.jsonl and results.jsonl.

Usage: python docs/scales/summarize.py RUNS_DIR
RUNS_DIR is a runs dir, or a records folder (the same files without the checkpoints:
docs/scales/records, docs/results-small). "monitor" columns are the per-epoch evaluation (clean /
PGD-10 on the preset's first test images) at the selected epoch; "train s" is the sum of the
epochs' seconds (training plus monitor); the attack columns are the newest `advkd attack` records
of the run's best checkpoint, with the number of test images each attack scored.
"""
import json
import sys
from pathlib import Path

import yaml

ATTACKS = ("clean", "fgsm", "pgd10", "aa")


def _records(runs: Path) -> dict[str, dict[str, dict]]:
    """run folder name -> attack -> newest record of its best checkpoint."""
    results = runs / "results.jsonl"
    out: dict[str, dict[str, dict]] = {}
    if results.exists():
        for line in results.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if Path(r["checkpoint"]).name == "best.safetensors":
                    out.setdefault(Path(r["checkpoint"]).parent.name, {})[r["attack"]] = r
    return out


def main() -> None:
    runs = Path(sys.argv[1])
    attacked = _records(runs)
    print("| run | method | net (stand-in) | epochs x images (steps) | teacher | monitor clean | monitor PGD-10 | best epoch | train s | "
          + " | ".join(ATTACKS) + " |")
    print("|---|---|---|---|---|---:|---:|---:|---:|" + "---:|" * len(ATTACKS))
    for cfg_path in sorted(runs.glob("*/*/*/config.yaml")):
        cfg = yaml.safe_load(cfg_path.read_text())
        metrics = cfg_path.parent / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
        done = [r for r in rows if "robust_acc" in r or "clean_acc" in r]
        if not done:
            continue  # still in its first epoch
        key = "robust_acc" if cfg.get("select") not in ("clean", "w_robust") else ("clean_acc" if cfg["select"] == "clean" else "w_robust")
        best = max(done, key=lambda r: (r.get(key) or 0.0, -r["epoch"]))
        a = attacked.get(cfg_path.parent.name, {})
        teacher = ", ".join(Path(t).parent.name if "/" in t else t for t in (cfg.get("teachers") or {}).values()) or "-"
        setting = "".join(f" {k}={v}" for k, v in (cfg.get("method_params") or {}).items())
        status = "" if len(rows) >= cfg["epochs"] else f" (stopped after {len(rows)})"
        steps = cfg["epochs"] * -(-cfg["train_subset"] // cfg["batch_size"]) if cfg.get("train_subset") else "?"
        seconds = sum(r.get("seconds", 0.0) for r in rows)
        cells = [f"{a[k]['accuracy']:.1f} ({a[k]['n_examples']})" if k in a else "-" for k in ATTACKS]
        monitor_pgd = f"{best['robust_acc']:.1f}" if "robust_acc" in best else "-"
        print(f"| {cfg_path.parent.name} | {cfg['method']}{setting} | {cfg['paper_arch']} ({cfg['arch']}) | {cfg['epochs']}{status} x "
              f"{cfg['train_subset']} ({steps}) | {teacher} | {best['clean_acc']:.1f} | {monitor_pgd} | {best['epoch']} | {seconds:.0f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
