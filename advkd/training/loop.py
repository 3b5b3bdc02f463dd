"""The one training loop, shared by ``pretrain-teacher`` and ``distill``.

Phases, each its own function: ``prepare`` (validate everything, load data, build the model,
resolve teachers and the method; writes nothing), ``open_run_dir`` (:mod:`advkd.training.rundir`:
lock the run dir, then create, clear or resume it), ``fit`` (epochs: method step, evaluation, selection, atomic checkpointing),
and ``run`` which chains them, holds the run-dir lock throughout, and removes a run dir it created
that never completed an epoch when anything fails.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from advkd.attacks import ATTACKS, training_mode
from advkd.core.accel import FastPaths, apply_checked, autocast, defaults_note, resolve_fast_paths, to_memory_format, tune_malloc
from advkd.core.distributed import (
    all_gather_object,
    all_reduce_sum,
    barrier,
    is_distributed,
    is_main,
    rank,
    sync_buffers,
    world_size,
)
from advkd.core.errors import AdvkdError, spell
from advkd.core.files import remove_tree
from advkd.core.idle_cores import following
from advkd.core.preempt import STOP, CheckpointClock, Preempted, decide, parse_duration, stop_signals
from advkd.core.progress import Reporter, warn
from advkd.core.runs import BEST, LAST, METRICS, RESUME, default_name, read_metrics, run_dir
from advkd.data.batches import TrainBatches, to_float
from advkd.data.loaders import dataset_info, load_split
from advkd.evaluation.evaluate import CLEAN, evaluate, w_robust
from advkd.methods import METHODS, build, check_roles
from advkd.models import build_model, canonical_arch
from advkd.models.checkpoint import save_checkpoint, unwrap
from advkd.training.config import TrainConfig, evaluates
from advkd.training.eta import EARLY_BATCHES, early_estimate, run_eta
from advkd.training.finite import FINITE_EVERY, finite_everywhere, nonfinite_flag, nonfinite_message, require_finite
from advkd.training.paths import settle
from advkd.training.resume import ResumeState, rng_states, save_resume
from advkd.training.rundir import checkpoint_meta, open_run_dir, write_metrics
from advkd.training.schedule import OPTIMIZER_BUILDERS, lr_at, make_optimizer, set_lr, warmup_factor  # noqa: F401 (re-exported)
from advkd.training.setup import Setup
from advkd.training.sinks import Sink, check_sink_names, open_sinks
from advkd.training.teachers import resolve_teachers, teacher_records


@dataclass
class Summary:
    path: Path
    epochs_run: int
    best_epoch: int
    best_metrics: dict[str, Any] = field(default_factory=dict)
    last_metrics: dict[str, Any] = field(default_factory=dict)
    already_complete: bool = False
    model: nn.Module | None = None  # the trained network (plain module, on its device)
    method_state: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- prepare


def with_preset_teachers(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the preset's default teacher for every role of its method the user left open."""
    roles = METHODS.get(cfg.method).roles
    defaults = {r: cfg.preset_teachers[r] for r in roles if r not in cfg.teachers and r in cfg.preset_teachers}
    return dataclasses.replace(cfg, teachers={**cfg.teachers, **defaults})


def canonical_config(cfg: TrainConfig) -> TrainConfig:
    """The checks and canonical names that need no data: attack, method, dataset and arch names
    as the registries spell them, the preset's default teachers filled in. :func:`prepare` and
    ``--print-config`` (:mod:`advkd.training.dry_run`) both start here, so both save one config."""
    if cfg.eval_attack:  # refused now, not after the first epoch's training
        try:
            cfg = dataclasses.replace(cfg, eval_attack=ATTACKS.canonical(cfg.eval_attack))
        except AdvkdError as e:
            raise AdvkdError(f"eval_attack (--set eval_attack=...): {e}") from None
    if cfg.kind == "pretrain-teacher" and METHODS.get(cfg.method).roles:
        raise AdvkdError(f"method {cfg.method} distills from teachers; use advkd distill, or a teacher-free method (natural, pgd-at, trades)")
    cfg = with_preset_teachers(cfg)
    check_roles(cfg.method, set(cfg.teachers))
    info = dataset_info(cfg.dataset)
    paper_arch = canonical_arch(cfg.paper_arch or cfg.arch)
    arch = canonical_arch(cfg.arch_map.get(paper_arch, paper_arch))
    method = METHODS.canonical(cfg.method)
    origin = METHODS.origin(method)
    return dataclasses.replace(cfg, dataset=info.name, arch=arch, paper_arch=paper_arch, method=method,
                               method_origin=origin.record() if origin is not None else {})


