"""``make gpu-check``: what a CUDA machine must show before advkd's GPU paths are trusted (issue #27).

    python -m benchmarks.gpu_check                      # on a CUDA machine: at most 6 minutes, start-up included
    python -m benchmarks.gpu_check --dry-run            # on the CPU, tiny nets, 1-2 steps: every code path, no timing
    python -m benchmarks.gpu_check --skip eval,plan --out DIR --device cuda:1

Five parts, each in its own child process with a wall-clock limit (a part that would overrun its
limit skips what is left, with a note; a child that hangs is killed), in this order:

1. ``correctness``: every registered method, 3 training steps on the device in fp32 with
   deterministic algorithms against the same 3 steps on the CPU, from the same initial weights and
   batches, in lock step; loss, adversarial points, parameters, momentum and method state compared
   within ``device_parity.TOLERANCES`` (``benchmarks/device_parity.py`` says how and why).
2. ``torchrun``: a 1-process torchrun run (NCCL on CUDA, gloo on the CPU) of two training steps
   through advkd's training loop and its DistributedDataParallel path.
3. ``training``: PGD-AT, TRADES, RSLAD, AdaAD and B-MTARD, ResNet-18 student, WRN-34-10 teacher
   (ResNet-56 clean teacher): img/s and peak memory in plain fp32 eager, then 20 steps under the
   device's defaults (``accel.device_defaults``: bf16, channels-last, torch.compile on CUDA),
   checked for a finite, decreasing loss and no fall-back warning (correctness), timed (throughput).
4. ``eval``: the evaluation attacks beside torchattacks (``bench.bench_eval``) and advkd's AutoAttack
   beside one plain pyautoattack call (``autoattack_pair.bench_autoattack``), random-init model.
5. ``plan``: ``advkd report table2 --plan --preset adaad-paper`` priced with this device's calibration.

Writes ``<out>/gpu-<device-slug>.json`` and ``.md`` beside it (default out: ``benchmarks/results``;
``--dry-run``: a new temporary folder), prints a Rich table, and exits 1 on any correctness failure
(parts 1-3: a mismatch, a non-finite or non-decreasing loss, a fall-back warning, a crash, a failed
torchrun). Throughput and the plan are reported, never failures. See benchmarks/README.md "gpu-check".
"""
from __future__ import annotations

import time

T0 = time.monotonic()  # the 6-minute budget counts from here: imports are part of the start-up

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import datetime as _dt  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks import device_parity as parity  # noqa: E402
from benchmarks.device_parity import SGD, method_step  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = 1
DEFAULT_OUT = ROOT / "benchmarks" / "results"
PARTS = ("correctness", "torchrun", "training", "eval", "plan")

# ----------------------------------------------------------------------------- budget (seconds of wall time)
BUDGET_S = 360.0  # issue 27: at most 6 minutes on one H100, start-up included
RESERVE_S = 12.0  # kept back for assembling, writing and printing the results
# Nominal wall time of each part, child start-up (imports, CUDA context) included. A part may use
# what earlier parts left over, never what later parts are owed: limit = time left - later parts' nominal.
PART_BUDGET_S = {  # unmeasured on a GPU so far: guesses to be replaced by the first run's wall_s
    "correctness": 60.0,  # 20 cases (17 methods + 3 after `begin`) x 3 lock steps, CPU (16 cores) and device, ResNet-8
    "torchrun": 40.0,  # torchrun + NCCL start-up, imports, 2 steps of a ResNet-8, a 64-image evaluation
    "training": 150.0,  # torch.compile of 3 nets + 20 steps of each of 5 methods, then 4 eager fp32 steps each
    "eval": 40.0,  # pgd20-sat and cwinf beside torchattacks, batch 128; AutoAttack pair on 256 points
    "plan": 40.0,  # `advkd report` start-up + calibration of resnet18, mobilenetv2, wrn34-10, wrn34-20
}
KILL_GRACE_S = 3.0  # a child past its limit gets SIGTERM, then SIGKILL after this

DECREASE_WINDOW = 5  # defaults run: mean of the last N losses must be below the mean of the first N
# The defaults run's optimizer: lr 0.05, so that 20 steps from random init show learning. At lr 0.01 the
# adversarial loss of PGD-AT first rises (measured on the CPU, ResNet-8 student, 20 steps on the synthetic
# split: 2.39 -> 2.50, and TRADES flat), at 0.05 all five methods fall (PGD-AT 2.36 -> 2.00, the KD
# losses to a third); tinycnn, 6 steps at batch 16 (the dry run): 15 of 15 method x seed runs fall.
TRAIN_SGD = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}

TRAIN_METHODS = ("pgd-at", "trades", "rslad", "adaad", "bmtard")
PUBLIC_EPOCH_TIME = {
    "seconds_per_epoch": None,
    "source": None,
    "note": "no per-epoch time of the reference scripts (AdaAD, B-MTARD repos) on a named GPU was found in "
            "their papers or READMEs; fill this in with a citation when one is known",
}


@dataclass(frozen=True)
class Scale:
    """What each part runs. :data:`FULL` on the device, :data:`DRY` for ``--dry-run`` (CPU, tiny nets)."""

    corr_student: str  # correctness: small nets, so the CPU side stays cheap
    corr_teacher: str
    corr_batch: int
    corr_steps: int
    student: str  # training / throughput
    teacher: str
    clean_teacher: str
    batch: int
    default_steps: int  # steps under the device's defaults (loss trend, throughput from the last DECREASE_WINDOW)
    eager_warmup: int
    eager_steps: int
    eval_model: str
    eval_repeats: int
    aa_n: int
    aa_pairs: int  # the first is a warm-up
    ddp_arch: str
    ddp_batch: int
    plan_preset: str  # "tiny": a generated preset mapping every architecture to tinycnn (the dry run)
    timing: bool


FULL = Scale(corr_student="resnet8", corr_teacher="tinycnn", corr_batch=16, corr_steps=3,
             student="resnet18", teacher="wrn34-10", clean_teacher="resnet56", batch=128, default_steps=20,
             eager_warmup=1, eager_steps=3, eval_model="resnet18", eval_repeats=3, aa_n=256, aa_pairs=2,
             ddp_arch="resnet8", ddp_batch=64, plan_preset="adaad-paper", timing=True)
DRY = Scale(corr_student="tinycnn", corr_teacher="tinycnn", corr_batch=4, corr_steps=1,
            student="tinycnn", teacher="tinycnn", clean_teacher="tinycnn", batch=16, default_steps=6,
            eager_warmup=0, eager_steps=1, eval_model="tinycnn", eval_repeats=1, aa_n=4, aa_pairs=2,
            ddp_arch="tinycnn", ddp_batch=16, plan_preset="tiny", timing=False)


