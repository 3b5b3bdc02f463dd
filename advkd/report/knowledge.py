"""B-MTARD Table I: the teachers' knowledge scale.

Knowledge scale (B-MTARD paper Sec. 3.2.1, App. A Eqs. 23-27; multi-teacher spec Eqs. 6-7):
``KS = log C - H(softmax(z / τ))``, H the Shannon entropy in nats, averaged over the examples.
A one-hot-like teacher has KS ≈ log C, a uniform one 0.

Table I shows each teacher **before balance** (τ = 1) and **after balance** (the final
temperatures of a B-MTARD run: ``tau_nat`` for the clean teacher, ``tau_adv`` for the robust
one, from the run's method state). As Entropy-Based Balance measures them, the clean teacher sees
clean images and the robust teacher the student's adversarial images.
:func:`knowledge_records` turns those logits into the records that fill Table I; the caller
(the CLI) resolves the teachers, computes the logits and appends the records to results.jsonl.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from advkd.core.errors import AdvkdError
from advkd.report.match import KNOWLEDGE_KIND

if TYPE_CHECKING:
    import torch


def knowledge_scale(logits: torch.Tensor, temperature: float = 1.0) -> float:
    """``log C`` minus the mean Shannon entropy (nats) of ``softmax(logits / temperature)`` over the batch.

    ``logits`` is ``(N, C)``. No smoothing constant (unlike the EBB update, which adds 1e-5 inside
    the log as the reference code does).
    """
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        raise AdvkdError(f"knowledge scale needs logits of shape (N, C) with N >= 1 and C >= 2, got {tuple(logits.shape)}")
    if not temperature > 0:
        raise AdvkdError(f"knowledge scale temperature must be > 0, got {temperature}")
    import torch  # deferred: ``advkd report list`` should not pay for importing torch

    z = logits.detach().double() / float(temperature)
    logp = torch.log_softmax(z, dim=1)
    entropy = -(logp.exp() * logp).sum(dim=1)  # exp(logp) * logp -> 0 where p underflows to 0
    return math.log(logits.shape[1]) - float(entropy.mean())


def knowledge_records(
    clean_logits: torch.Tensor,
    robust_logits: torch.Tensor,
    *,
    tau_nat: float,
    tau_adv: float,
    meta: dict[str, Any],
) -> list[dict[str, Any]]:
    """The four Table I records of one B-MTARD run.

    ``clean_logits``: clean teacher on clean images; ``robust_logits``: robust teacher on the
    student's adversarial images; ``tau_nat``/``tau_adv``: the run's final temperatures (method
    state). ``meta`` supplies the run's identity as result records carry it: ``dataset``,
    ``teachers`` (role -> {arch, paper_arch, sha256, method}), ``method`` ("bmtard"),
    ``method_params``, ``scale``, ``preset``, ``run``, ``checkpoint``, ``sha256``, ``time``...
    Each record has ``kind="knowledge_scale"``, ``role``, ``balance`` ("before"/"after"),
    ``temperature``, ``value`` and ``n_examples``.
    """
    out = []
    for role, logits, tau in (("clean_teacher", clean_logits, tau_nat), ("robust_teacher", robust_logits, tau_adv)):
        for balance, t in (("before", 1.0), ("after", float(tau))):
            rec = dict(meta)
            rec.update({
                "kind": KNOWLEDGE_KIND, "metric": "knowledge_scale", "attack": None, "role": role, "balance": balance,
                "temperature": t, "value": knowledge_scale(logits, t), "n_examples": int(logits.shape[0]),
            })
            out.append(rec)
    return out
