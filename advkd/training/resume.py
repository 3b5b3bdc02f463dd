"""Exact resume state: model, optimizer buffers, method state, RNG states, selection state.

One safetensors file with a JSON metadata entry, written atomically after every epoch: it is the
commit point of the epoch. Data order and augmentation are derived from (seed, epoch), so the
epoch number is all the data pipeline needs; the global RNG (method start noise) is restored.

:func:`resumable_state` is the one definition of a resumable run dir.

:func:`load_resume` trusts a state only when it belongs to the run dir it is in: the state records
its run (kind, dataset, name: the dir's last three parts) and its config, compared with the dir's
``config.yaml`` on the settings a resume keeps (:data:`IDENTITY_IGNORES` may differ), and the
``tensors_sha256`` of its tensors, which must also be finite. States written before these entries
existed are accepted with the other checks.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file

from advkd.core import files
from advkd.core.errors import AdvkdError, spell
from advkd.core.runs import BEST, CONFIG, LAST, METRICS, RESUME, read_metrics
from advkd.core.safe_yaml import load_yaml
from advkd.models.checkpoint import DIGEST_KEY, check_tensors, tensor_digest, tensors_for_save, unwrap
from advkd.training.config import config_to_dict

if TYPE_CHECKING:
    from advkd.methods import Method

STATE_FORMAT = "advkd-resume-v2"  # v2: epoch and best_epoch are 1-based epoch numbers (epochs completed)
RUN_PARTS = ("kind", "dataset", "name")  # a run dir is <runs dir>/<kind>/<dataset>/<name>
#: Settings a resumed run may change (advkd.training.rundir compares the rest too): ``--epochs N
#: --resume`` extends a run; ``checkpoint_every`` only says how often its state is saved; the
#: other two only name it.
IDENTITY_IGNORES = frozenset({"epochs", "overrides", "variant", "checkpoint_every", "method_origin"})  # a plugin's origin: rundir.plugin_change


@dataclass
class ResumeState:
    epoch: int  # epochs completed = the number of the last completed epoch (1-based)
    best_value: float | None
    best_epoch: int
    method_state: dict[str, Any]
    optimizer: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    # a mid-epoch state (a stop signal or --checkpoint-every inside epoch ``epoch + 1``): the batches
    # done, and each rank's running sums of the epoch's logs and its examples seen; None after an epoch's commit
    partial: dict[str, Any] | None = None

    def apply(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, method: Method, *, rank: int = 0) -> None:
        """Restore everything into freshly built objects, so training continues bit-for-bit."""
        model_state = {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}
        try:  # a state without its run's identity (older advkd) may still be another run's
            unwrap(model).load_state_dict(model_state, strict=True)
            opt_state: dict[int, dict[str, Any]] = {}
            for key, value in self.tensors.items():
                if key.startswith("optim."):
                    _, idx, name = key.split(".", 2)
                    opt_state.setdefault(int(idx), {})[name] = value
            for idx, scalars in self.optimizer.get("scalars", {}).items():
                opt_state.setdefault(int(idx), {}).update(scalars)
            optimizer.load_state_dict({"state": opt_state, "param_groups": self.optimizer["param_groups"]})
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AdvkdError(f"the resume state does not fit this run's model or optimizer ({first[:200]}); it belongs to another run") from None
        method.load_state_dict(self.method_state)
        self.apply_rank_buffers(model, rank=rank)
        prefix = f"rng.{rank}."
        if f"{prefix}cpu" not in self.tensors:
            raise AdvkdError(f"the resume state has no RNG state for rank {rank}: resume with the number of processes the run started with")
        torch.set_rng_state(self.tensors[f"{prefix}cpu"])
        cuda_states = [self.tensors[k] for k in sorted(k for k in self.tensors if k.startswith(f"{prefix}cuda."))]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)


    def check_position(self, path: Path, *, steps_per_epoch: int, world: int, rank_batch: int) -> None:
        """AdvkdError (one line) unless the state's position fits this run: its epoch counts,
        and a mid-epoch state's batch (inside the epoch: 1 .. steps - 1), its per-rank log sums
        (finite numbers) and examples seen (at most that many full batches), one per process."""
        way_out = f"use {spell('--name', 'name=...')} for a new run, or delete {path.parent} to start this one over"
        bad = f"resume state {path} is corrupt"
        if not (_count(self.epoch) and _count(self.best_epoch) and self.best_epoch <= self.epoch):
            raise AdvkdError(f"{bad}: epoch {self.epoch!r} with best epoch {self.best_epoch!r}; {way_out}")
        if self.partial is None:
            return
        step, totals, seen = (self.partial.get(k) for k in ("step", "totals", "seen"))
        if not (_count(step) and 1 <= step < steps_per_epoch):
            raise AdvkdError(f"{bad}: it stops at batch {step!r} of epoch {self.epoch + 1}, which has {steps_per_epoch} batches "
                             f"(a stop inside an epoch is after batch 1 to {steps_per_epoch - 1}); {way_out}")
        if not (isinstance(totals, list) and isinstance(seen, list) and len(totals) == len(seen)):
            raise AdvkdError(f"{bad}: its per-process sums are malformed; {way_out}")
        if len(seen) != world:
            raise AdvkdError(f"resume state {path} was written by {len(seen)} process(es), not {world}: resume with the number of "
                             f"processes the run started with")
        for sums, n in zip(totals, seen):
            if not (_count(n) and 0 < n <= step * rank_batch):
                raise AdvkdError(f"{bad}: it counts {n!r} examples seen after {step} batches of {rank_batch}; {way_out}")
            if not (isinstance(sums, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                                   for v in sums.values())):
                raise AdvkdError(f"{bad}: its running loss sums are not finite numbers; {way_out}")

    def apply_rank_buffers(self, model: torch.nn.Module, *, rank: int = 0) -> None:
        """A mid-epoch state under torchrun holds each rank's own buffers (BatchNorm statistics are
        rank-local within an epoch): restore this rank's. Called again after DistributedDataParallel
        is built, since its constructor copies rank 0's buffers to every rank."""
        own = {k[len(f"buffers.{rank}."):]: v for k, v in self.tensors.items() if k.startswith(f"buffers.{rank}.")}
        if not own:
            return
        buffers = dict(unwrap(model).named_buffers())
        wrong = next((n for n, v in own.items() if n not in buffers or buffers[n].shape != v.shape), None)
        if wrong is not None:
            raise AdvkdError(f"the resume state's buffer {wrong} for rank {rank} does not fit this run's model; it belongs to another run")
        with torch.no_grad():
            for name, value in own.items():
                buffers[name].copy_(value)


