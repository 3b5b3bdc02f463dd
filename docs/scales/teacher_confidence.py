"""Mean max-probability (and mean entropy) of a checkpoint's softmax on the first N training images.

Usage: python docs/scales/teacher_confidence.py CHECKPOINT [N]   (ADVKD_DATA_DIR points at CIFAR-10)
A teacher whose soft labels are nearly flat (max-probability near 1/C) gives its student little margin
to copy: this is lead 2 of docs/scales.md.
"""
import json
import os
import sys

import torch

from advkd import load_checkpoint, load_split
from advkd.data.batches import to_float


def main() -> None:
    path, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    model, meta = load_checkpoint(path, device=torch.device("cpu"))
    data = load_split(meta["dataset"], "train", os.environ.get("ADVKD_DATA_DIR", "./data")).head(n)
    model.eval()
    maxp, ent, correct = [], [], 0
    with torch.no_grad():
        for i in range(0, len(data), 500):
            p = torch.softmax(model(to_float(data.images[i : i + 500])), dim=1)
            maxp.append(p.max(1).values)
            ent.append(-(p * p.clamp_min(1e-12).log()).sum(1))
            correct += int((p.argmax(1) == data.labels[i : i + 500]).sum())
    print(json.dumps({
        "checkpoint": path, "n": len(data), "mean_max_prob": round(float(torch.cat(maxp).mean()), 4),
        "mean_entropy_nats": round(float(torch.cat(ent).mean()), 4), "train_acc": round(100 * correct / len(data), 2),
    }))


if __name__ == "__main__":
    main()
