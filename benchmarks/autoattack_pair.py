"""AutoAttack on the BN-folded model beside one plain ``pyautoattack`` call (the bench's AA pair).

advkd's side is what ``advkd attack`` runs for ``aa``: the model is folded once per call
(``accel.eval_model(model, FastPaths(fold_bn=True))``: a traced copy with each conv->BN pair fused
into the convolution, eval mode, parameters frozen, whose no-grad forwards -- Square's 5000
queries, the prediction checks -- go through a frozen TorchScript copy on the CPU,
:mod:`advkd.core.frozen`) and ``advkd.attacks.build("aa", ...)`` runs the
library's four standard stages one after another on the still-robust points. The other side is
one plain library call on the *unfolded* model in eval mode:
``pyautoattack.AutoAttack(model, norm="Linf", eps=8/255, version="standard", seed=0)
.run_standard_evaluation(x, y, batch_size=bs)``, which also creates (and, unfrozen, accumulates)
FAB's parameter gradients -- part of what a plain call costs, cleared after each call here.

Both sides get the same points, batch size and seed, so they make the same random draws and, up
to float rounding, the same decisions. Folding changes only rounding (the folded weights are
``w * gamma / sqrt(var + eps)``), so the robust flags should be equal; an adversarial example can
still differ where a gradient component lies within rounding of zero and its sign flips an
APGD/FAB step, which sends that point's trajectory elsewhere (to another adversarial example,
or -- rarely -- across a boundary). The result records both: whether the flags are equal (and how
many points differ) and whether the adversarial examples are allclose (``XADV_ATOL``), with the
number of points whose examples differ and whether each such point is adversarial on both sides.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from advkd import attacks
from advkd.attacks import training_mode
from advkd.core import accel
from benchmarks.timing import load_avg, timed

EPS_TEXT = "8/255"
EPS = 8 / 255
SEED = 0
XADV_ATOL = 1e-5  # per pixel; rounding differences of the folded model stay below ~4e-6 on the test nets
UNTRAINED_NOTE = (
    "untrained (random-init) model: APGD-CE breaks almost every clean-correct point, so the later stages get "
    "(almost) nothing to attack and the timing is dominated by APGD-CE; pass --aa-checkpoint for a trained model"
)


def bn_modules(module: nn.Module) -> int:
    """How many BatchNorm modules ``module`` still has (0 once every conv->BN pair is folded)."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def advkd_aa(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int, paths: accel.FastPaths) -> tuple[Tensor, Tensor]:
    """(x_adv, final robust flags) of advkd's staged ``aa`` on the evaluation copy, folding and
    freezing included: ``advkd attack`` builds them once per evaluation, so they are part of what it pays."""
    net = accel.eval_model(model, paths)
    if paths.channels_last and net is not model:  # the copy only (eval_model made it channels-last): the library keeps the model as stored
        x = accel.to_memory_format(x, paths)
    attack = attacks.build("aa", eps=EPS_TEXT, batch_size=batch_size, seed=SEED)
    x_adv = attack(net, x, y)
    return x_adv, attack.stage_flags["square"]


def library_aa(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int) -> tuple[Tensor, Tensor]:
    """(x_adv, robust flags) of one plain ``run_standard_evaluation`` on the unfolded model in eval
    mode. The library reseeds the global RNG; the caller's stream is kept (``fork_rng``), and the
    parameter grads FAB's ``.backward()`` leaves behind are dropped after the call."""
    import pyautoattack

    devices = [torch.cuda.current_device() if x.device.index is None else x.device.index] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), training_mode(model, train=False):
        adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=EPS, version="standard", device=x.device, seed=SEED)
        x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    for p in model.parameters():
        p.grad = None
    return x_adv, y_adv.to(y.device) == y


