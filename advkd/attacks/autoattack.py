"""AutoAttack through the ``pyautoattack`` package, run stage by stage, with resumable state.

Ids: ``aa`` (the full ensemble, ``version`` standard / rand / plus) and its standard components
alone: ``apgd-ce``, ``apgd-t``, ``fab-t``, ``aa-square`` (Square with 5000 queries; the id
``square`` is the 100-query score-based attack of the B-MTARD tables, :mod:`advkd.attacks.square`).

How a run goes (checked against ``pyautoattack/autoattack.py`` 0.2.0):

- ONE ``pyautoattack.AutoAttack(model, norm=, eps=, version=, device=x.device, seed=)`` is
  built, so the library's own ``_set_version`` fixes every budget (standard, Linf/L2:
  APGD-CE 1 restart x 100 iterations, APGD-T 9 targets x 100, FAB-T 9 targets x 100, Square
  5000 queries with ``p_init`` 0.8 and no schedule rescaling).
- Clean predictions are taken in chunks of ``batch_size`` (as the library does).
- For each stage in the library's order, ``adversary.attacks_to_run = [stage]`` and
  ``run_standard_evaluation`` gets only the points still robust, in index order. The library
  batches them in chunks of ``batch_size`` in that same order and reseeds with ``seed`` before
  every batch of every attack, and the attack objects (whose settings a stage may change, e.g.
  FAB-T sets ``fab.n_restarts = 1``) are the same objects, used in the same order; so the flags,
  adversarial examples and per-stage accuracies are those of one library call with all stages.
  The only extra work is the library's cheap checks and clean pass repeated per stage (on the
  robust subset; a point whose clean argmax flips between batch compositions would be counted
  broken without being attacked: exact ties only).
- Gradients: FAB calls ``.backward()``, so parameters are frozen (``requires_grad=False``) for
  the run and restored after: no parameter ``.grad`` is created. The library reseeds the global
  RNG; the caller's RNG state (CPU and the input's device) is saved and restored around it.
- Progress (with ``log`` set, as the evaluation does): a line as each stage starts (the points
  still robust it attacks) and ends (how many survive), and inside a stage at most one line per
  ``heartbeat_s`` with the image passes done of the most the stage can take and the most time
  left. The library sees the model through :class:`~advkd.attacks.aa_progress.PassMeter`, which
  only counts forwards: stages are not split, so results and random draws are unchanged.

Resume: with ``state_dir`` (a constructor argument, not a parameter: it does not change the
attack), after every stage ``<state_dir>/aa-state.safetensors`` is rewritten atomically with
the robust flags per stage and the adversarial examples found so far; its metadata holds the
stages done, attack id, eps, version, norm, seed, batch_size, n and a SHA-256 of the inputs.
A later run with the same inputs and settings skips the stages already done (a finished
state gives back the stored result without running anything); a state written for other
inputs or settings is refused with :class:`AdvkdError`. Delete the file to start over.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from advkd.attacks.aa_progress import PassMeter, StageProgress, stage_forwards
from advkd.attacks.engine import Attack, param, register_attack
from advkd.core.accel import NCHWBoundary, is_channels_last
from advkd.core.errors import AdvkdError
from advkd.core.files import save_tensors
from advkd.core.progress import HEARTBEAT_S
from advkd.core.tensor_hash import seal, seal_problem

STATE_FILE = "aa-state.safetensors"
STATE_FORMAT = "advkd-aa-state-v1"
_CLEAN = "clean"
# Model passes (forward + backward = 1) per point of each standard stage: APGD-CE 100 iterations,
# APGD-T 9 targets x 100, FAB-T 9 targets x 100 (two passes each), Square 5000 forwards (a third each).
STAGE_PASSES = {"apgd-ce": 100.0, "apgd-t": 900.0, "fab-t": 1800.0, "square": 5000 / 3}


# --------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Set ``requires_grad=False`` on every parameter for the block, restore each flag after.

    For library code that calls ``.backward()`` (input gradients still flow; parameter
    ``.grad`` is never created or changed).
    """
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Save the global RNG state (CPU, and ``device`` if it is a CUDA device) and restore it after.

    Library attacks call ``torch.manual_seed``; this keeps the caller's random stream intact.
    (Other accelerators: only the CPU state is saved.)
    """
    devices: list[int] = []
    if device.type == "cuda":
        devices = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=devices):
        yield


def input_digest(x: Tensor, y: Tensor) -> str:
    """SHA-256 over dtype, shape and raw bytes of ``x`` and ``y`` (identifies a resume state)."""
    h = hashlib.sha256()
    for t in (x, y):
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _import_pyautoattack() -> Any:
    try:
        import pyautoattack
    except ImportError as e:  # pragma: no cover - installed with advkd
        raise AdvkdError("AutoAttack needs the 'pyautoattack' package: pip install pyautoattack") from e
    return pyautoattack


# --------------------------------------------------------------------------------- params


@dataclasses.dataclass(frozen=True)
class AAParams:
    version: Literal["standard", "rand", "plus"] = param(
        "standard", "library version: standard (APGD-CE, APGD-T, FAB-T, Square-5000), rand, plus"
    )
    norm: Literal["Linf", "L2"] = param("Linf", "threat model of the eps-ball")
    seed: int = param(0, "seed the library sets before every batch of every attack", min=0)
    batch_size: int = param(500, "examples per library batch (batch composition changes the random draws)", min=1)


@dataclasses.dataclass(frozen=True)
class AAComponentParams:
    norm: Literal["Linf", "L2"] = param("Linf", "threat model of the eps-ball")
    seed: int = param(0, "seed the library sets before every batch", min=0)
    batch_size: int = param(500, "examples per library batch (batch composition changes the random draws)", min=1)


# --------------------------------------------------------------------------------- base


class _StagedAutoAttack(Attack):
    """AutoAttack stages run one after another on the still-robust points (see module doc).

    After :meth:`perturb`: ``stage_flags[name]`` is the (n,) bool tensor of points still robust
    after that stage (``"clean"`` first: correctly classified), ``stage_accuracy[name]`` its
    mean; the last entry is the final robust accuracy.
    """

    Params = AAParams
    threat_model = "Linf"
    component: ClassVar[str | None] = None  # set by the single-stage ids
    whole_set: ClassVar[bool] = True  # evaluation hands over every point at once; batching is internal

    log: Callable[[str], None] | None = None  # set by the evaluation: a line as each stage starts and ends, and while it runs
    heartbeat_s: float = HEARTBEAT_S  # at most one line per this many seconds inside a stage

    def passes_per_point(self) -> float:
        """Standard AutoAttack on a point that survives every stage (:data:`STAGE_PASSES`); a
        component id counts its own stage. Most points fall in the first stages, so this
        over-estimates; the suite ETA corrects it as stages finish."""
        if self.component is not None:
            return STAGE_PASSES[self.component]
        return sum(STAGE_PASSES.values())

    def expected_passes(self, survive: float) -> float:
        """APGD-CE runs on every clean-correct point, the later stages (nearly) only on the points
        it leaves robust: on a robust model about the final robust accuracy."""
        if self.component is not None or self.params.get("version", "standard") != "standard":
            return self.passes_per_point()
        first = STAGE_PASSES["apgd-ce"]
        return first + survive * (self.passes_per_point() - first)

    def __init__(self, eps: Any = None, *, state_dir: str | Path | None = None, **params: Any) -> None:
        super().__init__(eps, **params)
        self.state_dir: str | None = None if state_dir is None else str(state_dir)
        self.stage_flags: dict[str, Tensor] = {}
        self.stage_accuracy: dict[str, float] = {}

    def resolve(self) -> dict[str, Any]:
        p = dataclasses.asdict(self.hparams)
        self.threat_model = p["norm"]
        return p

    # ---- the library object

    def build_adversary(self, model: nn.Module, device: torch.device) -> Any:
        """The one ``pyautoattack.AutoAttack`` used for every stage of a run."""
        aa = _import_pyautoattack()
        p = self.params
        common = dict(norm=p["norm"], eps=self.eps.value, seed=p["seed"], device=device)
        if self.component is None:
            adversary = aa.AutoAttack(model, version=p["version"], **common)
        else:
            adversary = aa.AutoAttack(model, attacks=[self.component], version="custom", **common)
            adversary._set_version("standard")  # the library's own standard budgets ...
            adversary.attacks_to_run = [self.component]  # ... for this one stage only
        return adversary

    # ---- resume state

    def _state_path(self) -> Path | None:
        return None if self.state_dir is None else Path(self.state_dir) / STATE_FILE

    def _state_meta(self, n: int, digest: str, stages: list[str]) -> dict[str, str]:
        p = self.params
        return {
            "format": STATE_FORMAT,
            "attack": self.id,
            "eps": repr(float(self.eps.value)),
            "version": p.get("version", "standard"),
            "norm": p["norm"],
            "seed": str(p["seed"]),
            "batch_size": str(p["batch_size"]),
            "n": str(n),
            "inputs_sha256": digest,
            "stages": json.dumps(stages),
        }

    def _load_state(self, path: Path, expected: dict[str, str], device: torch.device) -> tuple[list[str], dict[str, Tensor]]:
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            tensors = load_file(str(path), device=str(device))
        except Exception as e:  # corrupt or foreign file
            raise AdvkdError(f"cannot read AutoAttack state {path}: {e}; delete it to start over") from e
        if meta.get("format") != STATE_FORMAT:
            raise AdvkdError(f"{path} is not an advkd AutoAttack state; delete it or use another state_dir")
        problem = seal_problem(tensors, meta)  # the digest reads each tensor on the CPU itself
        if problem:
            raise AdvkdError(f"AutoAttack state {path} cannot be trusted: {problem}; delete it to start over")
        for key, want in expected.items():
            if meta.get(key) != want:
                what = "inputs (x, y)" if key == "inputs_sha256" else key
                raise AdvkdError(
                    f"AutoAttack state {path} was written for other {what} "
                    f"({meta.get(key)!r}, this run {want!r}); delete it or use another state_dir"
                )
        done = json.loads(meta.get("done", "[]"))
        return done, tensors

    def _save_state(self, path: Path, meta: dict[str, str], done: list[str], flags: dict[str, Tensor], x_adv: Tensor) -> None:
        tensors = {f"robust/{k}": v.detach().cpu().contiguous() for k, v in flags.items()}
        tensors["x_adv"] = x_adv.detach().cpu().contiguous()
        save_tensors(path, tensors, seal(tensors, {**meta, "done": json.dumps(done)}))

    # ---- the run

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def _progress(self, meter: PassMeter, adversary: Any, stage: str, points: int) -> StageProgress | None:
        """The in-stage reporter hooked to the meter's forwards (None without a log)."""
        if self.log is None:
            return None
        total = stage_forwards(adversary, stage, points, self.params["batch_size"])
        return StageProgress(meter, stage, total, self.log, self.heartbeat_s)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if is_channels_last(x):  # the library views gradients as (n, -1): NCHW at its boundary, channels-last inside
            model, x = NCHWBoundary(model), x.contiguous()
        p = self.params
        n, bs, device = x.shape[0], p["batch_size"], x.device
        meter = PassMeter(model)  # counts the library's forwards: progress inside a stage, same results
        adversary = self.build_adversary(meter, device)
        stages = list(adversary.attacks_to_run)
        path = self._state_path()
        meta = self._state_meta(n, input_digest(x, y), stages) if path is not None else {}

        done: list[str] = []
        flags: dict[str, Tensor] = {}
        if path is not None and path.exists():
            done, tensors = self._load_state(path, meta, device)
            flags = {k: tensors[f"robust/{k}"].bool() for k in [_CLEAN, *done]}
            x_adv = tensors["x_adv"].to(dtype=x.dtype)
            robust = flags[done[-1] if done else _CLEAN].clone()
        else:
            with torch.no_grad():
                preds = [model(x[i : i + bs]).max(dim=1)[1] for i in range(0, n, bs)]
            robust = torch.cat(preds).eq(y) if preds else torch.zeros(0, dtype=torch.bool, device=device)
            flags[_CLEAN] = robust.clone()
            x_adv = x.clone()

        for number, stage in enumerate(stages, 1):
            if stage in done:
                continue
            t0 = time.perf_counter()
            idx = robust.nonzero().flatten()
            where = f"{stage} (stage {number}/{len(stages)})"
            if idx.numel():
                self._say(f"{where}: attacking the {idx.numel()} of {n} points still robust")
                adversary.attacks_to_run = [stage]
                meter.on_forward = self._progress(meter, adversary, stage, idx.numel())
                try:
                    with preserved_rng(device), frozen_parameters(model):
                        adv_sub, pred_sub = adversary.run_standard_evaluation(x[idx], y[idx], batch_size=bs)
                finally:
                    meter.on_forward = None
                broken = pred_sub.to(device).ne(y[idx])
                robust[idx[broken]] = False
                x_adv[idx[broken]] = adv_sub[broken].to(device=device, dtype=x.dtype)
            flags[stage] = robust.clone()
            done.append(stage)
            if path is not None:
                self._save_state(path, meta, done, flags, x_adv)
            self._say(f"{where} in {time.perf_counter() - t0:.1f}s: {int(robust.sum())} of {idx.numel()} attacked points still robust"
                      if idx.numel() else f"{where}: skipped, no point left to attack")

        self.stage_flags = flags
        self.stage_accuracy = {k: (v.float().mean().item() if n else float("nan")) for k, v in flags.items()}
        return x_adv