def named(cfg: TrainConfig, teacher_archs: dict[str, str], runs_dir: str | Path) -> tuple[TrainConfig, Path]:
    """``cfg`` with its run name (``--name``, else the default one, which names the teachers'
    paper archs by role) and the run dir that name gives under ``runs_dir``."""
    cfg = dataclasses.replace(cfg, name=cfg.name or default_name(cfg, teacher_archs))
    return cfg, run_dir(runs_dir, cfg.kind, cfg.dataset, cfg.name)


def prepare(
    cfg: TrainConfig,
    *,
    runs_dir: str | Path,
    data_dir: str | Path,
    device: torch.device,
    download: bool = False,
    fast: FastPaths | None = None,
) -> Setup:
    """Validate the config, load data, build model, teachers and method. Writes nothing.
    ``fast`` None: the device's defaults (:func:`advkd.core.accel.device_defaults`), as the CLI."""
    fast = resolve_fast_paths(device) if fast is None else fast
    cfg = canonical_config(cfg)
    info = dataset_info(cfg.dataset)
    train_data = load_split(cfg.dataset, "train", data_dir, download=download, seed=cfg.seed)
    train_data = train_data.head(cfg.train_subset or None)
    test_data = load_split(cfg.dataset, "test", data_dir, download=download, seed=cfg.seed)
    eval_data = test_data.head(min(cfg.eval_examples, len(test_data)) or None)
    teachers = resolve_teachers(
        cfg.teachers, dataset=cfg.dataset, num_classes=info.num_classes, runs_dir=runs_dir, device=device,
        preset=cfg.preset_file or cfg.preset, arch_map=cfg.arch_map, data_dir=data_dir,
    )
    cfg = dataclasses.replace(cfg, resolved_teachers=teacher_records(teachers))
    method = build(
        cfg.method, {r: t.model for r, t in teachers.items()}, num_classes=info.num_classes, dataset=cfg.dataset, **cfg.method_params
    )
    torch.manual_seed(cfg.seed)  # seed before building the model so its init is reproducible
    model = build_model(cfg.arch, num_classes=info.num_classes, normalize=cfg.normalize).to(device)
    cfg, path = named(cfg, {r: t.paper_arch for r, t in teachers.items()}, runs_dir)
    trial = to_float(train_data.images[: min(cfg.batch_size, len(train_data))]).to(device)
    fast = settle(fast, device=device, student_arch=cfg.arch, student=model, teachers={r: (t.arch, t.model) for r, t in teachers.items()},
                  x=trial, run_path=path, warn=warn)  # open switches: as committed, cached, or measured now
    if fast.amp or fast.channels_last or fast.compile:  # each switch checked by a trial step; a failing one falls back
        fast = apply_checked(fast, device, model, [t.model for t in teachers.values()], trial, warn=warn)
    return Setup(cfg, device, model, method, teachers, train_data, eval_data, info.num_classes, path, fast)