def compare(model: nn.Module, x: Tensor, y: Tensor, adv_a: tuple[Tensor, Tensor], adv_l: tuple[Tensor, Tensor]) -> dict[str, Any]:
    """Flags and adversarial examples of the two sides, point by point.

    ``advkd_flags_rescored_equal``: advkd's flags (decided by the folded copy) against the unfolded
    model's predictions on advkd's own examples -- False would mean folding moved a point across a
    decision boundary."""
    (xa, fa), (xl, fl) = adv_a, adv_l
    diff = (xa - xl).abs().flatten(1).amax(1) if len(x) else torch.zeros(0)
    differ = diff > XADV_ATOL
    with torch.no_grad(), training_mode(model, train=False):
        rescored = model(xa).argmax(1) == y if len(x) else fa
        lib_pred = model(xl[differ]).argmax(1) if bool(differ.any()) else y[:0]
        ours_pred = model(xa[differ]).argmax(1) if bool(differ.any()) else y[:0]
    return {
        "flags_equal": bool(torch.equal(fa, fl)),
        "flags_differ": int((fa != fl).sum()),
        "advkd_flags_rescored_equal": bool(torch.equal(rescored, fa)),
        "x_adv_allclose": not bool(differ.any()),
        "x_adv_atol": XADV_ATOL,
        "x_adv_points_differ": int(differ.sum()),
        "x_adv_max_abs_diff": float(diff.max()) if len(diff) else 0.0,
        "x_adv_differ_both_adversarial": bool((lib_pred != y[differ]).all() and (ours_pred != y[differ]).all()),
    }


def bench_autoattack(
    model: nn.Module, x: Tensor, y: Tensor, *, pairs: int = 4, batch_size: int = 500, device: torch.device,
    log: Callable[[str], None], fold_bn: bool = True, freeze: bool | None = None, channels_last: bool | None = None,
) -> dict[str, Any]:
    """Time advkd's ``aa`` on the folded copy and one plain library call, alternately
    (advkd, library, advkd, library, ...), ``pairs`` rounds in this process. The first pair is a
    warm-up (first-call costs: allocator growth, oneDNN primitives, library imports) and is
    discarded; ratio = median(library s) / median(advkd s) of the rest (target >= 1.25)."""
    if pairs < 2:
        raise ValueError("bench_autoattack needs pairs >= 2 (the first pair is discarded as warm-up)")
    model = model.to(device).eval()
    x, y = x.to(device), y.to(device)
    paths = accel.resolve_fast_paths(device, fold_bn=fold_bn, freeze=freeze, channels_last=channels_last, amp_default=False)  # as advkd attack
    load_before = load_avg()
    last: dict[str, tuple[Tensor, Tensor]] = {}

    def run_advkd() -> None:
        last["advkd"] = advkd_aa(model, x, y, batch_size=batch_size, paths=paths)

    def run_library() -> None:
        last["library"] = library_aa(model, x, y, batch_size=batch_size)

    t0 = time.perf_counter()
    t_a: list[float] = []
    t_l: list[float] = []
    for _ in range(pairs):
        t_a.append(timed(run_advkd, device))
        t_l.append(timed(run_library, device))
    a_s, l_s = statistics.median(t_a[1:]), statistics.median(t_l[1:])
    ratio = l_s / a_s
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item() if len(x) else float("nan")
    folded = accel.eval_model(model, paths)
    result = {
        "n": len(x),
        "batch_size": batch_size,
        "eps": EPS_TEXT,
        "seed": SEED,
        "pairs": pairs,
        "discarded_pairs": 1,
        "fold_bn": paths.fold_bn,
        "freeze": paths.freeze,
        "channels_last": paths.channels_last,
        "bn_modules": bn_modules(model),
        "bn_modules_after_fold": bn_modules(folded),
        "clean_acc": clean,
        "advkd_s": t_a,
        "library_s": t_l,
        "advkd_s_median": a_s,
        "library_s_median": l_s,
        "ratio": ratio,
        "ratio_min": min(t_l[1:]) / min(t_a[1:]),
        "ratio_pairwise_median": statistics.median(lib / ours for ours, lib in zip(t_a[1:], t_l[1:])),
        "advkd_robust_acc": last["advkd"][1].float().mean().item() if len(x) else float("nan"),
        "library_robust_acc": last["library"][1].float().mean().item() if len(x) else float("nan"),
        **compare(model, x, y, last["advkd"], last["library"]),
        "advkd_spec": f"accel.eval_model(model, FastPaths(fold_bn={paths.fold_bn}, freeze={paths.freeze}, channels_last={paths.channels_last}))"
                      f" + advkd.attacks.build('aa', eps='{EPS_TEXT}', batch_size={batch_size}) (fold and freeze included in the timing)",
        "library_spec": f"pyautoattack.AutoAttack(model, norm='Linf', eps=8/255, version='standard', seed={SEED})"
                        f".run_standard_evaluation(x, y, batch_size={batch_size}) on the unfolded model in eval mode",
        "load_avg_before": load_before,
        "load_avg_after": load_avg(),
        "wall_s": time.perf_counter() - t0,
    }
    log(f"eval aa         advkd {a_s:6.3f} s  library {l_s:6.3f} s  ratio {ratio:4.2f} (min-based {result['ratio_min']:4.2f}, "
        f"{pairs - 1} pairs + 1 warm-up), flags {flags_text(result)}, x_adv {xadv_text(result)}")
    return result


