"""safetensors checkpoints with string metadata, written atomically, validated on load.

A checkpoint holds weights only (never pickle) plus the metadata needed to rebuild and trust the
model: ``arch``, ``num_classes``, ``dataset``, ``normalize``, ``method``, ``teachers`` (JSON),
``preset``, ``scale``, ``epoch``, ``metrics`` (JSON), ``config`` (JSON), ``eps``, ``seed``,
``created``, ``advkd_version``, ``tensors_sha256``. Nested values are JSON strings, as safetensors requires.

Every file is checked when it is loaded (:func:`load_checkpoint`, :func:`check_tensors`, :func:`check_head`), so
that a file which merely parses is not trusted: its tensors must match the ``tensors_sha256`` written
at save time (flipped bytes; files written before the hash existed load without it), every floating
tensor must be finite, every BatchNorm ``running_var`` >= 0, and the classifier head must have as
many outputs as the metadata's ``num_classes``. Where a caller knows the file's sha256 (a
student's record of its teacher), ``load_checkpoint(sha256=...)`` checks it too.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from advkd.core import files
from advkd.core.errors import AdvkdError
from advkd.core.files import sha256_file
from advkd.core.tensor_hash import digest_one, is_sha256, shown, tensor_digest  # noqa: F401 (is_sha256: re-exported)
from advkd.models import build_model

FORMAT = "advkd-checkpoint-v1"
JSON_KEYS = ("teachers", "metrics", "config", "arch_map", "fast_paths", "method_origin", "arch_origin", "reference")
PREFIXES = ("module.", "_orig_mod.", "model.")
DIGEST_KEY = "tensors_sha256"  # sha256 of the tensors (names, dtypes, shapes, bytes); see tensor_digest


# ----------------------------------------------------------------------------- save / load


def _encode_meta(meta: dict[str, Any]) -> dict[str, str]:
    out = {"format": "pt", "advkd_format": FORMAT}
    for key, value in meta.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def _decode_meta(raw: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = dict(raw)
    for key in JSON_KEYS:
        if key in meta:
            meta[key] = json.loads(meta[key])
    for key in ("num_classes", "epoch", "seed"):
        if key in meta:
            meta[key] = int(meta[key])
    return meta


def tensors_for_save(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies without shared storage, as safetensors requires."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _nbytes(tensors: Mapping[str, torch.Tensor]) -> int:
    return sum(t.nbytes for t in tensors.values())


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and ``meta`` (plus the ``tensors_sha256`` of exactly the bytes written) atomically."""
    prepared = tensors_for_save(tensors)
    encoded = _encode_meta({**meta, DIGEST_KEY: tensor_digest(prepared)})
    files.save_tensors(path, prepared, encoded, size=_nbytes(prepared))


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically."""
    for key in ("arch", "num_classes", "dataset"):
        if key not in meta:
            raise ValueError(f"checkpoint metadata needs {key!r}")
    save_tensors(path, unwrap(model).state_dict(), meta)


def read_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors and decoded metadata; AdvkdError on a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise AdvkdError(f"checkpoint {path} not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise AdvkdError(f"checkpoint {path} is corrupt or not a safetensors file ({str(e).splitlines()[0]})") from None
    if raw.get("advkd_format") != FORMAT:
        raise AdvkdError(f"{path} is a safetensors file but not an advkd checkpoint (no advkd_format metadata)")
    try:
        return tensors, _decode_meta(raw)
    except (ValueError, json.JSONDecodeError):
        raise AdvkdError(f"checkpoint {path} has corrupt metadata") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    return read_tensors(path)[1]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` / ``model.`` prefixes from foreign state dicts (one place)."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix):]
                    changed = True
        out[key] = value
    return out


def check_tensors(
    tensors: Mapping[str, torch.Tensor], *, source: str, what: str = "checkpoint", digest: str | None = None, fix: str = "",
) -> None:
    """One pass over ``tensors``: the ``digest`` (a :func:`tensor_digest` recorded at save time,
    when there is one), every floating tensor finite, every BatchNorm ``running_var`` >= 0.
    AdvkdError naming ``what source`` and the first bad tensor, ending in ``fix`` when given. A
    digest mismatch is said first: a corrupt file explains any odd value in it. ``digest`` None is a
    file written before the hash existed; any other value that is not a sha256 (empty, truncated,
    not hex, not a string) is damage, never "no hash"."""
    if digest is not None and not is_sha256(digest):
        raise AdvkdError(f"{what} {source} is corrupt: its {DIGEST_KEY} is {shown(digest)}, not a sha256; "
                         f"{fix or 'restore it from a good copy'}")
    h = hashlib.sha256() if digest is not None else None
    nonfinite = negative = ""
    for name in sorted(tensors):
        t = tensors[name]
        if h is not None:
            digest_one(h, name, t)
        if not t.is_floating_point() or (nonfinite and negative):
            continue
        if not nonfinite and not bool(torch.isfinite(t).all()):
            nonfinite = name
        elif not negative and name.endswith("running_var") and bool((t < 0).any()):
            negative = name
    if h is not None and h.hexdigest() != digest:
        raise AdvkdError(f"{what} {source} is corrupt: its tensors do not match the sha256 recorded when it was saved "
                         f"({DIGEST_KEY} {digest[:12]}..., the data hashes to {h.hexdigest()[:12]}...); {fix or 'restore it from a good copy'}")
    if nonfinite:
        t = tensors[nonfinite]
        kinds = [k for k, bad in (("nan", torch.isnan(t).any()), ("inf", torch.isinf(t).any())) if bool(bad)]
        raise AdvkdError(f"{what} {source} has non-finite values: {nonfinite} holds {'/'.join(kinds)}; "
                         f"{fix or 'such a model cannot be evaluated or trained from'}")
    if negative:
        low = float(tensors[negative].min())
        raise AdvkdError(f"{what} {source} is invalid: BatchNorm variance {negative} is negative ({low:g}); {fix or 'variances are >= 0'}")


def head_name(model: nn.Module, num_classes: int) -> str | None:
    """The classifier head: the last ``nn.Linear`` with ``num_classes`` outputs (None when there is none)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            found = name
    return found


