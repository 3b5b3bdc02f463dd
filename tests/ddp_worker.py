"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo).

argv: OUT_DIR CLEAN_TEACHER ROBUST_TEACHER METHOD. Rank 0 trains into OUT_DIR/runs; rank 1 is
given OUT_DIR/runs-rank1 as its runs dir, so any file it wrote would show up there. Each rank
dumps its final weights and method state, and the accuracy of a sharded evaluation.
"""
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from advkd.core.distributed import rank, setup, teardown
from advkd.core.progress import Reporter
from advkd.data.loaders import load_split
from advkd.evaluation.evaluate import evaluate
from advkd.training.config import TrainConfig
from advkd.training.loop import run

out, clean, robust, method = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
device = setup(torch.device("cpu"))
teachers = {"clean_teacher": clean, "robust_teacher": robust} if method in ("bmtard", "mtard", "lmtn") else {"teacher": robust}
cfg = TrainConfig(
    kind="distill", method=method, arch="tinycnn", dataset="synthetic", teachers=teachers, epochs=2, batch_size=32,
    train_subset=128, eval_examples=64, eval_batch_size=32, milestones=[1], seed=3, method_params={"steps": 2},
)
runs = out / ("runs" if rank() == 0 else f"runs-rank{rank()}")
summary = run(cfg, runs_dir=runs, data_dir=out, device=device, reporter=Reporter(enabled=False))
model = summary.model
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"weights-rank{rank()}.safetensors"))
data = load_split("synthetic", "test", out).head(96)
acc = {a: o.accuracy for a, o in evaluate(model, data, ["clean", "fgsm", "pgd10"], batch_size=20).items()}
(out / f"state-rank{rank()}.json").write_text(json.dumps({"method_state": summary.method_state, "eval": acc}))
teardown()