# --------------------------------------------------------------------------------- ids


@register_attack("aa", aliases=("autoattack",), kind="white-box", threat_model="Linf|L2")
class AutoAttack(_StagedAutoAttack):
    """AutoAttack — Croce & Hein, ICML 2020, through the ``pyautoattack`` package (0.2.0).

    Paper: "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks".
    Norm: Linf (default) or L2. Defaults: eps 8/255, ``version="standard"`` (APGD-CE, APGD-T,
    FAB-T, Square-5000, 1 restart each, budgets set by the library), seed 0, batch size 500 —
    single-teacher spec §3.1 (AdaAD: bs 200, pass ``batch_size=200`` for that parity) and
    multi-teacher spec §10.3 (B-MTARD: "RobustBench evaluation tool"; which AA implementation
    the paper used is UNCONFIRMED). A point counts as robust only if every stage fails.
    Stages run one after another on the still-robust points, exactly as one library call
    does; ``stage_flags`` / ``stage_accuracy`` hold the robust flags and accuracy after each
    stage (``"clean"`` first). ``state_dir=`` (constructor argument) makes the run resumable
    after each stage (``aa-state.safetensors``; other inputs or settings are refused).
    Returns adversarial examples where a stage succeeded, the clean image elsewhere.
    Input range: [0, 1]; output in [0, 1].
    """

    Params = AAParams


