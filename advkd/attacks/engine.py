"""The one projected-gradient engine, and the base class of the named attacks.

Training inner loops (with their own loss closures) and evaluation attacks both run through
:func:`projected_gradient`, so the cross-cutting rules live here once:

- gradients are taken w.r.t. the input only, with ``torch.autograd.grad`` — never
  ``.backward()`` — so no parameter ``.grad`` is ever created or changed;
- update, then project to the eps-ball around the clean ``x``, then clip to [0, 1]
  (``delta = clamp(x' - x, -eps, eps); x' = clamp(x + delta, 0, 1)``, the advertorch /
  torchattacks order and arithmetic);
- no module mode is changed here: BN mode is part of each method (spec pitfall 5), so callers
  wrap calls in :func:`advkd.attacks.modes.training_mode`. :class:`Attack` does that for
  evaluation (always ``eval()``).

Starts (single-teacher §5 pitfall 6, multi-teacher §12 pitfall 11):
``init="uniform"`` (ARD/IAD unclamped: ``clamp_init=False``; advertorch evaluation PGD clamped),
``init="gaussian"`` = ``x + init_std*N(0, I)`` (AdaAD/TRADES/RSLAD/MTARD: ``clamp_init=False``),
``init="zero"`` = ``x`` itself; or any ``x_init`` of the caller's own.
"""
from __future__ import annotations

import abc
import dataclasses
import typing
from collections.abc import Callable
from fractions import Fraction
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from advkd.attacks.modes import training_mode
from advkd.core.epsilon import Eps, parse_eps
from advkd.core.errors import AdvkdError
from advkd.core.plugins import GROUPS, PluginSource, check_class
from advkd.core.registry import Registry
from advkd.core.settings import check_number, range_of, setting

NORMS = ("Linf", "L2")
INITS = ("uniform", "gaussian", "zero")

# Guards divisions by a per-example norm of zero (zero gradient -> zero L2 step).
_TINY = 1e-12


def canonical_norm(norm: str) -> str:
    """"linf"/"Linf" -> "Linf", "l2"/"L2" -> "L2"; AdvkdError for anything else."""
    for n in NORMS:
        if str(norm).lower() == n.lower():
            return n
    raise AdvkdError(f"unknown norm {norm!r}; valid: {', '.join(NORMS)}")