# ============================================================================ small helpers


START = float(os.environ.get("ADVKD_GPU_CHECK_START", "0")) or time.time() - (time.monotonic() - T0)  # the parent's start, in children too


def log(msg: str) -> None:
    print(f"[gpu-check {time.time() - START:5.0f} s] {msg}", file=sys.stderr, flush=True)


def write_json(path: Path, data: Any) -> None:
    """Atomically: temp file, fsync, rename (a killed child leaves the last complete fragment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=1, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def slug(text: str) -> str:
    return "-".join(p for p in re.sub(r"[^a-z0-9.]+", "-", text.lower()).split("-") if p)


def device_slug(device: torch.device, dry_run: bool) -> str:
    from advkd.core import accel

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{accel.cpu_model()}"
    return slug(("dry-run-" if dry_run else "") + name)


class Deadline:
    """Seconds left before a part must stop (wall clock, so a child's start-up counts), and whether an
    item of a guessed length still fits."""

    def __init__(self, end_wall: float) -> None:
        self.end = end_wall

    def left(self) -> float:
        return self.end - time.time()

    def fits(self, estimate_s: float) -> bool:
        return self.left() > estimate_s

    def skip_note(self, what: str, estimate_s: float) -> str:
        return f"skipped: {what} needs about {estimate_s:.0f} s, {max(0.0, self.left()):.0f} s of this part's budget left"


class Fragment:
    """A child's result, written after every item so a killed child still reports what it finished."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value
        write_json(self.path, self.data)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ============================================================================ part 1: correctness, device vs CPU


NONDETERMINISTIC = "does not have a deterministic implementation"


def correctness_models(scale: Scale, seed: int) -> dict[str, torch.nn.Module]:
    """The student and one frozen teacher per role, on the CPU, each from its own fixed seed."""
    from advkd.models import build_model

    models = {}
    for i, (role, arch) in enumerate((("student", scale.corr_student), ("teacher", scale.corr_teacher),
                                      ("robust_teacher", scale.corr_teacher), ("clean_teacher", scale.corr_teacher))):
        torch.manual_seed(seed + 100 * i)
        net = build_model(arch, num_classes=10)
        models[role] = net.train() if role == "student" else net.eval().requires_grad_(False)
    return models


def compare_method(name: str, epoch: int, models: dict[str, torch.nn.Module], batches: list[tuple[torch.Tensor, torch.Tensor]],
                   device: torch.device, seed: int, tol: dict[str, float]) -> dict[str, Any]:
    """:func:`device_parity.lockstep` under deterministic kernels; an op without a deterministic CUDA
    kernel makes the comparison run again with ``warn_only`` (said in the row), never a skip."""
    row: dict[str, Any] = {"method": name, "epoch": epoch, "deterministic": "strict"}
    try:
        try:
            with parity.deterministic():
                row.update(parity.lockstep(name, epoch, models, batches, device, seed, tol))
        except RuntimeError as e:
            if NONDETERMINISTIC not in str(e):
                raise
            row["deterministic"] = f"warn-only ({' '.join(str(e).split())[:160]})"
            with parity.deterministic(warn_only=True):
                row.update(parity.lockstep(name, epoch, models, batches, device, seed, tol))
    except Exception as e:  # noqa: BLE001 - a crash on either side is this method's failure, the others still run
        row.update({"pass": False, "why": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                    "traceback": traceback.format_exc(limit=6)})
    return row


def part_correctness(scale: Scale, device: torch.device, deadline: Deadline, frag: Fragment, tol: dict[str, float], seed: int) -> None:
    models = correctness_models(scale, seed)
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.rand(scale.corr_batch, 3, 32, 32, generator=g), torch.randint(0, 10, (scale.corr_batch,), generator=g))
               for _ in range(scale.corr_steps)]
    frag.put("setup", {"student": scale.corr_student, "teachers": scale.corr_teacher, "batch": scale.corr_batch,
                       "steps": scale.corr_steps, "seed": seed, "optimizer": {"name": "SGD", **SGD}, "tolerances": tol,
                       "reference": "cpu", "device": str(device), "cpu_threads": torch.get_num_threads(),
                       "method": "lock step (device_parity): each step from the CPU's state, the update on the CPU's x_adv, "
                                 "a one-iteration attack for the gradient signs",
                       "randomness": "every random draw made by the CPU generator from the same seed on both sides (CpuNoise)",
                       "deterministic": "torch.use_deterministic_algorithms(True), cudnn.deterministic, TF32 off, "
                                        f"CUBLAS_WORKSPACE_CONFIG={os.environ.get('CUBLAS_WORKSPACE_CONFIG')}"})
    rows: dict[str, Any] = {}
    slowest = 1.0
    for key, name, epoch in parity.cases():
        if not deadline.fits(1.5 * slowest):
            rows[key] = {"skipped": deadline.skip_note(f"{key}'s comparison", 1.5 * slowest)}
            frag.put("rows", rows)
            continue
        t0 = time.perf_counter()
        row = compare_method(name, epoch, models, batches, device, seed, tol)
        row["seconds"] = time.perf_counter() - t0
        slowest = max(slowest, row["seconds"])
        rows[key] = row
        frag.put("rows", rows)
        log(f"correctness {key:<18} {'pass' if row['pass'] else 'FAIL ' + row['why']}  ({row['seconds']:.1f} s)")


# ============================================================================ part 2: torchrun (NCCL / gloo)


