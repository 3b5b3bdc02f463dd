"""No-grad forwards through a frozen TorchScript copy of the evaluation model.

Score-based attacks (Square's 5000 queries in AutoAttack, RayS, SPSA), FAB's and AutoAttack's
prediction checks and every clean pass call the model under ``torch.no_grad()``. A frozen
TorchScript copy (``torch.jit.freeze`` + ``optimize_for_inference``) answers those calls with the
weights pre-packed for oneDNN and conv+ReLU fused. Measured on a 2-core CPU at batch 4, a
forward is 7-40 % faster than the eager graph's (ResNet-18 and WRN-34-10 7-8 %, ResNet-8 and
MobileNetV2 35-40 %); a whole AutoAttack run on a ResNet-8 is 1.11x faster
(``benchmarks/freeze_ab.py``). Calls that need an input gradient still go through the eager
(folded) graph, so gradients are exactly what they were.

The copy is built lazily, at the ``FREEZE_AFTER``-th no-grad call of the same device, dtype and
rank (a clean pass over a few batches never pays for it; Square's 5000 queries do). It is traced
on (at most) two of the call's images and checked on one against the eager graph, so a trace
that specialised on the batch size or computes something else is never used (that key
then stays on the eager graph). Only a ``torch.fx`` graph is frozen: fx could trace it
symbolically, so it has no data-dependent control flow a TorchScript trace would bake in.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

FREEZE_AFTER = 4  # no-grad calls answered by the eager graph before a frozen copy is built
_FAILED = "failed"  # a key whose copy could not be built or did not match: eager graph for good
_RTOL = 1e-4  # the check tolerates float rounding only (the two differ by ~1e-7 relative)


class FrozenInference(nn.Module):
    """``graph`` for calls that need an input gradient, its frozen copy for the rest.

    ``graph`` is the only child module, so ``parameters()``, ``modules()`` and ``state_dict()``
    are the eager graph's; the frozen copies hold constants only.
    """

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        self._frozen: dict[tuple[Any, ...], Any] = {}
        self._calls: dict[tuple[Any, ...], int] = {}

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() == 0 or x.shape[0] == 0 or torch.is_autocast_enabled(x.device.type):
            return self.graph(x)
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.graph.parameters())):
            return self.graph(x)
        key = (x.device, x.dtype, x.dim())
        frozen = self._frozen.get(key)
        if frozen is None:
            self._calls[key] = calls = self._calls.get(key, 0) + 1
            if calls <= FREEZE_AFTER:
                return self.graph(x)
            frozen = self._frozen[key] = _freeze(self.graph, x)
        if frozen is _FAILED:
            return self.graph(x)
        with torch.no_grad():  # a grad-enabled call without input gradient: the same values, no graph
            return frozen(x)

    @property
    def frozen_keys(self) -> list[tuple[Any, ...]]:
        """The (device, dtype, rank) keys answered by a frozen copy (tests, benchmarks)."""
        return [k for k, v in self._frozen.items() if v is not _FAILED]


def _freeze(graph: nn.Module, x: Tensor) -> Any:
    """The frozen copy of ``graph`` for inputs like ``x``, or ``_FAILED``."""
    sample = x[:2] if len(x) >= 2 else torch.cat([x, x])
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notices: the fallback below covers a removal
            traced = torch.jit.trace(graph, sample, check_trace=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
            want, got = graph(sample[:1]), frozen(sample[:1])  # another batch size than the trace's
    except Exception:  # noqa: BLE001 - an optional speed path: any failure keeps the eager graph
        return _FAILED
    if not isinstance(got, Tensor) or got.shape != want.shape or got.dtype != want.dtype:
        return _FAILED
    if not bool(torch.isfinite(want).all()):  # inf/nan weights or inputs: nothing to compare against
        return _FAILED
    scale = float(want.abs().max()) if want.numel() else 0.0
    if not torch.allclose(got, want, rtol=_RTOL, atol=_RTOL * max(scale, 1.0)):
        return _FAILED
    return frozen