def _count(value: Any) -> bool:
    """A non-negative int (not a bool, not a float that happens to be whole)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def rng_states() -> dict[str, torch.Tensor]:
    """This process's RNG states (CPU and every CUDA device)."""
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda.{i:02d}"] = s
    return out


def save_resume(
    path: Path, setup: Any, optimizer: torch.optim.Optimizer, epoch: int, best_value: float | None, best_epoch: int,
    rng: list[dict[str, torch.Tensor]], partial: dict[str, Any] | None = None, rank_buffers: list[dict[str, torch.Tensor]] | None = None,
) -> None:
    """``rng``: the RNG states of every rank, in rank order. ``partial``: inside epoch ``epoch + 1``,
    ``{"step": batches done, "totals": [per-rank log sums], "seen": [per-rank examples]}``; with it under
    torchrun, ``rank_buffers``: every rank's module buffers (BatchNorm statistics are rank-local within an epoch)."""
    tensors = {f"model.{k}": v for k, v in unwrap(setup.model).state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entries in opt["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    for r, states in enumerate(rng):
        for name, value in states.items():
            tensors[f"rng.{r}.{name}"] = value
    for r, buffers in enumerate(rank_buffers or []):  # mid-epoch under torchrun: each rank's buffers differ until the epoch's sync
        for name, value in buffers.items():
            tensors[f"buffers.{r}.{name}"] = value
    tensors = tensors_for_save(tensors)
    cfg = config_to_dict(setup.cfg)
    meta = {
        "format": "pt",
        "advkd_format": STATE_FORMAT,
        "run": json.dumps({k: cfg[k] for k in RUN_PARTS}),  # which run this state belongs to (load_resume checks it)
        "config": json.dumps(cfg, sort_keys=True),
        DIGEST_KEY: tensor_digest(tensors),
        "state": json.dumps(
            {
                "epoch": epoch,
                "best_value": best_value,
                "best_epoch": best_epoch,
                "method_state": setup.method.state_dict(),
                "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
                **({"partial": partial} if partial is not None else {}),
            }
        ),
    }

    files.save_tensors(path, tensors, meta, size=sum(t.nbytes for t in tensors.values()))


def load_resume(path: Path) -> ResumeState:
    """Read a resume state; AdvkdError (one line, with the way out) when it cannot be trusted.

    A ``resume.safetensors`` exists only once an epoch has committed (it is renamed into place
    whole), so an unreadable one stands for completed epochs: it is never wiped automatically.
    """
    way_out = f"use {spell('--name', 'name=...')} for a new run, or delete {Path(path).parent} to start this one over"
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        found = meta.get("advkd_format")
        if found != STATE_FORMAT:
            raise ValueError("not an advkd resume state" if found is None else found)
        state = json.loads(meta["state"])
        loaded = ResumeState(
            epoch=int(state["epoch"]),
            best_value=state["best_value"],
            best_epoch=int(state["best_epoch"]),
            method_state=state["method_state"],
            optimizer=state["optimizer"],
            tensors=tensors,
            partial=state.get("partial"),
        )
        run = json.loads(meta["run"]) if "run" in meta else None
        config = json.loads(meta["config"]) if "config" in meta else None
        if not isinstance(run, (dict, type(None))) or not isinstance(config, (dict, type(None))):
            raise ValueError("run or config is not a mapping")
    except Exception as e:  # any failure here means the file cannot be trusted
        if isinstance(e, ValueError) and str(e).startswith("advkd-resume-"):
            raise AdvkdError(f"resume state {path} is {e}, written by an older advkd that counted epochs from 0; {way_out}") from None
        raise AdvkdError(f"resume state {path} is unreadable ({type(e).__name__}); {way_out}") from None
    check_tensors(tensors, source=str(path), what="resume state", digest=meta.get(DIGEST_KEY), fix=way_out)
    _check_identity(Path(path), run, config, way_out)
    return loaded


def _check_identity(path: Path, run: dict[str, Any] | None, config: dict[str, Any] | None, way_out: str) -> None:
    """AdvkdError when the state at ``path`` was written by another run than the one whose dir
    holds it: another kind/dataset/name than the dir's, or settings other than its ``config.yaml``
    (an unreadable config.yaml is left to the run dir's own check). None: an older state."""
    if run is not None:
        here = dict(zip(RUN_PARTS, path.absolute().parent.parts[-len(RUN_PARTS):]))
        if any(str(run.get(k)) != here.get(k) for k in RUN_PARTS):
            theirs = "/".join(str(run.get(k)) for k in RUN_PARTS)
            raise AdvkdError(f"resume state {path} belongs to another run ({theirs}), not to {'/'.join(here.values())}; "
                             f"put back this run's own {RESUME}, or {way_out}")
    if config is None or not (path.parent / CONFIG).is_file():
        return
    try:
        saved = load_yaml(path.parent / CONFIG, source=str(path.parent / CONFIG))
    except (AdvkdError, OSError):  # the run dir's own reading of config.yaml says what is wrong with it
        return
    if not isinstance(saved, dict):
        return
    diff = sorted(k for k in config if k in saved and k not in IDENTITY_IGNORES and saved[k] != config[k])
    if diff:
        k = diff[0]
        raise AdvkdError(f"resume state {path} belongs to another run: it was written with {k}={config[k]!r}, but this run's "
                         f"{CONFIG} says {k}={saved[k]!r}; put back this run's own {RESUME}, or {way_out}")


def resumable_state(path: str | Path) -> ResumeState | None:
    """The one definition of "resumable": the resume state of run dir ``path``, or None.

    A run is resumable iff ``resume.safetensors`` (the commit point, written last each epoch) is
    readable and the run's files reach its epoch E: ``metrics.jsonl`` has epochs 1..E and
    ``last.safetensors`` and ``best.safetensors`` exist. Files *ahead* of the resume state (an
    epoch E+1 killed after writing metrics or checkpoints, before its commit) are fine: the
    resume state is trusted, ``fit`` truncates metrics to E and epoch E+1 is trained again,
    bit-identically, rewriting its checkpoints.

    None: no epoch ever committed (no ``resume.safetensors``): a new run dir, or a first epoch
    interrupted before its commit, which the caller clears and restarts. AdvkdError (one line,
    naming the way out) when committed work exists that cannot be resumed: an unreadable
    resume state, files *behind* it (metrics or checkpoints removed by hand), or records of
    epoch 2 or later without any resume state. Such a dir is never wiped automatically.
    """
    path = Path(path)
    way_out = f"use {spell('--name', 'name=...')} for a new run, or delete {path} to start this one over"
    done = {r.get("epoch") for r in read_metrics(path / METRICS)}
    if not (path / RESUME).exists():
        later = sorted(e for e in done if isinstance(e, int) and e > 1)
        if later:
            raise AdvkdError(f"run {path} has metrics up to epoch {later[-1]} but no {RESUME} to resume from; {way_out}")
        return None
    state = load_resume(path / RESUME)
    missing = [e for e in range(1, state.epoch + 1) if e not in done]
    if missing:
        raise AdvkdError(f"run {path} is inconsistent: {RESUME} is at epoch {state.epoch} but {METRICS} lacks epoch {missing[0]}; {way_out}")
    absent = [name for name in (LAST, BEST) if state.epoch > 0 and not (path / name).is_file()]  # a first epoch stopped midway has none
    if absent:
        raise AdvkdError(f"run {path} is inconsistent: {RESUME} is at epoch {state.epoch} but {absent[0]} is missing; {way_out}")
    return state
