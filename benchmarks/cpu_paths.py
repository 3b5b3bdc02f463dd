"""The device's default speed paths against fp32 NCHW, method by method, and the share of the
machine's measured matmul peak that each training step reaches.

    python -m benchmarks.cpu_paths [--quick] [--methods a,b] [--student resnet8] [--teacher resnet14]
                                   [--batch 64] [--repeats 5] [--device cpu] [--out benchmarks/results/cpu-paths.json]
    python -m benchmarks.cpu_paths --markdown benchmarks/results/cpu-paths.json

Defaults are the mini preset's training step: a ResNet-8 student, ResNet-14 teachers, batch 64.
Each method's step is exactly the training loop's (inputs in the paths' memory format, perturb and
loss under autocast, backward and SGD outside), built twice from the same initial weights: once
under the device's defaults (``accel.device_defaults``: on this project's CPU bf16 autocast and
channels-last) and once in fp32 NCHW. The two steps are timed alternately in one process (default,
plain, default, ...) after a warm-up; speed-up = median plain s / median default s.

Roofline: the FLOPs of one step are counted on the method's *floor* (the passes its algorithm
cannot avoid, ``benchmarks/floors.py``) with ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matmuls, forward and backward); the step's GFLOP/s is divided by the measured
peak of a 2048-square matmul in the precision that step runs in (bf16 for autocast, fp32 else).
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

import advkd
import advkd.methods as methods
from advkd.core import accel
from advkd.core.cpu import probe
from advkd.models import build_model
from benchmarks.device_parity import method_step
from benchmarks.floors import attack_start, floor_for, run_floor, selected_methods
from benchmarks.timing import alternate, load_avg, timed

SPEEDUP_TARGET = 1.7  # the bar for every method's mini step (CPU default vs fp32 NCHW)
DEFAULT_OUT = "benchmarks/results/cpu-paths.json"
FULL = {"student": "resnet8", "teacher": "resnet14", "batch": 64, "repeats": 5}
QUICK = {"student": "tinycnn", "teacher": "tinycnn", "batch": 16, "repeats": 2}
SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
PLAIN = accel.FastPaths(amp=False, channels_last=False, compile=False)


def matmul_peak(dtype: torch.dtype, device: torch.device, *, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` (median of ``repeats`` after one warm-up)."""
    a = torch.rand(n, n, device=device, dtype=dtype)
    b = torch.rand(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    times = [timed(lambda: torch.mm(a, b), device) for _ in range(repeats)]
    return 2 * n**3 / statistics.median(times) / 1e9


class FlopCount:
    """Counts the FLOPs of the convolutions and matmuls run inside it (torch's own flop formulas,
    forward and backward). ``FlopCounterMode`` itself cannot: its module tracker refuses the
    ``torch.autograd.grad`` calls of the inner attacks."""

    def __enter__(self) -> FlopCount:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self
        self.total = 0

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                out = func(*args, **kwargs)
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    counter.total += int(formula(*args, **kwargs, out_val=out))
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def floor_flops(name: str, student: torch.nn.Module, teachers: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor,
                *, epoch: int) -> int:
    """FLOPs of one execution of ``name``'s floor (fp32 NCHW; the count does not depend on precision)."""
    m = methods.build(name, teachers=teachers, num_classes=10, dataset="cifar10")
    floor = floor_for(name, epoch=epoch, begin=getattr(m.p, "begin", None))
    s = copy.deepcopy(student)
    opt = torch.optim.SGD(s.parameters(), **SGD)
    with FlopCount() as counter:
        run_floor(floor, student=s, teachers=teachers, x=x, y=y, x_start=attack_start(x), steps=int(getattr(m.p, "steps", 0)), optimizer=opt)
    return counter.total


def training_step(name: str, student: torch.nn.Module, teachers: dict[str, torch.nn.Module], paths: accel.FastPaths,
                  x: torch.Tensor, y: torch.Tensor, device: torch.device, *, epoch: int) -> Callable[[], None]:
    """One step of advkd's training loop for ``name`` under ``paths`` (models already prepared).
    Two tensor objects with the same batch alternate, as in bench.py: the methods cache teacher
    outputs per batch object, and a real loop gets a new batch every step."""
    m = methods.build(name, teachers=teachers, num_classes=10, dataset="cifar10")
    m.start_epoch(epoch, 1.0)
    opt = torch.optim.SGD(student.parameters(), **SGD)
    xs = itertools.cycle([x.clone() for _ in range(2)])

    def step() -> None:
        method_step(m, student, opt, next(xs), y, paths, device)

    return step


def base_models(student: str, teacher: str, device: torch.device, *, seed: int = 0) -> dict[str, torch.nn.Module]:
    """The student and one frozen teacher per role (every role the same arch), each from its own
    fixed seed: the initial weights both sides of a comparison copy."""
    base: dict[str, torch.nn.Module] = {}
    for i, (role, arch) in enumerate((("student", student), ("teacher", teacher), ("robust_teacher", teacher), ("clean_teacher", teacher))):
        torch.manual_seed(seed + 100 * i)
        net = build_model(arch, num_classes=10).to(device)
        base[role] = net if role == "student" else net.eval().requires_grad_(False)
    return base


def prepared(models: dict[str, torch.nn.Module], paths: accel.FastPaths) -> dict[str, torch.nn.Module]:
    """Copies of ``models`` with ``paths`` applied (channels-last weights, fp32 logits under amp)."""
    return {k: accel.apply_to_model(copy.deepcopy(m), paths) for k, m in models.items()}


def bench_method(name: str, args: argparse.Namespace, base: dict[str, torch.nn.Module], paths: accel.FastPaths,
                 x: torch.Tensor, y: torch.Tensor, peaks: dict[str, float], device: torch.device,
                 log: Callable[[str], None]) -> dict[str, Any]:
    roles = methods.method_roles(name)
    arms = {"default": prepared(base, paths), "plain": prepared(base, PLAIN)}
    steps = {
        arm: training_step(name, models["student"].train(), {r: models[r] for r in roles}, p, x, y, device, epoch=args.epoch)
        for (arm, models), p in zip(arms.items(), (paths, PLAIN))
    }
    t0 = time.perf_counter()
    t_default, t_plain = alternate([steps["default"], steps["plain"]], warmup=args.warmup, repeats=args.repeats,
                                   max_repeats=2 * args.repeats, device=device)
    d_s, p_s = statistics.median(t_default), statistics.median(t_plain)
    flops = floor_flops(name, base["student"], {r: base[r] for r in roles}, x, y, epoch=args.epoch)
    peak_default = peaks["bf16" if paths.amp else "fp32"]
    row = {
        "roles": list(roles),
        "default_s_median": d_s,
        "plain_s_median": p_s,
        "speedup": p_s / d_s,
        "speedup_pairwise_median": statistics.median(p / d for d, p in zip(t_default, t_plain)),
        "speedup_min": min(t_plain) / min(t_default),
        "default_s": t_default,
        "plain_s": t_plain,
        "default_ips": args.batch / d_s,
        "plain_ips": args.batch / p_s,
        "floor_gflop": flops / 1e9,
        "default_gflops": flops / d_s / 1e9,
        "plain_gflops": flops / p_s / 1e9,
        "default_peak_fraction": flops / d_s / 1e9 / peak_default,
        "plain_peak_fraction": flops / p_s / 1e9 / peaks["fp32"],
    }
    log(f"{name:<11} default {d_s:6.3f} s  fp32 NCHW {p_s:6.3f} s  speed-up {row['speedup']:4.2f}x  "
        f"{row['default_gflops']:6.1f} GFLOP/s = {100 * row['default_peak_fraction']:4.1f}% of peak ({len(t_default)} pairs, {time.perf_counter() - t0:.0f} s)")
    return row


def _gflops(peak: float | None) -> str:
    return "not measured" if peak is None else f"{peak:.0f}"


def render(result: dict[str, Any], console: Console) -> None:
    meta = result["meta"]
    arm = "device default" if meta.get("paths_are_device_default", True) else "candidate"
    t = Table(title=f"training step: {meta['paths']} ({arm}) vs fp32 NCHW; student {meta['student']}, teachers "
                    f"{meta['teacher']}, batch {meta['batch']}, {meta['device_name']} x{meta['threads']} threads; "
                    f"matmul peak fp32 {_gflops(meta['peak_gflops']['fp32'])} / bf16 {_gflops(meta['peak_gflops']['bf16'])} GFLOP/s",
              title_justify="left")
    for col in ("method", "fp32 NCHW img/s", "default img/s", "speed-up", "(min-based)", "GFLOP/step", "default % of peak", "fp32 % of peak"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for name, r in result["methods"].items():
        style = "green" if r["speedup"] >= SPEEDUP_TARGET else "red"
        t.add_row(name, f"{r['plain_ips']:.1f}", f"{r['default_ips']:.1f}", f"[{style}]{r['speedup']:.2f}x[/]", f"{r['speedup_min']:.2f}x",
                  f"{r['floor_gflop']:.2f}", f"{100 * r['default_peak_fraction']:.1f}", f"{100 * r['plain_peak_fraction']:.1f}")
    console.print(t)
    console.print(f"target: speed-up >= {SPEEDUP_TARGET}x | load {meta['load_avg_before']} -> {meta['load_avg_after']} | {meta['date']} | {meta['wall_s']:.0f} s")


def markdown(result: dict[str, Any]) -> str:
    meta = result["meta"]
    arm = "the device default" if meta.get("paths_are_device_default", True) else "a candidate, not the device default,"
    lines = [
        f"Training step under {arm} (`{meta['paths']}`) against fp32 NCHW: student `{meta['student']}`, teachers "
        f"`{meta['teacher']}`, batch {meta['batch']}, `{meta['device_name']}` ({meta['cpu_count']} cores, {meta['threads']} threads), "
        f"torch {meta['torch']}, medians of {meta['repeats']}-{2 * meta['repeats']} alternated pairs, {meta['date']}, load average "
        f"before/after {meta['load_avg_before']} / {meta['load_avg_after']}. Matmul peak (2048²): fp32 {meta['peak_gflops']['fp32']:.0f}, "
        f"bf16 {_gflops(meta['peak_gflops']['bf16'])} GFLOP/s.",
        "",
        "| method | fp32 NCHW img/s | default img/s | speed-up | min-based | GFLOP per step (floor) | default: % of its peak | fp32: % of its peak |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["methods"].items():
        flag = "" if r["speedup"] >= SPEEDUP_TARGET else f" **<{SPEEDUP_TARGET}**"
        lines.append(f"| {name} | {r['plain_ips']:.1f} | {r['default_ips']:.1f} | {r['speedup']:.2f}x{flag} | {r['speedup_min']:.2f}x | "
                     f"{r['floor_gflop']:.2f} | {100 * r['default_peak_fraction']:.1f} % | {100 * r['plain_peak_fraction']:.1f} % |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_paths", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tinycnn student/teachers, batch 16, 2 repeats (smoke run)")
    p.add_argument("--methods", default=None, help="comma-separated method names (default: every registered method)")
    p.add_argument("--student", default=None, help="student architecture (default resnet8: mini)")
    p.add_argument("--teacher", default=None, help="architecture of every teacher role (default resnet14: mini)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 64: mini)")
    p.add_argument("--repeats", type=int, default=None, help="alternated pairs per method (default 5; up to twice that on a noisy machine)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--epoch", type=int, default=0, help="0-indexed epoch the methods are in")
    p.add_argument("--device", default="cpu")
    p.add_argument("--paths", default=None, metavar="amp,channels-last",
                   help="time these paths against fp32 NCHW instead of the device's defaults: a CPU whose defaults are "
                        "fp32 NCHW can measure a candidate (names: amp, channels-last)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--markdown", metavar="JSON", default=None, help="print the Markdown table of a result file and exit")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.batch < 1 or args.repeats < 1 or args.warmup < 1:
        p.error("--batch, --repeats and --warmup must be >= 1")
    if args.paths is not None:
        names = {n.strip() for n in args.paths.split(",") if n.strip()}
        unknown = names - set(CANDIDATE_PATHS)
        if unknown or not names:
            p.error(f"--paths takes a comma list of {', '.join(CANDIDATE_PATHS)} (got {args.paths!r})")
        args.paths = names
    return args


CANDIDATE_PATHS = {"amp": "amp", "channels-last": "channels_last"}


def arm_paths(device: torch.device, names: set[str] | None) -> tuple[accel.FastPaths, bool]:
    """The paths timed against fp32 NCHW and whether they are the device's defaults."""
    defaults = accel.device_defaults(device)
    if names is None:
        return defaults, True
    chosen = {field: name in names for name, field in CANDIDATE_PATHS.items()}
    return accel.FastPaths(compile=False, **chosen), False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.markdown:
        try:
            print(markdown(json.loads(Path(args.markdown).read_text())))
        except (OSError, ValueError, KeyError) as e:
            err.print(f"error: cannot render {args.markdown}: {e}")
            return 2
        return 0
    try:
        names = selected_methods(args.methods)
    except ValueError as e:
        err.print(f"error: {e}")
        return 2
    device = torch.device(args.device)
    mallopt = accel.tune_malloc()
    load_before = load_avg()
    paths, is_default = arm_paths(device, args.paths)
    # bf16's peak only where a bf16 arm runs: without native bf16 one emulated 2048-square matmul takes minutes
    peaks = {"fp32": matmul_peak(torch.float32, device), "bf16": matmul_peak(torch.bfloat16, device) if paths.amp else None}
    torch.manual_seed(args.seed)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    base = base_models(args.student, args.teacher, device, seed=args.seed)
    t_start = time.perf_counter()
    log = lambda msg: err.print(msg)  # noqa: E731
    log(f"{'device default' if is_default else 'candidate (not the device default)'}: {paths.describe()}; matmul peak fp32 {_gflops(peaks['fp32'])} / bf16 {_gflops(peaks['bf16'])} GFLOP/s")
    rows = {name: bench_method(name, args, base, paths, x, y, peaks, device, log) for name in names}
    cpu = probe()
    meta = {
        "advkd": advkd.__version__, "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else accel.cpu_model(),
        "cpu_capability": cpu.capability, "native_bf16": cpu.native_bf16, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
        "paths": paths.describe(), "paths_are_device_default": is_default, "fast_paths": paths.as_record(), "student": args.student, "teacher": args.teacher, "batch": args.batch,
        "repeats": args.repeats, "warmup": args.warmup, "epoch": args.epoch, "quick": args.quick, "seed": args.seed, "mallopt": mallopt,
        "optimizer": {"name": "SGD", **SGD}, "peak_gflops": peaks, "load_avg_before": load_before, "load_avg_after": load_avg(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "wall_s": time.perf_counter() - t_start,
        "command": "python -m benchmarks.cpu_paths " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    result = {"schema": 1, "meta": meta, "target_speedup": SPEEDUP_TARGET, "methods": rows,
              "below_target": sorted(n for n, r in rows.items() if r["speedup"] < SPEEDUP_TARGET)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out)
    render(result, Console(width=max(Console().width, 160)))
    err.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
