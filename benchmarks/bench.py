"""advkd benchmarks: training-step overhead over each method's floor, attack speed vs torchattacks.

    python -m benchmarks.bench [--quick] [--methods a,b] [--student resnet8] [--teacher resnet20]
                               [--batch 128] [--repeats N] [--device cpu|cuda]
                               [--out benchmarks/results/latest.json]

For every method: images/second of one full training step (``perturb`` + ``loss`` +
``zero_grad / backward / SGD step``) on a fixed batch, and of its *floor* -- the forward/backward
passes its algorithm cannot avoid, run as plain PyTorch calls on the same models and batch
(``benchmarks/floors.py``). ``overhead = median step time / median floor time`` (target <= 1.10).
Step and floor are timed alternately (step, floor, step, floor, ...) after warm-up, in one
process. Each method's forwards are also counted with hooks and compared with its floor's, so a
redundant pass shows up by name. Peak memory of one step is measured separately (untimed).

For evaluation: images/second of advkd's ``pgd20-sat`` and ``cwinf`` beside torchattacks (a dev
dependency) on the same fixed model and batch, alternately timed; ratio = advkd img/s /
torchattacks img/s (target >= 1.2); and advkd's ``aa`` on the BN-folded copy beside one plain
``pyautoattack`` call on the unfolded model (``benchmarks/autoattack_pair.py``; target >= 1.25,
flags compared). See ``benchmarks/README.md`` for what each number means.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime as _dt
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # silence the CPU profiler's "no GPU" log line

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import advkd  # noqa: E402
import advkd.methods as methods  # noqa: E402
from advkd import attacks  # noqa: E402
from advkd.core import accel  # noqa: E402
from advkd.models import build_model  # noqa: E402
from benchmarks.autoattack_pair import UNTRAINED_NOTE, bench_autoattack, load_points, markdown_lines, rich_table  # noqa: E402
from benchmarks.floors import PassCounter, attack_start, floor_for, run_floor, selected_methods  # noqa: E402
from benchmarks.timing import alternate, load_avg, spread, sync, timed  # noqa: E402,F401  (first_run imports load_avg from here)

SCHEMA = 1
OVERHEAD_TARGET = 1.10
EVAL_RATIO_TARGET = 1.4  # issue 22: with the evaluation defaults (channels-last where the device measures it faster)
AA_RATIO_TARGET = 1.25  # plain pyautoattack s / advkd aa s on the same model and points
LOAD_LIMIT = 2.5
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = "benchmarks/results/latest.json"
FULL = {"student": "resnet8", "teacher": "resnet20", "batch": 128, "repeats": 5}
QUICK = {"student": "tinycnn", "teacher": "tinycnn", "batch": 32, "repeats": 2}
AA_FULL = {"aa_n": 32, "aa_pairs": 4}
AA_QUICK = {"aa_n": 8, "aa_pairs": 2}  # 1 timed pair after the warm-up

# Optimiser of both the method step and the floor (advkd's train loop uses SGD with momentum).
SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}


# ============================================================================ peak memory


@contextlib.contextmanager
def _quiet_fd2():
    """Silence C++ writes to stderr (the kineto profiler prints start/stop lines) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_profiler(fn: Callable[[], Any]) -> int:
    """Peak bytes live in PyTorch's CPU allocator during ``fn`` above the level at its start.

    Replays the profiler's per-allocation memory records (``profile_memory=True``) in time order.
    """
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    if not events:
        raise RuntimeError("the profiler recorded no memory events")
    events.sort()
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int, str]:
    """(peak bytes allocated by ``fn`` above what was live at its start, how it was measured)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base, "cuda.max_memory_allocated"
    try:
        return _cpu_peak_profiler(fn), "torch.profiler CPU allocator records"
    except Exception:  # noqa: BLE001 - private profiler API: fall back to the process high-water mark
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return (after - before) * 1024, "ru_maxrss delta (lower bound; 0 when an earlier peak was higher)"


def model_bytes(*modules: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


# ============================================================================ method benchmark


@dataclasses.dataclass
class Setup:
    device: torch.device
    student: str
    teacher: str
    clean_teacher: str
    batch: int
    repeats: int
    max_repeats: int
    warmup: int
    epoch: int
    seed: int
    x: torch.Tensor
    y: torch.Tensor


def make_teachers(setup: Setup) -> dict[str, torch.nn.Module]:
    """One instance per role (random init, fixed seed); frozen by the methods and the floors."""
    archs = {"teacher": setup.teacher, "robust_teacher": setup.teacher, "clean_teacher": setup.clean_teacher}
    out = {}
    for i, (role, arch) in enumerate(archs.items()):
        torch.manual_seed(setup.seed + 100 + i)
        t = build_model(arch, num_classes=10).to(setup.device)
        t.eval().requires_grad_(False)
        out[role] = t
    return out


def bench_method(name: str, setup: Setup, all_teachers: dict[str, torch.nn.Module], log: Callable[[str], None]) -> dict[str, Any]:
    device, x, y = setup.device, setup.x, setup.y
    roles = methods.method_roles(name)
    teachers = {r: all_teachers[r] for r in roles}
    torch.manual_seed(setup.seed)
    student = build_model(setup.student, num_classes=10).to(device).train()
    student_floor = copy.deepcopy(student)
    m = methods.build(name, teachers=teachers, num_classes=10, dataset="cifar10")
    m.start_epoch(setup.epoch, 1.0)
    steps = int(getattr(m.p, "steps", 0))
    floor = floor_for(name, epoch=setup.epoch, begin=getattr(m.p, "begin", None))
    opt = torch.optim.SGD(student.parameters(), **SGD)
    opt_floor = torch.optim.SGD(student_floor.parameters(), **SGD)
    # Distinct tensor objects with the same data: the methods cache a teacher output per batch
    # *object*, so re-using one tensor would skip the teacher forward from the second step on.
    xs = itertools.cycle([x.clone() for _ in range(2)])
    x_start = attack_start(x)
    last: dict[str, float] = {}

    def step() -> None:
        xb = next(xs)
        x_adv = m.perturb(student, xb, y)
        loss, logs = m.loss(student, xb, x_adv, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        last["loss"] = float(loss.detach())

    def floor_step() -> None:
        run_floor(floor, student=student_floor, teachers=teachers, x=x, y=y, x_start=x_start, steps=steps, optimizer=opt_floor)

    # First (untimed, warm-up) call of each: forward counting and peak memory.
    with PassCounter(student, teachers) as method_passes:
        peak, mem_how = peak_memory(step, device)
    with PassCounter(student_floor, teachers) as floor_passes:
        floor_peak, _ = peak_memory(floor_step, device)
    expected = floor.expected_passes(steps)
    if floor_passes.counts != expected:  # a bug in floors.py, not in advkd
        raise RuntimeError(f"{name}: the floor ran {floor_passes.counts}, its description says {expected}")

    t0 = time.perf_counter()
    step_times, floor_times = alternate(
        [step, floor_step], warmup=setup.warmup - 1, repeats=setup.repeats, max_repeats=setup.max_repeats, device=device
    )
    step_s, floor_s = statistics.median(step_times), statistics.median(floor_times)
    extra = {k: v - expected.get(k, 0) for k, v in method_passes.counts.items() if v > expected.get(k, 0)}
    missing = {k: v - method_passes.counts.get(k, 0) for k, v in expected.items() if v > method_passes.counts.get(k, 0)}
    overhead = step_s / floor_s
    log(
        f"{name:<11} step {step_s:7.3f} s  floor {floor_s:7.3f} s  overhead {overhead:5.2f} "
        f"(min-based {min(step_times) / min(floor_times):4.2f}, {len(step_times)} pairs, {time.perf_counter() - t0:.0f} s)"
    )
    return {
        "roles": list(roles),
        "inner_steps": steps,
        "step_s_median": step_s,
        "floor_s_median": floor_s,
        "step_ips": setup.batch / step_s,
        "floor_ips": setup.batch / floor_s,
        "overhead": overhead,
        "overhead_pairwise_median": statistics.median(s / f for s, f in zip(step_times, floor_times)),
        "overhead_min": min(step_times) / min(floor_times),
        "step_s": step_times,
        "floor_s": floor_times,
        "peak_memory_bytes": peak,
        "floor_peak_memory_bytes": floor_peak,
        "memory_method": mem_how,
        "floor": floor.describe(steps),
        "floor_note": floor.note,
        "passes": {
            "method": dict(sorted(method_passes.counts.items())),
            "floor": dict(sorted(expected.items())),
            "match": not extra and not missing,
            "extra": extra,
            "missing": missing,
        },
        "final_loss": last.get("loss"),
        "hparams": dataclasses.asdict(m.p),
    }


# ============================================================================ evaluation benchmark


def eval_pairs(model: torch.nn.Module) -> list[dict[str, Any]]:
    """(attack id, advkd attack, torchattacks attack, how faithful the torchattacks side is)."""
    import torchattacks

    cw = attacks.build("cwinf")
    return [
        {
            "attack": "pgd20-sat",
            "advkd": attacks.build("pgd20-sat"),
            "torchattacks": torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=20, random_start=True),
            "torchattacks_spec": "torchattacks.PGD(eps=8/255, alpha=2/255, steps=20, random_start=True)",
            "faithful": True,
            "note": "same algorithm: uniform start clipped to [0,1], 20 sign steps of 2/255 on CE, project then clip",
        },
        {
            "attack": "cwinf",
            "advkd": cw,
            "torchattacks": torchattacks.PGD(model, eps=8 / 255, alpha=cw.params["step_size"], steps=30, random_start=True),
            "torchattacks_spec": f"torchattacks.PGD(eps=8/255, alpha={cw.params['step_size']:.6g}, steps=30, random_start=True)",
            "faithful": False,
            "note": "torchattacks has no CW-Linf (its CW is the L2 optimisation attack); the stand-in is its PGD with the "
            "same start, step size and 30 steps, i.e. the same passes with CE in place of the CW margin (a B x C loss)",
        },
    ]


def bench_eval(setup: Setup, eval_model: str, log: Callable[[str], None], *, fold_bn: bool = True, freeze: bool | None = None,
               channels_last: bool | None = None) -> dict[str, Any]:
    try:
        import torchattacks  # noqa: F401
    except ImportError:
        return {"skipped": "torchattacks is not installed (pip install -e '.[dev]')"}
    device, x, y = setup.device, setup.x, setup.y
    torch.manual_seed(setup.seed + 7)
    model = build_model(eval_model, num_classes=10).to(device).eval()
    with torch.no_grad():
        clean_acc = (model(x).argmax(1) == y).float().mean().item()
    # None: advkd attack's default for the device (fp32; channels-last and the frozen copy where they are the default)
    paths = accel.resolve_fast_paths(device, fold_bn=fold_bn, freeze=freeze, channels_last=channels_last, amp_default=False)
    out: dict[str, Any] = {"model": eval_model, "init": "random (fixed seed)", "clean_acc": clean_acc, "fold_bn": paths.fold_bn,
                           "freeze": paths.freeze, "channels_last": paths.channels_last, "attacks": {}}
    # advkd attacks what ``advkd attack`` attacks: the BN-folded copy (same function) by default, in the
    # default memory format; torchattacks gets the model as stored (NCHW), as its users call it
    net = accel.eval_model(model, paths)
    if net is model and paths.channels_last:  # --no-fold-bn: advkd attack converts the model itself
        net = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_advkd = accel.to_memory_format(x, paths)
    for pair in eval_pairs(model):
        adv_a, adv_t = {}, {}

        def run_advkd(a=pair["advkd"], store=adv_a) -> None:
            store["x"] = a(net, x_advkd, y)

        def run_ta(a=pair["torchattacks"], store=adv_t) -> None:
            store["x"] = a(x, y)

        t_a, t_t = alternate(
            [run_advkd, run_ta], warmup=setup.warmup, repeats=setup.repeats, max_repeats=setup.max_repeats, device=device
        )
        a_s, t_s = statistics.median(t_a), statistics.median(t_t)
        with torch.no_grad():
            acc_a = (model(adv_a["x"]).argmax(1) == y).float().mean().item()
            acc_t = (model(adv_t["x"]).argmax(1) == y).float().mean().item()
        ratio = t_s / a_s
        log(f"eval {pair['attack']:<10} advkd {a_s:6.3f} s  torchattacks {t_s:6.3f} s  ratio {ratio:4.2f} "
            f"(min-based {min(t_t) / min(t_a):4.2f}, {len(t_a)} pairs)")
        out["attacks"][pair["attack"]] = {
            "advkd_ips": setup.batch / a_s,
            "torchattacks_ips": setup.batch / t_s,
            "ratio": ratio,
            "ratio_pairwise_median": statistics.median(t / a for a, t in zip(t_a, t_t)),
            "ratio_min": min(t_t) / min(t_a),
            "advkd_s": t_a,
            "torchattacks_s": t_t,
            "advkd_robust_acc": acc_a,
            "torchattacks_robust_acc": acc_t,
            "advkd_spec": repr(pair["advkd"]),
            "torchattacks_spec": pair["torchattacks_spec"],
            "faithful": pair["faithful"],
            "note": pair["note"],
        }
    return out


# ============================================================================ AutoAttack pair


def aa_inputs(args: argparse.Namespace, setup: Setup) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, dict[str, Any]]:
    """(model, x, y, what they are) of the AutoAttack pair: the first ``--aa-n`` test images of an
    ``--aa-checkpoint``'s dataset, or the random-init ``--eval-model`` on the bench's random batch.
    Loaded before the long method runs, so a bad path fails at once."""
    n = args.aa_n
    if args.aa_checkpoint:
        return load_points(args.aa_checkpoint, n=n, data_dir=args.data_dir, device=setup.device)
    torch.manual_seed(setup.seed + 7)  # the evaluation benchmark's model
    model = build_model(args.eval_model, num_classes=10).to(setup.device).eval()
    if n <= setup.batch:
        x, y = setup.x[:n], setup.y[:n]
    else:
        g = torch.Generator().manual_seed(setup.seed + 11)
        x, y = torch.rand(n, 3, 32, 32, generator=g).to(setup.device), torch.randint(0, 10, (n,), generator=g).to(setup.device)
    return model, x, y, {"model": args.eval_model, "checkpoint": None, "data": f"first {n} images of the bench's random batch",
                         "init": "random (fixed seed)", "note": UNTRAINED_NOTE}


# ============================================================================ metadata, output


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()

    try:
        return {"git_sha": git("rev-parse", "HEAD") or None, "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def cpu_name() -> str:
    return accel.cpu_model()


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"


def eval_paths(ev: dict[str, Any]) -> str:
    """How advkd's side of the evaluation pairs ran (older result files lack channels_last)."""
    parts = ["fp32", "channels-last" if ev.get("channels_last") else "NCHW", "BN folded" if ev.get("fold_bn", True) else "unfolded"]
    return ", ".join(parts + (["frozen no-grad copy"] if ev.get("freeze") else []))