def check_head(model: nn.Module, state: Mapping[str, torch.Tensor], num_classes: int, *, source: str, why: str) -> None:
    """AdvkdError when the weights' classifier head does not have ``num_classes`` outputs
    (``why`` says where that count comes from, e.g. "its metadata says num_classes=100")."""
    head = head_name(model, num_classes)
    weight = state.get(f"{head}.weight") if head is not None else None
    if weight is not None and weight.dim() >= 1 and weight.shape[0] != num_classes:
        raise AdvkdError(f"weights in {source} do not fit: the classifier head {head} has {weight.shape[0]} outputs but {why}")


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> None:
    """Load with strict key and shape matching; AdvkdError naming the first mismatch."""
    check_fits(model, state, source=source)
    model.load_state_dict(state, strict=True)


def check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str) -> None:
    """AdvkdError naming the first key or shape of ``state`` that ``model`` does not have."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise AdvkdError(f"weights in {source} do not fit the architecture: {detail}")
    for key, value in state.items():
        if own[key].shape != value.shape:
            raise AdvkdError(f"weights in {source} do not fit the architecture: {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}")


def _need_arch(arch: str, meta: dict[str, Any], path: Path) -> None:
    """A checkpoint of a plugin's architecture names the package to install when it is missing
    (nothing is imported because a checkpoint says so: only installed entry points are looked at)."""
    from advkd.models import MODELS

    try:
        MODELS.canonical(arch)
    except AdvkdError:
        origin = meta.get("arch_origin")
        if isinstance(origin, dict) and origin.get("distribution"):
            raise AdvkdError(f"checkpoint {path} is a {arch} from the plugin package {origin['distribution']} {origin.get('version', '')}"
                             f" ({origin.get('spec')}), which is not installed here: pip install {origin['distribution']}") from None
        if isinstance(origin, dict):
            raise AdvkdError(f"checkpoint {path} is a {arch} from {origin.get('spec')}, a module:attr that is no package's entry point: "
                             f"a checkpoint never makes advkd import a module, so declare it under [project.entry-points.\"advkd.models\"] "
                             f"of an installed package to load it") from None
        raise AdvkdError(f"checkpoint {path} names an architecture advkd does not know: {shown(arch)}") from None


def load_checkpoint(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    expect: dict[str, Any] | None = None,
    sha256: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes, load its weights, put it in eval mode.

    ``expect`` (e.g. ``{"dataset": "cifar10", "num_classes": 10}``) is compared with the
    metadata; a mismatch is an AdvkdError that names both values. ``sha256``: the file's hash as
    recorded elsewhere (a student's record of its teacher); checked when given.

    The file is validated here, for every command that loads one (module docstring): its
    recorded tensor hash, finite tensors, BatchNorm variances >= 0, the head's size.
    """
    path = Path(path)
    tensors, meta = read_tensors(path)
    if sha256:
        have = sha256_file(path)
        if have != sha256:
            raise AdvkdError(f"checkpoint {path} is not the file that was recorded: its sha256 is {have[:12]}..., the record says {sha256[:12]}...")
    for key, want in (expect or {}).items():
        have = meta.get(key)
        if want is not None and have != want:
            raise AdvkdError(f"checkpoint {path} has {key}={have!r} but {want!r} is needed here")
    check_tensors(tensors, source=str(path), digest=meta.get(DIGEST_KEY))
    try:
        num_classes = int(meta["num_classes"])
        arch = meta["arch"]
    except (KeyError, ValueError):
        raise AdvkdError(f"checkpoint {path} has corrupt metadata (no arch or num_classes)") from None
    if num_classes < 1:
        raise AdvkdError(f"checkpoint {path} has corrupt metadata (num_classes={num_classes})")
    _need_arch(arch, meta, path)
    try:
        with torch.device("meta"):  # shapes only, no memory: metadata saying 200M classes is refused before it allocates
            shell = build_model(arch, num_classes=num_classes, normalize=meta.get("normalize", "none"))
    except AdvkdError as e:  # "unknown normalize ''": say which file holds it
        raise AdvkdError(f"checkpoint {path} has corrupt metadata: {e}") from None
    check_head(shell, tensors, num_classes, source=str(path), why=f"its metadata says num_classes={num_classes} (dataset {meta.get('dataset')})")
    check_fits(shell, tensors, source=str(path))
    model = build_model(arch, num_classes=num_classes, normalize=meta.get("normalize", "none"))
    load_state_strict(model, tensors, source=str(path))
    return model.to(device).eval(), meta
