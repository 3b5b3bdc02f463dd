"""Run by tests/test_distributed.py under torchrun (2 CPU processes, gloo): a stop signal that
reaches rank 1 only, inside epoch 1, stops both ranks at the same batch; rank 0 writes the state.

argv: OUT_DIR TEACHER MODE, MODE one of full | stop | resume. Every mode trains into OUT_DIR/MODE-runs
(resume: into OUT_DIR/stop-runs, with --resume) and dumps each rank's final weights.
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from advkd.core.distributed import rank, setup, teardown
from advkd.core.preempt import STOP, Preempted
from advkd.core.progress import Reporter
from advkd.training import loop
from advkd.training.config import TrainConfig

out, teacher, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
device = setup(torch.device("cpu"))
cfg = TrainConfig(
    kind="distill", method="rslad", arch="tinycnn", dataset="synthetic", teachers={"teacher": teacher}, epochs=2, batch_size=32,
    train_subset=128, eval_examples=64, eval_batch_size=32, milestones=[1], seed=3, method_params={"steps": 2},
)
if mode == "stop" and rank() == 1:  # the signal reaches one process only, during its second batch
    real, calls = loop.decide, {"n": 0}

    def signalled(stop, clock):
        calls["n"] += 1
        if calls["n"] == 2:
            STOP.request("SIGTERM")
        return real(stop, clock)

    loop.decide = signalled
runs = out / ("stop-runs" if mode in ("stop", "resume") else "full-runs")
try:
    summary = loop.run(cfg, runs_dir=runs, data_dir=out, device=device, reporter=Reporter(enabled=False), resume=mode == "resume")
    save_file({k: v.contiguous() for k, v in summary.model.state_dict().items()}, str(out / f"{mode}-weights-rank{rank()}.safetensors"))
except Preempted as e:
    (out / f"stopped-rank{rank()}.txt").write_text(e.where)
teardown()
