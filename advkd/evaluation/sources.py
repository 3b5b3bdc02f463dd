"""Where a model comes from: an advkd checkpoint, foreign weights, or the RobustBench zoo.

Every command that reads a model (``attack``, ``transfer-attack``, ``landscape``, the teachers of
``distill``) takes the same three forms:

- ``path/to/best.safetensors`` -- an advkd checkpoint (its metadata says dataset and arch);
- ``ARCH:path/to/weights.pt`` -- a state dict for a registry architecture, read with
  ``torch.load(weights_only=True)``, ``module.``-style prefixes stripped, keys matched strictly;
- ``robustbench:<model id>`` -- a RobustBench zoo model (optional ``robustbench`` package), read
  from ``<model dir>/<dataset>/<threat model>/<id>.pt`` and downloaded there when missing. The
  model dir is ``$ADVKD_MODEL_DIR``, else ``<data dir>/robustbench-models``.

The sha256 of the weights file is recorded in every case. Every form is validated on load (finite
tensors, BatchNorm variances >= 0, a head with as many outputs as the dataset has classes; an advkd
checkpoint also its recorded tensor hash: :mod:`advkd.models.checkpoint`); :func:`load_checkpoint_for`
adds the dataset registry's class count to an advkd checkpoint's own checks.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advkd.core.errors import AdvkdError, warnings_kept_if_it_works
from advkd.core.files import new_dirs_undone_on_failure, sha256_file
from advkd.data.loaders import dataset_info
from advkd.models import MODELS, build_model, canonical_arch
from advkd.models.checkpoint import check_head, check_tensors, load_checkpoint, load_state_strict, strip_prefixes

ROBUSTBENCH = "robustbench:"
ROBUSTBENCH_ALIASES = {"Chen2021LTD_WRD34_20": "Chen2021LTD_WRN34_20"}  # the AdaAD repo's misspelling
THREAT_MODELS = ("Linf", "L2", "corruptions")


@dataclass
class Source:
    """A loaded model (eval mode) and what records say about it."""

    model: nn.Module
    meta: dict[str, Any]  # dataset, num_classes, arch, paper_arch, method, scale, ...
    path: str  # what the user typed: a checkpoint path, ARCH:weights.pt or robustbench:<id>
    weights: Path | None  # the file the weights came from
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)


def model_dir(data_dir: str | Path | None) -> Path:
    """Where RobustBench models live: ``$ADVKD_MODEL_DIR``, else ``<data dir>/robustbench-models``."""
    if os.environ.get("ADVKD_MODEL_DIR"):
        return Path(os.environ["ADVKD_MODEL_DIR"])
    return Path(data_dir or "./data") / "robustbench-models"


def is_foreign(spec: str) -> bool:
    head, sep, tail = spec.partition(":")
    return sep == ":" and head in MODELS and tail.endswith((".pt", ".pth"))


def load_source(
    spec: str | Path,
    *,
    device: str | torch.device = "cpu",
    dataset: str | None = None,
    threat_model: str = "Linf",
    data_dir: str | Path | None = None,
    expect: dict[str, Any] | None = None,
) -> Source:
    """Load the model ``spec`` names (see the module docstring); ``dataset`` is needed by the two
    foreign forms (default cifar10) and checked against an advkd checkpoint's own."""
    text = str(spec).strip()
    if text.startswith(ROBUSTBENCH):
        source = _robustbench(text, dataset=dataset or "cifar10", threat_model=threat_model, data_dir=data_dir)
    elif is_foreign(text):
        arch, _, path = text.partition(":")
        source = _foreign(text, canonical_arch(arch), Path(path), dataset=dataset or "cifar10")
    else:
        path = Path(text)
        if path.suffix in (".pt", ".pth"):
            raise AdvkdError(f"{text} is a foreign .pt file; name its architecture: ARCH:{text} (e.g. wrn34-10:{text})")
        model, meta = load_checkpoint_for(path, device=device, expect={"dataset": dataset} if dataset else None)
        source = Source(model, meta, text, path, sha256_file(path))
    for key, want in (expect or {}).items():
        if want is not None and source.meta.get(key) != want:
            raise AdvkdError(f"{text} has {key}={source.meta.get(key)!r} but {want!r} is needed here")
    source.model.to(device).eval()
    return source


