"""Does ``torch.compile`` pay back on the CPU within a reduced-scale run? Compile time and the
steady-state step, beside the same step without compile, both under the device's default paths.

    python -m benchmarks.compile_cpu [--methods pgd-at,rslad,adaad] [--student resnet8] [--teacher resnet14]
                                     [--batch 64] [--first 3] [--repeats 5] [--out benchmarks/results/compile-cpu.json]

For each method: the training loop's step (``benchmarks.cpu_paths.training_step``) on one set of
models left eager and one compiled in place as ``--compile`` does (``nn.Module.compile``, the
student and every teacher). The compiled side's first ``--first`` steps are timed one by one (they
hold the compilations: train and eval graphs, the inner loop's input-gradient graph); then both
sides are timed alternately. ``compile_s`` = the first steps minus as many steady compiled steps;
break-even = compile_s / (eager step - compiled step) steps, also given in mini and small epochs
(40 and 47 steps of batch 64) and against a mini student run (160 steps).
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

import advkd.methods as methods
from advkd.core import accel
from benchmarks.cpu_paths import base_models, training_step
from benchmarks.floors import selected_methods
from benchmarks.timing import alternate, load_avg, timed

STEPS = {"mini epoch": 40, "small epoch": 47, "mini run": 160}  # batch-64 steps: 2500 / 3000 students, x4 epochs
DEFAULT_OUT = "benchmarks/results/compile-cpu.json"


def bench(name: str, base: dict[str, torch.nn.Module], paths: accel.FastPaths, x, y, device, args) -> dict[str, Any]:
    roles = methods.method_roles(name)
    sides = {}
    for side in ("eager", "compiled"):
        models = {k: accel.apply_to_model(copy.deepcopy(m), paths) for k, m in base.items()}
        if side == "compiled":
            for m in models.values():
                m.compile()
        sides[side] = training_step(name, models["student"].train(), {r: models[r] for r in roles}, paths, x, y, device, epoch=0)
    first = [timed(sides["compiled"], device) for _ in range(args.first)]
    eager, compiled = alternate([sides["eager"], sides["compiled"]], warmup=1, repeats=args.repeats, max_repeats=2 * args.repeats, device=device)
    e_s, c_s = statistics.median(eager), statistics.median(compiled)
    compile_s = sum(first) - len(first) * c_s
    gain = e_s - c_s
    break_even = compile_s / gain if gain > 0 else None
    row = {"first_steps_s": first, "compile_s": compile_s, "eager_s_median": e_s, "compiled_s_median": c_s,
           "steady_speedup": e_s / c_s, "eager_s": eager, "compiled_s": compiled, "break_even_steps": break_even,
           **{f"break_even_{k.replace(' ', '_')}s": (break_even / v if break_even is not None else None) for k, v in STEPS.items()},
           "pays_back_in_a_mini_run": break_even is not None and break_even <= STEPS["mini run"]}
    when = "never (no steady gain)" if break_even is None else f"{break_even:.0f} steps = {break_even / STEPS['mini epoch']:.1f} mini epochs"
    print(f"{name:<8} compile {compile_s:6.1f} s, steady eager {e_s:.3f} s vs compiled {c_s:.3f} s ({row['steady_speedup']:.2f}x); "
          f"break-even {when}", file=sys.stderr, flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile_cpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="pgd-at,rslad,adaad")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--teacher", default="resnet14")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--first", type=int, default=3, help="compiled steps timed one by one before the steady state")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    try:
        names = selected_methods(args.methods)
    except ValueError as e:
        p.error(str(e))
    device = torch.device(args.device)
    accel.tune_malloc()
    paths = accel.device_defaults(device)
    torch.manual_seed(0)
    x, y = torch.rand(args.batch, 3, 32, 32, device=device), torch.randint(0, 10, (args.batch,), device=device)
    base = base_models(args.student, args.teacher, device)
    load_before, t0 = load_avg(), time.perf_counter()
    rows = {}
    for name in names:
        torch._dynamo.reset()  # every method compiles from nothing, as a fresh run does
        roles = set(methods.method_roles(name))
        rows[name] = bench(name, {k: v for k, v in base.items() if k == "student" or k in roles}, paths, x, y, device, args)
    meta = {"torch": torch.__version__, "device_name": accel.cpu_model() if device.type == "cpu" else torch.cuda.get_device_name(device),
            "threads": torch.get_num_threads(), "paths": paths.describe(), "student": args.student, "teacher": args.teacher,
            "batch": args.batch, "load_avg_before": load_before, "load_avg_after": load_avg(), "wall_s": time.perf_counter() - t0,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.compile_cpu " + " ".join(sys.argv[1:] if argv is None else argv)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"schema": 1, "meta": meta, "steps": STEPS, "methods": rows}, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