def render(result: dict[str, Any], console: Console) -> None:
    meta = result["meta"]
    title = (
        f"advkd training steps: student {meta['student']}, teachers {meta['teacher']}"
        f"{'' if meta['clean_teacher'] == meta['teacher'] else ' / clean ' + meta['clean_teacher']}, "
        f"batch {meta['batch']}, {meta['device']} x{meta['threads']} threads, medians of {meta['repeats']}-{meta['max_repeats']} alternated runs"
    )
    t = Table(title=title, title_justify="left")
    for col, just in [("method", "left"), ("step img/s", "right"), ("floor img/s", "right"), ("overhead", "right"),
                      ("(min-based)", "right"), ("peak MiB", "right"), ("floor peak MiB", "right"), ("passes", "left"), ("floor", "left")]:
        t.add_column(col, justify=just)
    for name, r in result["methods"].items():
        over = r["overhead"]
        style = "green" if over <= OVERHEAD_TARGET else "red"
        passes = "= floor" if r["passes"]["match"] else "extra " + ", ".join(f"{k} +{v}" for k, v in r["passes"]["extra"].items())
        if r["passes"]["missing"]:
            passes += " missing " + ", ".join(f"{k} -{v}" for k, v in r["passes"]["missing"].items())
        t.add_row(name, f"{r['step_ips']:.1f}", f"{r['floor_ips']:.1f}", f"[{style}]{over:.2f}[/]", f"{r['overhead_min']:.2f}",
                  mib(r["peak_memory_bytes"]), mib(r["floor_peak_memory_bytes"]), passes, r["floor"])
    console.print(t)
    ev = result.get("evaluation", {})
    if "attacks" in ev:
        e = Table(title=f"evaluation attacks on {ev['model']} ({ev['init']}), batch {meta['batch']}, advkd side {eval_paths(ev)}", title_justify="left")
        for col, just in [("attack", "left"), ("advkd img/s", "right"), ("torchattacks img/s", "right"), ("ratio", "right"),
                          ("(min-based)", "right"), ("robust acc advkd / ta", "right"), ("torchattacks side", "left")]:
            e.add_column(col, justify=just)
        for name, r in ev["attacks"].items():
            style = "green" if r["ratio"] >= EVAL_RATIO_TARGET else "red"
            spec = r["torchattacks_spec"] + ("" if r["faithful"] else "  [yellow](CE stand-in)[/]")
            e.add_row(name, f"{r['advkd_ips']:.1f}", f"{r['torchattacks_ips']:.1f}", f"[{style}]{r['ratio']:.2f}x[/]", f"{r['ratio_min']:.2f}x",
                      f"{r['advkd_robust_acc']:.3f} / {r['torchattacks_robust_acc']:.3f}", spec)
        console.print(e)
    elif ev.get("skipped"):
        console.print(f"evaluation benchmark skipped: {ev.get('skipped')}")
    if ev.get("autoattack"):
        rich_table(ev["autoattack"], console, AA_RATIO_TARGET)
    load = meta.get("load_avg_before")
    console.print(
        f"targets: overhead <= {OVERHEAD_TARGET:.2f}, advkd/torchattacks >= {EVAL_RATIO_TARGET:.1f}x, "
        f"pyautoattack/advkd aa >= {AA_RATIO_TARGET:.2f}x | torch {meta['torch']} | "
        f"load {load} | {meta['date']} | {meta['wall_s']:.0f} s"
    )


