"""torchrun with 2 CPU processes (gloo): identical weights and balancer state, rank-0-only files,
sharded evaluation equal to a single process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from advkd.core.progress import Reporter
from advkd.data.loaders import load_split
from advkd.evaluation.evaluate import evaluate
from advkd.training.config import TrainConfig
from advkd.training.loop import run

WORKER = Path(__file__).with_name("ddp_worker.py")


def teacher(tmp: Path, method: str) -> str:
    cfg = TrainConfig(kind="pretrain-teacher", method=method, arch="tinycnn", dataset="synthetic", epochs=1, batch_size=32,
                      train_subset=64, eval_examples=32, seed=1, name=method, method_params={} if method == "natural" else {"steps": 2})
    return str(run(cfg, runs_dir=tmp / "teachers", data_dir=tmp, device=torch.device("cpu"), reporter=Reporter(enabled=False)).path / "best.safetensors")


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun not installed beside python")
@pytest.mark.parametrize("method", ["bmtard"])
def test_two_ranks_agree_and_only_rank0_writes(tmp_path, method):
    clean, robust = teacher(tmp_path, "natural"), teacher(tmp_path, "trades")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc-per-node", "2", str(WORKER), str(tmp_path), clean, robust, method],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[:6000]
    w0, w1 = load_file(str(tmp_path / "weights-rank0.safetensors")), load_file(str(tmp_path / "weights-rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    s0, s1 = (json.loads((tmp_path / f"state-rank{r}.json").read_text()) for r in (0, 1))
    assert s0["method_state"] == s1["method_state"] and s0["method_state"]
    assert s0["eval"] == s1["eval"]
    assert not (tmp_path / "runs-rank1").exists(), "rank 1 wrote files"
    run_dir = next((tmp_path / "runs" / "distill" / "synthetic").iterdir())
    assert (run_dir / "best.safetensors").is_file() and (run_dir / "resume.safetensors").is_file()
    # the sharded evaluation on two ranks equals one process on the same weights
    from advkd.models import build_model

    model = build_model("tinycnn")
    model.load_state_dict(w0)
    data = load_split("synthetic", "test", tmp_path).head(96)
    single = {a: o.accuracy for a, o in evaluate(model.eval(), data, ["clean", "fgsm", "pgd10"], batch_size=20).items()}
    assert single == s0["eval"]


STOP_WORKER = Path(__file__).with_name("ddp_stop_worker.py")


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun not installed beside python")
def test_a_signal_on_one_rank_stops_every_rank_at_the_same_batch_and_resumes_exactly(tmp_path):
    robust = teacher(tmp_path, "trades")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for mode in ("full", "stop", "resume"):
        proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(STOP_WORKER), str(tmp_path), robust, mode],
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr[:6000]
    where = {(tmp_path / f"stopped-rank{r}.txt").read_text() for r in (0, 1)}
    assert where == {"batch 2 of epoch 1 is saved"}  # both ranks, the same batch
    full, resumed = (load_file(str(tmp_path / f"{m}-weights-rank0.safetensors")) for m in ("full", "resume"))
    other = load_file(str(tmp_path / "resume-weights-rank1.safetensors"))
    for k in full:
        assert torch.equal(resumed[k], other[k]), f"ranks disagree after the resume: {k}"
        assert torch.equal(full[k], resumed[k]), f"the resumed run differs from the uninterrupted one: {k}"
