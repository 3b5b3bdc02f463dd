"""Robust accuracy of a model under a list of attacks, with per-example flags and sanity checks.

Gradient attacks only attack points the model classifies correctly on clean input: a
misclassified clean point counts as not robust under every attack (as RobustBench and
AutoAttack count it), so attacking it would only waste passes. Accuracy under an attack is
the final iterate's accuracy (the papers' semantics). ``worst`` is the pointwise worst case
over the listed attacks: a point is robust only if every attack failed on it.

Attacks run one after the other over the whole set (attack-major), so an attack that batches
itself (AutoAttack, with its resumable state) sees all its points at once. With a
``surrogate`` the examples are crafted on the surrogate and scored on the model (transfer).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advkd.attacks import ATTACKS
from advkd.attacks import build as build_attack
from advkd.attacks.modes import training_mode
from advkd.core.accel import FastPaths, autocast, eval_model, to_memory_format, tune_malloc
from advkd.core.distributed import all_reduce_sum, rank, shard, world_size
from advkd.core.epsilon import Eps, parse_eps
from advkd.core.progress import Reporter, duration_text
from advkd.data.batches import TensorData, eval_batches, to_float
from advkd.evaluation.kept import keep, kept
from advkd.evaluation.sanity import warn_if_training

CLEAN = "clean"


@dataclass
class Outcome:
    """Per-example correctness of one attack on an evaluation set."""

    attack: str
    correct: torch.Tensor  # bool (N,)
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    eps: Eps | None = None
    threat_model: str = ""
    kind: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. AutoAttack per-stage accuracies

    @property
    def n(self) -> int:
        return int(self.correct.numel())

    @property
    def n_correct(self) -> int:
        return int(self.correct.sum())

    @property
    def accuracy(self) -> float:
        return 100.0 * self.n_correct / max(self.n, 1)


def w_robust(clean_acc: float, robust_acc: float) -> float:
    """B-MTARD Eq. 22: 0.5 * clean + 0.5 * robust."""
    return 0.5 * clean_acc + 0.5 * robust_acc


def attack_kind(attack_id: str) -> str:
    return ATTACKS.entry(attack_id).meta.get("kind", "white-box")


def build_eval_attack(attack_id: str, eps: Eps, params: dict[str, Any], state_dir: Path | None):
    """Bounded attacks get the evaluation eps; unbounded ones (cw2, jsma) take none.

    Attacks that can resume (AutoAttack) get a per-attack, per-rank state folder.
    """
    cls = ATTACKS.get(attack_id)
    extra: dict[str, Any] = {}
    if state_dir is not None and "state_dir" in inspect.signature(cls.__init__).parameters:
        extra["state_dir"] = str(Path(state_dir) / attack_id / f"rank{rank()}")
    bounded = cls.default_eps is not None
    return build_attack(attack_id, eps=eps if bounded else None, **params, **extra)


@torch.no_grad()
def predict(model: nn.Module, data: TensorData, batch_size: int, device, fast: FastPaths) -> torch.Tensor:
    """Predicted labels for every example, in order (CPU tensor); sharded across ranks."""
    out = torch.zeros(len(data), dtype=torch.long)
    for x, _, i in eval_batches(data, batch_size, device=device, rank=rank(), world_size=world_size()):
        out[i.cpu()] = model(to_memory_format(x, fast)).argmax(1).cpu() + 1
    return all_reduce_sum(out) - 1


def _attack_points(attack, model, crafter, data: TensorData, idx: torch.Tensor, batch_size: int, device, task, fast: FastPaths) -> torch.Tensor:
    """Robust flags (bool, len(idx)) of the points ``idx`` under ``attack`` crafted on ``crafter``.

    Under torchrun each rank attacks a contiguous share of ``idx``; flags are summed across ranks.
    """
    start, stop = shard(len(idx))
    flags = torch.zeros(len(idx), dtype=torch.long)
    chunk = (stop - start) if getattr(attack, "whole_set", False) else batch_size
    for b in range(start, stop, max(chunk, 1)):
        e = min(b + chunk, stop)
        sel = idx[b:e]
        x = to_memory_format(to_float(data.images[sel].to(device)), fast)
        y = data.labels[sel].to(device)
        x_adv = attack(crafter, x, y)
        with torch.no_grad():
            flags[b:e] = (model(x_adv).argmax(1) == y).long().cpu()
        task.advance(e - b)
    return all_reduce_sum(flags).bool()


def _stage_accuracies(attack, n: int) -> dict[str, Any]:
    """AutoAttack-style per-stage robust accuracy (%) over the whole set, when the attack keeps it."""
    stages = getattr(attack, "stage_flags", None)
    if not stages:
        return {}
    return {"stages": {stage: 100.0 * int(flags.sum()) / max(n, 1) for stage, flags in stages.items() if stage != CLEAN}}


def evaluate(
    model: nn.Module,
    data: TensorData,
    attacks: list[str],
    *,
    eps: str | float | Eps = "8/255",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    reporter: Reporter | None = None,
    attack_params: dict[str, dict[str, Any]] | None = None,
    surrogate: nn.Module | None = None,
    state_dir: Path | None = None,
    fast: FastPaths | None = None,
    limits: dict[str, int] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Outcome]:
    """Evaluate ``model`` (eval mode, restored after) on ``data`` under ``attacks``. A model handed
    over in train mode gets a :class:`~advkd.evaluation.sanity.TrainModeWarning` and
    ``model_was_training`` in the clean Outcome's ``extra`` (records: ``model-in-train-mode``).

    ``"clean"`` is always evaluated first; the other attacks only attack its correct points.
    Returns attack id -> Outcome, clean included. ``surrogate``: transfer evaluation.
    ``state_dir``: where resumable attacks keep their progress (an interrupted AutoAttack run
    continues from its last finished stage when called again with the same folder).
    ``fast``: speed switches (default: BN folded into convs, fp32, no layout change).
    ``limits``: attack id -> N: that attack scores only the first N points (slow attacks such as
    AutoAttack on a subset, as the scaled-down presets do); its Outcome has N flags.
    """
    tune_malloc()  # once per process; the CLI does it at start, a notebook gets it here
    fast = fast or FastPaths()
    eps = parse_eps(eps)
    reporter = reporter or Reporter(enabled=False)
    built = {a: build_eval_attack(a, eps, (attack_params or {}).get(a, {}), state_dir) for a in attacks if a != CLEAN}
    modules = [m for m in (model, surrogate) if m is not None]
    out: dict[str, Outcome] = {}
    was_training = warn_if_training(model)  # flagged in the clean Outcome's extra and warned about
    with training_mode(*modules, train=False), autocast(torch.device(device), fast.amp):
        net = eval_model(model, fast)
        crafter = eval_model(surrogate, fast) if surrogate is not None else net
        t0 = time.perf_counter()
        clean = predict(net, data, batch_size, device, fast) == data.labels.cpu()
        out[CLEAN] = Outcome(CLEAN, clean, time.perf_counter() - t0, threat_model="none", kind="clean", extra={"model_was_training": was_training} if was_training else {})
        idx = torch.nonzero(clean).flatten()
        sizes = {a: int((idx < min(len(data), (limits or {}).get(a, len(data)))).sum()) for a in built}
        suite = SuiteClock({a: built[a].passes_per_point() * sizes[a] for a in built})
        for attack_id, attack in built.items():
            t0 = time.perf_counter()
            n = min(len(data), (limits or {}).get(attack_id, len(data)))
            label = f"{attack_id}{' (transfer)' if surrogate is not None else ''}"
            signature = {"params": dict(attack.params), "eps": attack.eps, "transfer": surrogate is not None, **(context or {})}
            earlier = kept(state_dir, attack_id, n, signature) if state_dir is not None else None
            if earlier is not None:
                correct, seconds, extra = earlier
                reporter.log(f"{label}: kept from the interrupted run of this command ({100.0 * float(correct.float().mean()) if n else 0.0:.2f}%)")
            else:
                points = idx[idx < n]
                correct = torch.zeros(n, dtype=torch.bool)
                if hasattr(attack, "log"):  # staged attacks (AutoAttack): each stage's start, progress and end
                    attack.log = lambda line, label=label: reporter.log(f"{label}: {line}")
                with reporter.task(label, total=len(points) // world_size(), unit="clean-correct points") as task:
                    correct[points] = _attack_points(attack, net, crafter, data, points, batch_size, device, task, fast)
                    task.fields["acc"] = 100.0 * float(correct.float().mean()) if n else 0.0
                seconds, extra = time.perf_counter() - t0, _stage_accuracies(attack, n)
                if state_dir is not None:
                    keep(state_dir, attack_id, correct, seconds, extra, signature)
            out[attack_id] = Outcome(
                attack_id, correct, seconds, params=dict(attack.params), eps=attack.eps,
                threat_model=attack.threat_model, kind=attack_kind(attack_id), extra=extra,
            )
            line = suite.done(attack_id, time.perf_counter() - t0)
            if line:
                reporter.log(line)
    return out


class SuiteClock:
    """The suite's ETA: each attack's rough cost (passes per point x points), scaled by the seconds
    per pass measured on the attacks already run."""

    def __init__(self, units: dict[str, float]) -> None:
        self.units, self.spent, self.finished = units, 0.0, []

    def done(self, attack_id: str, seconds: float) -> str:
        self.finished.append(attack_id)
        self.spent += seconds
        left = [a for a in self.units if a not in self.finished]
        done_units = sum(self.units[a] for a in self.finished)
        if not left or done_units <= 0:
            return ""
        eta = self.spent / done_units * sum(self.units[a] for a in left)
        return f"suite: {len(self.finished)} of {len(self.units)} attacks done; about {duration_text(eta)} left ({', '.join(left)})"


def worst_case(outcomes: dict[str, Outcome]) -> torch.Tensor:
    """Pointwise worst case: robust only where every listed attack (and clean) was survived.

    Over the points every outcome scored: with per-attack limits, the first ``min(n)`` points.
    """
    if not outcomes:
        return torch.zeros(0, dtype=torch.bool)
    n = min(o.n for o in outcomes.values())
    flags = torch.ones(n, dtype=torch.bool)
    for outcome in outcomes.values():
        flags &= outcome.correct[:n]
    return flags