# ============================================================================ inputs, output


def load_points(spec: str | Path, *, n: int, data_dir: str | Path, device: torch.device) -> tuple[nn.Module, Tensor, Tensor, dict[str, Any]]:
    """(model in eval mode, x, y, what they are): a checkpoint as ``advkd attack`` loads it
    (``advkd.evaluation.sources.load_source``: advkd checkpoint, ``ARCH:weights.pt`` or
    ``robustbench:<id>``) and the first ``n`` test images of its dataset, in [0, 1]."""
    from advkd.data.batches import to_float
    from advkd.data.loaders import load_split
    from advkd.evaluation.sources import load_source

    source = load_source(spec, device=device, data_dir=data_dir)
    dataset = source.meta.get("dataset", "cifar10")
    data = load_split(dataset, "test", data_dir).head(n)
    x, y = to_float(data.images).to(device), data.labels.to(device)
    info = {"model": source.meta.get("arch", "?"), "checkpoint": str(spec), "sha256": source.sha256,
            "data": f"first {n} {dataset} test images", "init": "trained"}
    return source.model.eval(), x, y, info


def flags_text(aa: dict[str, Any]) -> str:
    """'equal', or how many robust flags differ between folded advkd and the plain library call."""
    return "equal" if aa["flags_equal"] else f"{aa['flags_differ']} differ"


def xadv_text(aa: dict[str, Any]) -> str:
    """'allclose', or how many points' adversarial examples differ (and whether both are adversarial)."""
    if aa["x_adv_allclose"]:
        return f"allclose (atol {aa['x_adv_atol']:g})"
    both = "both adversarial" if aa["x_adv_differ_both_adversarial"] else "NOT both adversarial"
    return f"{aa['x_adv_points_differ']} points differ (max {aa['x_adv_max_abs_diff']:.3g}, {both})"


def _title(aa: dict[str, Any]) -> str:
    return (f"AutoAttack (standard, eps {aa['eps']}) on {aa['model']} ({aa['init']}; {aa['data']}), batch {aa['batch_size']}, "
            f"medians of {aa['pairs'] - 1} alternated pairs after 1 warm-up")


def rich_table(aa: dict[str, Any], console: Console, target: float) -> None:
    """The bench's Rich table of the pair (green: pyautoattack / advkd >= ``target``)."""
    t = Table(title=f"{_title(aa)}, load {aa['load_avg_before']}", title_justify="left")
    for col in ("advkd aa s (folded)", "pyautoattack s", "ratio", "(min-based)", "robust acc advkd / lib", "flags", "x_adv"):
        t.add_column(col, justify="left" if col in ("flags", "x_adv") else "right")
    style = "green" if aa["ratio"] >= target else "red"
    t.add_row(f"{aa['advkd_s_median']:.3f}", f"{aa['library_s_median']:.3f}", f"[{style}]{aa['ratio']:.2f}x[/]", f"{aa['ratio_min']:.2f}x",
              f"{aa['advkd_robust_acc']:.3f} / {aa['library_robust_acc']:.3f}", flags_text(aa), xadv_text(aa))
    console.print(t)
    if aa.get("note"):
        console.print(f"[yellow]note: {aa['note']}[/]")


def markdown_lines(aa: dict[str, Any]) -> list[str]:
    """The README table of the pair (``python -m benchmarks.bench --markdown FILE``)."""
    return [
        f"{_title(aa)}, load average before/after {aa['load_avg_before']} / {aa['load_avg_after']}:",
        "",
        "| advkd `aa`, folded (s) | plain pyautoattack (s) | pyautoattack / advkd | min-based | robust acc advkd / lib | flags | x_adv |",
        "|---:|---:|---:|---:|---:|---|---|",
        f"| {aa['advkd_s_median']:.2f} | {aa['library_s_median']:.2f} | {aa['ratio']:.2f}x | {aa['ratio_min']:.2f}x | "
        f"{aa['advkd_robust_acc']:.3f} / {aa['library_robust_acc']:.3f} | {flags_text(aa)} | {xadv_text(aa)} |",
    ]