def ddp_worker(args: argparse.Namespace) -> int:
    """Run under ``torchrun --nproc-per-node 1``: two training steps of ``bmtard`` (two teachers and
    balancer statistics all-reduced every step) through advkd's training loop, whose model is wrapped in
    DistributedDataParallel when a process group exists. advkd's own ``distributed.setup`` joins a
    group only when WORLD_SIZE > 1, so with one process the worker joins it here (NCCL on CUDA, gloo on
    the CPU), as ``setup`` would, and counts DDP's gradient all-reduces with a communication hook."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel

    import advkd.training.loop as loop
    from advkd.core import accel
    from advkd.core.distributed import teardown
    from advkd.core.progress import Reporter
    from advkd.models import build_model
    from advkd.training.config import TrainConfig

    scale = DRY if args.dry_run else FULL
    frag = Fragment(Path(args.fragment))
    t0 = time.perf_counter()
    device = torch.device(args.device)
    counts = {"wrapped": 0, "allreduce_calls": 0}

    class CountingDDP(DistributedDataParallel):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, **k)
            counts["wrapped"] += 1

            def hook(state, bucket):  # noqa: ANN001, ANN202 - DDP refuses a hook whose bucket annotation is not dist.GradBucket itself
                counts["allreduce_calls"] += 1
                return default_hooks.allreduce_hook(state, bucket)

            self.register_comm_hook(None, hook)

    result: dict[str, Any] = {"pass": False, "world_size_env": os.environ.get("WORLD_SIZE"), "rank": os.environ.get("RANK")}
    work = Path(tempfile.mkdtemp(prefix="gpu-check-ddp-"))
    try:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        result["backend"] = dist.get_backend()
        loop.DistributedDataParallel = CountingDDP  # this process only: what fit() wraps the student in
        teachers = {}
        for i, role in enumerate(("clean_teacher", "robust_teacher")):
            torch.manual_seed(10 + i)
            path = work / f"{role}.pt"
            torch.save(build_model(scale.ddp_arch, num_classes=10).state_dict(), path)
            teachers[role] = f"{scale.ddp_arch}:{path}"
        fast = dataclasses.replace(accel.resolve_fast_paths(device), compile=False)
        cfg = TrainConfig(kind="distill", method="bmtard", arch=scale.ddp_arch, dataset="synthetic", teachers=teachers, epochs=1,
                          batch_size=scale.ddp_batch, train_subset=2 * scale.ddp_batch, eval_examples=64, eval_attack="pgd10",
                          eval_batch_size=64, seed=0, method_params={"steps": 2}, name="gpu-check-ddp")
        summary = loop.run(cfg, runs_dir=work / "runs", data_dir=work, device=device, reporter=Reporter(enabled=False), fast=fast)
        sync(device)
        last = summary.last_metrics
        finite = all(math.isfinite(float(v)) for k, v in last.items() if k.startswith("train_") and isinstance(v, (int, float)))
        result.update({
            "ddp_wrapped": counts["wrapped"] == 1,
            "allreduce_calls": counts["allreduce_calls"],
            "steps": 2,
            "train_loss": last.get("train_loss"),
            "clean_acc": last.get("clean_acc"),
            "robust_acc": last.get("robust_acc"),
            "finite": finite,
            "paths": fast.describe() + " (compile off: its start-up would not fit the budget)",
            "method": "bmtard",
            "arch": scale.ddp_arch,
        })
        expected = "nccl" if device.type == "cuda" else "gloo"
        why = [w for w, bad in ((f"backend {result['backend']} is not {expected}", result["backend"] != expected),
                                ("the model was not wrapped in DistributedDataParallel", not result["ddp_wrapped"]),
                                (f"{counts['allreduce_calls']} gradient all-reduces for 2 steps", counts["allreduce_calls"] < 2),
                                ("non-finite training loss", not finite)) if bad]
        result.update({"pass": not why, "why": "; ".join(why)})
        teardown()
    except Exception as e:  # noqa: BLE001 - reported as this part's failure
        result.update({"pass": False, "why": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}",
                       "traceback": traceback.format_exc(limit=8)})
        if dist.is_initialized():
            dist.destroy_process_group()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = time.perf_counter() - t0
    frag.put("run", result)
    return 0 if result["pass"] else 1


def part_torchrun(scale: Scale, device: torch.device, limit_s: float, fragment: Path, dry_run: bool, env: dict[str, str]) -> dict[str, Any]:
    """The worker under ``torchrun --standalone --nproc-per-node 1`` (``python -m torch.distributed.run``,
    the module behind the ``torchrun`` script)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "benchmarks.gpu_check",
           "--ddp-worker", "--device", str(device), "--fragment", str(fragment)] + (["--dry-run"] if dry_run else [])
    proc = run_child(cmd, limit_s, {"OMP_NUM_THREADS": "1" if device.type == "cpu" else "4", **env})
    data = read_fragment(fragment).get("run", {})
    if proc["timed_out"]:
        data.update({"pass": False, "why": f"torchrun did not finish in {limit_s:.0f} s (killed): a hang is a failure"})
    elif not data:
        data = {"pass": False, "why": f"torchrun exited {proc['returncode']} without a result", "stderr_tail": proc["stderr_tail"]}
    elif not data.get("pass"):
        data["stderr_tail"] = proc["stderr_tail"]
    data.update({"command": " ".join(cmd), "wall_s": proc["wall_s"], "limit_s": limit_s})
    return data


# ============================================================================ part 3: training under the defaults, throughput


def train_models(scale: Scale, device: torch.device, seed: int) -> dict[str, torch.nn.Module]:
    from advkd.models import build_model

    models = {}
    for i, (role, arch) in enumerate((("student", scale.student), ("teacher", scale.teacher), ("clean_teacher", scale.clean_teacher))):
        torch.manual_seed(seed + 100 * i)
        net = build_model(arch, num_classes=10).to(device)
        models[role] = net.train() if role == "student" else net.eval().requires_grad_(False)
    models["robust_teacher"] = models["teacher"]  # B-MTARD's robust teacher is the WRN-34-10
    return models


