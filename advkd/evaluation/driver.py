"""``advkd attack`` and ``advkd transfer-attack``: evaluate, record, show a table.

Both share one path: resolve the checkpoint(s), load the test data, run ``evaluate``, turn
each outcome into a result record (appended to ``<runs-dir>/results.jsonl``), compute the
sanity flags, and render a table or JSON.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from advkd.attacks import ATTACKS
from advkd.core.accel import FastPaths, apply_checked, defaults_note, resolve_fast_paths
from advkd.core.console import print_wide
from advkd.core.distributed import is_main, setup
from advkd.core.epsilon import parse_eps
from advkd.core.errors import AdvkdError, spell
from advkd.core.files import remove_tree
from advkd.core.oserrors import check_writable
from advkd.core.preempt import deferred_stop_signals, stop_now_signals
from advkd.core.progress import Reporter, warn
from advkd.core.runs import check_inside, latest_checkpoint
from advkd.data.batches import to_float
from advkd.data.loaders import load_split
from advkd.evaluation.evaluate import CLEAN, Outcome, build_eval_attack, evaluate, w_robust, worst_case
from advkd.evaluation.records import RESULTS_FILE, append_records, check_store, environment, now_iso, pack_flags, read_records, results_path
from advkd.evaluation.sanity import Accuracy, sanity_flags
from advkd.evaluation.sources import load_source
from advkd.evaluation.suites import SUITES, suite_attacks

META_KEYS = ("dataset", "arch", "paper_arch", "method", "teachers", "preset", "scale", "epoch", "seed")
TRANSFER_PREFIX = "transfer-"


def attack_list(suite: str | None, attacks: str | None, *, default_suite: str = "quick") -> list[str]:
    """The attacks to run, clean first; every id validated before any work starts."""
    if suite and attacks:
        raise AdvkdError(f"give either {spell('--suite or --attacks', 'suite= or attacks=')}, not both")
    if suite:
        ids = suite_attacks(SUITES.canonical(suite))
    elif attacks is not None:
        ids = [a.strip() for a in attacks.split(",") if a.strip()]
        if not ids:
            raise AdvkdError(f"--attacks {attacks!r} names no attack; give ids like clean,fgsm,pgd10 (or --suite quick)")
    else:
        ids = suite_attacks(default_suite)
    out = []
    for a in ids:
        canonical = CLEAN if a.lower() == CLEAN else ATTACKS.canonical(a)
        if canonical not in out:
            out.append(canonical)
    return [CLEAN] + [a for a in out if a != CLEAN]


def parse_attack_set(items: list[str] | None, ids: list[str]) -> dict[str, dict[str, Any]]:
    """``--set aa.version=plus --set square.n_queries=1000`` -> {attack: {param: value}}."""
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        attack, dot, param = key.strip().partition(".")
        if not sep or not dot or not param:
            raise AdvkdError(f"--set {item!r} is not ATTACK.PARAM=VALUE; e.g. --set aa.version=plus")
        attack = ATTACKS.canonical(attack)
        if attack not in ids:
            raise AdvkdError(f"--set {item!r} names attack {attack}, which is not among the attacks run ({', '.join(ids)})")
        out.setdefault(attack, {})[param.strip()] = value.strip()
    return out


def clean_accuracy_on(clean: Outcome, n: int) -> float:
    head = clean.correct[:n]
    return 100.0 * float(head.float().mean()) if head.numel() else 0.0


def parse_attack_examples(items: list[str] | None, ids: list[str]) -> dict[str, int]:
    """``--attack-examples aa=100`` -> {"aa": 100}: that attack scores only the first 100 images."""
    out: dict[str, int] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        attack = ATTACKS.canonical(key.strip()) if key.strip() in ATTACKS else key.strip()
        if not sep or not value.strip().isdigit() or int(value) < 1:
            raise AdvkdError(f"{spell('--attack-examples', 'attack_examples')} {item!r} is not ATTACK=N with N >= 1; "
                             f"e.g. {spell('--attack-examples aa=100', 'attack_examples={' + repr('aa') + ': 100}')}")
        if attack not in ids or attack == CLEAN:
            raise AdvkdError(f"{spell('--attack-examples', 'attack_examples')} {item!r} names {attack!r}, which is not among the attacks run ({', '.join(a for a in ids if a != CLEAN)})")
        out[attack] = int(value)
    return out


def record_attack_id(attack: str, transfer: bool) -> str:
    return f"{TRANSFER_PREFIX}{attack}" if transfer and attack != CLEAN else attack


@dataclass
class AttackReport:
    checkpoint: Path
    meta: dict[str, Any]
    outcomes: dict[str, Outcome]
    surrogate: Path | None = None
    flags: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean_acc(self) -> float:
        return self.outcomes[CLEAN].accuracy

    def clean_acc_on(self, n: int) -> float:
        """Clean accuracy on the first ``n`` points: the W-Robust partner of an attack limited to them."""
        return clean_accuracy_on(self.outcomes[CLEAN], n)

    def worst_acc(self) -> float:
        flags = worst_case(self.outcomes)
        return 100.0 * float(flags.float().mean()) if flags.numel() else 0.0

    def label(self, attack: str) -> str:
        return record_attack_id(attack, self.surrogate is not None)

    def as_json(self) -> dict[str, Any]:
        rows = []
        for a, o in self.outcomes.items():
            row = {"attack": self.label(a), "accuracy": o.accuracy, "correct": o.n_correct, "n": o.n, "w_robust": w_robust(self.clean_acc_on(o.n), o.accuracy), "seconds": o.seconds}
            row.update({k: v for k, v in o.extra.items() if k != "model_was_training"})
            rows.append(row)
        worst, n_worst = self.worst_acc(), min(o.n for o in self.outcomes.values())
        out = {
            "checkpoint": str(self.checkpoint),
            **{k: self.meta.get(k) for k in META_KEYS},
            "results": rows,
            "worst_case": {"attacks": [self.label(a) for a in self.outcomes], "accuracy": worst, "n": n_worst, "w_robust": w_robust(self.clean_acc_on(n_worst), worst)},
            "sanity_flags": self.flags,
        }
        if self.surrogate is not None:
            out["surrogate"] = str(self.surrogate)
        return out

    def print_table(self, console: Console | None = None) -> None:
        console = console or Console()
        m = self.meta
        arch = m.get("arch") if m.get("arch") == m.get("paper_arch") else f"{m.get('arch')} for {m.get('paper_arch')}"
        title = f"{m.get('method')} · {arch} · {m.get('dataset')} · scale {m.get('scale') or '?'} · epoch {m.get('epoch', '?')}"
        caption = str(self.checkpoint) + (f"\ncrafted on {self.surrogate}" if self.surrogate else "")
        table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
        for col in ("attack", "accuracy %", "W-Robust %", "correct / n", "seconds"):
            table.add_column(col, justify="left" if col == "attack" else "right")
        for a, o in self.outcomes.items():
            table.add_row(self.label(a), f"{o.accuracy:.2f}", f"{w_robust(self.clean_acc_on(o.n), o.accuracy):.2f}", f"{o.n_correct} / {o.n}", f"{o.seconds:.1f}")
            for stage, acc in (o.extra.get("stages") or {}).items():
                table.add_row(f"  after {stage}", f"{acc:.2f}", "", "", "", style="dim")
        if len(self.outcomes) > 2:
            worst, n_worst = self.worst_acc(), min(o.n for o in self.outcomes.values())
            label = "worst case" if n_worst == self.outcomes[CLEAN].n else f"worst case (first {n_worst})"
            table.add_row(f"[bold]{label}[/bold]", f"[bold]{worst:.2f}[/bold]", f"{w_robust(self.clean_acc_on(n_worst), worst):.2f}", "", "")
        print_wide(table, console)
        for flag in self.flags:
            console.print(f"[yellow]sanity: {flag}[/yellow]", highlight=False, soft_wrap=not console.is_terminal)  # piped: paths stay whole


def train_optimizer(meta: dict[str, Any]) -> str | None:
    """The optimiser that trained an advkd checkpoint (runs before the setting existed used SGD);
    None for a foreign model."""
    config = meta.get("config")
    return config.get("optimizer", "sgd") if isinstance(config, dict) and config else None


def make_record(
    ckpt: Path, sha: str, meta: dict[str, Any], outcome: Outcome, *, label: str, n: int, batch_size: int, seed: int,
    env: dict[str, Any], flags: list[str], surrogate: dict[str, Any] | None, fast: FastPaths, clean_accuracy: float | None = None,
) -> dict[str, Any]:
    """One results.jsonl line. ``n`` is the evaluation set's size; an attack limited to its first
    ``outcome.n`` points also records ``clean_accuracy`` on those points (its W-Robust partner)."""
    eps = outcome.eps
    record = {
        "checkpoint": str(ckpt),
        "sha256": sha,
        **{k: meta.get(k) for k in META_KEYS},
        "train_eps": meta.get("eps") or None,
        "method_params": (meta.get("config") or {}).get("method_params", {}),
        "train_optimizer": train_optimizer(meta),
        "run": (meta.get("config") or {}).get("name"),
        "attack": label,
        "kind": "transfer" if surrogate and outcome.attack != CLEAN else outcome.kind,
        "params": outcome.params,
        "threat_model": outcome.threat_model,
        "eps": eps.text if eps else None,
        "eps_value": eps.value if eps else None,
        "n_examples": outcome.n,
        "correct": outcome.n_correct,
        "accuracy": outcome.accuracy,
        "robust_flags": pack_flags(outcome.correct),
        "batch_size": batch_size,
        "attack_seed": seed,
        "precision": fast.precision,
        "fast_paths": fast.as_record(),
        "seconds": outcome.seconds,
        "sanity_flags": flags,
        "versions": env["versions"],
        "device": env["device"],
        "time": now_iso(),
    }
    origin = (meta.get("config") or {}).get("method_origin")
    if origin:  # a plugin method: the package and class that trained it
        record["method_origin"] = origin
    if outcome.n < n:  # scored on the first outcome.n points only: keep the clean accuracy on those for W-Robust
        record["clean_accuracy"] = clean_accuracy
    record.update({k: v for k, v in outcome.extra.items() if k != "model_was_training"})
    if surrogate is not None:
        record["surrogate"] = surrogate
    return record


def outcome_flags(outcomes: dict[str, Outcome], *, transfer: bool = False, earlier: Sequence[Accuracy] = ()) -> list[str]:
    """The sanity flags of one evaluation (``advkd attack`` and :func:`advkd.api.evaluate_model`
    alike), a model handed over in train mode included; ``earlier``: white-box accuracies
    recorded before, which a transfer attack must not beat."""
    accs = [Accuracy(record_attack_id(a, transfer), "transfer" if transfer and a != CLEAN else o.kind, o.accuracy) for a, o in outcomes.items()]
    return sanity_flags([*accs, *earlier], model_was_training=bool(outcomes[CLEAN].extra.get("model_was_training")))


def _prior_white_box(runs_dir: str, sha: str) -> list[Accuracy]:
    """White-box accuracies already recorded for this checkpoint (for transfer sanity checks)."""
    latest: dict[str, Accuracy] = {}
    for r in read_records(Path(runs_dir) / RESULTS_FILE):
        if r.get("sha256") == sha and r.get("kind") == "white-box" and "surrogate" not in r:
            latest[r["attack"]] = Accuracy(r["attack"], "white-box", float(r["accuracy"]))
    return list(latest.values())


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
    surrogate: Path | None = None,
    set_items: list[str] | None = None,
    fast_flags: dict[str, bool | None] | None = None,
    attack_examples: list[str] | None = None,
    dataset: str | None = None,
    threat_model: str = "Linf",
) -> AttackReport:
    """Attack ``checkpoint`` (white-box, or transfer from ``surrogate``); append records.

    ``checkpoint`` and ``surrogate`` take every model form of :mod:`advkd.evaluation.sources`
    (advkd checkpoint, ``ARCH:weights.pt``, ``robustbench:<id>``); ``dataset`` and
    ``threat_model`` tell the foreign forms what they are (an advkd checkpoint says it itself).

    ``fast_flags``: amp / channels_last / fold_bn / freeze as given on the command line (None = default;
    evaluation runs in fp32 unless ``amp`` is set, and every record says which precision it used).
    """
    from advkd.core.distributed import pick_device

    ids = attack_list(suite, attacks, default_suite="transfer" if surrogate else "quick")
    attack_params = parse_attack_set(set_items, ids)
    limits = parse_attack_examples(attack_examples, ids)
    eps_parsed = parse_eps(eps)
    for a in ids:  # every attack built once with its --set parameters: a bad one is refused before any work
        if a != CLEAN:
            build_eval_attack(a, eps_parsed, attack_params.get(a, {}), None)
    if n_examples < 0 or batch_size < 1:
        raise AdvkdError("--n-examples must be >= 0 and --batch-size >= 1")
    dev = setup(pick_device(device))
    fast = resolve_fast_paths(dev, amp_default=False, **(fast_flags or {}))
    ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(runs_dir)
    target = load_source(ckpt, device=dev, dataset=dataset, threat_model=threat_model, data_dir=data_dir)
    model, meta = target.model, target.meta
    crafter, surrogate_info = None, None
    if surrogate is not None:
        other = load_source(surrogate, device=dev, dataset=meta["dataset"], threat_model=threat_model, data_dir=data_dir,
                            expect={"num_classes": meta["num_classes"]})
        crafter, smeta = other.model, other.meta
        surrogate_info = {"checkpoint": str(surrogate), "sha256": other.sha256, **{k: smeta.get(k) for k in ("arch", "paper_arch", "method", "scale")}}
    data = load_split(meta["dataset"], "test", data_dir)
    data = data.head(min(n_examples, len(data)) or None)
    check_writable(runs_dir)  # before the attacks, not at the final append of their records
    store = results_path(runs_dir)  # inside the runs dir, links resolved
    check_store(store)  # a bad line in the store is reported now, not after the attacks
    sha = target.sha256
    limited = "".join(f"-{a}{k}" for a, k in sorted(limits.items()))
    state_dir = check_inside(Path(runs_dir) / "attack-state" / f"{sha[:16]}-{len(data)}-{eps_parsed.value:.6f}{limited}", runs_dir,
                             what="attack state dir")
    check_writable(state_dir, what="attack state folder")  # a file in the way, or no permission: said now, not after an attack
    if fast.amp or fast.channels_last:  # a switch that fails on this machine falls back with one warning
        trial = to_float(data.images[: min(batch_size, len(data))]).to(dev)
        fast = apply_checked(fast, dev, model, [crafter] if crafter is not None else [], trial, warn=warn)
    torch.manual_seed(seed)
    what = f"transfer from {surrogate}" if surrogate else "white-box"
    reporter.log(f"attacking {ckpt} ({what}) on {len(data)} {meta['dataset']} test images: {', '.join(ids)}")
    reporter.log(defaults_note(dev, fast, evaluation=True))
    t0 = time.perf_counter()
    with stop_now_signals("finished attacks are kept"):  # SIGTERM / SIGUSR1: stop; a rerun skips what finished
        outcomes = evaluate(
            model, data, ids, eps=eps_parsed, batch_size=batch_size, device=dev, reporter=reporter, surrogate=crafter,
            attack_params=attack_params, state_dir=state_dir, fast=fast, limits=limits,
            context={"seed": seed, "batch_size": batch_size, "surrogate": surrogate_info["sha256"] if surrogate_info else None,
                     "precision": fast.precision},
        )
        reporter.log(f"done in {time.perf_counter() - t0:.1f}s")
        transfer = surrogate is not None
        flags = outcome_flags(outcomes, transfer=transfer, earlier=_prior_white_box(runs_dir, sha) if transfer else ())
        env = environment(dev)
        records = [
            make_record(ckpt, sha, meta, o, label=record_attack_id(a, transfer), n=len(data), batch_size=batch_size, seed=seed, env=env,
                        flags=flags, surrogate=surrogate_info, fast=fast, clean_accuracy=clean_accuracy_on(outcomes[CLEAN], o.n))
            for a, o in outcomes.items()
        ]
        if is_main():
            commit_then_forget(store, records, state_dir)
    return AttackReport(ckpt, meta, outcomes, surrogate, flags, records)


def commit_then_forget(store: Path, records: list[dict[str, Any]], state_dir: Path) -> None:
    """The records go durably into the store (a stop signal meanwhile waits for the write), and
    only then is the finished suite's kept state removed: a stop or a failure (a full disk, the
    store's lock held by another process) before that point leaves the kept state, so a rerun
    appends the same results without attacking again."""
    with deferred_stop_signals():  # the append is the command's last work: once it is whole, nothing is left to stop
        append_records(store, records)
    with contextlib.suppress(AdvkdError):  # a link put there meanwhile is left alone: the records are in
        remove_tree(state_dir)  # finished and recorded: nothing left to resume
