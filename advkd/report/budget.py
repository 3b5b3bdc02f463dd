"""Budgets before work: what each command of a plan will cost on this device.

A plan can be minutes on a GPU and months on a CPU, so ``report --plan`` prices every command
before anything runs. Two ingredients:

- **Calibration** (:func:`calibrate`): a few timed passes of each network the plan involves, on
  the device the commands will use -- a no-grad forward, an eval-mode forward with a backward to
  the input (one attack step), the same in train mode (ARD's and IAD's attack step), a train-mode
  forward with a backward to the parameters (one optimiser step) -- as seconds per image. Cached per device (device name, threads, torch
  version) in ``<runs dir>/.calibration/`` or ``$ADVKD_CALIBRATION_DIR``, so only the first plan on
  a machine pays for it.
- **Counts**: a training run is ``epochs x images`` times its method's irreducible passes
  (:mod:`advkd.methods.passes`: the inner attack's steps, the teacher forwards, the student
  forwards with gradient, the side forwards), plus the per-epoch monitor; an attack is its passes
  per point (:meth:`advkd.attacks.engine.Attack.expected_passes`) on the points a prior says are
  clean-correct. The prior is the preset's ``evaluation.expected_accuracy`` (clean and robust,
  in percent), else a paper-scale ResNet-18's.

The passes are timed under the speed paths the commands will run with (:mod:`advkd.core.accel`):
a training run's under the device's training defaults (on this project's CPU bf16 autocast and
channels-last, on CUDA also bf16), an attack's under the evaluation defaults (fp32). What it leaves
out: data loading, the PGD update arithmetic, losses and Python (a few percent on the benchmarks'
nets), BN folding in evaluation, and torch.compile on CUDA.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from advkd.core.accel import FastPaths, apply_to_model, autocast, busy_machine_warning, cpu_model, resolve_fast_paths, to_memory_format
from advkd.core.errors import AdvkdError
from advkd.core.files import atomic_write_text

CALIBRATION_DIR = ".calibration"
CALIBRATION_FORMAT = "advkd-calibration-v2"
TARGET_PASS_S = 0.25  # calibration batch: grown until one pass takes about this long
MAX_BATCH = 64
DEFAULT_ACCURACY = {"clean": 84.0, "robust": 50.0}  # a paper-scale robust ResNet-18 (AdaAD Table 2)
TRAIN_SIZES = {"cifar10": 50000, "cifar100": 50000, "tinyimagenet": 100000, "synthetic": 512}


@dataclass(frozen=True)
class NetCost:
    """Seconds per image of one network on one device (see the module docstring)."""

    forward: float  # eval mode, no grad
    input_grad: float  # eval mode, forward + backward to the input (an attack step)
    train: float  # train mode, forward + backward to the parameters
    train_input_grad: float = 0.0  # train mode, forward + backward to the input (ARD / IAD's inner attack); 0 = as input_grad
    batch: int = 0  # the batch the calibration timed


@dataclass(frozen=True)
class TrainWork:
    """What a ``pretrain-teacher`` / ``distill`` command trains, as the plan knows it."""

    kind: str
    method: str
    arch: str  # as on the command line (a paper arch under a stand-in preset)
    dataset: str
    preset: str
    teachers: tuple[tuple[str, str], ...] = ()  # (role, stand-in arch the teacher run trains)
    params: tuple[tuple[str, str], ...] = ()  # --set method.K=V
    seed: int = 0
    price_as: str = ""  # a method without known passes (a plugin's, report --with) is priced as this built-in


@dataclass(frozen=True)
class AttackWork:
    """What an ``attack`` / ``transfer-attack`` command runs."""

    arch: str  # stand-in arch of the attacked checkpoint
    dataset: str
    attacks: tuple[str, ...]
    n_examples: int  # 0 = the whole test set
    limits: tuple[tuple[str, int], ...] = ()  # attack -> first N points only
    accuracy: tuple[float, float] = (DEFAULT_ACCURACY["clean"], DEFAULT_ACCURACY["robust"])  # prior, percent
    surrogate: str = ""  # transfer: the stand-in arch that crafts the examples


@dataclass
class Estimate:
    seconds: float
    what: str  # one short line: "4 epochs x 3000 images, adaad passes on resnet8 + resnet14"
    parts: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------- calibration


def device_key(device: torch.device) -> str:
    """Names the machine a calibration is valid for: device model, threads, torch version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.machine()}-{cpu_model()}-{torch.get_num_threads()}threads"
    slug = "".join(c if c.isalnum() or c in "-." else "-" for c in f"{device.type}-{name}-torch{torch.__version__}")
    return "-".join(p for p in slug.split("-") if p)