def load_checkpoint_for(
    path: str | Path, *, device: str | torch.device = "cpu", expect: dict[str, Any] | None = None, sha256: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`~advkd.models.checkpoint.load_checkpoint` (which validates the file) plus what
    only the dataset registry knows: the metadata's dataset exists and has ``num_classes``
    classes. Every command loads advkd checkpoints through here (attack, transfer-attack,
    landscape, the teachers of distill)."""
    model, meta = load_checkpoint(path, device=device, expect=expect, sha256=sha256)
    try:
        info = dataset_info(str(meta.get("dataset")))
    except AdvkdError:
        raise AdvkdError(f"checkpoint {path} names dataset {meta.get('dataset')!r}, which advkd does not know") from None
    if int(meta["num_classes"]) != info.num_classes:
        raise AdvkdError(f"checkpoint {path} does not fit its dataset: its head has {meta['num_classes']} outputs but {info.name} "
                         f"has {info.num_classes} classes")
    return model, meta


def _foreign(spec: str, arch: str, path: Path, *, dataset: str) -> Source:
    if not path.is_file():
        raise AdvkdError(f"weights {path} not found")
    try:
        with warnings_kept_if_it_works():  # torch warns about the pickle protocol of files it then refuses: the error says it all
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad pickle; all mean "unreadable"
        raise AdvkdError(f"cannot read {path} as weights-only torch file ({type(e).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise AdvkdError(f"{path} does not hold a state dict")
    num_classes = dataset_info(dataset).num_classes
    model = build_model(arch, num_classes=num_classes)
    if not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise AdvkdError(f"{path} does not hold a state dict of tensors")
    state = strip_prefixes(state)
    check_tensors(state, source=str(path), what="weights file")
    check_head(model, state, num_classes, source=str(path), why=f"{dataset_info(dataset).name} has {num_classes} classes (--dataset)")
    load_state_strict(model, state, source=str(path))
    meta = {"arch": arch, "paper_arch": arch, "dataset": dataset_info(dataset).name, "num_classes": str(num_classes),
            "method": "foreign", "scale": "paper", "weights": str(path)}
    return Source(model, meta, spec, path, sha256_file(path))


def robustbench_id(spec: str) -> str:
    """``robustbench:<id>`` -> the zoo id (the AdaAD repo's misspelling accepted)."""
    model_id = spec.strip()[len(ROBUSTBENCH):]
    return ROBUSTBENCH_ALIASES.get(model_id, model_id)


def robustbench_weights(spec: str, *, dataset: str, threat_model: str = "Linf", data_dir: str | Path | None = None) -> Path:
    """Where the weights of ``robustbench:<id>`` are read from (and downloaded to when missing)."""
    return model_dir(data_dir) / dataset_info(dataset).name / threat_model / f"{robustbench_id(spec)}.pt"


def _robustbench(spec: str, *, dataset: str, threat_model: str, data_dir: str | Path | None) -> Source:
    model_id = robustbench_id(spec)
    if threat_model not in THREAT_MODELS:
        raise AdvkdError(f"--threat-model {threat_model}: one of {', '.join(THREAT_MODELS)}")
    load_model = _robustbench_loader(spec)
    info = dataset_info(dataset)
    root = model_dir(data_dir)
    try:
        with new_dirs_undone_on_failure(root / info.name / threat_model), warnings_kept_if_it_works():
            model = load_model(model_name=model_id, model_dir=str(root), dataset=info.name, threat_model=threat_model)
    except Exception as e:  # network / unknown id errors come in many types
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AdvkdError(f"robustbench could not load {model_id} ({info.name}, {threat_model}) from {root}: {first}") from None
    weights = robustbench_weights(spec, dataset=info.name, threat_model=threat_model, data_dir=data_dir)
    check_tensors(model.state_dict(), source=str(weights), what="weights file")
    meta = {"arch": f"robustbench:{model_id}", "paper_arch": f"robustbench:{model_id}", "dataset": info.name,
            "num_classes": str(info.num_classes), "method": "robustbench", "scale": "paper", "threat_model": threat_model,
            "weights": str(weights)}
    return Source(model, meta, spec, weights if weights.is_file() else None, sha256_file(weights) if weights.is_file() else "")


@contextmanager
def _robustbench_sees_pyautoattack() -> Iterator[None]:
    """RobustBench's PyPI release depends on ``pyautoattack`` but imports it as ``autoattack``, the
    name of AutoAttack's GitHub package, which is not on PyPI: ``pip install robustbench`` alone
    gives ``No module named 'autoattack'``. While RobustBench's modules import (they bind the names
    they use then), and only when no ``autoattack`` is installed, that name points at pyautoattack,
    the same library; afterwards it is removed again, so no other import in the process sees it."""
    try:
        installed = importlib.util.find_spec("autoattack") is not None
    except (ImportError, ValueError):
        installed = False
    stand_in: dict[str, Any] = {}
    if not installed:
        try:
            import pyautoattack
            import pyautoattack.state
        except ImportError:
            pass
        else:
            stand_in = {name: mod for name, mod in (("autoattack", pyautoattack), ("autoattack.state", pyautoattack.state)) if name not in sys.modules}
    sys.modules.update(stand_in)
    try:
        yield
    finally:
        for name, mod in stand_in.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]


def _robustbench_loader(spec: str):
    """``robustbench.utils.load_model`` (the optional ``robustbench`` extra)."""
    try:
        with warnings.catch_warnings(), _robustbench_sees_pyautoattack():
            warnings.simplefilter("ignore")  # its imports warn about deprecated torch / setuptools APIs
            from robustbench.utils import load_model  # optional dependency
    except ImportError as e:
        raise AdvkdError(f"{spec} needs the optional robustbench package: pip install 'advkd[robustbench]' ({e})") from None
    return load_model

