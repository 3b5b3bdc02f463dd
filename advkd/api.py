"""The notebook API: advkd on your own tensors, DataLoaders and ``nn.Module``s.

The CLI reads checkpoints and datasets from disk; a researcher next to RobustBench or
torchattacks holds a model and tensors. These functions are the same engine on those objects:

- :func:`as_model`: any ``nn.Module`` taking normalised input -> a model on [0, 1] pixels;
- :func:`attack`: one attack by id on a batch of tensors;
- :func:`evaluate_model`: clean and robust accuracy under a suite or a list of attacks, on
  tensors, a :class:`~advkd.data.batches.TensorData` or a ``DataLoader``, returning the records
  ``advkd attack`` writes (without the checkpoint fields);
- :func:`train_step`: one step of a training method on a batch;
- :func:`distill`: a whole ``advkd distill`` run.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advkd.attacks import ATTACKS
from advkd.attacks import build as build_attack
from advkd.core.accel import FastPaths, tune_malloc
from advkd.core.epsilon import parse_eps
from advkd.core.errors import AdvkdError
from advkd.data.batches import TensorData
from advkd.evaluation.driver import attack_list, clean_accuracy_on, make_record, outcome_flags, parse_attack_examples
from advkd.evaluation.evaluate import CLEAN, evaluate
from advkd.evaluation.records import environment
from advkd.evaluation.sanity import warn_if_training
from advkd.methods import check_roles
from advkd.methods.base import Method
from advkd.models.normalize import Normalize, get_normalization


def as_model(module: nn.Module, normalize: str | tuple[Sequence[float], Sequence[float]] | None = None) -> nn.Module:
    """``module`` as a model of [0, 1] pixels: ``normalize`` (``"cifar10"``, or ``(mean, std)``)
    is applied inside it, so attacks and eps budgets stay in pixel space."""
    if normalize is None:
        return module
    stats = get_normalization(normalize) if isinstance(normalize, str) else normalize
    if stats is None:
        return module
    wrapped = nn.Sequential(Normalize(*stats), module)
    wrapped.training = wrapped[0].training = module.training  # the wrapper keeps the module's mode (see evaluate_model)
    return wrapped


def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack_id: str = "pgd10", *, eps: str | float | None = "8/255",
           **params: Any) -> torch.Tensor:
    """Adversarial examples of ``attack_id`` (``pgd10``, ``aa``, ``cwinf`` ...) for images ``x`` in
    [0, 1]; the model is put in eval mode for the attack and restored after (a model handed over
    in train mode also gets a ``TrainModeWarning``: ``model-in-train-mode``)."""
    tune_malloc()
    warn_if_training(model)
    bounded = ATTACKS.get(attack_id).default_eps is not None  # cw2 and jsma take no eps
    return build_attack(attack_id, eps=eps if bounded else None, **params)(model, x, y)


def _as_data(data: TensorData | tuple[torch.Tensor, torch.Tensor] | Iterable[Any]) -> TensorData:
    if isinstance(data, TensorData):
        return data
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        images, labels = data
    else:  # a DataLoader (or any iterable of (images, labels) batches)
        batches = [(b[0], b[1]) for b in data]
        if not batches:
            raise AdvkdError("evaluate_model: the data yielded no batches")
        images, labels = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    return TensorData(images.detach().cpu(), labels.detach().cpu().long())


def evaluate_model(
    model: nn.Module,
    data: TensorData | tuple[torch.Tensor, torch.Tensor] | Iterable[Any],
    *,
    suite: str | None = None,
    attacks: Sequence[str] | None = None,
    eps: str = "8/255",
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    attack_examples: dict[str, int] | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Accuracy of ``model`` under ``suite`` (or ``attacks``; default the ``quick`` suite), one
    record per attack with the keys ``advkd attack`` writes to results.jsonl (``checkpoint`` and
    the training metadata are None). ``data``: (images in [0, 1] or uint8, labels), a TensorData
    or a DataLoader; ``attack_examples``: ``{"aa": 100}`` scores that attack on the first 100 only.
    Every record's ``sanity_flags`` are those ``advkd attack`` prints; a model handed over in train
    mode is evaluated in eval mode, put back in train mode, warned about (``TrainModeWarning``) and
    flagged ``model-in-train-mode``."""
    tune_malloc()
    ids = attack_list(suite, ",".join(attacks) if attacks else None, default_suite="quick")
    limits = parse_attack_examples([f"{a}={n}" for a, n in (attack_examples or {}).items()], ids)
    data = _as_data(data)
    dev = torch.device(device)
    model = model.to(dev)
    torch.manual_seed(seed)
    outcomes = evaluate(model, data, ids, eps=parse_eps(eps), batch_size=batch_size, device=dev, limits=limits)
    env, flags = environment(dev), outcome_flags(outcomes)
    return [
        make_record(Path("<in-memory model>"), "", {}, o, label=a, n=len(data), batch_size=batch_size, seed=seed, env=env, flags=flags,
                    surrogate=None, fast=FastPaths(), clean_accuracy=clean_accuracy_on(outcomes[CLEAN], o.n))
        for a, o in outcomes.items()
    ]


