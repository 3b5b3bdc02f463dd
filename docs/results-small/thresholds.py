"""The small scale's stated targets for its second edition, checked against the records.

Usage: python docs/results-small/thresholds.py docs/results-small/records
Prints a markdown table: the robust teacher against >= 50 % clean and >= 28 % PGD-10, and every
distilled student against >= 40 % clean and PGD-10 >= PGD-AT's (mean over its seeds) - 3 points,
all on test images 0-999. A method with several seeds is judged on its mean (± sample s.d.), and
the worst seed is shown beside it. MTARD and B-MTARD are judged on the PGD-10 the Makefile adds
to Table III's attacks, so every student is compared on one attack.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

from advkd.evaluation.records import RESULTS_FILE, read_records

N = 1000  # the evaluation's test images (0-999)
TEACHER = ("wrn34-10-trades-small", 50.0, 28.0)
STUDENT_CLEAN = 40.0
MARGIN = 3.0
STUDENTS = ("ard", "iad", "rslad", "akd", "adaad", "adaiad", "mtard", "bmtard")
NAMES = {"pgd-at": "PGD-AT", "trades": "TRADES", "ard": "ARD", "iad": "IAD", "rslad": "RSLAD", "akd": "AKD",
         "adaad": "AdaAD", "adaiad": "AdaIAD", "mtard": "MTARD", "bmtard": "B-MTARD"}


def latest(records: list[dict]) -> dict[tuple[str, str], dict]:
    """(run, attack) -> the newest record on test images 0-999 (clean and PGD-10 only)."""
    out: dict[tuple[str, str], dict] = {}
    for r in records:
        if r.get("n_examples") != N or r.get("attack") not in ("clean", "pgd10"):
            continue
        key = (r["run"], r["attack"])
        if key not in out or r["time"] >= out[key]["time"]:
            out[key] = r
    return out


def seeds_of(acc: dict[tuple[str, str], dict], method: str) -> dict[str, list[float]]:
    """attack -> the accuracy of every seed of ``method``'s ResNet-18 student, in seed order."""
    rows = sorted((r["seed"], attack, r["accuracy"]) for (_, attack), r in acc.items()
                  if r.get("method") == method and r.get("paper_arch") == "resnet18")
    return {a: [float(v) for _, attack, v in rows if attack == a] for a in ("clean", "pgd10")}


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    acc = latest(read_records(Path(sys.argv[1]) / RESULTS_FILE))
    name, clean_bar, pgd_bar = TEACHER
    t_clean, t_pgd = (acc[(f"{name}-s0", a)]["accuracy"] if (f"{name}-s0", a) in acc else None for a in ("clean", "pgd10"))
    at = seeds_of(acc, "pgd-at")
    at_pgd = statistics.mean(at["pgd10"])
    bar = at_pgd - MARGIN
    print("| model | seeds | clean | PGD-10 | worst seed (clean / PGD-10) | bar | met |")
    print("|---|---:|---:|---:|---:|---|---|")
    ok = t_clean is not None and t_pgd is not None and t_clean >= clean_bar and t_pgd >= pgd_bar
    print(f"| robust teacher (ResNet-14 TRADES) | 1 | {t_clean} | {t_pgd} | – | ≥ {clean_bar:.0f} clean, ≥ {pgd_bar:.0f} PGD-10 | "
          f"{'yes' if ok else 'no'} |")
    for method in ("pgd-at", "trades", *STUDENTS):
        s = seeds_of(acc, method)
        if not s["clean"] or not s["pgd10"]:
            print(f"| {NAMES[method]} | 0 | – | – | – | – | no records |")
            continue
        clean, pgd = statistics.mean(s["clean"]), statistics.mean(s["pgd10"])
        worst = f"{min(s['clean']):.1f} / {min(s['pgd10']):.1f}" if len(s["clean"]) > 1 else "–"
        if method in STUDENTS:
            met = "yes" if clean >= STUDENT_CLEAN and pgd >= bar else (
                "no: " + ", ".join(m for m, bad in (("clean", clean < STUDENT_CLEAN), ("PGD-10", pgd < bar)) if bad))
            bar_text = f"≥ {STUDENT_CLEAN:.0f} clean, PGD-10 ≥ {bar:.1f}"
        else:
            met, bar_text = "(baseline)", f"PGD-AT's PGD-10 {at_pgd:.1f} sets the bar" if method == "pgd-at" else "–"
        print(f"| {NAMES[method]} | {len(s['clean'])} | {mean_sd(s['clean'])} | {mean_sd(s['pgd10'])} | {worst} | {bar_text} | {met} |")


if __name__ == "__main__":
    main()
