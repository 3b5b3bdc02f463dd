"""advkd from Python, on your own model and tensors (what a notebook next to RobustBench does).

Runs on the synthetic dataset in about a minute on a CPU; point --data-dir at CIFAR-10 and use
--dataset cifar10 for real images. Every step is one advkd.api call:

    python examples/notebook_api.py --runs-dir /tmp/advkd-example
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

import advkd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default="runs-example")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--dataset", default="synthetic")
    args = parser.parse_args()
    torch.manual_seed(0)

    # 1. any nn.Module that expects normalised input, plus its normalisation -> a model of [0, 1] pixels
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    model = advkd.as_model(net, normalize="cifar10")

    # 2. data as tensors in [0, 1] (a DataLoader works the same way)
    test = advkd.load_split(args.dataset, "test", args.data_dir).head(128)
    x, y = test.images.float() / 255, test.labels

    # 3. one training step of a method on a batch: PGD-AT, 2 inner steps
    method = advkd.build_method("pgd-at", steps=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        logs = advkd.train_step(method, model, optimizer, x[:64], y[:64])
    print("train step:", {k: round(v, 4) for k, v in logs.items()})
    model.eval()  # train_step left it in train mode; a model evaluated in train mode is flagged and warned about

    # 4. one attack by id on tensors
    x_adv = advkd.attack(model, x[:32], y[:32], "pgd10", eps="8/255")
    print(f"pgd10: max |x_adv - x| = {(x_adv - x[:32]).abs().max().item():.4f} (eps {8 / 255:.4f})")

    # 5. a suite on tensors: the records advkd attack writes (accuracy in percent)
    records = advkd.evaluate_model(model, (x, y), suite="quick")
    print("evaluate:", {r["attack"]: r["accuracy"] for r in records})

    # 6. a whole distill run, programmatically (tiny here: one epoch of 256 images)
    teacher = advkd.distill("pgd-at", student="tinycnn", dataset=args.dataset, runs_dir=args.runs_dir, data_dir=args.data_dir,
                            epochs=1, train_subset=256, eval_examples=64, settings={"method.steps": 2})
    student = advkd.distill("rslad", student="tinycnn", teacher=str(teacher.path / "best.safetensors"), dataset=args.dataset,
                            runs_dir=args.runs_dir, data_dir=args.data_dir, epochs=1, train_subset=256, eval_examples=64,
                            settings={"method.steps": 2})
    print("distilled:", student.path / "best.safetensors", student.best_metrics.get("clean_acc"))


if __name__ == "__main__":
    main()