def calibration_path(runs_dir: Path, device: torch.device) -> Path:
    root = Path(os.environ["ADVKD_CALIBRATION_DIR"]) if os.environ.get("ADVKD_CALIBRATION_DIR") else runs_dir / CALIBRATION_DIR
    return root / f"{device_key(device)}.json"


def _net_key(arch: str, dataset: str, paths: FastPaths | None = None) -> str:
    """Cache key of one network under one set of speed paths (fp32 NCHW keeps the older bare key)."""
    speed = "" if paths is None or not (paths.amp or paths.channels_last) else f"+{paths.describe()}"
    return f"{arch}@{dataset}{speed}"


def command_paths(device: torch.device, use: str) -> FastPaths:
    """The speed paths a command of kind ``use`` ("train" or "attack") runs with by default."""
    paths = resolve_fast_paths(device, amp_default=False if use == "attack" else None)
    return FastPaths(amp=paths.amp, channels_last=paths.channels_last)  # compile is not calibrated


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if data.get("format") == CALIBRATION_FORMAT else {}


def calibrate(nets: set[tuple[str, str]], device: torch.device, runs_dir: Path,
              log: Callable[[str], None] | None = None, *, paths: FastPaths | None = None) -> dict[tuple[str, str], NetCost]:
    """Per-image costs of each (arch, dataset) on ``device`` under ``paths`` (default fp32 NCHW),
    timing only the ones not cached."""
    path = calibration_path(runs_dir, device)
    cache = _read_cache(path)
    known = cache.get("nets", {})
    todo = sorted(n for n in nets if _net_key(*n, paths) not in known)
    if todo:
        busy = busy_machine_warning() if device.type == "cpu" else ""
        if log:
            how = f" under {paths.describe()}" if paths is not None else ""
            kept = f"not cached: {busy}; the estimates will be too long, plan again on a quiet machine" if busy else f"once per machine; cached in {path}"
            log(f"calibrating {', '.join(a for a, _ in todo)} on {device.type}{how} ({kept})")
        timed = {_net_key(arch, dataset, paths): asdict(time_network(arch, dataset, device, paths=paths)) for arch, dataset in todo}
        if busy:  # a busy machine's timings would price every later plan too slow: used once, never kept
            return {n: NetCost(**{**known, **timed}[_net_key(*n, paths)]) for n in nets}
        known.update(timed)
        cache = {"format": CALIBRATION_FORMAT, "device": device_key(device), "nets": known,
                 "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            atomic_write_text(path, json.dumps(cache, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass  # a read-only runs dir: estimate anyway, calibrate again next time
    return {n: NetCost(**known[_net_key(*n, paths)]) for n in nets}


def time_network(arch: str, dataset: str, device: torch.device, *, paths: FastPaths | None = None) -> NetCost:
    """Time the passes of a freshly built ``arch`` (random weights: speed does not depend on them)
    under ``paths`` (channels-last weights and inputs, bf16 autocast; default fp32 NCHW)."""
    from advkd.data.loaders import dataset_info
    from advkd.models import build_model

    paths = paths or FastPaths()
    info = dataset_info(dataset)
    model = apply_to_model(build_model(arch, num_classes=info.num_classes).to(device), paths)

    def inputs(b: int) -> torch.Tensor:
        return to_memory_format(torch.rand(b, info.channels, info.image_size, info.image_size, device=device), paths)

    def forward(x: torch.Tensor) -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    def input_grad(x: torch.Tensor) -> None:
        model.eval()
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xr).float().sum(), xr)

    def train_input_grad(x: torch.Tensor) -> None:
        model.train()
        xr = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xr).float().sum(), xr)

    def train(x: torch.Tensor) -> None:
        model.train()
        model.zero_grad(set_to_none=True)
        model(x).float().sum().backward()

    batch = 8
    while True:  # grow the batch until a pass is long enough to time (per-image cost falls with batch)
        seconds = min(_timed_rounds([input_grad], inputs(batch), device, rounds=1, amp=paths.amp)[0])
        if seconds >= TARGET_PASS_S or batch >= MAX_BATCH:
            break
        batch = min(MAX_BATCH, max(batch * 2, int(batch * TARGET_PASS_S / max(seconds, 1e-4))))
    passes = [forward, input_grad, train, train_input_grad]
    best = [min(t) / batch for t in _timed_rounds(passes, inputs(batch), device, rounds=3, amp=paths.amp)]
    model.zero_grad(set_to_none=True)
    return NetCost(forward=best[0], input_grad=best[1], train=best[2], train_input_grad=best[3], batch=batch)


