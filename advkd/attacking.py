"""``advkd attack``: evaluate one checkpoint under a suite, write result records, show a table."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from advkd.attacks import ATTACKS
from advkd.checkpoint import load_checkpoint, sha256_file
from advkd.data import load_split
from advkd.epsilon import parse_eps
from advkd.errors import AdvkdError
from advkd.evaluate import CLEAN, Outcome, evaluate, w_robust, worst_case
from advkd.progress import Reporter
from advkd.results import RESULTS_FILE, append_records, environment, now_iso, pack_flags
from advkd.runs import latest_checkpoint
from advkd.suites import SUITES, suite_attacks

META_KEYS = ("dataset", "arch", "paper_arch", "method", "teachers", "preset", "scale", "epoch", "seed")


def attack_list(suite: str | None, attacks: str | None) -> list[str]:
    """The attacks to run, clean first; every id validated before any work starts."""
    if suite and attacks:
        raise AdvkdError("give either --suite or --attacks, not both")
    if suite:
        ids = suite_attacks(SUITES.canonical(suite))
    elif attacks:
        ids = [a.strip() for a in attacks.split(",") if a.strip()]
    else:
        ids = suite_attacks("quick")
    out = []
    for a in ids:
        canonical = CLEAN if a.lower() == CLEAN else ATTACKS.canonical(a)
        if canonical not in out:
            out.append(canonical)
    return [CLEAN] + [a for a in out if a != CLEAN]


@dataclass
class AttackReport:
    checkpoint: Path
    meta: dict[str, Any]
    outcomes: dict[str, Outcome]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean_acc(self) -> float:
        return self.outcomes[CLEAN].accuracy

    def worst_acc(self) -> float:
        flags = worst_case(self.outcomes)
        return 100.0 * float(flags.float().mean()) if flags.numel() else 0.0

    def as_json(self) -> dict[str, Any]:
        rows = [
            {"attack": a, "accuracy": o.accuracy, "correct": o.n_correct, "n": o.n, "w_robust": w_robust(self.clean_acc, o.accuracy), "seconds": o.seconds}
            for a, o in self.outcomes.items()
        ]
        worst = self.worst_acc()
        return {
            "checkpoint": str(self.checkpoint),
            **{k: self.meta.get(k) for k in META_KEYS},
            "results": rows,
            "worst_case": {"attacks": list(self.outcomes), "accuracy": worst, "w_robust": w_robust(self.clean_acc, worst)},
        }

    def print_table(self, console: Console | None = None) -> None:
        console = console or Console()
        m = self.meta
        arch = m.get("arch") if m.get("arch") == m.get("paper_arch") else f"{m.get('arch')} for {m.get('paper_arch')}"
        title = f"{m.get('method')} · {arch} · {m.get('dataset')} · scale {m.get('scale') or '?'} · epoch {int(m.get('epoch', -1)) + 1}"
        table = Table(title=title, title_justify="left", caption=str(self.checkpoint), caption_justify="left")
        for col in ("attack", "accuracy %", "W-Robust %", "correct / n", "seconds"):
            table.add_column(col, justify="left" if col == "attack" else "right")
        for a, o in self.outcomes.items():
            table.add_row(a, f"{o.accuracy:.2f}", f"{w_robust(self.clean_acc, o.accuracy):.2f}", f"{o.n_correct} / {o.n}", f"{o.seconds:.1f}")
        if len(self.outcomes) > 2:
            worst = self.worst_acc()
            table.add_row("[bold]worst case[/bold]", f"[bold]{worst:.2f}[/bold]", f"{w_robust(self.clean_acc, worst):.2f}", "", "")
        console.print(table)


def make_record(ckpt: Path, sha: str, meta: dict[str, Any], outcome: Outcome, *, n: int, batch_size: int, seed: int, env: dict[str, Any]) -> dict[str, Any]:
    eps = outcome.eps
    return {
        "checkpoint": str(ckpt),
        "sha256": sha,
        **{k: meta.get(k) for k in META_KEYS},
        "attack": outcome.attack,
        "params": outcome.params,
        "threat_model": outcome.threat_model,
        "eps": eps.text if eps else None,
        "eps_value": eps.value if eps else None,
        "n_examples": n,
        "correct": outcome.n_correct,
        "accuracy": outcome.accuracy,
        "robust_flags": pack_flags(outcome.correct),
        "batch_size": batch_size,
        "attack_seed": seed,
        "precision": "fp32",
        "seconds": outcome.seconds,
        "versions": env["versions"],
        "device": env["device"],
        "time": now_iso(),
    }


def run_attack(
    checkpoint: Path | None,
    *,
    suite: str | None,
    attacks: str | None,
    n_examples: int,
    batch_size: int,
    eps: str,
    data_dir: str,
    runs_dir: str,
    device: str,
    seed: int,
    reporter: Reporter,
) -> AttackReport:
    from advkd.train import pick_device

    ids = attack_list(suite, attacks)
    eps_parsed = parse_eps(eps)
    if n_examples < 0 or batch_size < 1:
        raise AdvkdError("--n-examples must be >= 0 and --batch-size >= 1")
    dev = pick_device(device)
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(runs_dir)
    model, meta = load_checkpoint(ckpt, device=dev)
    data = load_split(meta["dataset"], "test", data_dir)
    data = data.head(min(n_examples, len(data)) or None)
    torch.manual_seed(seed)
    reporter.log(f"attacking {ckpt} on {len(data)} {meta['dataset']} test images: {', '.join(ids)}")
    t0 = time.perf_counter()
    outcomes = evaluate(model, data, ids, eps=eps_parsed, batch_size=batch_size, device=dev, reporter=reporter)
    reporter.log(f"done in {time.perf_counter() - t0:.1f}s")
    env = environment(dev)
    sha = sha256_file(ckpt)
    records = [make_record(ckpt, sha, meta, o, n=len(data), batch_size=batch_size, seed=seed, env=env) for o in outcomes.values()]
    append_records(Path(runs_dir) / RESULTS_FILE, records)
    return AttackReport(ckpt, meta, outcomes, records)
