"""Weight-loss landscape of AdaAD Fig. 3 (single-teacher spec §3.5, open item 10).

For a trained model with weights ``w`` the curve along a random direction ``d`` is
``g(alpha) = L_adv(w + alpha * d)``: the mean cross-entropy on adversarial examples that are
**regenerated on the perturbed model** at every grid point (AWP, Wu et al. 2020, whose plots use
``tomgoldstein/loss-landscape`` with an adversarial evaluation). The model is in eval mode
throughout, so BatchNorm uses its running statistics, which are never perturbed.

Directions follow Li et al.'s filter normalisation (:func:`filter_normalized_direction`):
``d ~ N(0, I)`` shaped like every parameter, each output filter (row along dim 0) of every
tensor with >= 2 dims rescaled to the norm of the same filter of ``w``; 1-D tensors (BN gamma /
beta, biases) are zeroed (``bn_bias="zero"``, LL's ``ignore='biasbn'``) or copied from ``w``
(``bn_bias="copy"``). Direction ``i`` is drawn from a generator seeded by ``(seed, i)`` only, so
every checkpoint of one architecture gets the same Gaussian draws and the curves are comparable.

Choices the paper leaves open (all **UNCONFIRMED**, recorded in every result's ``settings``):
10 directions, every curve plotted (no averaging); ``alpha`` in ``linspace(-1, 1, 21)``; the
first ``n_examples`` (1000) test images; ``pgd10`` (10 steps of eps/4, eps 8/255, uniform start);
1-D directions zeroed; the CE adversarial loss for every method (not each method's training loss).

Randomness of the attack: every grid point starts the attack from the same RNG state
(``torch.manual_seed(seed)`` inside a forked RNG, the caller's global RNG untouched), so the
random starts are identical along a curve, and the alpha = 0 point equals the adversarial loss of
the unperturbed model under the same attack seed. Because ``w + 0 * d == w`` exactly, alpha = 0 is
evaluated once per checkpoint and shared by all directions.

Drawing the curves: :mod:`advkd.report.figures.weight_loss`.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advkd.attacks import ATTACKS
from advkd.attacks import build as build_attack
from advkd.attacks.modes import training_mode
from advkd.core.epsilon import parse_eps
from advkd.core.errors import AdvkdError
from advkd.core.progress import Reporter
from advkd.data.batches import TensorData, to_float
from advkd.data.loaders import load_split
from advkd.evaluation.sources import load_source
from advkd.models.checkpoint import unwrap

__all__ = [
    "BN_BIAS_MODES",
    "LandscapeResult",
    "alpha_grid",
    "filter_normalized_direction",
    "landscape",
    "json_safe",
    "landscape_json",
    "load_landscape",
    "sharpness",
    "weight_loss_landscape",
]

BN_BIAS_MODES = ("zero", "copy")
NO_ATTACK = "clean"  # attack id that means "natural loss landscape" (no adversarial examples)
FORMAT = "advkd-landscape-v1"
DATA_SPLIT = "test first N"


@dataclass
class LandscapeResult:
    """The landscape of one checkpoint: ``losses[direction][point]`` at ``alphas[point]``."""

    checkpoint: str
    label: str
    alphas: list[float]
    losses: list[list[float]]
    sharpness: float
    settings: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- directions


def filter_normalized_direction(model: nn.Module, generator: torch.Generator, *, bn_bias: str = "zero") -> dict[str, Tensor]:
    """A random direction in weight space, filter-normalised as in Li et al. 2018 / AWP.

    Returns ``{parameter name: tensor}`` for every parameter of ``model`` (buffers such as BN
    running statistics are not included, so they are never perturbed). ``d ~ N(0, I)`` is drawn
    on the CPU from ``generator``, one tensor per parameter in ``named_parameters`` order (1-D
    ones included, so the draws do not depend on ``bn_bias``). For a tensor with >= 2 dims every
    output filter ``d_j = d[j]`` is rescaled to ``||d_j|| = ||w_j||`` (Frobenius norms; LL adds
    1e-10 to the denominator). Tensors with < 2 dims: ``"zero"`` -> 0, ``"copy"`` -> ``w``.
    The tensors are on each parameter's device and dtype.
    """
    if bn_bias not in BN_BIAS_MODES:
        raise AdvkdError(f"bn_bias must be one of {', '.join(BN_BIAS_MODES)}, got {bn_bias!r}")
    out: dict[str, Tensor] = {}
    for name, p in unwrap(model).named_parameters():
        w = p.detach()
        d = torch.randn(w.shape, generator=generator, dtype=torch.float64)
        w64 = w.to("cpu", torch.float64)
        if w.dim() < 2:
            d = torch.zeros_like(w64) if bn_bias == "zero" else w64.clone()
        else:
            dn = d.flatten(1).norm(dim=1)
            wn = w64.flatten(1).norm(dim=1)
            d = d * (wn / (dn + 1e-10)).reshape([-1] + [1] * (w.dim() - 1))
        out[name] = d.to(device=w.device, dtype=w.dtype)
    return out


def direction_seed(seed: int, index: int) -> int:
    """Seed of direction ``index``: depends on ``(seed, index)`` only, never on the checkpoint."""
    digest = hashlib.blake2b(repr(("landscape-direction", int(seed), int(index))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def alpha_grid(radius: float, points: int) -> list[float]:
    """``linspace(-radius, radius, points)`` with an exact 0.0 in the middle (``points`` odd)."""
    if points < 3 or points % 2 == 0:
        raise AdvkdError(f"landscape points must be an odd number >= 3 so alpha = 0 is on the grid, got {points}")
    if not (radius > 0 and math.isfinite(radius)):
        raise AdvkdError(f"landscape radius must be a positive number, got {radius}")
    n = points - 1
    return [float(radius) * (2 * i - n) / n for i in range(points)]


# ----------------------------------------------------------------------------- loss


def _build(attack: str, eps: str):
    if attack == NO_ATTACK:
        return None
    bounded = ATTACKS.get(attack).default_eps is not None
    return build_attack(attack, eps=eps if bounded else None)


def _fork_rng(device: torch.device):
    devices = [device] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def _adversarial_loss(model: nn.Module, attack, data: TensorData, batch_size: int, device: torch.device, seed: int) -> float:
    """Mean CE over ``data`` on examples crafted against ``model`` as it is now (eval mode)."""
    total, n = 0.0, len(data)
    whole = getattr(attack, "whole_set", False)
    chunk = max(n if whole else batch_size, 1)
    with _fork_rng(device):
        torch.manual_seed(seed)
        for b in range(0, n, chunk):
            e = min(b + chunk, n)
            x = to_float(data.images[b:e].to(device))
            y = data.labels[b:e].to(device)
            x_adv = attack(model, x, y) if attack is not None else x
            with torch.no_grad():
                total += float(F.cross_entropy(model(x_adv), y, reduction="sum"))
    return total / max(n, 1)


def check_settings(*, directions: int, points: int, radius: float, attack: str, eps: str, batch_size: int):
    """(alpha grid, attack) for these settings, or the AdvkdError a bad one deserves: called
    before any checkpoint or data is read."""
    if directions < 1:
        raise AdvkdError(f"landscape directions must be >= 1, got {directions}")
    if batch_size < 1:
        raise AdvkdError(f"batch size must be >= 1, got {batch_size}")
    alphas = alpha_grid(radius, points)
    parse_eps(eps)
    return alphas, _build(attack, eps)


def weight_loss_landscape(
    model: nn.Module,
    data: TensorData,
    *,
    directions: int = 10,
    points: int = 21,
    radius: float = 1.0,
    attack: str = "pgd10",
    eps: str = "8/255",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    bn_bias: str = "zero",
    reporter: Reporter | None = None,
    label: str = "",
) -> tuple[list[float], list[list[float]]]:
    """``(alphas, losses[direction][point])`` of ``model`` on ``data`` (see the module docstring).

    The weights are set to ``w + alpha * d`` from a saved copy of ``w`` at every point and copied
    back bitwise at the end (also on error); the train/eval flags are restored too.
    ``attack="clean"`` gives the natural-loss landscape.
    """
    alphas, atk = check_settings(directions=directions, points=points, radius=radius, attack=attack, eps=eps, batch_size=batch_size)
    if len(data) == 0:
        raise AdvkdError("landscape needs at least one example")
    device = torch.device(device)
    net = unwrap(model)
    params = dict(net.named_parameters())
    saved = {k: p.detach().clone() for k, p in params.items()}
    reporter = reporter or Reporter(enabled=False)
    zero = alphas.index(0.0)
    losses: list[list[float]] = [[math.nan] * points for _ in range(directions)]
    try:
        with training_mode(net, train=False), reporter.task(f"landscape {label}".strip(), total=directions * points, unit="grid points") as task:
            base = _adversarial_loss(net, atk, data, batch_size, device, seed)
            for i in range(directions):
                gen = torch.Generator().manual_seed(direction_seed(seed, i))
                d = filter_normalized_direction(net, gen, bn_bias=bn_bias)
                for j, alpha in enumerate(alphas):
                    if j == zero:
                        losses[i][j] = base
                    else:
                        with torch.no_grad():
                            for k, p in params.items():
                                p.copy_(saved[k] + alpha * d[k])
                        losses[i][j] = _adversarial_loss(net, atk, data, batch_size, device, seed)
                    task.advance(1, direction=i + 1, loss=losses[i][j])
    finally:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(saved[k])
    return alphas, losses


def sharpness(alphas: list[float], losses: list[list[float]]) -> float:
    """One number per checkpoint: the mean over directions of ``max_alpha g(alpha) - g(0)``.

    ``g(0)`` is the loss at the grid point nearest to alpha = 0 (exactly 0 on the grids of
    :func:`alpha_grid`). It is the average worst rise of the adversarial loss within the plotted
    radius (in filter-normalised units); a flatter landscape gives a smaller value, >= 0.
    """
    if not losses or not alphas:
        raise AdvkdError("sharpness needs at least one direction and one alpha")
    zero = min(range(len(alphas)), key=lambda j: abs(alphas[j]))
    rises = [max((v for v in curve if not math.isnan(v)), default=math.nan) - curve[zero] for curve in losses]  # inf stays inf
    return float(sum(rises) / len(rises))


# ----------------------------------------------------------------------------- checkpoints


def _label(meta: dict[str, Any], path: Path) -> str:
    """``rslad resnet8 for resnet18 (mini) epoch 4``: the network drawn, and what it stands for."""
    arch, paper = meta.get("arch") or "?", meta.get("paper_arch") or meta.get("arch") or "?"
    net = arch if arch == paper else f"{arch} for {paper} ({meta.get('scale') or 'reduced scale'})"
    epoch = meta.get("epoch")
    return f"{meta.get('method') or '?'} {net}" + (f" epoch {int(epoch)}" if epoch is not None else f" {path.stem}")


def landscape(
    checkpoints: list[Path],
    *,
    data_dir: str | Path,
    n_examples: int = 1000,
    directions: int = 10,
    points: int = 21,
    radius: float = 1.0,
    attack: str = "pgd10",
    eps: str = "8/255",
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    seed: int = 0,
    bn_bias: str = "zero",
    reporter: Reporter | None = None,
    dataset: str | None = None,
) -> list[LandscapeResult]:
    """Landscapes of ``checkpoints`` on the first ``n_examples`` test images of their dataset.

    All checkpoints must share a dataset. Checkpoints of the same architecture get the same
    random directions (seeded per direction index). Labels are ``"<method> <paper arch> epoch N"``
    (the file stem is appended where two labels would collide).
    """
    if not checkpoints:
        raise AdvkdError("landscape needs at least one checkpoint")
    if n_examples < 1:
        raise AdvkdError(f"landscape --n-examples must be >= 1, got {n_examples}")
    check_settings(directions=directions, points=points, radius=radius, attack=attack, eps=eps, batch_size=batch_size)  # before any loading
    reporter = reporter or Reporter(enabled=False)
    sources = [load_source(path, device=device, dataset=dataset, data_dir=data_dir) for path in checkpoints]  # any model form
    metas = [src.meta for src in sources]
    datasets = sorted({m["dataset"] for m in metas})
    if len(datasets) != 1:
        raise AdvkdError(f"landscape checkpoints must share one dataset to be compared, got {', '.join(datasets)}")
    data = load_split(datasets[0], "test", data_dir)
    data = data.head(min(n_examples, len(data)))
    labels = [_label(m, Path(p)) for m, p in zip(metas, checkpoints)]
    labels = [f"{lab} ({Path(p).stem})" if labels.count(lab) > 1 else lab for lab, p in zip(labels, checkpoints)]
    settings = {
        "directions": directions, "points": points, "radius": float(radius), "attack": attack, "eps": str(eps),
        "n_examples": len(data), "seed": seed, "bn_bias": bn_bias, "data": DATA_SPLIT, "dataset": datasets[0],
        "loss": "mean cross-entropy on adversarial examples regenerated on each perturbed model (eval mode)",
        "direction": "filter-normalised Gaussian (Li et al. 2018), same draws for every checkpoint",
    }
    results = []
    for path, src, meta, label in zip(checkpoints, sources, metas, labels):
        model = src.model
        reporter.log(f"landscape of {path} ({label}): {directions} directions x {points} points on {len(data)} images")
        alphas, losses = weight_loss_landscape(
            model, data, directions=directions, points=points, radius=radius, attack=attack, eps=eps,
            batch_size=batch_size, device=device, seed=seed, bn_bias=bn_bias, reporter=reporter, label=label,
        )
        s = dict(settings, arch=meta.get("arch"), paper_arch=meta.get("paper_arch"), method=meta.get("method"), epoch=meta.get("epoch"),
                 scale=meta.get("scale"))
        results.append(LandscapeResult(str(path), label, alphas, losses, sharpness(alphas, losses), s))
    return results


# ----------------------------------------------------------------------------- files


def json_safe(v: Any) -> Any:
    """Non-finite floats (a diverged loss far from the minimum) become null: strict JSON."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    return v


def _from_json(v: Any) -> float:
    return math.nan if v is None else float(v)


def landscape_json(results: list[LandscapeResult]) -> dict[str, Any]:
    """The JSON document written beside the PNG (non-finite losses as null)."""
    return {"format": FORMAT, "figure": "fig3", "results": [json_safe(asdict(r)) for r in results]}


def load_landscape(path: str | Path) -> list[LandscapeResult]:
    """Read the JSON that :func:`plot_landscape` wrote; AdvkdError when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise AdvkdError(f"landscape data {path} not found")
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError("not an advkd landscape file")
        out = [LandscapeResult(**r) for r in doc["results"]]
        for r in out:
            r.losses = [[_from_json(v) for v in curve] for curve in r.losses]
            r.sharpness = _from_json(r.sharpness)
        return out
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise AdvkdError(f"{path} is not an advkd landscape JSON file ({e})") from None