def _timed_rounds(fns: list[Callable[[torch.Tensor], None]], x: torch.Tensor, device: torch.device, rounds: int,
                  amp: bool = False) -> list[list[float]]:
    """Seconds of each fn over ``rounds`` interleaved rounds, after one warm-up call of each: a burst
    of other work hits one round of every pass, and the fastest round is the estimate (noise only adds).
    ``amp``: the forwards under bf16 autocast (backwards run outside it, as in training)."""
    fns = [_under_autocast(fn, device) for fn in fns] if amp else fns
    for fn in fns:
        fn(x)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            fn(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[i].append(time.perf_counter() - t0)
    return times


def _under_autocast(fn: Callable[[torch.Tensor], None], device: torch.device) -> Callable[[torch.Tensor], None]:
    def wrapped(x: torch.Tensor) -> None:
        with autocast(device, True):
            fn(x)

    return wrapped


# ----------------------------------------------------------------------------- pricing


@functools.lru_cache(maxsize=256)
def train_config(work: TrainWork):
    """The resolved config the command will run with (the same layering as the CLI); once per
    work, as pricing asks for it twice (the stand-in, then the budget). Shared: do not modify."""
    from advkd.training.config import TrainConfig, resolve_config

    return resolve_config(
        TrainConfig(kind=work.kind), preset=work.preset, set_items=[f"method.{k}={v}" for k, v in work.params],
        flags={"method": work.method, "arch": work.arch, "dataset": work.dataset, "seed": work.seed},
    )


def standin(work: TrainWork) -> str:
    """The network the command trains (the preset's stand-in for ``work.arch``)."""
    return train_config(work).arch_map.get(work.arch, work.arch)


def method_steps(method: str, params: dict) -> tuple[int, int | None]:
    """(inner attack steps, introspection begin epoch or None) of a method with these overrides."""
    from advkd.methods import METHODS

    defaults = METHODS.get(method).Params()
    steps = int(params.get("steps", getattr(defaults, "steps", 0)))
    begin = params.get("begin", getattr(defaults, "begin", None))
    return steps, (None if begin is None else int(begin))


def step_seconds(method: str, epoch: int, steps: int, begin: int | None, student: NetCost, teachers: dict[str, NetCost]) -> float:
    """Seconds per training image of one step of ``method`` at 0-indexed ``epoch``."""
    from advkd.methods.passes import floor_for

    floor = floor_for(method, epoch=epoch, begin=begin)
    s = len(floor.pre) * student.forward + len(floor.grad) * student.train + floor.side * student.forward
    if floor.attack == "student_train":
        s += steps * (student.train_input_grad or student.input_grad)
    elif floor.attack is not None:
        s += steps * student.input_grad
        if floor.attack == "student_teacher_eval":
            s += steps * teachers["teacher"].input_grad
    return s + sum(teachers[role].forward for role, _ in floor.teachers)


def price_training(work: TrainWork, student: NetCost, teachers: dict[str, NetCost], accuracy: tuple[float, float]) -> Estimate:
    from advkd.attacks import build
    from advkd.training.config import evaluates

    cfg = train_config(work)
    images = cfg.train_subset or TRAIN_SIZES.get(work.dataset, 50000)
    steps, begin = method_steps(work.method, cfg.method_params)
    priced = work.price_as or work.method  # whose passes per step (a --with method: its template's)
    train = sum(images * step_seconds(priced, e, steps, begin, student, teachers) for e in range(cfg.epochs))
    per_eval = cfg.eval_examples * student.forward  # the monitor runs in fp32: priced at the training paths, a slight underestimate under bf16
    if cfg.eval_attack:
        per_eval += cfg.eval_examples * accuracy[0] / 100 * build(cfg.eval_attack).expected_passes(_survive(accuracy)) * student.input_grad
    monitor = per_eval * sum(evaluates(cfg, n) for n in range(1, cfg.epochs + 1))
    arch = cfg.arch_map.get(work.arch, work.arch)
    nets = " + ".join([arch, *sorted({a for _, a in work.teachers})])
    return Estimate(train + monitor, f"{cfg.epochs} epochs x {images} images, {work.method} passes on {nets}",
                    {"train": train, "monitor": monitor})


def price_attacks(work: AttackWork, model: NetCost, surrogate: NetCost | None = None) -> Estimate:
    from advkd.attacks import build

    limits = dict(work.limits)
    n_total = work.n_examples or 10000
    clean, _ = work.accuracy
    crafter = surrogate or model
    parts: dict[str, float] = {"clean": n_total * model.forward}
    for attack_id in work.attacks:
        n = min(n_total, limits.get(attack_id, n_total))
        passes = build(attack_id).expected_passes(_survive(work.accuracy))
        parts[attack_id] = n * clean / 100 * passes * crafter.input_grad
    where = f"{work.surrogate} -> {work.arch}" if work.surrogate else work.arch
    return Estimate(sum(parts.values()), f"{', '.join(work.attacks)} on {n_total} images of {where}", parts)


def _survive(accuracy: tuple[float, float]) -> float:
    """Fraction of the clean-correct points an attack's first stage leaves robust (the prior)."""
    clean, robust = accuracy
    return 0.0 if clean <= 0 else min(1.0, max(0.0, robust / clean))


def expected_accuracy(evaluation: dict) -> tuple[float, float]:
    """The preset's prior ``evaluation.expected_accuracy`` {clean, robust} (percent), else a paper-scale student's."""
    prior = {**DEFAULT_ACCURACY, **(evaluation.get("expected_accuracy") or {})}
    try:
        clean, robust = float(prior["clean"]), float(prior["robust"])
    except (TypeError, ValueError):
        raise AdvkdError(f"preset evaluation.expected_accuracy must be numbers (percent), got {evaluation.get('expected_accuracy')!r}") from None
    if not (0 <= robust <= clean <= 100) or math.isnan(clean):
        raise AdvkdError(f"preset evaluation.expected_accuracy needs 0 <= robust <= clean <= 100 (percent), got {prior}")
    return clean, robust


# ----------------------------------------------------------------------------- a plan's budget


def estimate_works(works: list[TrainWork | AttackWork | None], *, runs_dir: Path, device: torch.device,
                   log: Callable[[str], None] | None = None) -> list[Estimate | None]:
    """Price each work (None stays None): calibrate the networks they involve, then count."""
    students = {i: standin(w) for i, w in enumerate(works) if isinstance(w, TrainWork)}
    train_nets: set[tuple[str, str]] = set()
    attack_nets: set[tuple[str, str]] = set()
    for i, w in enumerate(works):
        if isinstance(w, TrainWork):
            train_nets |= {(students[i], w.dataset), *((a, w.dataset) for _, a in w.teachers)}
        elif isinstance(w, AttackWork):
            attack_nets |= {(w.arch, w.dataset), *(((w.surrogate, w.dataset),) if w.surrogate else ())}
    train_costs = calibrate(train_nets, device, runs_dir, log, paths=command_paths(device, "train")) if train_nets else {}
    costs = calibrate(attack_nets, device, runs_dir, log, paths=command_paths(device, "attack")) if attack_nets else {}
    out: list[Estimate | None] = []
    for i, w in enumerate(works):
        if isinstance(w, TrainWork):
            teachers = {role: train_costs[(a, w.dataset)] for role, a in w.teachers}
            accuracy = expected_accuracy(_preset_evaluation(w.preset))
            out.append(price_training(w, train_costs[(students[i], w.dataset)], teachers, accuracy))
        elif isinstance(w, AttackWork):
            out.append(price_attacks(w, costs[(w.arch, w.dataset)], costs[(w.surrogate, w.dataset)] if w.surrogate else None))
        else:
            out.append(None)
    return out


def _preset_evaluation(preset: str) -> dict:
    from advkd.training.config import cached_preset

    return cached_preset(preset).evaluation


def duration(seconds: float) -> str:
    """A budget's duration, rounded as an estimate should be: 45 s, 12 min, 3.5 h, 6 days."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def device_text(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (calibrated under the default paths)"
    return f"this CPU ({torch.get_num_threads()} threads)"