def markdown(result: dict[str, Any]) -> str:
    """The README tables of a result file (``--markdown FILE``)."""
    meta = result["meta"]
    lines = [
        f"Student `{meta['student']}`, teachers `{meta['teacher']}`"
        + ("" if meta["clean_teacher"] == meta["teacher"] else f" (clean teacher `{meta['clean_teacher']}`)")
        + f", batch {meta['batch']}, {meta['dtype']}, `{meta['device']}` ({meta['cpu_count']} cores, {meta['threads']} threads), "
        f"torch {meta['torch']}, medians of {meta['repeats']}-{meta['max_repeats']} alternated runs, {meta['date']}, "
        f"git {str(meta.get('git_sha') or '?')[:10]}{' (dirty)' if meta.get('git_dirty') else ''}, "
        f"load average before/after {meta['load_avg_before']} / {meta['load_avg_after']}.",
        "",
        "| method | step img/s | floor img/s | overhead | min-based | peak MiB (step / floor) | passes vs floor | floor |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, r in result["methods"].items():
        flag = "" if r["overhead"] <= OVERHEAD_TARGET else " **>1.10**"
        passes = "same" if r["passes"]["match"] else "; ".join(
            [f"+{v} {k}" for k, v in r["passes"]["extra"].items()] + [f"-{v} {k}" for k, v in r["passes"]["missing"].items()]
        )
        lines.append(
            f"| {name} | {r['step_ips']:.1f} | {r['floor_ips']:.1f} | {r['overhead']:.2f}{flag} | {r['overhead_min']:.2f} | "
            f"{mib(r['peak_memory_bytes'])} / {mib(r['floor_peak_memory_bytes'])} | {passes} | {r['floor']} |"
        )
    ev = result.get("evaluation", {})
    if "attacks" in ev:
        lines += [
            "",
            f"Evaluation attacks on `{ev['model']}` ({ev['init']}), same batch; advkd side {eval_paths(ev)}, torchattacks on the model as stored (fp32 NCHW):",
            "",
            "| attack | advkd img/s | torchattacks img/s | advkd / torchattacks | min-based | torchattacks side |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for name, r in ev["attacks"].items():
            side = f"`{r['torchattacks_spec']}`" + ("" if r["faithful"] else " (CE stand-in: no CW-Linf in torchattacks)")
            lines.append(f"| {name} | {r['advkd_ips']:.1f} | {r['torchattacks_ips']:.1f} | {r['ratio']:.2f}x | {r['ratio_min']:.2f}x | {side} |")
    if ev.get("autoattack"):
        lines += ["", *markdown_lines(ev["autoattack"])]
    return "\n".join(lines)


def compare_markdown(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Before/after table of two result files (``--markdown AFTER --before BEFORE``)."""
    def label(r: dict[str, Any]) -> str:
        m = r["meta"]
        return f"git {str(m.get('git_sha') or '?')[:7]}, load {m['load_avg_before'][0] if m.get('load_avg_before') else '?'}"

    lines = [
        f"Before: {label(before)}; after: {label(after)} (same nets, batch and machine).",
        "",
        "| method | step img/s before | after | speed-up | overhead before | after | peak MiB before | after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, a in after["methods"].items():
        b = before["methods"].get(name)
        if b is None:
            continue
        lines.append(
            f"| {name} | {b['step_ips']:.1f} | {a['step_ips']:.1f} | {a['step_ips'] / b['step_ips']:.2f}x | "
            f"{b['overhead']:.2f} | {a['overhead']:.2f} | {mib(b['peak_memory_bytes'])} | {mib(a['peak_memory_bytes'])} |"
        )
    ev_b, ev_a = before.get("evaluation", {}).get("attacks", {}), after.get("evaluation", {}).get("attacks", {})
    if ev_a:
        lines += ["", "| attack | advkd img/s before | after | speed-up | vs torchattacks before | after |", "|---|---:|---:|---:|---:|---:|"]
        for name, a in ev_a.items():
            b = ev_b.get(name)
            if b:
                lines.append(f"| {name} | {b['advkd_ips']:.1f} | {a['advkd_ips']:.1f} | {a['advkd_ips'] / b['advkd_ips']:.2f}x | "
                             f"{b['ratio']:.2f}x | {a['ratio']:.2f}x |")
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


# ============================================================================ CLI


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tinycnn student/teachers, batch 32, 2 repeats (smoke run)")
    p.add_argument("--methods", default=None, help="comma-separated method names (default: every registered method)")
    p.add_argument("--student", default=None, help="student architecture (default resnet8; quick: tinycnn)")
    p.add_argument("--teacher", default=None, help="teacher architecture of every role (default resnet20; quick: tinycnn)")
    p.add_argument("--clean-teacher", default=None, help="clean-teacher architecture of two-teacher methods (default: --teacher)")
    p.add_argument("--eval-model", default=None, help="model of the evaluation benchmark (default: --student)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 128; quick: 32)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 5; quick: 2)")
    p.add_argument("--max-repeats", type=int, default=None,
                   help="extra rounds run while a series spreads by more than 30%% (noisy machine), up to this many (default 2 x repeats)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed calls of each function before timing (default 1; for methods the first is the memory/pass-count call)")
    p.add_argument("--epoch", type=int, default=0, help="0-indexed epoch the methods are in (IAD-style warm-up ends at 'begin')")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation-attack benchmark")
    p.add_argument("--no-fold-bn", action="store_true", help="evaluation: attack the unfolded model (as advkd attack --no-fold-bn)")
    p.add_argument("--no-freeze", action="store_true", help="evaluation: no frozen TorchScript copy for no-grad forwards (as advkd attack --no-freeze)")
    p.add_argument("--no-channels-last", action="store_true", help="evaluation: NCHW tensors even where channels-last is the device default (as advkd attack --no-channels-last)")
    p.add_argument("--no-aa", action="store_true", help="skip the AutoAttack pair (advkd aa on the folded model vs one pyautoattack call)")
    p.add_argument("--aa-checkpoint", metavar="PATH", default=None,
                   help="model of the AutoAttack pair: an advkd checkpoint (or ARCH:weights.pt); default the random-init --eval-model")
    p.add_argument("--aa-n", type=int, default=None, help="points of the AutoAttack pair (default 32; quick: 8): the checkpoint dataset's first test images")
    p.add_argument("--aa-pairs", type=int, default=None, help="alternated AutoAttack pairs, the first discarded as warm-up (default 4; quick: 2)")
    p.add_argument("--data-dir", default=os.environ.get("ADVKD_DATA_DIR", "./data"), help="datasets folder for --aa-checkpoint (env ADVKD_DATA_DIR; default ./data)")
    p.add_argument("--no-mallopt", action="store_true", help="leave glibc malloc at its defaults (the CLI tunes it; ADVKD_NO_MALLOPT=1)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON result file (default {DEFAULT_OUT})")
    p.add_argument("--markdown", metavar="JSON", default=None, help="print the Markdown tables of an existing result file and exit")
    p.add_argument("--before", metavar="JSON", default=None, help="with --markdown: also print a before/after table against this older result file")
    args = p.parse_args(argv)
    base = {**QUICK, **AA_QUICK} if args.quick else {**FULL, **AA_FULL}
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.clean_teacher = args.clean_teacher or args.teacher
    if args.max_repeats is None:
        args.max_repeats = 2 * args.repeats
    args.eval_model = args.eval_model or args.student
    if args.batch < 1 or args.repeats < 1 or args.warmup < 1:
        p.error("--batch, --repeats and --warmup must be >= 1")
    if args.aa_n < 1 or args.aa_pairs < 2:
        p.error("--aa-n must be >= 1 and --aa-pairs >= 2 (the first pair is a warm-up)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    fail = lambda msg: (err.print(f"error: {msg}"), 2)[1]  # noqa: E731
    if args.markdown:
        try:
            after = json.loads(Path(args.markdown).read_text())
            print(markdown(after))
            if args.before:
                print("\n" + compare_markdown(json.loads(Path(args.before).read_text()), after))
        except (OSError, ValueError, KeyError) as e:
            return fail(f"cannot render {args.markdown}: {e}")
        return 0
    try:
        names = selected_methods(args.methods)
    except ValueError as e:
        return fail(str(e))
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        return fail(str(e))
    if device.type == "cuda" and not torch.cuda.is_available():
        return fail("--device cuda but CUDA is not available")
    for arch in {args.student, args.teacher, args.clean_teacher, args.eval_model}:
        try:
            build_model(arch, num_classes=10)
        except Exception as e:  # noqa: BLE001
            return fail(f"model {arch!r}: {e}")

    mallopt = False if args.no_mallopt else accel.tune_malloc()  # as the advkd CLI does at start
    load_before = load_avg()
    if load_before and load_before[0] > LOAD_LIMIT:
        err.print(f"[yellow]warning: 1-minute load average {load_before[0]} > {LOAD_LIMIT}: timings will be noisy[/]")
    torch.manual_seed(args.seed)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    setup = Setup(device, args.student, args.teacher, args.clean_teacher, args.batch, args.repeats, args.max_repeats,
                  args.warmup, args.epoch, args.seed, x, y)
    t_start = time.perf_counter()
    log = lambda msg: err.print(msg)  # noqa: E731
    aa_setup = None
    if not args.no_aa:
        try:
            aa_setup = aa_inputs(args, setup)
        except Exception as e:  # noqa: BLE001 - a missing checkpoint or dataset: fail before the long runs
            return fail(f"--aa-checkpoint {args.aa_checkpoint}: {e}")
    teachers = make_teachers(setup)
    results = {name: bench_method(name, setup, teachers, log) for name in names}
    freeze = False if args.no_freeze else None  # None: the device's default, as advkd attack resolves it
    channels_last = False if args.no_channels_last else None
    evaluation = {} if args.no_eval else bench_eval(setup, args.eval_model, log, fold_bn=not args.no_fold_bn, freeze=freeze,
                                                    channels_last=channels_last)
    if aa_setup is not None:
        aa_model, aa_x, aa_y, aa_info = aa_setup
        evaluation["autoattack"] = {**aa_info, **bench_autoattack(aa_model, aa_x, aa_y, pairs=args.aa_pairs, batch_size=args.batch,
                                                                  device=device, log=log, fold_bn=not args.no_fold_bn,
                                                                  freeze=freeze, channels_last=channels_last)}
    load_after = load_avg()
    mem_methods = sorted({r["memory_method"] for r in results.values()})
    meta = {
        "advkd": advkd.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "batch": args.batch,
        "student": args.student,
        "teacher": args.teacher,
        "clean_teacher": args.clean_teacher,
        "eval_model": args.eval_model,
        "repeats": args.repeats,
        "max_repeats": args.max_repeats,
        "warmup": args.warmup,
        "epoch": args.epoch,
        "quick": args.quick,
        "seed": args.seed,
        "optimizer": {"name": "SGD", **SGD},
        "dtype": "float32",
        "mallopt": mallopt,
        # allocator / threading settings change CPU results a lot (see README "CPU allocator")
        "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(("MALLOC_", "OMP_", "MKL_", "KMP_")) or k == "LD_PRELOAD"},
        "memory_method": mem_methods[0] if len(mem_methods) == 1 else mem_methods,
        "student_param_bytes": model_bytes(build_model(args.student, num_classes=10)),
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "loaded": bool((load_before and load_before[0] > LOAD_LIMIT) or (load_after and load_after[0] > LOAD_LIMIT)),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t_start,
        "command": "python -m benchmarks.bench " + " ".join(sys.argv[1:] if argv is None else argv),
        **git_info(),
    }
    result = {
        "schema": SCHEMA,
        "meta": meta,
        "targets": {"overhead_max": OVERHEAD_TARGET, "eval_ratio_min": EVAL_RATIO_TARGET, "aa_ratio_min": AA_RATIO_TARGET},
        "methods": results,
        "evaluation": evaluation,
        "summary": {
            "over_target": sorted(n for n, r in results.items() if r["overhead"] > OVERHEAD_TARGET),
            "pass_mismatch": sorted(n for n, r in results.items() if not r["passes"]["match"]),
            "eval_below_target": sorted(a for a, r in evaluation.get("attacks", {}).items() if r["ratio"] < EVAL_RATIO_TARGET),
            "aa_below_target": None if "autoattack" not in evaluation else evaluation["autoattack"]["ratio"] < AA_RATIO_TARGET,
        },
    }
    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    write_json(out, result)
    render(result, Console(width=max(Console().width, 200)))
    err.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
