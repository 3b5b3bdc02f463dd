"""Channels-last against NCHW for the evaluation attacks' passes on this CPU: the measurement
behind ``CpuProfile.channels_last_fast`` on a machine whose defaults are not yet decided.

    python -m benchmarks.eval_memory_format [--archs resnet8,resnet14] [--batch 250] [--repeats 5]
                                            [--out benchmarks/results/eval-memory-format-<capability>.json]

Each network is the evaluation copy ``advkd attack`` attacks (BN folded, fp32), once per memory
format from the same weights; one PGD-10 (ten input-gradient passes of a batch at the monitor's
batch size) is timed alternately, NCHW then channels-last, after a warm-up.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from advkd.core import accel
from advkd.core.cpu import probe
from advkd.models import build_model
from benchmarks.timing import alternate, load_avg


def pgd10(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    x_adv = x.clone()
    for _ in range(10):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(net(x_adv), y), x_adv)
        x_adv = (x_adv.detach() + 2 / 255 * grad.sign()).clamp(0, 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_memory_format", description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="resnet8,resnet14")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device("cpu")
    cpu = probe()
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    load_before = load_avg()
    rows = {}
    for arch in args.archs.split(","):
        torch.manual_seed(1)
        model = build_model(arch, num_classes=10).eval()
        arms = []
        for channels_last in (False, True):
            paths = accel.resolve_fast_paths(device, channels_last=channels_last, amp=False, compile=False)
            net, xb = accel.eval_model(model, paths), accel.to_memory_format(x, paths)
            arms.append(lambda net=net, xb=xb: pgd10(net, xb, y))
        nchw, cl = alternate(arms, warmup=1, repeats=args.repeats, device=device)
        rows[arch] = {"nchw_s": nchw, "channels_last_s": cl,
                      "speedup": statistics.median(nchw) / statistics.median(cl)}
        print(f"{arch:<9} NCHW {statistics.median(nchw):.3f} s  channels-last {statistics.median(cl):.3f} s  "
              f"speed-up {rows[arch]['speedup']:.2f}x", file=sys.stderr, flush=True)
    meta = {"device_name": accel.cpu_model(), "cpu_capability": cpu.capability, "native_bf16": cpu.native_bf16,
            "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": args.batch,
            "repeats": args.repeats, "load_avg_before": load_before, "load_avg_after": load_avg(),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python -m benchmarks.eval_memory_format " + " ".join(sys.argv[1:] if argv is None else argv)}
    out = Path(args.out or f"benchmarks/results/eval-memory-format-{cpu.capability.lower()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"schema": 1, "meta": meta, "archs": rows}, indent=1) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