def train_batches(scale: Scale, device: torch.device, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` distinct batches of advkd's ``synthetic`` training split (learnable 10-class data, no files):
    distinct tensor objects, as a real loop gets (the methods cache teacher outputs per batch object)."""
    from advkd.data.batches import to_float
    from advkd.data.loaders import load_split

    data = load_split("synthetic", "train", Path(tempfile.gettempdir()), seed=0)
    x, y = to_float(data.images), data.labels
    reps = -(-n * scale.batch // len(x))
    x, y = x.repeat(reps, 1, 1, 1), y.repeat(reps)
    return [(x[i * scale.batch:(i + 1) * scale.batch].to(device), y[i * scale.batch:(i + 1) * scale.batch].to(device)) for i in range(n)]


def peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)


def compile_counters() -> dict[str, Any]:
    """torch.compile's own counters (graphs compiled, graph breaks, recompilations): private API, best effort."""
    try:
        from torch._dynamo.utils import counters

        return {"stats": dict(counters.get("stats", {})), "graph_breaks": sum(counters.get("graph_break", {}).values()),
                "recompiles": dict(counters.get("recompiles", {}))}
    except Exception:  # noqa: BLE001
        return {}


def eager_arm(name: str, scale: Scale, base: dict[str, torch.nn.Module], init: dict[str, torch.Tensor],
              batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> dict[str, Any]:
    """Plain fp32 NCHW eager steps (torch's default precision settings): img/s and peak memory."""
    from advkd import methods
    from advkd.core import accel

    plain = accel.FastPaths(amp=False, channels_last=False, compile=False)
    base["student"].load_state_dict(init)
    m = methods.build(name, teachers={r: base[r] for r in methods.method_roles(name)}, num_classes=10, dataset="cifar10")
    m.start_epoch(0, 1.0)
    opt = torch.optim.SGD(base["student"].parameters(), **TRAIN_SGD)
    feed = itertools.cycle(batches)
    for _ in range(scale.eager_warmup):
        method_step(m, base["student"], opt, *next(feed), plain, device)
    reset_peak(device)
    times = []
    for _ in range(scale.eager_steps):
        x, y = next(feed)
        sync(device)
        t0 = time.perf_counter()
        method_step(m, base["student"], opt, x, y, plain, device)
        sync(device)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    return {"s": times, "s_median": s, "ips": scale.batch / s if scale.timing else None, "peak_mib": peak_mib(device)}


def defaults_arm(name: str, scale: Scale, models: dict[str, torch.nn.Module], init: dict[str, torch.Tensor], paths: Any,
                 batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> dict[str, Any]:
    """``scale.default_steps`` steps under the device's defaults (models already prepared by apply_checked):
    finite and decreasing loss (correctness), time and peak memory of the steady steps (throughput)."""
    from advkd import methods
    from advkd.core import accel

    models["student"].load_state_dict(init)  # in place: the compiled module keeps its parameters, no recompilation
    m = methods.build(name, teachers={r: models[r] for r in methods.method_roles(name)}, num_classes=10, dataset="cifar10")
    m.start_epoch(0, 1.0)
    opt = torch.optim.SGD(models["student"].parameters(), **TRAIN_SGD)
    feed = itertools.cycle([(accel.to_memory_format(x, paths), y) for x, y in batches])
    k = max(1, min(DECREASE_WINDOW, scale.default_steps // 2))
    losses, times = [], []
    for i in range(scale.default_steps):
        if i == scale.default_steps - k:
            reset_peak(device)  # the steady steps' peak, without what compiling the first steps allocated
        x, y = next(feed)
        sync(device)
        t0 = time.perf_counter()
        loss, _ = method_step(m, models["student"], opt, x, y, paths, device)
        sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    first, last = statistics.mean(losses[:k]), statistics.mean(losses[-k:])
    finite = all(math.isfinite(v) for v in losses)
    steady = times[-k:]
    why = []
    if not finite:
        why.append("non-finite loss")
    if len(losses) >= 2 and not last < first:
        why.append(f"loss not decreasing: mean of the last {k} {last:.4g} >= mean of the first {k} {first:.4g}")
    return {"pass": not why, "why": "; ".join(why), "losses": losses, "first_mean": first, "last_mean": last, "window": k,
            "finite": finite, "s": times, "steady_s_median": statistics.median(steady),
            "ips": scale.batch / statistics.median(steady) if scale.timing else None, "first_step_s": times[0],
            "peak_mib": peak_mib(device)}


def part_training(scale: Scale, device: torch.device, deadline: Deadline, frag: Fragment, seed: int) -> None:
    """The defaults first (a correctness verdict; torch.compile's start-up is the big unknown of the
    budget), then plain fp32 eager on copies made before compiling (throughput only)."""
    from advkd.core import accel

    base = train_models(scale, device, seed)
    init = {k: v.detach().clone() for k, v in base["student"].state_dict().items()}
    eager_models = {k: copy.deepcopy(v) for k, v in base.items() if k != "robust_teacher"}  # before compile changes base in place
    eager_models["robust_teacher"] = eager_models["teacher"]
    batches = train_batches(scale, device, 4)
    defaults = accel.device_defaults(device)
    frag.put("setup", {"student": scale.student, "teacher": scale.teacher, "clean_teacher": scale.clean_teacher, "batch": scale.batch,
                       "data": "advkd synthetic train split, 4 batches cycled", "optimizer": {"name": "SGD", **TRAIN_SGD},
                       "default_steps": scale.default_steps, "eager_steps": scale.eager_steps, "eager_warmup": scale.eager_warmup,
                       "decrease_window": DECREASE_WINDOW, "device_defaults": defaults.as_record(),
                       "eager_precision": {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                                           "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                                           "note": "torch's defaults: plain fp32 as a user gets it (cuDNN may use TF32 for convolutions)"}})
    rows: dict[str, Any] = {name: {} for name in TRAIN_METHODS}
    # 1. the device's defaults: each switch checked by apply_checked's trial step, as `advkd distill` does
    warnings: list[str] = []
    t0 = time.perf_counter()
    try:
        paths = accel.apply_checked(defaults, device, base["student"], [base["teacher"], base["clean_teacher"]], batches[0][0],
                                    warn=warnings.append)
    except Exception as e:  # noqa: BLE001 - apply_checked catches what a speed path raises; anything else is a failure
        frag.put("defaults_setup", {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", "traceback": traceback.format_exc(limit=6)})
        rows = {name: {"defaults": {"pass": False, "why": "apply_checked raised"}} for name in TRAIN_METHODS}
        frag.put("rows", rows)
        return
    frag.put("defaults_setup", {"asked": defaults.as_record(), "effective": paths.as_record(), "describe": paths.describe(),
                                "fallback_warnings": warnings, "apply_checked_s": time.perf_counter() - t0})
    log(f"training defaults: {paths.describe()} (asked {defaults.describe()}), apply_checked {time.perf_counter() - t0:.0f} s"
        + (f", fall-backs: {warnings}" if warnings else ""))
    guess = 30.0 if paths.compile else 5.0  # the first method compiles most graphs
    for name in TRAIN_METHODS:
        if not deadline.fits(guess):
            rows[name]["defaults"] = {"skipped": deadline.skip_note(f"{scale.default_steps} steps under the defaults", guess)}
            frag.put("rows", rows)
            continue
        t0 = time.perf_counter()
        try:
            row = defaults_arm(name, scale, base, init, paths, batches, device)
        except Exception as e:  # noqa: BLE001 - a crash on the default path is a correctness failure
            row = {"pass": False, "why": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", "traceback": traceback.format_exc(limit=6)}
        if warnings:
            row["pass"] = False
            row["why"] = "; ".join(x for x in (row.get("why"), f"apply_checked fell back: {'; '.join(warnings)}") if x)
        row.update({"paths": paths.describe(), "compile_counters_so_far": compile_counters(), "seconds": time.perf_counter() - t0})
        rows[name]["defaults"] = row
        guess = max(5.0, 1.2 * row["seconds"] / (2 if name == TRAIN_METHODS[0] else 1))  # later methods reuse most compiled graphs
        frag.put("rows", rows)
        log(f"training {name:<7} defaults: {'pass' if row['pass'] else 'FAIL ' + row['why']} ({row['seconds']:.0f} s)")
    # 2. plain fp32 eager on the copies
    guess = 5.0
    for name in TRAIN_METHODS:
        if not deadline.fits(guess):
            rows[name]["eager"] = {"skipped": deadline.skip_note("the eager fp32 steps", guess)}
            frag.put("rows", rows)
            continue
        t0 = time.perf_counter()
        try:
            rows[name]["eager"] = eager = eager_arm(name, scale, eager_models, init, batches, device)
            d = rows[name].get("defaults", {})
            if scale.timing and d.get("steady_s_median"):
                d["speedup_vs_eager"] = eager["s_median"] / d["steady_s_median"]
        except Exception as e:  # noqa: BLE001 - throughput: reported, not a failure
            rows[name]["eager"] = {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        guess = max(guess, 1.5 * (time.perf_counter() - t0))
        frag.put("rows", rows)
        log(f"training {name:<7} eager fp32: {rows[name]['eager'].get('s_median', float('nan')):.3f} s/step")


# ============================================================================ part 4: evaluation attacks, AutoAttack


def part_eval(scale: Scale, device: torch.device, deadline: Deadline, frag: Fragment, seed: int) -> None:
    from advkd.models import build_model
    from benchmarks.autoattack_pair import UNTRAINED_NOTE, bench_autoattack
    from benchmarks.bench import Setup, bench_eval

    torch.manual_seed(seed)
    x = torch.rand(scale.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (scale.batch,), device=device)
    setup = Setup(device, scale.eval_model, scale.eval_model, scale.eval_model, scale.batch, scale.eval_repeats, 2 * scale.eval_repeats,
                  1, 0, seed, x, y)
    t0 = time.perf_counter()
    try:
        frag.put("attacks", bench_eval(setup, scale.eval_model, log))
    except Exception as e:  # noqa: BLE001 - throughput: reported
        frag.put("attacks", {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"})
    guess = 25.0 if scale.timing else 5.0
    if not deadline.fits(guess):
        frag.put("autoattack", {"skipped": deadline.skip_note("the AutoAttack pair", guess)})
        return
    torch.manual_seed(seed + 7)  # bench.aa_inputs' model
    model = build_model(scale.eval_model, num_classes=10).to(device).eval()
    g = torch.Generator().manual_seed(seed + 11)
    ax, ay = torch.rand(scale.aa_n, 3, 32, 32, generator=g).to(device), torch.randint(0, 10, (scale.aa_n,), generator=g).to(device)
    info = {"model": scale.eval_model, "init": "random (fixed seed)", "data": f"{scale.aa_n} random images", "note": UNTRAINED_NOTE}
    try:
        aa = bench_autoattack(model, ax, ay, pairs=scale.aa_pairs, batch_size=scale.aa_n, device=device, log=log)
        frag.put("autoattack", {**info, **aa})
    except Exception as e:  # noqa: BLE001
        frag.put("autoattack", {**info, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"})
    frag.put("seconds", time.perf_counter() - t0)


# ============================================================================ part 5: the plan, priced on this device

DURATION = re.compile(r"about ([\d.]+) (s|min|h|days) on (.+?)(?: for the \d+ priced)?$")
COMMAND_PRICE = re.compile(r"# about ([\d.]+) (s|min|h|days): ")
UNIT_H = {"s": 1 / 3600, "min": 1 / 60, "h": 1.0, "days": 24.0}

TINY_PRESET = """\
description: gpu-check --dry-run only - every architecture stands in as tinycnn, so the calibration takes seconds on a CPU.
scale: mini
paper: adaad
arch_map: {ARCHS}
train: {{optimizer: adamw, epochs: 1, batch_size: 64, lr: 6.0e-3, weight_decay: 0.05, milestones: [1], train_subset: 256, eval_examples: 64, eval_attack: pgd10, eval_batch_size: 64, select: pgd10}}
rules:
  - when: {{dataset: cifar10}}
    teachers: {{teacher: wrn34-10, clean_teacher: resnet56, robust_teacher: wrn34-10}}
evaluation:
  expected_accuracy: {{clean: 31, robust: 20}}
"""


def tiny_preset(path: Path) -> Path:
    from advkd.models import MODELS

    archs = "{" + ", ".join(f"{a}: tinycnn" for a in MODELS.names() if a != "tinycnn") + "}"
    path.write_text(TINY_PRESET.format(ARCHS=archs))
    return path


def part_plan(scale: Scale, device: torch.device, limit_s: float, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """``advkd report table2 --plan --preset P`` in a fresh runs dir (every cell pending: the whole
    table from scratch) with the calibration cached in ``work``; its first line holds the total."""
    preset = str(tiny_preset(work / "tiny-preset.yaml")) if scale.plan_preset == "tiny" else scale.plan_preset
    cal = work / "calibration"
    cmd = [sys.executable, "-m", "advkd", "report", "table2", "--plan", "--preset", preset, "--runs-dir", str(work / "runs")]
    env = {**env, "ADVKD_CALIBRATION_DIR": str(cal), "ADVKD_NO_LOAD_WARNING": "1"}
    if device.type == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the plan prices on the device it finds ("auto"): keep it on the CPU asked for
    elif device.index is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(device.index)
    proc = run_child(cmd, limit_s, env, capture_stdout=True)
    out: dict[str, Any] = {"command": "advkd report table2 --plan --preset " + (scale.plan_preset if scale.plan_preset != "tiny" else "<tiny preset>"),
                           "preset": scale.plan_preset, "wall_s": proc["wall_s"], "limit_s": limit_s, "public_reference_epoch_time": PUBLIC_EPOCH_TIME}
    lines = proc["stdout"].splitlines()
    head = lines[0] if lines else ""
    match = DURATION.search(head)
    each = [COMMAND_PRICE.match(line) for line in lines[1:]]
    out.update({"first_line": head, "commands": sum(1 for line in lines if line and not line.startswith("#")),
                "total": f"{match.group(1)} {match.group(2)}" if match else None,
                "total_gpu_hours" if device.type == "cuda" else "total_device_hours": float(match.group(1)) * UNIT_H[match.group(2)] if match else None,
                # the first line rounds to whole days past 48 h; each command's line keeps 0.1 h (or minutes)
                "sum_of_commands_hours": sum(float(m.group(1)) * UNIT_H[m.group(2)] for m in each if m) if any(each) else None,
                "priced_on": match.group(3) if match else None})
    try:
        out["calibration"] = json.loads(next(cal.glob("*.json")).read_text())
    except (StopIteration, OSError, ValueError):
        out["calibration"] = None
    if proc["timed_out"]:
        out["skipped"] = f"the plan did not finish in {limit_s:.0f} s (calibration too slow?); killed"
    elif proc["returncode"] != 0 or not match:
        out["error"] = f"exit {proc['returncode']}: {proc['stderr_tail'][-600:]}"
    return out


# ============================================================================ children and the parent


def run_child(cmd: list[str], limit_s: float, env: dict[str, str], *, capture_stdout: bool = False) -> dict[str, Any]:
    """Run ``cmd`` in its own process group with a wall-clock limit; past it, SIGTERM then SIGKILL
    to that group (torchrun's workers included). stderr is shown live and its tail kept; stdout is
    kept when ``capture_stdout`` (else discarded)."""
    import threading

    t0 = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out if capture_stdout else subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        tail: list[str] = []

        def pump() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                sys.stderr.write(line)
                tail.append(line)
                del tail[:-40]

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            timed_out = True
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=KILL_GRACE_S)
                    break
                except subprocess.TimeoutExpired:
                    continue
        reader.join(timeout=2)
        out.seek(0)
        stdout = out.read() if capture_stdout else ""
    return {"returncode": proc.returncode, "timed_out": timed_out, "wall_s": time.monotonic() - t0,
            "stdout": stdout, "stderr_tail": "".join(tail)[-3000:]}


def read_fragment(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def child_main(args: argparse.Namespace) -> int:
    """``--child PART``: one part in this process, its results in ``--fragment`` (rewritten after every item)."""
    scale = DRY if args.dry_run else FULL
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    frag = Fragment(Path(args.fragment))
    deadline = Deadline(args.deadline - 2.0)  # 2 s kept for the last fragment write
    tol = json.loads(args.tolerances) if args.tolerances else parity.TOLERANCES
    from advkd.core import accel

    accel.tune_malloc()  # as every advkd entry point does
    accel.set_threads(None)  # ADVKD_THREADS (the dry run's children: 1)
    if args.child == "correctness":
        part_correctness(scale, device, deadline, frag, tol, args.seed)
    elif args.child == "training":
        part_training(scale, device, deadline, frag, args.seed)
    elif args.child == "eval":
        part_eval(scale, device, deadline, frag, args.seed)
    frag.put("done", True)
    return 0


def child_env(dry_run: bool) -> dict[str, str]:
    """Children log times from the parent's start; a dry run's children use one thread each (on a
    shared 2-core machine two threads per process mostly wait for each other)."""
    env = {**os.environ, "ADVKD_GPU_CHECK_START": repr(START)}
    if dry_run:
        env.update({"OMP_NUM_THREADS": "1", "ADVKD_THREADS": "1"})
    return env


def run_part(part: str, args: argparse.Namespace, scale: Scale, device: torch.device, limit_s: float, work: Path) -> dict[str, Any]:
    fragment = work / f"{part}.json"
    env = child_env(args.dry_run)
    if part == "torchrun":
        return part_torchrun(scale, device, limit_s, fragment, args.dry_run, env)
    if part == "plan":
        return part_plan(scale, device, limit_s, work, env)
    cmd = [sys.executable, "-m", "benchmarks.gpu_check", "--child", part, "--device", str(device), "--fragment", str(fragment),
           "--deadline", f"{time.time() + limit_s:.3f}", "--seed", str(args.seed), "--tolerances", json.dumps(parity.TOLERANCES)] + (["--dry-run"] if args.dry_run else [])
    if part == "correctness":
        env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"  # deterministic cuBLAS: read when cuBLAS starts, so set before the child starts
    proc = run_child(cmd, limit_s + KILL_GRACE_S, env)
    data = read_fragment(fragment)
    data.pop("done", None)
    if proc["timed_out"]:
        data["timed_out"] = f"killed after {limit_s:.0f} s: what it had not finished is missing"
    elif proc["returncode"] != 0:
        data["crashed"] = f"exit {proc['returncode']}: {proc['stderr_tail'][-1500:]}"
    data.update({"wall_s": proc["wall_s"], "limit_s": limit_s})
    return data


# ----------------------------------------------------------------------------- verdicts


def failures(result: dict[str, Any]) -> list[str]:
    """Every correctness failure, one line each (empty: exit 0)."""
    out = []
    parts = result["parts"]
    corr = parts.get("correctness")
    if corr is not None:
        for key, row in corr.get("rows", {}).items():
            if "skipped" not in row and not row.get("pass"):
                out.append(f"correctness {key}: {row.get('why')}")
        if corr.get("crashed"):
            out.append(f"correctness part crashed: {corr['crashed'][:200]}")
    run = parts.get("torchrun")
    if run is not None and not run.get("skipped") and not run.get("pass"):
        out.append(f"torchrun: {run.get('why')}")
    train = parts.get("training")
    if train is not None:
        for name, row in train.get("rows", {}).items():
            d = row.get("defaults", {})
            if d and "skipped" not in d and not d.get("pass"):
                out.append(f"defaults {name}: {d.get('why')}")
        if train.get("crashed"):
            out.append(f"training part crashed: {train['crashed'][:200]}")
    return out


def skipped(result: dict[str, Any]) -> list[str]:
    out = []
    for part, data in result["parts"].items():
        if data.get("skipped") and isinstance(data["skipped"], str):
            out.append(f"{part}: {data['skipped']}")
        if data.get("timed_out"):
            out.append(f"{part}: {data['timed_out']}")
        if part in ("eval", "plan") and (data.get("crashed") or data.get("error")):  # reported parts: not a failure, but said
            out.append(f"{part}: {str(data.get('crashed') or data.get('error'))[:300]}")
        for key, row in data.get("rows", {}).items():
            for arm in (row, *(v for v in row.values() if isinstance(v, dict))):
                if isinstance(arm, dict) and arm.get("skipped"):
                    out.append(f"{part} {key}: {arm['skipped']}")
        if isinstance(data.get("autoattack"), dict) and data["autoattack"].get("skipped"):
            out.append(f"eval autoattack: {data['autoattack']['skipped']}")
    return out


# ----------------------------------------------------------------------------- output


def _f(v: Any, fmt: str = ".3g", none: str = "-") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(part, item, verdict, numbers): the table printed on screen and the top of the Markdown."""
    rows: list[tuple[str, str, str, str]] = []
    p = result["parts"]
    if "correctness" in p:
        c = p["correctness"].get("rows", {})
        steps = p["correctness"].get("setup", {}).get("steps", "?")
        done = [r for r in c.values() if "skipped" not in r]
        bad = [k for k, r in c.items() if "skipped" not in r and not r.get("pass")]
        worst = lambda key: max((r.get(key, 0.0) or 0.0 for r in done), default=None)  # noqa: E731
        rows.append(("correctness", f"{len(done)}/{len(c)} cases vs CPU, {steps} fp32 lock step{'' if steps == 1 else 's'}",
                     "pass" if done and not bad else ("FAIL: " + ", ".join(bad) if bad else "not run"),
                     f"worst: loss {_f(worst('loss_abs_diff'), '.1e')}, params {_f(worst('param_max_abs_diff'), '.1e')}, "
                     f"grads {_f(worst('grad_max_rel_norm_diff'), '.1e')} (norm), 1-iteration attack {_f(worst('one_iteration_fraction_beyond_atol'), '.1e')} "
                     f"of pixels; full attack {_f(worst('x_adv_fraction_beyond_atol'), '.1e')} of pixels (reported)"))
    if "torchrun" in p:
        t = p["torchrun"]
        rows.append(("torchrun", f"1 process, {t.get('backend', '?')}, DDP", "pass" if t.get("pass") else f"FAIL: {t.get('why')}",
                     f"{t.get('allreduce_calls', '?')} all-reduces, loss {_f(t.get('train_loss'))}, {_f(t.get('wall_s'), '.0f')} s"))
    if "training" in p:
        tr = p["training"]
        paths = tr.get("defaults_setup", {}).get("describe", "?")
        for name, r in tr.get("rows", {}).items():
            d, e = r.get("defaults", {}), r.get("eager", {})
            verdict = d.get("skipped", "skipped") if "skipped" in d or not d else ("pass" if d.get("pass") else f"FAIL: {d.get('why')}")
            numbers = (f"loss {_f(d.get('first_mean'), '.3f')} -> {_f(d.get('last_mean'), '.3f')}; img/s fp32 {_f(e.get('ips'), '.0f')} / "
                       f"defaults {_f(d.get('ips'), '.0f')} (x{_f(d.get('speedup_vs_eager'), '.2f')}); peak MiB {_f(e.get('peak_mib'), '.0f')} / "
                       f"{_f(d.get('peak_mib'), '.0f')}")
            rows.append(("training", f"{name} ({paths})", verdict, numbers))
    if "eval" in p:
        ev = p["eval"]
        for attack, r in ev.get("attacks", {}).get("attacks", {}).items():
            rows.append(("eval", f"{attack} vs torchattacks", "reported",
                         f"advkd {_f(r.get('advkd_ips'), '.0f')} img/s, torchattacks {_f(r.get('torchattacks_ips'), '.0f')} img/s, "
                         f"ratio {_f(r.get('ratio'), '.2f')}"))
        aa = ev.get("autoattack", {})
        if aa:
            rows.append(("eval", f"aa vs pyautoattack ({aa.get('n', '?')} points)", aa.get("skipped") or aa.get("error") or "reported",
                         f"advkd {_f(aa.get('advkd_s_median'), '.2f')} s, library {_f(aa.get('library_s_median'), '.2f')} s, "
                         f"ratio {_f(aa.get('ratio'), '.2f')}, flags {'equal' if aa.get('flags_equal') else aa.get('flags_differ', '?')}"))
    if "plan" in p:
        pl = p["plan"]
        hours = pl.get("total_gpu_hours", pl.get("total_device_hours"))
        rows.append(("plan", f"table2 --preset {pl.get('preset')}", pl.get("skipped") or pl.get("error", "")[:60] or "reported",
                     f"{pl.get('total')} ({_f(hours, '.1f')} h; commands sum to {_f(pl.get('sum_of_commands_hours'), '.1f')} h) "
                     f"on {pl.get('priced_on')}; reference scripts: "
                     f"{_f(pl.get('public_reference_epoch_time', {}).get('seconds_per_epoch'))} s/epoch"))
    return rows


def render(result: dict[str, Any], console: Console) -> None:
    meta = result["meta"]
    t = Table(title=f"gpu-check on {meta['device_name']} ({meta['device']}), torch {meta['torch']}, "
                    f"{'DRY RUN, ' if meta['dry_run'] else ''}{meta['wall_s']:.0f} s of {meta['budget_s']:.0f} s", title_justify="left")
    for col in ("part", "what", "verdict", "numbers"):
        t.add_column(col, overflow="fold")
    for part, what, verdict, numbers in summary_rows(result):
        style = "green" if verdict == "pass" else "red" if verdict.startswith("FAIL") else "yellow" if "skip" in verdict else ""
        t.add_row(part, what, f"[{style}]{verdict}[/]" if style else verdict, numbers)
    console.print(t)
    for line in result["summary"]["skipped"]:
        console.print(f"[yellow]skipped {line}[/]")
    verdict = "FAIL" if result["summary"]["failures"] else "PASS"
    console.print(f"[{'red' if verdict == 'FAIL' else 'green'}]{verdict}[/]: {len(result['summary']['failures'])} correctness failure(s); "
                  f"tolerances {json.dumps(result['tolerances'])}")


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    lines = [f"# gpu-check: {meta['device_name']}", "",
             f"`{meta['command']}` on {meta['date']}: torch {meta['torch']} (CUDA {meta['cuda']}, cuDNN {meta['cudnn']}), advkd {meta['advkd']}, "
             f"git {str(meta.get('git_sha'))[:10]}{' (dirty)' if meta.get('git_dirty') else ''}; {meta['wall_s']:.0f} s of the {meta['budget_s']:.0f} s budget"
             + (" -- **dry run**: CPU, tiny nets, no timing" if meta["dry_run"] else "") + ".", "",
             f"**{'FAIL' if result['summary']['failures'] else 'PASS'}**: " + ("; ".join(result["summary"]["failures"]) or "no correctness failure"), "",
             "| part | what | verdict | numbers |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in summary_rows(result)]
    corr = result["parts"].get("correctness", {}).get("rows", {})
    if corr:
        lines += ["", f"Correctness, device vs CPU (tolerances: `{json.dumps(result['tolerances'])}`):", "",
                  "| case | verdict | loss CPU / device (last step) | loss diff | param diff | grad diff (norm) | method state diff | "
                  "1-iteration attack: pixels apart | full attack: pixels apart (reported) | BN after attack (reported) | random draws |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for key, r in corr.items():
            if "skipped" in r:
                lines.append(f"| {key} | {r['skipped']} |" + " |" * 9)
                continue
            lc, ld = (r.get("loss_cpu") or [None])[-1], (r.get("loss_device") or [None])[-1]
            lines.append(f"| {key} | {'pass' if r.get('pass') else 'FAIL: ' + str(r.get('why'))} | {_f(lc, '.6g')} / {_f(ld, '.6g')} | "
                         + " | ".join(_f(r.get(k), ".1e") for k in ("loss_abs_diff", "param_max_abs_diff", "grad_max_rel_norm_diff",
                                                                    "method_state_max_abs_diff", "one_iteration_fraction_beyond_atol",
                                                                    "x_adv_fraction_beyond_atol", "attack_bn_buffers_max_abs_diff"))
                         + f" | {r.get('random_draws', '-')} |")
    skips = result["summary"]["skipped"]
    if skips:
        lines += ["", "Skipped:", ""] + [f"- {s}" for s in skips]
    pl = result["parts"].get("plan", {})
    if pl:
        ref = pl.get("public_reference_epoch_time", {})
        lines += ["", f"Plan: `{pl.get('first_line')}`", "",
                  f"Public per-epoch time of the reference scripts: {_f(ref.get('seconds_per_epoch'))} ({ref.get('note')})."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tinycnn everywhere, 1 compared step, 6 training steps, no timing, gloo, a tiny plan; writes to a temp dir")
    p.add_argument("--device", default=None, help="cuda | cuda:N (default cuda; --dry-run: cpu)")
    p.add_argument("--out", default=None, help=f"folder for gpu-<device>.json and .md (default {DEFAULT_OUT.relative_to(ROOT)}; --dry-run: a new temp dir)")
    p.add_argument("--skip", action="append", default=[], metavar="PART", help=f"skip parts (comma list, repeatable): {', '.join(PARTS)}")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help=f"wall-clock budget from start-up to the results (default {BUDGET_S:.0f})")
    p.add_argument("--seed", type=int, default=0)
    # internal: a part in a child process, or the torchrun worker
    p.add_argument("--child", choices=("correctness", "training", "eval"), help=argparse.SUPPRESS)
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--fragment", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=0.0, help=argparse.SUPPRESS)  # wall-clock time (time.time()) a child must finish by
    p.add_argument("--tolerances", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.skip = {s.strip() for item in args.skip for s in item.split(",") if s.strip()}
    unknown = args.skip - set(PARTS)
    if unknown:
        p.error(f"--skip: unknown part(s) {', '.join(sorted(unknown))}; valid: {', '.join(PARTS)}")
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    return args


_CLOCK_USED = False


def start_clock() -> float:
    """The budget's start: the process start (imports included) on the first run, now on a later
    in-process run (tests call :func:`main` several times) or when the module was imported long
    before (a test session imports it at collection)."""
    global _CLOCK_USED, START
    imported_long_ago = time.monotonic() - T0 > 30  # an in-process caller (a test session) imported it long before
    if _CLOCK_USED or imported_long_ago:
        _CLOCK_USED = True
        START = time.time()
        return time.monotonic()
    _CLOCK_USED = True
    return T0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ddp_worker:
        return ddp_worker(args)
    if args.child:
        return child_main(args)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        err.print(f"error: --device {args.device}: {e}")
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        err.print("error: CUDA is not available here; run on a CUDA machine, or --dry-run on the CPU")
        return 2
    if device.type not in ("cuda", "cpu"):
        err.print(f"error: --device {args.device}: cuda or cpu")
        return 2
    if device.type == "cpu" and not args.dry_run:
        err.print("error: the full check runs ResNet-18 and WRN-34-10 steps: it needs --device cuda; on the CPU use --dry-run")
        return 2
    scale = DRY if args.dry_run else FULL
    out_dir = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="gpu-check-dry-")) if args.dry_run else DEFAULT_OUT)
    name = f"gpu-{device_slug(device, args.dry_run)}"
    work = Path(tempfile.mkdtemp(prefix="gpu-check-work-"))
    t0 = start_clock()
    end = t0 + args.budget_s - RESERVE_S
    parts: dict[str, Any] = {}
    order = [part for part in PARTS if part not in args.skip]
    for i, part in enumerate(order):
        owed = sum(PART_BUDGET_S[q] for q in order[i + 1:])
        limit = min(end - time.monotonic() - owed, args.budget_s)  # what earlier parts left, minus what later parts are owed
        if limit < min(10.0, PART_BUDGET_S[part] / 2):
            parts[part] = {"skipped": f"{limit:.0f} s left for it (nominal {PART_BUDGET_S[part]:.0f} s)"}
            continue
        log(f"part {part}: limit {limit:.0f} s")
        parts[part] = run_part(part, args, scale, device, limit, work)
    git = {}
    with contextlib.suppress(Exception):
        from benchmarks.bench import git_info

        git = git_info()
    import advkd

    meta = {
        "advkd": advkd.__version__, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "platform": platform.platform(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {platform.processor() or platform.machine()}",
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0, "cpu_count": os.cpu_count(),
        "dry_run": args.dry_run, "scale": dataclasses.asdict(scale), "budget_s": args.budget_s, "part_budget_s": PART_BUDGET_S,
        "skipped_parts": sorted(args.skip), "seed": args.seed, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:] if argv is None else argv), **git,
    }
    if device.type == "cpu":
        from advkd.core import accel

        meta["device_name"] = f"CPU: {accel.cpu_model()}"
    result = {"schema": SCHEMA, "meta": meta, "tolerances": dict(parity.TOLERANCES), "decrease_window": DECREASE_WINDOW, "parts": parts}
    result["summary"] = {"failures": failures(result), "skipped": skipped(result)}
    meta["wall_s"] = time.monotonic() - t0
    result["summary"]["pass"] = not result["summary"]["failures"]
    shutil.rmtree(work, ignore_errors=True)  # the fragments are in the result, the plan's calibration too
    write_json(out_dir / f"{name}.json", result)
    (out_dir / f"{name}.md").write_text(markdown(result))
    render(result, Console(width=max(Console().width, 160)))
    err.print(f"wrote {out_dir / name}.json and .md")
    return 1 if result["summary"]["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