def _per_example(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a (B,) tensor to broadcast over an input batch shaped like ``like``."""
    return v.reshape([-1] + [1] * (like.dim() - 1))


def _l2(t: Tensor) -> Tensor:
    return t.flatten(1).norm(p=2, dim=1)


def project(x_adv: Tensor, x: Tensor, *, eps: float, norm: str = "Linf") -> Tensor:
    """Project ``x_adv`` onto the eps-ball around ``x`` (Linf: clip; L2: rescale), then clip to [0,1]."""
    eps = float(eps)
    delta = x_adv - x
    if canonical_norm(norm) == "Linf":
        delta = delta.clamp(-eps, eps)
    else:
        factor = (eps / _l2(delta).clamp_min(_TINY)).clamp(max=1.0)
        delta = delta * _per_example(factor, x)
    return (x + delta).clamp(0.0, 1.0)


def random_start(
    x: Tensor,
    *,
    eps: float,
    init: str,
    norm: str = "Linf",
    init_std: float = 0.001,
    clamp: bool = True,
) -> Tensor:
    """A starting point for an attack on ``x`` (never mutates ``x``; result detached).

    - ``"uniform"``: Linf: ``x + U(-eps, eps)`` elementwise; L2: ``x`` plus a point drawn
      uniformly from the L2 ball of radius eps (Gaussian direction, radius ``eps*U^(1/d)``);
    - ``"gaussian"``: ``x + init_std * N(0, I)`` (the norm is irrelevant);
    - ``"zero"``: a copy of ``x``.

    ``clamp=True`` clips the result to [0, 1]; ``False`` leaves it as drawn.
    """
    x = x.detach()
    eps = float(eps)
    norm = canonical_norm(norm)
    if init == "uniform":
        if norm == "Linf":
            start = x + torch.empty_like(x).uniform_(-eps, eps)
        else:
            direction = torch.randn_like(x)
            direction = direction / _per_example(_l2(direction).clamp_min(_TINY), x)
            d = x[0].numel() if x.shape[0] else 1
            radius = eps * torch.rand(x.shape[0], device=x.device, dtype=x.dtype) ** (1.0 / d)
            start = x + direction * _per_example(radius, x)
    elif init == "gaussian":
        start = x + init_std * torch.randn_like(x)
    elif init == "zero":
        start = x.clone()
    else:
        raise AdvkdError(f"unknown attack init {init!r}; valid: {', '.join(INITS)}")
    return start.clamp(0.0, 1.0) if clamp else start


def input_gradient(loss_fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``d loss_fn(x) / d x`` via ``torch.autograd.grad`` (parameter ``.grad`` untouched).

    Works inside ``torch.no_grad()`` blocks too (gradients are re-enabled locally).
    """
    with torch.enable_grad():
        x_var = x.detach().clone().requires_grad_(True)
        loss = loss_fn(x_var)
        if loss.dim() != 0:
            raise ValueError(f"the attack loss must be a scalar, got shape {tuple(loss.shape)}; reduce it")
        (grad,) = torch.autograd.grad(loss, x_var)
    return grad


def projected_gradient(
    loss_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "Linf",
    init: str = "uniform",
    init_std: float = 0.001,
    clamp_init: bool = True,
    x_init: Tensor | None = None,
) -> Tensor:
    """Maximise the scalar ``loss_fn(x_adv)`` over the eps-ball around ``x`` by ``steps`` steps.

    Each step: ``g = grad loss_fn(x_k)``; Linf ``x <- x + step_size*sign(g)``, L2
    ``x <- x + step_size*g/||g||_2`` (per example); then project to the ball and clip to [0,1].
    ``loss_fn`` is called exactly once per step, at the iterates ``x_0 .. x_{steps-1}``, so
    callers can record per-iterate predictions. The start is ``x_init`` if given (used as is
    for the first forward), else :func:`random_start` (``clamp_init`` = its ``clamp``).
    ``steps=0`` returns the projected, clipped start. Returns a detached tensor; never mutates
    ``x``; never changes module modes; never touches parameter gradients.
    """
    norm = canonical_norm(norm)
    eps, step_size = float(eps), float(step_size)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = x.detach()
    if x_init is None:
        x_adv = random_start(x, eps=eps, init=init, norm=norm, init_std=init_std, clamp=clamp_init)
    else:
        if x_init.shape != x.shape:
            raise ValueError(f"x_init has shape {tuple(x_init.shape)}, x has {tuple(x.shape)}")
        x_adv = x_init.detach().clone()
    if steps == 0:
        return project(x_adv, x, eps=eps, norm=norm)
    with torch.enable_grad():
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = loss_fn(x_adv)
            if loss.dim() != 0:
                raise ValueError(f"the attack loss must be a scalar, got shape {tuple(loss.shape)}; reduce it")
            (grad,) = torch.autograd.grad(loss, x_adv)
            if norm == "Linf":
                step = step_size * grad.sign()
            else:
                step = step_size * grad / _per_example(_l2(grad).clamp_min(_TINY), grad)
            x_adv = project(x_adv.detach() + step, x, eps=eps, norm=norm)
    return x_adv.detach()


# --------------------------------------------------------------------------------------------
# Named attacks: registry, typed parameters, base class
# --------------------------------------------------------------------------------------------

def adopt_attack(registry: Registry[Any], name: str | None, cls: Any, origin: Any) -> tuple[str, dict[str, Any]]:
    """Check an outside attack class (``advkd.attacks`` entry point or ``module:Class``); its ``id``
    becomes the entry point's name (or, for a spec, stays its own ``id``)."""
    check_class(cls, Attack, "attack", origin, "NoParams when nothing is tunable")
    own = getattr(cls, "id", "") or ""
    if name is None and not own.strip():
        raise AdvkdError(f"attack class {origin.spec} has no id: set the class attribute id = \"...\"")
    if name is not None and own and registry.key(own) != name:
        raise AdvkdError(f"attack class {origin.spec} says id = {own!r} but its entry point is {name!r}: make them the same")
    cls.id = registry.key(name or own)
    return cls.id, {"threat_model": cls.threat_model}


ATTACKS: Registry[type[Attack]] = Registry("attack", PluginSource(GROUPS["attack"], adopt_attack))


def register_attack(name: str, *, aliases: tuple[str, ...] = (), **meta: Any) -> Callable[[type], type]:
    """Register an :class:`Attack` subclass under ``name`` and set its ``id``."""

    def deco(cls: type) -> type:
        cls.id = name
        meta.setdefault("threat_model", cls.threat_model)
        return ATTACKS.register(name, aliases=aliases, **meta)(cls)

    return deco


def param(default: Any, help: str, *, min: float | None = None, gt: float | None = None, le: float | None = None) -> Any:
    """A typed attack parameter: default, one-line help, its range (``min`` inclusive), declared
    in the settings schema every setting uses (:func:`advkd.core.settings.setting`)."""
    return setting(default, help, ge=min, gt=gt, le=le)


@dataclasses.dataclass(frozen=True)
class NoParams:
    """An attack whose id fixes every setting."""


def _bad(attack: str, name: str, expected: str, value: Any) -> AdvkdError:
    return AdvkdError(f"attack {attack!r}: parameter {name} must be {expected}, got {value!r}")


def _coerce(attack: str, name: str, hint: Any, value: Any) -> Any:
    """Convert ``value`` to the field type ``hint`` (int, float, bool, Literal[str...])."""
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        for c in choices:
            if isinstance(value, str) and value.strip().lower() == str(c).lower():
                return c
        raise _bad(attack, name, "one of " + ", ".join(map(str, choices)), value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.strip().lower() in ("true", "1", "yes")
        raise _bad(attack, name, "true or false", value)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
            return int(value)
        raise _bad(attack, name, "an integer", value)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(Fraction(value.strip()))  # "2/255", "0.003", "1e-2"
            except OverflowError:
                raise _bad(attack, name, "a finite number", value) from None
            except (ValueError, ZeroDivisionError):
                pass
        raise _bad(attack, name, "a number (e.g. 0.003 or 2/255)", value)
    raise TypeError(f"unsupported parameter type {hint!r} for {attack}.{name}")


def validate_params(attack: str, params_cls: type, given: dict[str, Any]) -> Any:
    """Build ``params_cls`` from ``given``: unknown names, wrong types, out-of-range -> AdvkdError."""
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        valid = ", ".join(fields) if fields else "none (this id fixes every setting; use 'pgd' to vary them)"
        raise AdvkdError(f"attack {attack!r} has no parameter {', '.join(unknown)}; valid: {valid}")
    hints = typing.get_type_hints(params_cls)
    values = {}
    for name, value in given.items():
        v = _coerce(attack, name, hints[name], value)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                check_number(v, name, range_of(fields[name]))
            except AdvkdError as e:
                raise AdvkdError(f"attack {attack!r}: parameter {e}") from None
        values[name] = v
    return params_cls(**values)


class Attack(abc.ABC):
    """Base of every named attack: eps parsing, typed params, eval-mode switch and restore.

    Subclasses set ``Params`` (a frozen dataclass of the tunable settings, built with
    :func:`param`) and implement :meth:`perturb` (the algorithm only). ``params`` is the full,
    resolved, JSON-serialisable setting dict needed to reproduce the attack; ``threat_model``
    is "Linf", "L2" or "unbounded-L2". Inputs and outputs are images in [0, 1]; any
    normalisation belongs inside the model.
    """

    id: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    threat_model: str = "Linf"  # class default; PGD sets it per instance from its norm
    default_eps: ClassVar[str | None] = "8/255"  # None: the attack is unbounded and takes no eps

    def __init__(self, eps: str | float | Eps | None = None, **params: Any) -> None:
        name = self.id or type(self).__name__
        if self.default_eps is None:
            if eps is not None:
                raise AdvkdError(f"attack {name!r} is unbounded ({self.threat_model}) and takes no eps; drop eps={eps!r}")
            self.eps: Eps | None = None
        else:
            self.eps = parse_eps(self.default_eps if eps is None else eps, what=f"{name} eps")
        self.hparams = validate_params(name, self.Params, params)
        self.given: frozenset[str] = frozenset(params)  # names set explicitly by the caller
        self.params: dict[str, Any] = self.resolve()

    def resolve(self) -> dict[str, Any]:
        """Every setting the algorithm uses (fixed by the id or tuned), JSON-serialisable."""
        return dataclasses.asdict(self.hparams)

    def to_dict(self) -> dict[str, Any]:
        """What to store beside a result: id, eps (text and value), threat model, params."""
        return {
            "attack": self.id,
            "eps": None if self.eps is None else self.eps.text,
            "eps_value": None if self.eps is None else self.eps.value,
            "threat_model": self.threat_model,
            "params": dict(self.params),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        eps = "" if self.eps is None else f"eps={self.eps.text!r}, "
        return f"{type(self).__name__}({eps}{args})"

    def passes_per_point(self) -> float:
        """Rough model passes per attacked point (forward+backward = 1), for the suite's ETA:
        ``steps x restarts + 1`` by default; attacks with another structure override it."""
        steps = self.params.get("steps")
        restarts = self.params.get("restarts") or 1
        return float((steps if isinstance(steps, int) and not isinstance(steps, bool) else 1) * restarts + 1)

    def expected_passes(self, survive: float) -> float:
        """Passes per clean-correct point when a fraction ``survive`` of them resists the attack's
        first stage, for a plan's budget. Single-stage attacks cost the same either way."""
        return self.passes_per_point()

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Attack ``model`` (in eval mode for the duration, restored after) on images ``x`` in [0,1]."""
        if x.numel() and (x.min() < 0 or x.max() > 1):
            raise AdvkdError(
                f"attack {self.id!r}: inputs must be images in [0, 1], got range "
                f"[{x.min().item():.3g}, {x.max().item():.3g}]; put normalisation inside the model"
            )
        if y.shape != x.shape[:1]:
            raise ValueError(f"labels have shape {tuple(y.shape)}, expected ({x.shape[0]},)")
        with training_mode(model, train=False):
            x_adv = self.perturb(model, x.detach(), y.detach())
        return x_adv.detach().clamp(0.0, 1.0)

    @abc.abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The algorithm only: no mode handling (``__call__`` does it)."""
