"""Every CPU speed path on the mini training steps of PGD-AT, RSLAD and AdaAD, and the path that
advkd's measurement chooses: is the default within 5 % of the fastest path?

    python -m benchmarks.speed_paths [--methods pgd-at,rslad,adaad] [--repeats 5] [--out benchmarks/results/speed-paths-<cpu>.json]
    python -m benchmarks.speed_paths --markdown benchmarks/results/speed-paths-*.json

For each method the real training step (``cpu_paths.training_step``: perturb, loss, backward, SGD,
as the loop runs it) is built under each of the four paths (fp32/bf16 x NCHW/channels-last) from
the same initial weights and timed in turn (a, b, c, d, a, ...) after a warm-up; seconds per step
are medians. The choice is what a first run makes: :func:`advkd.training.paths.settle` with the
real measurement (its proxy step on the same networks and batch, an empty cache), timed; a second
settle shows the cached run's cost. Mini nets: a ResNet-8 student, ResNet-14 teachers, batch 64.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from advkd.core import accel
from advkd.core import speed_choice as sc
from advkd.core.cpu import probe
from advkd.methods import method_roles
from advkd.training.paths import settle
from benchmarks.cpu_paths import base_models, prepared, training_step
from benchmarks.timing import alternate, load_avg

DEVICE = torch.device("cpu")
NETS = {"student": "resnet8", "teacher": "resnet14", "batch": 64}


def slug(text: str) -> str:
    return "-".join(p for p in "".join(c if c.isalnum() else "-" for c in text.lower()).split("-") if p)


def machine_slug() -> str:
    """``intel-xeon-processor-6-207``: the CPU's model name with its family and model numbers."""
    ident = cpu_id()
    name = slug(accel.cpu_model().replace("(R)", "").replace("(TM)", ""))[:40]
    return "-".join(x for x in (name, ident.get("cpu_family"), ident.get("model")) if x)


def default_out() -> str:
    return f"benchmarks/results/speed-paths-{machine_slug()}.json"


def choice_for(name: str, base: dict[str, torch.nn.Module], x: torch.Tensor) -> dict[str, Any]:
    """What a first run of ``name`` chooses here (empty cache, real timing), its cost, and a cached run's cost."""
    roles = method_roles(name)
    teachers = {r: (NETS["teacher"], base[r]) for r in roles}
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ADVKD_CACHE_DIR"] = cache
        fast = accel.resolve_fast_paths(DEVICE)
        out: dict[str, Any] = {}
        for run in ("first", "cached"):
            t0 = time.perf_counter()
            got = settle(fast, device=DEVICE, student_arch=NETS["student"], student=base["student"], teachers=teachers, x=x,
                         run_path=Path(cache) / "no-run", warn=print)
            out[f"{run}_s"] = round(time.perf_counter() - t0, 3)
            out.setdefault("choice", sc.label((got.amp, got.channels_last)))
            out.setdefault("why", got.why)
    os.environ.pop("ADVKD_CACHE_DIR", None)
    return out


def bench(name: str, repeats: int) -> dict[str, Any]:
    base = base_models(NETS["student"], NETS["teacher"], DEVICE)
    torch.manual_seed(1)
    x, y = torch.rand(NETS["batch"], 3, 32, 32), torch.randint(0, 10, (NETS["batch"],))
    roles = method_roles(name)
    steps = []
    for c in sc.EXACTNESS:
        paths = accel.FastPaths(amp=c[0], channels_last=c[1])
        models = prepared(base, paths)
        steps.append(training_step(name, models["student"].train(), {r: models[r] for r in roles}, paths,
                                   accel.to_memory_format(x, paths), y, DEVICE, epoch=0))
    times = alternate(steps, warmup=1, repeats=repeats, device=DEVICE, max_repeats=2 * repeats)
    seconds = {sc.label(c): sorted(t)[len(t) // 2] for c, t in zip(sc.EXACTNESS, times)}
    chosen = choice_for(name, base, x)
    fastest = min(seconds, key=seconds.get)
    return {"method": name, "seconds_per_step": {k: round(v, 4) for k, v in seconds.items()}, "fastest": fastest, **chosen,
            "chosen_over_fastest": round(seconds[chosen["choice"]] / seconds[fastest], 3),
            "flag_default_over_fastest": round(seconds[sc.label(flag_default())] / seconds[fastest], 3)}


def cpu_id() -> dict[str, str]:
    """The CPU's family and model numbers (/proc/cpuinfo): "Intel Xeon" alone names many machines."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.split("\n\n")[0].splitlines():
        k, _, v = line.partition(":")
        if k.strip() in ("vendor_id", "cpu family", "model", "stepping"):
            out[k.strip().replace(" ", "_")] = v.strip()
    return out


def flag_default() -> sc.Candidate:
    """The path the CPU flags chose before measurement (advkd <= 0.5): the prior of device_defaults."""
    d = accel.device_defaults(DEVICE)
    return d.amp, d.channels_last


def markdown(paths: list[str]) -> str:
    lines = ["| machine | method | fp32 NCHW | fp32 channels-last | bf16 NCHW | bf16 channels-last | fastest | measured choice | choice / fastest | flag default / fastest |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in paths:
        r = json.loads(Path(p).read_text())
        for m in r["methods"]:
            s = m["seconds_per_step"]
            lines.append(f"| {r['machine']['cpu']} (family {r['machine'].get('cpu_family', '?')}, model {r['machine'].get('model', '?')}) | {m['method']} | " + " | ".join(f"{s[sc.label(c)]:.3f}" for c in sc.EXACTNESS)
                         + f" | {m['fastest']} | {m['choice']} | {m['chosen_over_fastest']:.3f} | {m['flag_default_over_fastest']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="pgd-at,rslad,adaad")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--markdown", nargs="*")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    sc.measure = getattr(sc, "real_measure", sc.measure)
    cpu = probe()
    result = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": {"cpu": accel.cpu_model(), **cpu_id(), "capability": cpu.capability, "platform": platform.platform(),
                    "flags": sorted(f for f in cpu.flags if f.startswith(("avx", "amx")) or f in ("bf16", "sve"))},
        "load_before": load_avg(), "nets": NETS, "margin": sc.MARGIN, "methods": [],
    }
    for name in args.methods.split(","):
        row = bench(name, args.repeats)
        result["methods"].append(row)
        print(json.dumps(row), file=sys.stderr)
    result["load_after"] = load_avg()
    out = Path(args.out or default_out())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown([str(out)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