def train_step(method: Method, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """One step of ``method`` (from :func:`advkd.build_method`): inner maximisation on ``model``,
    the method's loss, backward, optimizer step. Returns the method's logged values."""
    model.train()
    x_adv = method.perturb(model, x, y)
    loss, logs = method.loss(model, x, x_adv, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.detach()), **{k: float(v) for k, v in logs.items()}}


def distill(
    method: str,
    *,
    student: str = "resnet18",
    teacher: str | None = None,
    clean_teacher: str | None = None,
    robust_teacher: str | None = None,
    dataset: str = "cifar10",
    preset: str | None = None,
    runs_dir: str | Path = "runs",
    data_dir: str | Path = "data",
    settings: dict[str, Any] | None = None,
    device: str = "auto",
    resume: bool = False,
    log_to: Sequence[str] | None = None,
    **flags: Any,
):
    """``advkd distill`` as a function: the same defaults (the method's paper preset on the papers'
    datasets), ``settings`` as ``--set`` (``{"method.beta": 6, "lr": 0.05}``), other flags as
    keywords (``epochs=4, train_subset=2500``), ``log_to=["tensorboard"]`` as ``--log`` (the
    ``tensorboard`` / ``wandb`` extras). Returns the run's Summary (``path``, ``best_epoch``,
    ``best_metrics``, the trained ``model``).

    Teachers, as ``--teacher`` / ``--clean-teacher`` / ``--robust-teacher`` take them: a checkpoint
    path, an architecture name (the newest matching ``pretrain-teacher`` run in ``runs_dir``),
    ``ARCH:weights.pt`` or ``robustbench:<model id>``. ``teacher`` for the single-teacher methods
    (rslad, adaad, ...), ``clean_teacher`` and ``robust_teacher`` for the two-teacher ones (mtard,
    bmtard, ...); a role the preset names may be left out. A missing or extra one is an
    AdvkdError naming these keywords, before any work."""
    from advkd.core.distributed import pick_device, setup
    from advkd.core.progress import Reporter
    from advkd.training.config import TrainConfig, default_preset, resolve_config
    from advkd.training.loop import run, with_preset_teachers

    tune_malloc()
    teachers = {r: s for r, s in (("teacher", teacher), ("clean_teacher", clean_teacher), ("robust_teacher", robust_teacher)) if s}
    unknown = sorted(set(flags) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise AdvkdError(f"distill: unknown setting {unknown[0]!r}; pass method settings as settings={{'method.{unknown[0]}': ...}}")
    cfg = resolve_config(
        TrainConfig(kind="distill"), preset=preset if preset is not None else default_preset(method, dataset),
        set_items=[f"{k}={v}" for k, v in (settings or {}).items()],
        flags={"method": method, "arch": student, "dataset": dataset, "teachers": teachers, **flags},
    )
    check_roles(cfg.method, set(with_preset_teachers(cfg).teachers), keywords=True)  # names this function's keywords
    dev = setup(pick_device(device))
    return run(cfg, runs_dir=runs_dir, data_dir=data_dir, device=dev, resume=resume, reporter=Reporter(), log_to=list(log_to or []))
