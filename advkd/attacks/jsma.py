"""JSMA as in the AdaAD transfer table (single-teacher spec §3.2 and pitfall 16)."""
from __future__ import annotations

import dataclasses
from typing import Literal

import torch
from torch import Tensor, nn

from advkd.attacks.engine import Attack, param, register_attack

# Elements of the (k, d, d) pair tensors built at once; bounds the saliency map's memory.
_PAIR_BUDGET = 1 << 25


@dataclasses.dataclass(frozen=True)
class JSMAParams:
    theta: float = param(8 / 255, "added to each chosen feature; UNCONFIRMED: 8/255 (= c) or 0.1")
    gamma: float = param(0.05, "max fraction of features changed: floor(d*gamma/2) iterations of 2", min=0)
    mode: Literal["paper", "targeted-random", "untargeted"] = param(
        "paper", "paper: targets = true labels (AdaAD quirk); targeted-random: random wrong class; untargeted"
    )
    seed: int = param(0, "seed of the random targets (targeted-random only)", min=0)


@register_attack("jsma", kind="white-box")
class JSMA(Attack):
    """JSMA — Papernot et al., "The Limitations of Deep Learning in Adversarial Settings", EuroS&P 2016.

    Norm: L0 (no eps ball: ``threat_model`` "L0", eps not accepted). advertorch's
    ``JacobianSaliencyMapAttack`` as called by ``[AdaAD: eval_utils.py]`` ``test_transfer_robust``
    (single-teacher spec §3.2): clip [0, 1], gamma 0.05, theta = c. Defaults: theta 8/255
    (UNCONFIRMED: c = 8/255 or the 0.1 coefficient), gamma 0.05, ``mode="paper"``.

    Algorithm (written from the spec and advertorch's documented behaviour, vectorised over
    the batch): at most ``floor(d * gamma / 2)`` iterations (d = features per example; 76 for
    CIFAR). Each iteration, for the examples not yet done: a = d z_t / d x and
    b = d (sum_k z_k - z_t) / d x on the logits (two backward passes; advertorch takes C and
    sums them: the same up to float rounding); for every pair (p, q) of distinct features still
    in the search space, ``A = a_p + a_q``, ``B = b_p + b_q``; with theta > 0 the pair is
    admissible if A > 0 and B < 0 (theta <= 0: A < 0 and B > 0) and scores ``-A * B``; the
    best pair (first on ties) gets ``+theta`` on both features, is clipped to [0, 1] and leaves
    the search space (each feature is changed at most once). An example with no admissible
    pair is left as is that iteration. Done: predicted class == target (targeted) or != y
    (untargeted).

    Modes:

    - ``paper``: targeted with the TRUE labels as targets — the AdaAD Table 4 quirk
      (pitfall 16): correctly classified points are left unchanged and misclassified ones are
      pushed toward their true class, so this "attack" never lowers accuracy.
    - ``targeted-random``: a random wrong class per example (``(y + U{1..C-1}) mod C`` drawn
      from a CPU generator seeded with ``seed``) — a real targeted JSMA.
    - ``untargeted``: the roles swapped (a = gradient of the other classes' sum, b = gradient
      of the true class): pairs that raise the others and lower the true logit; stops once
      misclassified.

    The pair map is (d x d) per example; it is built for a few examples at a time (about 2^25
    elements), so CIFAR-size images cost ~9.4 M elements per example per iteration.
    Input range: [0, 1]; output in [0, 1].
    """

    Params = JSMAParams
    threat_model = "L0"
    default_eps = None

    def passes_per_point(self) -> float:
        """Two gradients (target and the other classes) per iteration, at most ``floor(d gamma / 2)``
        iterations of a CIFAR image (d = 3072): an upper bound."""
        return 2 * int(3 * 32 * 32 * self.params["gamma"] / 2)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        p = self.params
        n, shape = x.shape[0], x.shape[1:]
        if n == 0:
            return x.clone()
        d = x[0].numel()
        theta = p["theta"]
        xadv = x.reshape(n, d).clone()
        with torch.no_grad():
            logits = model(x)
        num_classes = logits.shape[1]
        pred = logits.argmax(1)
        mode = p["mode"]
        if mode == "paper":
            target = y.clone()
        elif mode == "targeted-random":
            gen = torch.Generator().manual_seed(p["seed"])
            shift = torch.randint(1, max(num_classes, 2), (n,), generator=gen).to(y.device)
            target = (y + shift) % num_classes
        else:
            target = y.clone()
        untargeted = mode == "untargeted"
        self.targets = None if untargeted else target

        search = torch.ones(n, d, dtype=torch.bool, device=x.device)
        max_iters = int(d * p["gamma"] / 2)
        self.iterations = 0
        for _ in range(max_iters):
            todo = pred.eq(y) if untargeted else pred.ne(target)
            if not todo.any():
                break
            self.iterations += 1
            idx = todo.nonzero().flatten()
            g_t, g_o = self._grads(model, xadv[idx], target[idx], shape)
            if untargeted:  # raise the others, lower the true class
                g_t, g_o = g_o, g_t
            p1, p2, valid = self._best_pairs(search[idx], g_t, g_o, theta > 0)
            upd, p1, p2 = idx[valid], p1[valid], p2[valid]
            if upd.numel():
                search[upd, p1] = False
                search[upd, p2] = False
                xadv[upd, p1] += theta
                xadv[upd, p2] += theta
                xadv[upd] = xadv[upd].clamp(0.0, 1.0)
                with torch.no_grad():
                    pred[upd] = model(xadv[upd].reshape(-1, *shape)).argmax(1)
        return xadv.reshape(x.shape)

    @staticmethod
    def _grads(model: nn.Module, xs: Tensor, target: Tensor, shape: torch.Size) -> tuple[Tensor, Tensor]:
        """Per example: gradient of the target logit, and of the sum of the other logits."""
        with torch.enable_grad():
            xv = xs.detach().clone().requires_grad_(True)
            z = model(xv.reshape(-1, *shape))
            z_t = z.gather(1, target[:, None]).sum()
            (g_t,) = torch.autograd.grad(z_t, xv, retain_graph=True)
            (g_all,) = torch.autograd.grad(z.sum(), xv)
        return g_t, g_all - g_t

    @staticmethod
    def _best_pairs(search: Tensor, a: Tensor, b: Tensor, increase: bool) -> tuple[Tensor, Tensor, Tensor]:
        """The admissible pair with the largest ``-(a_p+a_q)(b_p+b_q)`` per row, and whether one exists."""
        k, d = a.shape
        chunk = max(1, _PAIR_BUDGET // (d * d))
        p1s, p2s, valids = [], [], []
        for i in range(0, k, chunk):
            ai, bi, si = a[i : i + chunk], b[i : i + chunk], search[i : i + chunk]
            big_a = ai[:, :, None] + ai[:, None, :]
            big_b = bi[:, :, None] + bi[:, None, :]
            mask = (big_a > 0) & (big_b < 0) if increase else (big_a < 0) & (big_b > 0)
            mask &= si[:, :, None] & si[:, None, :]
            mask.diagonal(dim1=1, dim2=2).fill_(False)
            valids.append(mask.flatten(1).any(1))
            scores = mask.to(a.dtype) * (-big_a * big_b)
            best = scores.flatten(1).argmax(1)
            p1s.append(best % d)
            p2s.append(torch.div(best, d, rounding_mode="floor"))
        return torch.cat(p1s), torch.cat(p2s), torch.cat(valids)
