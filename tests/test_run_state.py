"""What "resumable" means (advkd.training.resume.resumable_state), and that non-finite weights never
reach a checkpoint or the resume state."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from tiny_runs import CPU, Capture, tiny_cfg

import advkd.training.loop as train
from advkd.core.errors import AdvkdError
from advkd.core.runs import read_metrics
from advkd.training.loop import run
from advkd.training.resume import resumable_state

RUN = ("pretrain-teacher", "synthetic", "tinycnn-pgd-at-s7")


def one_epoch(tmp_path):
    return run(tiny_cfg(epochs=1), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Capture()).path


def test_corrupt_resume_state_after_an_epoch_is_refused_and_kept(tmp_path):
    path = one_epoch(tmp_path)
    (path / "resume.safetensors").write_bytes(b"\0garbage")
    for resume in (True, False):
        with pytest.raises(AdvkdError, match=r"resume state .* is unreadable .*; use name=\.\.\. for a new run, or delete .* to start this one over"):
            run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=resume, reporter=Capture())
    assert (path / "last.safetensors").is_file() and (path / "metrics.jsonl").read_text()  # nothing wiped


@pytest.mark.parametrize("damage,message", [
    (lambda p: (p / "metrics.jsonl").unlink(), "metrics.jsonl lacks epoch 1"),
    (lambda p: (p / "best.safetensors").unlink(), "best.safetensors is missing"),
    (lambda p: ((p / "resume.safetensors").unlink(), (p / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')),
     "metrics up to epoch 2 but no resume.safetensors"),
])
def test_files_behind_the_resume_state_are_refused_not_wiped(tmp_path, damage, message):
    path = one_epoch(tmp_path)
    damage(path)
    with pytest.raises(AdvkdError, match=message + r".*use name=\.\.\. for a new run, or delete"):
        run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=True, reporter=Capture())
    assert (path / "last.safetensors").is_file()


def test_metrics_ahead_of_the_resume_state_are_truncated_to_it(tmp_path):
    path = one_epoch(tmp_path)
    with open(path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "stale": true}\n')
    assert resumable_state(path).epoch == 1
    run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=True, reporter=Capture())
    rows = read_metrics(path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2] and "stale" not in rows[1]


def poison_step(monkeypatch, at: int) -> None:
    """Make the ``at``-th optimizer step (1-based, counted over the run) leave an inf weight."""
    real = torch.optim.SGD.step
    count = [0]

    def step(self, *a, **kw):
        out = real(self, *a, **kw)
        count[0] += 1
        if count[0] == at:
            with torch.no_grad():
                p0 = self.param_groups[0]["params"][0]
                p0[(0,) * p0.dim()] = float("inf")  # any layout (channels-last weights refuse .view)
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", step)


def test_inf_weights_in_the_first_epoch_stop_before_any_save(tmp_path, monkeypatch):
    poison_step(monkeypatch, at=3)  # the last batch of epoch 1 (3 batches an epoch): the loss never sees it
    with pytest.raises(AdvkdError, match=r"weights became inf/nan during epoch 1, so epoch 1 was not saved; lower the lr"):
        run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Capture())
    assert not tmp_path.joinpath(*RUN).exists()  # a run dir that never completed an epoch is removed


def test_inf_weights_in_epoch_two_keep_epoch_one_resumable(tmp_path, monkeypatch):
    path = tmp_path.joinpath(*RUN)
    poison_step(monkeypatch, at=6)  # the last batch of epoch 2
    with pytest.raises(AdvkdError, match="during epoch 2, so epoch 2 was not saved"):
        run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Capture())
    assert resumable_state(path).epoch == 1
    for name in ("last.safetensors", "best.safetensors", "resume.safetensors"):
        assert all(t.isfinite().all() for t in load_file(str(path / name)).values() if t.is_floating_point()), name
    monkeypatch.undo()
    assert run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, resume=True, reporter=Capture()).epochs_run == 1


def test_the_periodic_check_names_the_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "FINITE_EVERY", 1)
    poison_step(monkeypatch, at=2)
    with pytest.raises(AdvkdError, match="during epoch 1, batch 2, so epoch 1 was not saved"):
        run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Capture())


def test_commit_refuses_non_finite_state_even_without_the_epoch_check(tmp_path, monkeypatch):
    """The last line of defence: _commit_epoch itself never writes inf/nan model or optimizer state."""
    monkeypatch.setattr(train, "require_finite", lambda *a, **kw: None)
    real = torch.optim.SGD.step
    count = [0]

    def step(self, *a, **kw):  # epoch 2's last step poisons only the momentum buffer
        out = real(self, *a, **kw)
        count[0] += 1
        if count[0] == 6:
            p = self.param_groups[0]["params"][0]
            buf = self.state[p]["momentum_buffer"]
            buf[(0,) * buf.dim()] = float("nan")  # any layout
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    with pytest.raises(AdvkdError, match="during epoch 2, so epoch 2 was not saved"):
        run(tiny_cfg(), runs_dir=tmp_path, data_dir=tmp_path, device=CPU, reporter=Capture())
    path = tmp_path.joinpath(*RUN)
    assert resumable_state(path).epoch == 1 and read_metrics(path / "metrics.jsonl")[-1]["epoch"] == 1
