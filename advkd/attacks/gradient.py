"""Named gradient attacks: FGSM and the PGD family (CE or CW-inf loss), all on the one engine.

Ids follow ``shared/paper-tables``: ``fgsm``, ``pgd10`` (AdaAD tables), ``pgd20-sat``,
``pgd20-trades``, ``cwinf`` (B-MTARD tables), plus the generic ``pgd``. Every id is white-box,
untargeted, on images in [0, 1], model in ``eval()`` (set and restored by :class:`Attack`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal

from torch import Tensor, nn

from advkd.attacks.engine import Attack, NoParams, input_gradient, param, projected_gradient, register_attack
from advkd.attacks.losses import cross_entropy, cw_margin
from advkd.core.errors import AdvkdError


@dataclasses.dataclass(frozen=True)
class FGSMParams:
    init: Literal["none", "gaussian"] = param(
        "none", "start point: none (advertorch) or gaussian x+0.001*N (Fair-ARD eval.py); UNCONFIRMED"
    )


@register_attack("fgsm", kind="white-box")
class FGSM(Attack):
    """FGSM — Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015.

    Norm: Linf. ``x_adv = clip_[0,1](x + eps * sign(grad_x CE(f(x), y)))``, one step.
    Defaults: eps 8/255; no random start — advertorch ``GradientSignAttack`` as called by the
    AdaAD repo (single-teacher spec §3.1). The B-MTARD paper only names FGSM; its init is
    UNCONFIRMED (multi-teacher §10.1): ``init="gaussian"`` gives the Fair-ARD ``eval.py``
    variant (``x + 0.001*N`` unclamped, one eps sign step, project, clip).
    CE reduction: mean (advertorch sums; a sign step does not see the difference).
    Input range: [0, 1]; output clipped to [0, 1].
    """

    Params = FGSMParams

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        eps = self.eps.value

        def loss(z: Tensor) -> Tensor:
            return cross_entropy(model(z), y)

        if self.params["init"] == "none":
            return (x + eps * input_gradient(loss, x).sign()).clamp(0.0, 1.0)
        return projected_gradient(loss, x, eps=eps, step_size=eps, steps=1, init="gaussian", clamp_init=False)


@dataclasses.dataclass(frozen=True)
class PGDParams:
    steps: int = param(10, "number of gradient steps", min=0)
    step_size: float = param(2 / 255, "Linf: per-pixel sign step; L2: L2 length of each step", min=0)
    norm: Literal["Linf", "L2"] = param("Linf", "threat model of the eps-ball")
    init: Literal["uniform", "gaussian", "zero"] = param("uniform", "random start: U(eps-ball), x+init_std*N, or x")
    init_std: float = param(0.001, "std of the gaussian start", min=0)
    clamp_init: bool = param(True, "clip the start to [0,1] before the first forward")
    loss: Literal["ce", "cw"] = param("ce", "ce: cross-entropy (mean); cw: CW-inf margin loss (sum)")
    kappa: float = param(50.0, "CW confidence (used only with loss=cw)")


@register_attack("pgd", kind="white-box", threat_model="Linf|L2")
class PGD(Attack):
    """PGD — Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.

    Norm: Linf (default) or L2 (``norm="L2"``: normalised-gradient steps, L2-ball projection;
    eps then is an L2 radius — the default 8/255 is meant for Linf, pass e.g. ``eps=0.5``).
    Generic, every setting tunable; update ``x <- clip_[0,1](Proj_eps(x + step))`` with the
    engine's order (project, then clip). Defaults: 10 x 2/255, uniform start clipped to [0,1],
    CE (mean) — advertorch ``LinfPGDAttack`` as in the AdaAD evaluation (single-teacher §3.1).
    ``loss="cw"`` uses the CW-inf margin ``-relu(z_y - max_{k!=y} z_k + kappa)`` summed.
    Input range: [0, 1]; output in [0, 1].
    """

    Params = PGDParams

    def resolve(self) -> dict[str, Any]:
        return self._finish(dataclasses.asdict(self.hparams))

    def _finish(self, p: dict[str, Any]) -> dict[str, Any]:
        """Drop settings the chosen variant does not use; refuse them if given explicitly."""
        given = self.given
        unused = {"kappa": p["loss"] != "cw", "init_std": p["init"] != "gaussian"}
        for key, is_unused in unused.items():
            if is_unused and key in given:
                needs = "loss=cw" if key == "kappa" else "init=gaussian"
                raise AdvkdError(f"attack {self.id!r}: parameter {key} only applies with {needs}")
            if is_unused:
                p.pop(key, None)
        self.threat_model = p["norm"]
        return p

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        p = self.params
        if p["loss"] == "ce":

            def loss(z: Tensor) -> Tensor:
                return cross_entropy(model(z), y)

        else:

            def loss(z: Tensor) -> Tensor:
                return cw_margin(model(z), y, kappa=p["kappa"], reduction="sum")

        return projected_gradient(
            loss, x, eps=self.eps.value, step_size=p["step_size"], steps=p["steps"], norm=p["norm"],
            init=p["init"], init_std=p.get("init_std", 0.001), clamp_init=p["clamp_init"],
        )


class _PresetPGD(PGD):
    """A PGD whose id pins the settings in ``fixed``; only ``Params`` fields are tunable."""

    fixed: dict[str, Any] = {}

    def resolve(self) -> dict[str, Any]:
        return self._finish({**dataclasses.asdict(PGDParams()), **self.fixed, **dataclasses.asdict(self.hparams)})


@register_attack("pgd10", kind="white-box", aliases=("pgd-10",))
class PGD10(_PresetPGD):
    """PGD-10 — Madry et al. 2018, as evaluated in the AdaAD paper (Table 2) and its per-epoch monitor.

    Norm: Linf. Defaults from advertorch ``LinfPGDAttack`` in ``[AdaAD: eval_utils.py]``
    (single-teacher spec §3.1): eps 8/255, 10 steps of eps/4 (= 2/255 at the default eps),
    uniform start in the eps-ball clipped to [0, 1], CE, 1 restart, untargeted.
    Choice: the step is eps/4 (the spec's "step eps/4 = 2/255", also §3.2's "step c/4"), so a
    different eps scales the step. Nothing else is tunable; use ``pgd`` to vary settings.
    Input range: [0, 1].
    """

    Params = NoParams

    def resolve(self) -> dict[str, Any]:
        self.fixed = {"steps": 10, "step_size": self.eps.value / 4, "init": "uniform", "clamp_init": True}
        return super().resolve()


@dataclasses.dataclass(frozen=True)
class InitOnlyParams:
    init: Literal["uniform", "gaussian", "zero"] = param("uniform", "random start (UNCONFIRMED in the paper)")


@register_attack("pgd20-sat", kind="white-box")
class PGD20SAT(_PresetPGD):
    """PGD-20 "SAT" — Madry et al. 2018, as reported in the B-MTARD paper (§4.1).

    Norm: Linf. Defaults (multi-teacher spec §10.1): eps 8/255, 20 steps of 2/255 (absolute,
    not eps-relative), CE; uniform start clipped to [0, 1] (Madry convention; the init is
    UNCONFIRMED, so ``init`` is tunable). Input range: [0, 1].
    """

    Params = InitOnlyParams
    fixed = {"steps": 20, "step_size": 2 / 255, "clamp_init": True}


@register_attack("pgd20-trades", kind="white-box")
class PGD20TRADES(_PresetPGD):
    """PGD-20 "TRADES" — the TRADES evaluation (Zhang et al., ICML 2019) used in the B-MTARD paper.

    Norm: Linf. Defaults (multi-teacher spec §10.1): eps 8/255, 20 steps of 0.003, CE, uniform
    start U(-eps, eps) (the TRADES evaluation and the B-MTARD monitor use a uniform start; the
    0.001*N start belongs to TRADES training). Choice: the start is clipped to [0, 1] as in the
    ECCV/EXT ``attack_pgd`` (§10.2). Nothing is tunable; use ``pgd`` to vary it. Input range [0, 1].
    """

    Params = NoParams
    fixed = {"steps": 20, "step_size": 0.003, "init": "uniform", "clamp_init": True}


@dataclasses.dataclass(frozen=True)
class CWInfParams:
    step_size: float = param(0.031 / 4, "sign step; UNCONFIRMED: 0.031/4 (GAIRAT eval), alternatives 2/255 or 0.003", min=0)
    init: Literal["uniform", "gaussian", "zero"] = param("uniform", "random start (UNCONFIRMED in the paper)")


@register_attack("cwinf", kind="white-box", aliases=("cw-inf",))
class CWInf(_PresetPGD):
    """CW-inf — PGD on the Carlini-Wagner margin loss (Carlini & Wagner, S&P 2017), B-MTARD paper §4.1.

    Norm: Linf. Maximises ``sum_i -relu(z_y - max_{k!=y} z_k + kappa)`` with kappa = 50 and C
    read from the logits (multi-teacher spec §10.1, pitfall 21), 30 sign steps ([PAPER §4.1]).
    Defaults: eps 8/255; step 0.031/4 (the GAIRAT evaluation's value — UNCONFIRMED, tunable;
    alternatives 2/255 [FAIR eval.py] or 0.003); uniform start clipped to [0, 1] (UNCONFIRMED,
    tunable). Not the unbounded CW-L2 of the AdaAD tables (that is ``cw2``). Input range [0, 1].
    """

    Params = CWInfParams
    fixed = {"steps": 30, "clamp_init": True, "loss": "cw", "kappa": 50.0}
