"""What the frozen no-grad path buys AutoAttack: advkd ``aa`` with and without it beside the library.

    python -m benchmarks.freeze_ab --aa-checkpoint PATH [--aa-n 32] [--rounds 4] [--out FILE]

One process, rounds of three runs in turn -- advkd ``aa`` on the folded copy with the frozen
no-grad path (``advkd attack``'s CPU default), the same without it (``--no-freeze``), one plain
``pyautoattack`` call on the unfolded model -- so the three see the same machine state; the first
round is a warm-up and is discarded, the figures are medians of the rest. The model and points
are those of the bench's AutoAttack pair (:func:`benchmarks.autoattack_pair.load_points`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from advkd.core import accel
from benchmarks.autoattack_pair import advkd_aa, library_aa, load_points
from benchmarks.timing import load_avg, timed

SIDES = ("frozen", "eager", "library")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.freeze_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--aa-checkpoint", required=True, metavar="PATH", help="model: an advkd checkpoint (or ARCH:weights.pt)")
    p.add_argument("--aa-n", type=int, default=32, help="first N test images of its dataset (default 32)")
    p.add_argument("--rounds", type=int, default=4, help="rounds of the three runs, the first discarded (default 4)")
    p.add_argument("--batch", type=int, default=128, help="AutoAttack batch size (default 128, as the bench)")
    p.add_argument("--data-dir", default=os.environ.get("ADVKD_DATA_DIR", "./data"))
    p.add_argument("--out", default="benchmarks/results/autoattack-freeze-ab.json")
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be >= 2 (the first is a warm-up)")
    accel.tune_malloc()
    device = torch.device("cpu")
    model, x, y, info = load_points(args.aa_checkpoint, n=args.aa_n, data_dir=args.data_dir, device=device)
    paths = {"frozen": accel.FastPaths(freeze=True), "eager": accel.FastPaths(freeze=False)}
    runs = {
        "frozen": lambda: advkd_aa(model, x, y, batch_size=args.batch, paths=paths["frozen"]),
        "eager": lambda: advkd_aa(model, x, y, batch_size=args.batch, paths=paths["eager"]),
        "library": lambda: library_aa(model, x, y, batch_size=args.batch),
    }
    load_before, t0 = load_avg(), time.perf_counter()
    seconds: dict[str, list[float]] = {s: [] for s in SIDES}
    for r in range(args.rounds):
        for side in SIDES:
            seconds[side].append(timed(runs[side], device))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{s} {seconds[s][-1]:.1f} s" for s in SIDES), flush=True)
    med = {s: statistics.median(v[1:]) for s, v in seconds.items()}
    result = {
        **info, "n": len(x), "batch_size": args.batch, "rounds": args.rounds, "discarded_rounds": 1,
        "seconds": seconds, "median_s": med,
        "library_over_frozen": med["library"] / med["frozen"],
        "library_over_eager": med["library"] / med["eager"],
        "eager_over_frozen": med["eager"] / med["frozen"],
        "load_avg_before": load_before, "load_avg_after": load_avg(), "wall_s": time.perf_counter() - t0,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": accel.cpu_model(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"medians: frozen {med['frozen']:.1f} s, eager {med['eager']:.1f} s, library {med['library']:.1f} s; "
          f"library/frozen {result['library_over_frozen']:.2f}x, library/eager {result['library_over_eager']:.2f}x, "
          f"eager/frozen {result['eager_over_frozen']:.2f}x; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
