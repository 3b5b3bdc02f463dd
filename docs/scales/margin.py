"""Mean max-probability and mean logit margin (top-1 minus top-2) of checkpoints on test images 0..N-1.

Usage: python docs/scales/margin.py N CHECKPOINT [CHECKPOINT ...]   (ADVKD_DATA_DIR points at CIFAR-10)
A model with flat outputs (max-probability near 1/C, a small margin) changes its argmax under a tiny
perturbation: this is how lead 2 of docs/scales.md would show in a student that copies a flat teacher.
"""
import json
import os
import sys

import torch

from advkd import load_checkpoint, load_split
from advkd.data.batches import to_float


def main() -> None:
    n, paths = int(sys.argv[1]), sys.argv[2:]
    for path in paths:
        model, meta = load_checkpoint(path, device=torch.device("cpu"))
        data = load_split(meta["dataset"], "test", os.environ.get("ADVKD_DATA_DIR", "./data")).head(n)
        with torch.no_grad():
            logits = model(to_float(data.images))
        top = logits.topk(2, dim=1).values
        print(json.dumps({
            "checkpoint": path, "n": len(data), "method": meta.get("method"),
            "mean_max_prob": round(float(torch.softmax(logits, 1).max(1).values.mean()), 4),
            "mean_logit_margin": round(float((top[:, 0] - top[:, 1]).mean()), 4),
        }))


if __name__ == "__main__":
    main()