def run_header(setup: Setup) -> str:
    """The first line of a run: what trains, what it stands for, at which scale, from which teachers."""
    cfg = setup.cfg
    net = cfg.arch if cfg.arch == cfg.paper_arch else f"{cfg.arch} standing in for {cfg.paper_arch}"
    scale = f"preset {cfg.preset}, scale {cfg.scale}" if cfg.preset else f"scale {cfg.scale}"
    steps = cfg.epochs * -(-len(setup.train_data) // cfg.batch_size)
    teachers = "".join(f", {role.replace('_', ' ')} {t.arch if t.arch == t.paper_arch else f'{t.arch} (for {t.paper_arch})'}" for role, t in sorted(setup.teachers.items()))
    epochs = f"{cfg.epochs} epoch{'' if cfg.epochs == 1 else 's'}"
    return (f"{cfg.kind} {cfg.method}: {net} on {cfg.dataset} ({scale}; {epochs} x {len(setup.train_data)} images = {steps} steps"
            f"{teachers}) -> {setup.path}")


# ----------------------------------------------------------------------------- fit


def select_value(cfg: TrainConfig, metrics: dict[str, Any]) -> float | None:
    key = {"pgd10": "robust_acc", "robust": "robust_acc", "clean": "clean_acc", "w_robust": "w_robust"}.get(cfg.select)
    if cfg.select == "last":
        return float(metrics["epoch"])
    return metrics.get(key)


def evaluate_epoch(setup: Setup, reporter: Reporter) -> dict[str, float]:
    cfg = setup.cfg
    attacks = [CLEAN] + ([cfg.eval_attack] if cfg.eval_attack else [])
    with training_mode(unwrap(setup.model), train=False):  # handed over in eval mode, as evaluate() expects
        out = evaluate(
            unwrap(setup.model), setup.eval_data, attacks, eps=cfg.eval_eps, batch_size=cfg.eval_batch_size, device=setup.device,
            reporter=reporter, fast=dataclasses.replace(setup.fast, amp=False),  # selection numbers in fp32
        )
    metrics = {"clean_acc": out[CLEAN].accuracy}
    if cfg.eval_attack:
        metrics["robust_acc"] = out[cfg.eval_attack].accuracy
        metrics["w_robust"] = w_robust(metrics["clean_acc"], metrics["robust_acc"])
    return metrics


def train_epoch(setup: Setup, batches: TrainBatches, optimizer: torch.optim.Optimizer, epoch: int, reporter: Reporter, *,
                announce: bool = False, start_step: int = 0, carried: tuple[dict[str, float], int] | None = None,
                after_batch: Callable[[int, dict[str, float], int], None] | None = None,
                follow: Callable[[], None] = lambda: None) -> dict[str, float]:
    """One epoch (0-indexed ``epoch``). The inner maximisation runs on the plain module (input
    gradients only); the outer loss runs through DistributedDataParallel under torchrun, which
    averages gradients. With ``lr_step=iteration`` the lr is set before every batch.
    ``announce``: log the whole run's estimated duration after its first batches.
    ``start_step`` / ``carried``: continue a mid-epoch resume state (its batches done are skipped:
    the data order and augmentation derive from (seed, epoch), so the rest is the same batches;
    ``carried`` holds that rank's log sums and examples seen). ``after_batch(batches done, totals,
    seen)`` runs after every batch: where a stop signal or a periodic checkpoint is honoured; ``follow()``
    too: the thread count follows the cores other processes leave idle (:mod:`advkd.core.idle_cores`)."""
    model, method, fast, cfg = setup.model, setup.method, setup.fast, setup.cfg
    plain = unwrap(model)
    model.train()
    totals: dict[str, float] = dict(carried[0]) if carried else {}
    seen = carried[1] if carried else 0
    per_iteration = cfg.lr_step == "iteration"
    warming = epoch < cfg.warmup_epochs  # the warm-up sets the lr before every batch while it lasts
    with reporter.task(f"epoch {epoch + 1}/{cfg.epochs}", total=len(batches), unit="batches") as task:
        task.skip(start_step)  # batches of a resumed epoch: counted, not timed
        for step, (x, y) in enumerate(batches.epoch(epoch)):
            if step < start_step:
                continue
            if per_iteration or warming:
                t = epoch + (step + 1) / len(batches)
                set_lr(optimizer, lr_at(cfg, t if per_iteration else epoch) * warmup_factor(cfg, t))
            x = to_memory_format(x, fast)
            with autocast(setup.device, fast.amp):  # forwards only; backward runs outside autocast
                x_adv = method.perturb(plain, x, y)
                loss, logs = method.loss(model, x, x_adv, y)
            if not finite_everywhere(loss):
                raise AdvkdError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, batch {step + 1}; lower the lr ({spell('--set lr=...', 'lr=...')}) "
                    f"or check the method settings; completed epochs are kept in {setup.path}"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if (step + 1) % FINITE_EVERY == 0:
                require_finite(setup, optimizer, epoch + 1, f", batch {step + 1}")
            n = int(y.shape[0])
            seen += n
            for k, v in logs.items():
                totals[k] = totals.get(k, 0.0) + float(v) * n
            task.advance(1, loss=logs.get("loss", loss.item()))
            follow()
            if announce and step + 1 == min(start_step + EARLY_BATCHES, len(batches)):
                per_batch = (time.monotonic() - task.started) / (step + 1 - start_step)
                left = len(batches) * (cfg.epochs - epoch) - (step + 1)
                if left > 0:
                    reporter.log(early_estimate(per_batch, left, device_type=setup.device.type, scale=cfg.scale))
            if after_batch is not None and step + 1 < len(batches):  # after the last batch the epoch's commit is the state
                after_batch(step + 1, totals, seen)
    keys = sorted(totals)
    sums = all_reduce_sum(torch.tensor([totals[k] for k in keys] + [float(seen)], dtype=torch.float64))
    means = {k: float(v) / max(float(sums[-1]), 1.0) for k, v in zip(keys, sums[:-1])}
    return {f"train_{k}" if not k.startswith("train_") else k: v for k, v in means.items()}


def fit(setup: Setup, state: ResumeState | None, reporter: Reporter, sinks: list[Sink] | None = None) -> Summary:
    cfg, method = setup.cfg, setup.method
    optimizer = make_optimizer(cfg, setup.model)
    world = world_size()
    if cfg.batch_size % world:
        raise AdvkdError(f"batch size {cfg.batch_size} is not divisible by the {world} torchrun processes; pick a multiple")
    batches = TrainBatches(
        setup.train_data, cfg.batch_size // world, seed=cfg.seed, augment=cfg.augment, device=setup.device, rank=rank(), world_size=world,
        resident=setup.fast.data_on_device,
    )
    rows = read_metrics(setup.path / METRICS)
    start, best_value, best_epoch = 0, None, 0  # epochs completed; best_epoch is an epoch number (0: none yet)
    partial = state.partial if state is not None else None
    if state is not None:
        state.apply(setup.model, optimizer, method, rank=rank())
        start, best_value, best_epoch = state.epoch, state.best_value, state.best_epoch
        rows = [r for r in rows if r["epoch"] <= state.epoch]
        write_metrics(setup.path / METRICS, rows)
        if start >= cfg.epochs:
            return Summary(setup.path, 0, best_epoch, _row(rows, best_epoch), rows[-1] if rows else {}, True, unwrap(setup.model), method.state_dict())
        where = f"batch {partial['step']} of epoch {state.epoch + 1}" if partial else f"epoch {state.epoch}"
        reporter.log(f"resuming {setup.path} after {where}")
    else:
        torch.manual_seed(cfg.seed + 1 + rank())  # the training noise stream: per rank, independent of model init
    if is_distributed():
        setup.model = DistributedDataParallel(setup.model, device_ids=[setup.device] if setup.device.type == "cuda" else None)
        if partial:  # DDP's constructor copied rank 0's buffers to every rank: put this rank's back
            state.apply_rank_buffers(setup.model, rank=rank())
    with following(reporter.log) if setup.device.type == "cpu" else contextlib.nullcontext(lambda: None) as follow:
        return _epochs(setup, optimizer, batches, rows, start, best_value, best_epoch, state, partial, reporter, sinks, follow)


def _epochs(setup: Setup, optimizer: torch.optim.Optimizer, batches: TrainBatches, rows: list[dict[str, Any]], start: int,
            best_value: float | None, best_epoch: int, state: ResumeState | None, partial: dict[str, Any] | None,
            reporter: Reporter, sinks: list[Sink] | None, follow: Callable[[], None]) -> Summary:
    """fit's epochs, from ``start`` (after a resume) to the end: train, evaluate, select, commit."""
    cfg, method = setup.cfg, setup.method
    timed: list[float] = []  # seconds of the epochs run by this invocation, for the run ETA
    clock = CheckpointClock(parse_duration(cfg.checkpoint_every))
    for epoch in range(start, cfg.epochs):  # 0-indexed inside the loop; every record says epoch + 1
        t0 = time.perf_counter()
        lr = lr_at(cfg, epoch)  # with lr_step=iteration, train_epoch sets it again before every batch
        set_lr(optimizer, lr)
        method.start_epoch(epoch, lr / cfg.lr)
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": lr}
        resumed = partial if epoch == start else None
        if resumed:  # the state was saved inside this epoch, after start_epoch: it wins over what start_epoch set
            method.load_state_dict(state.method_state)
        honour = _midway(setup, optimizer, epoch, clock, best_value, best_epoch)
        row.update(train_epoch(
            setup, batches, optimizer, epoch, reporter, announce=epoch == start, after_batch=honour,
            start_step=resumed["step"] if resumed else 0,
            carried=(resumed["totals"][rank()], int(resumed["seen"][rank()])) if resumed else None, follow=follow,
        ))
        sync_buffers(unwrap(setup.model))
        method.end_epoch(epoch, lr_at(cfg, epoch + 1) / cfg.lr)
        row.update({f"method_{k}": v for k, v in method.epoch_metrics().items()})
        if evaluates(cfg, epoch + 1):
            row.update(evaluate_epoch(setup, reporter))
        row["seconds"] = time.perf_counter() - t0
        value = select_value(cfg, row)
        if value is not None and (best_value is None or value > best_value):  # strict: first epoch reaching the max
            best_value, best_epoch = value, epoch + 1
        rows.append(row)
        require_finite(setup, optimizer, epoch + 1)  # on every rank, before anything of this epoch is written
        rng = all_gather_object(rng_states())
        if is_main():
            _commit_epoch(setup, optimizer, epoch + 1, row, rows, best_value, best_epoch, rng)
            for sink in sinks or []:  # after the commit: a sink sees only epochs that are on disk
                sink.log(row)
        barrier()
        clock.reset()
        timed.append(row["seconds"])
        reporter.log(" | ".join(x for x in (_epoch_line(cfg, row, best_epoch), run_eta(timed, cfg.epochs - epoch - 1)) if x))
        stop, _ = decide(STOP, CheckpointClock(0))
        if stop and epoch + 1 < cfg.epochs:  # a signal during the evaluation or the commit: the epoch is on disk
            raise Preempted(STOP.signal_name or "SIGTERM", f"epoch {epoch + 1} is committed")
    return Summary(setup.path, cfg.epochs - start, best_epoch, _row(rows, best_epoch), rows[-1], False, unwrap(setup.model), method.state_dict())


def _midway(setup: Setup, optimizer: torch.optim.Optimizer, epoch: int, clock: CheckpointClock,
            best_value: float | None, best_epoch: int) -> Callable[[int, dict[str, float], int], None]:
    """The after-batch hook of epoch ``epoch``: on a stop signal (any rank) or when the
    ``--checkpoint-every`` clock is due, write a mid-epoch resume state (rank 0, atomically; every
    rank's RNG and log sums gathered); after a stop, raise :class:`Preempted`."""
    def after_batch(step: int, totals: dict[str, float], seen: int) -> None:
        stop, save = decide(STOP, clock)
        if not (stop or save):
            return
        require_finite(setup, optimizer, epoch + 1, f", batch {step}")  # a poisoned state is never written
        rng = all_gather_object(rng_states())
        sums = all_gather_object((dict(totals), seen))
        buffers = all_gather_object({k: v.detach().cpu() for k, v in unwrap(setup.model).named_buffers()}) if is_distributed() else None
        if is_main():
            partial = {"step": step, "totals": [t for t, _ in sums], "seen": [n for _, n in sums]}
            save_resume(setup.path / RESUME, setup, optimizer, epoch, best_value, best_epoch, rng, partial=partial, rank_buffers=buffers)
        barrier()
        clock.reset()
        if stop:
            raise Preempted(STOP.signal_name or "SIGTERM", f"batch {step} of epoch {epoch + 1} is saved")

    return after_batch


def _commit_epoch(setup, optimizer, number, row, rows, best_value, best_epoch, rng) -> None:
    """Write metrics and checkpoints of epoch ``number`` (1-based), then the resume state last:
    it is the commit point. Refuses (AdvkdError, nothing written) non-finite weights or
    optimizer state, so no checkpoint and no resume state is ever poisoned."""
    path, cfg = setup.path, setup.cfg
    if nonfinite_flag(setup.model, optimizer).item() > 0:
        raise AdvkdError(nonfinite_message(setup, number))
    write_metrics(path / METRICS, rows)
    meta = checkpoint_meta(setup, number, row)
    save_checkpoint(path / LAST, setup.model, meta)
    if best_epoch == number or not (path / BEST).exists():
        save_checkpoint(path / BEST, setup.model, meta)
    if cfg.save_every and number % cfg.save_every == 0:
        save_checkpoint(path / f"epoch-{number:03d}.safetensors", setup.model, meta)
    save_resume(path / RESUME, setup, optimizer, number, best_value, best_epoch, rng)


def _row(rows: list[dict[str, Any]], epoch: int) -> dict[str, Any]:
    return next((r for r in rows if r["epoch"] == epoch), {})


def _epoch_line(cfg: TrainConfig, row: dict[str, Any], best_epoch: int) -> str:
    parts = [f"epoch {row['epoch']}/{cfg.epochs}", f"lr {row['lr']:.4g}", f"loss {row.get('train_loss', float('nan')):.4f}"]
    if "clean_acc" in row:
        parts.append(f"clean {row['clean_acc']:.2f}%")
    if "robust_acc" in row:
        parts.append(f"{cfg.eval_attack} {row['robust_acc']:.2f}%")
    parts.append(f"best epoch {best_epoch}")
    parts.append(f"{row['seconds']:.1f}s")
    return " | ".join(parts)


# ----------------------------------------------------------------------------- run


def run(
    cfg: TrainConfig,
    *,
    runs_dir: str | Path,
    data_dir: str | Path,
    device: torch.device,
    resume: bool = False,
    download: bool = False,
    reporter: Reporter | None = None,
    fast: FastPaths | None = None,
    log_to: list[str] | None = None,
) -> Summary:
    """prepare -> lock and open the run dir -> fit, holding the run-dir lock throughout; a run
    dir created here that never completed an epoch is removed on failure."""
    tune_malloc()  # once per process (the CLI does it at start; advkd.train from Python gets it here)
    reporter = reporter or Reporter()
    log_to = check_sink_names(log_to)
    setup = prepare(cfg, runs_dir=runs_dir, data_dir=data_dir, device=device, download=download, fast=fast)
    state, created, lock = open_run_dir(setup, resume=resume, reporter=reporter)
    try:
        reporter.log(run_header(setup))
        reporter.log(defaults_note(setup.device, setup.fast))
        sinks = open_sinks(log_to, setup.path, setup.cfg) if is_main() else []
        try:
            with stop_signals():  # SIGTERM / SIGUSR1: finish the batch, save, raise Preempted
                return fit(setup, state, reporter, sinks)
        finally:
            for sink in sinks:
                sink.close()
    except BaseException:
        if created and is_main() and not (setup.path / RESUME).exists():
            with contextlib.suppress(OSError, AdvkdError):  # cleanup never hides the failure being raised
                remove_tree(setup.path)
        raise
    finally:
        if lock is not None:
            lock.release()