class _Component(_StagedAutoAttack):
    Params = AAComponentParams


@register_attack("apgd-ce", kind="white-box", threat_model="Linf|L2")
class APGDCE(_Component):
    """APGD-CE — Croce & Hein, ICML 2020: AutoAttack's first stage alone (``pyautoattack``).

    Norm: Linf (default) or L2. Defaults: eps 8/255, the library's standard settings for this
    stage (``version='custom'`` with ``_set_version('standard')`` applied): 100 iterations,
    1 restart, rho 0.75, CE loss; seed 0, batch size 500. Input range: [0, 1].
    """

    component = "apgd-ce"


@register_attack("apgd-t", kind="white-box", threat_model="Linf|L2")
class APGDT(_Component):
    """APGD-T — Croce & Hein, ICML 2020: targeted APGD on the DLR loss, AutoAttack's stage alone.

    Norm: Linf (default) or L2. Defaults: eps 8/255, the library's standard settings: 9 target
    classes x 100 iterations, 1 restart; seed 0, batch size 500. Needs >= 10 classes for 9
    targets (the library warns otherwise). Input range: [0, 1].
    """

    component = "apgd-t"


@register_attack("fab-t", kind="white-box", threat_model="Linf|L2")
class FABT(_Component):
    """FAB-T — Croce & Hein, ICML 2020: AutoAttack's targeted FAB stage alone (``pyautoattack``).

    Paper: "Minimally distorted adversarial examples with a fast adaptive boundary attack".
    Norm: Linf (default) or L2. Defaults: eps 8/255, the library's standard settings: 9 target
    classes x 100 iterations, 1 restart; seed 0, batch size 500. Input range: [0, 1].
    """

    component = "fab-t"


@register_attack("aa-square", kind="score-based", threat_model="Linf|L2")
class AASquare(_Component):
    """Square-5000 — Andriushchenko et al., "Square Attack", ECCV 2020: AutoAttack's last stage alone.

    Norm: Linf (default) or L2. Defaults: eps 8/255, the library's standard settings: 5000
    queries, ``p_init`` 0.8, 1 restart, no schedule rescaling; seed 0, batch size 500. For the
    100-query B-MTARD attack use ``square``. Input range: [0, 1].
    """

    component = "square"
