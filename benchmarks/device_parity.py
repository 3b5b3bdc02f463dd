"""One method's training steps on a device against the same steps on the CPU (gpu-check part 1).

How the comparison works, and why (measured on the CPU, benchmarks/README.md "gpu-check"):

- **Same noise.** Every random draw (the methods' random starts: ``uniform_``, ``randn_like``,
  ``rand``) is made by the CPU generator from the same seed on both sides and copied to the device
  (:class:`CpuNoise`), so both sides start from bit-identical noise and nothing random is left out of
  the comparison.
- **Lock step.** Step i starts from the same state on both sides: after each comparison the device
  side takes the CPU side's weights, BN buffers, optimizer momentum and method state. PGD moves every
  pixel by alpha * sign(grad); a gradient component within rounding of zero takes the other sign on the
  other device, and every later attack iteration and training step amplifies such flips. Run free,
  3 steps of two correct fp32 implementations that differ only in their kernels (oneDNN NCHW vs
  channels-last) ended with 7-33 % of the adversarial pixels and 1e-3 to 4e-3 of the weights apart for
  every adversarial method. In lock step a device that computes any step differently (a wrong kernel,
  a missed state update, a stale cache) still shows at that step.
- **The attack, twice.** The device's full attack (``perturb``) runs and its x_adv is compared with the
  CPU's, but its pixel agreement is only reported: even from the same state the flips cascade within
  the 10 iterations (across the whole batch when the attack runs in train mode, through BatchNorm's
  batch statistics). What must hold for it: the same perturbation budget and pixel range. The
  gradient itself is checked without the cascade: a one-iteration copy of the method's attack
  (``steps=1``: random start + one signed step, the same loss, mode and clamps) from the same state
  must agree on all but :data:`TOLERANCES` ``x_adv_flip_fraction`` of the pixels. The BN statistics
  that a train-mode attack leaves behind follow its own trajectory: they are reported, then the
  device side takes the CPU's.
- **The update on the same points.** The device computes its loss, backward and optimizer step on the
  CPU's x_adv (moved to the device), so loss, weights, BN buffers, momentum and method state after the
  step differ by the device's arithmetic only, not by the attack's flips.
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from advkd import methods
from advkd.core import accel

SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}  # as benchmarks/cpu_paths.py and bench.py
PLAIN = accel.FastPaths(amp=False, channels_last=False, compile=False)

# Device vs CPU, one fp32 step from the same state, TF32 off, deterministic kernels. Both sides compute the
# same function; only the kernels differ (cuDNN/cuBLAS vs oneDNN/MKL): summation order, blocking,
# algorithm. How far apart that leaves two *correct* fp32 implementations was measured on the CPU with a
# stand-in for the other device: the same steps with oneDNN switched off (torch's native convolutions),
# every method, 3 lock steps each (benchmarks/README.md "gpu-check"). Worst values over all methods:
# loss 2e-5 absolute (1e-5 relative), weights and BN buffers 3.3e-6, method state 2e-6, one attack
# iteration 0.15 % of the pixels flipped (TRADES, whose KL starts at 0), momentum (= gradients) up to
# 1.2e-2 norm-wise: at random init the gradients of a conv before a BN, and of a KL between two
# near-uniform outputs, are small sums of large cancelling terms, so their relative rounding error is
# large (torch's native kernels are 1e-4 from float64 there, oneDNN 7e-6). The tolerances sit 2.5-10x
# above those values (the loss of AdaIAD, a KL of ~0.02, the closest) and below what an error in
# advkd's step moves: one SGD step moves the weights by lr x |grad| ~ 5e-4, so a 2 % error in the update
# is 1e-5; a 1 % loss term moves RSLAD's loss (0.005) by 5e-5; a wrong input gradient flips ~50 % of the
# signs of an attack iteration. Derived on a CPU stand-in for the other device: the first GPU run's
# worst values (in its JSON) should confirm them.
TOLERANCES: dict[str, float] = {
    "loss_rtol": 1e-3,  # loss of the step (on the same x_adv), relative ...
    "loss_atol": 3e-5,  # ... plus absolute: a KL between near-uniform outputs is a small difference of large terms
    "param_rtol": 1e-3,  # weights and BN buffers after the step, element-wise (torch.allclose) ...
    "param_atol": 1e-5,  # ... the update itself is lr x grad ~ 5e-4
    "grad_rtol": 5e-2,  # momentum buffers (accumulated gradients), per tensor: ||dev - cpu|| <= grad_rtol x ||cpu||
    "state_rtol": 1e-3,  # method state numbers (balancer temperatures, class weights), relative, plus param_atol
    "x_adv_atol": 1e-4,  # per pixel ([0, 1] scale): a pixel agrees, or it moved by a flipped step (2 x 2/255)
    "x_adv_flip_fraction": 1e-2,  # one attack iteration: pixels allowed beyond x_adv_atol (gradient signs within rounding of 0)
    "budget_atol": 1e-6,  # full attack: |x_adv - x| within the CPU's largest perturbation, pixels within [0, 1]
}

RANDOM_OPS = frozenset({
    "uniform_", "normal_", "bernoulli_", "random_", "exponential_", "cauchy_", "log_normal_", "geometric_",
    "rand", "randn", "randint", "randperm", "rand_like", "randn_like", "randint_like", "normal", "bernoulli",
    "multinomial", "poisson",
})


class CpuNoise(TorchDispatchMode):
    """Every random draw, on any device, is made by the CPU generator and copied to the tensor's device:
    the CUDA generator (Philox) and the CPU one (Mersenne Twister) give different numbers for one seed.
    In-place draws fill a CPU twin with the target's shape and strides, so the numbers land where the
    CPU side's own draw puts them. ``draws`` counts the intercepted calls."""

    def __init__(self) -> None:
        super().__init__()
        self.draws = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func._overloadpacket.__name__ not in RANDOM_OPS:
            return func(*args, **kwargs)
        self.draws += 1
        cpu = torch.device("cpu")
        to_cpu = lambda t: t.cpu() if isinstance(t, torch.Tensor) else t  # noqa: E731
        if func._schema.name.endswith("_"):  # in place
            target = args[0]
            twin = torch.empty_strided(target.shape, target.stride(), dtype=target.dtype, device=cpu)
            func(twin, *tree_map(to_cpu, tuple(args[1:])), **tree_map(to_cpu, kwargs))
            target.copy_(twin)
            return target
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        where = kwargs.get("device") or (tensors[0].device if tensors else cpu)
        kw = tree_map(to_cpu, kwargs)
        if "device" in kw:
            kw["device"] = cpu
        if "pin_memory" in kw:
            kw["pin_memory"] = False
        out = func(*tree_map(to_cpu, tuple(args)), **kw)
        return tree_map(lambda t: t.to(where) if isinstance(t, torch.Tensor) else t, out)


@contextlib.contextmanager
def deterministic(*, warn_only: bool = False) -> Iterator[None]:
    """fp32 and deterministic kernels: TF32 off for matmuls and convolutions, cuDNN deterministic and
    not benchmarking, ``torch.use_deterministic_algorithms``. ``CUBLAS_WORKSPACE_CONFIG`` must be set
    before cuBLAS starts (gpu_check sets it in the child's environment). Restored on exit."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
             torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision())
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.deterministic,
         torch.backends.cudnn.benchmark) = saved[2:6]
        torch.set_float32_matmul_precision(saved[6])


def method_step(m: Any, student: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                paths: accel.FastPaths, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of advkd's training loop (``training.loop.train_epoch``; the step ``cpu_paths.training_step``
    times): inputs in the paths' memory format, perturb and loss under autocast, then zero_grad, backward
    and the optimizer step outside it. Returns (loss, x_adv), detached. :class:`Side` runs the same
    calls in two halves (``perturb``, ``update``) so the comparison can look between them."""
    xb = accel.to_memory_format(x, paths)
    with accel.autocast(device, paths.amp):
        x_adv = m.perturb(student, xb, y)
        loss, _ = m.loss(student, xb, x_adv, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach(), x_adv.detach()


def cases() -> list[tuple[str, str, int]]:
    """(row key, method, 0-indexed epoch): every registered method at epoch 0, and each method with an
    introspection phase (a ``begin`` parameter) once more at ``begin``, where its loss changes."""
    out = [(name, name, 0) for name in methods.list_methods()]
    for name in methods.list_methods():
        begin = getattr(methods.METHODS.get(name).Params(), "begin", None)
        if begin:
            out.append((f"{name}@epoch{begin}", name, int(begin)))
    return out


def numbers(tree: Any, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON-like method state, flattened: ``{"balancer.t": 1.0, ...}``."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in numbers(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in numbers(sub, f"{prefix}{i}.").items()}
    if isinstance(tree, torch.Tensor):
        return {f"{prefix}{i}": float(v) for i, v in enumerate(tree.detach().cpu().flatten().tolist())}
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix.rstrip("."): float(tree)}
    return {}


class Side:
    """One side of the comparison: copies of the models on ``device``, the method, the optimizer, and a
    one-iteration copy of the method's attack (``probe``; None for teacher- and attack-free methods)."""

    def __init__(self, name: str, epoch: int, models: dict[str, torch.nn.Module], device: torch.device,
                 place: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> None:
        place = place or (lambda module: module.to(device))
        self.device = device
        self.student = place(copy.deepcopy(models["student"])).train()
        teachers = {r: place(copy.deepcopy(models[r])).eval().requires_grad_(False) for r in methods.method_roles(name)}
        self.method = methods.build(name, teachers=teachers, num_classes=10, dataset="cifar10")
        self.method.start_epoch(epoch, 1.0)
        self.probe = None
        if getattr(self.method.p, "steps", 0):
            self.probe = methods.build(name, teachers=teachers, num_classes=10, dataset="cifar10", steps=1)
            self.probe.start_epoch(epoch, 1.0)
        self.opt = torch.optim.SGD(self.student.parameters(), **SGD)

    def one_iteration(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor | None:
        """x_adv of the one-iteration attack from the current state; the student's buffers (a train-mode
        attack updates BN statistics) and mode are put back."""
        if self.probe is None:
            return None
        buffers = {k: v.clone() for k, v in self.student.named_buffers()}
        torch.manual_seed(seed)
        with CpuNoise():
            x_adv = self.probe.perturb(self.student, x.to(self.device), y.to(self.device)).detach()
        with torch.no_grad():
            for k, v in self.student.named_buffers():
                v.copy_(buffers[k])
        self.student.train()
        return x_adv.cpu()

    def perturb(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        """The first half of a training step (:func:`method_step`): the method's attack on this batch."""
        torch.manual_seed(seed)
        self.x, self.y = x.to(self.device), y.to(self.device)  # one object for perturb and loss: the methods cache teacher outputs per batch object
        with CpuNoise() as noise, accel.autocast(self.device, PLAIN.amp):
            x_adv = self.method.perturb(self.student, self.x, self.y)
        self.draws = noise.draws
        return x_adv.detach().cpu().contiguous()

    def update(self, x_adv: torch.Tensor, seed: int) -> dict[str, Any]:
        """The second half: loss on ``x_adv`` (moved to this side's device), backward, optimizer step; the state after it."""
        torch.manual_seed(seed)
        with CpuNoise() as noise:
            with accel.autocast(self.device, PLAIN.amp):
                loss, _ = self.method.loss(self.student, self.x, x_adv.to(self.device), self.y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        momentum = {f"momentum.{name}": self.opt.state[p]["momentum_buffer"].detach().cpu()
                    for name, p in self.student.named_parameters() if self.opt.state.get(p, {}).get("momentum_buffer") is not None}
        return {"loss": loss.detach().cpu().reshape(1), "state": {k: v.detach().cpu() for k, v in self.student.state_dict().items()},
                "momentum": momentum, "method_state": numbers(self.method.state_dict()), "draws": self.draws + noise.draws}

    def buffers(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.student.named_buffers()}

    def take_buffers(self, other: Side) -> None:
        with torch.no_grad():
            for k, v in other.student.named_buffers():
                self.student.get_buffer(k).copy_(v)

    def take(self, other: Side) -> None:
        """Continue from ``other``'s state: weights, BN buffers, optimizer momentum (deep-copied: on one
        device ``load_state_dict`` would share the buffers) and method state."""
        self.student.load_state_dict(other.student.state_dict())
        self.opt.load_state_dict(copy.deepcopy(other.opt.state_dict()))
        self.method.load_state_dict(copy.deepcopy(other.method.state_dict()))


def lockstep(name: str, epoch: int, models: dict[str, torch.nn.Module], batches: list[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device, seed: int, tol: dict[str, float],
             place: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> dict[str, Any]:
    """``len(batches)`` steps of method ``name`` on the CPU and on ``device`` in lock step (module docstring),
    compared after every step; ``place`` puts a model on the device side (default ``.to(device)``)."""
    cpu = Side(name, epoch, models, torch.device("cpu"))
    dev = Side(name, epoch, models, device, place)
    per_step = []
    for i, (x, y) in enumerate(batches):
        probe = (cpu.one_iteration(x, y, seed + 1000 + i), dev.one_iteration(x, y, seed + 1000 + i))
        adv = (cpu.perturb(x, y, seed + i), dev.perturb(x, y, seed + i))
        buffers = (cpu.buffers(), dev.buffers())
        dev.take_buffers(cpu)  # a train-mode attack updates BN statistics along its own (cascading) trajectory
        ref = cpu.update(adv[0], seed + 2000 + i)
        out = dev.update(adv[0], seed + 2000 + i)  # the update on the CPU's points
        per_step.append(compare(x, ref, out, adv, probe, buffers, tol))
        dev.take(cpu)
    return merge_steps(per_step)


def compare(x: torch.Tensor, ref: dict[str, Any], dev: dict[str, Any], adv: tuple[torch.Tensor, torch.Tensor],
            probe: tuple[torch.Tensor | None, torch.Tensor | None], buffers: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
            tol: dict[str, float]) -> dict[str, Any]:
    """One device step against the same CPU step within ``tol`` (:data:`TOLERANCES`): ``ref`` / ``dev`` the
    state after the update, ``adv`` the two attacks' points, ``probe`` the one-iteration attacks' points,
    ``buffers`` the BN buffers after the two attacks (reported only: they follow each attack's trajectory)."""
    why: list[str] = []
    loss_diff = float((dev["loss"] - ref["loss"]).abs().max())
    if not loss_diff <= tol["loss_atol"] + tol["loss_rtol"] * float(ref["loss"].abs().max()):
        why.append(f"loss differs by {loss_diff:.3g}")
    # the one-iteration attack: gradient signs
    first_beyond = 0.0
    if probe[0] is not None:
        first_beyond = float(((probe[1] - probe[0]).abs() > tol["x_adv_atol"]).float().mean())
        if not first_beyond <= tol["x_adv_flip_fraction"]:
            why.append(f"one attack iteration: {first_beyond:.2%} of the pixels differ")
    # the full attack: budget and range must hold; pixel agreement is reported
    xr, xd = adv
    budget = float((xr - x).abs().max())
    over = float((xd - x).abs().max()) - budget
    lo, hi = min(0.0, float(xr.min())), max(1.0, float(xr.max()))
    if over > tol["budget_atol"] or float(xd.min()) < lo - tol["budget_atol"] or float(xd.max()) > hi + tol["budget_atol"]:
        why.append(f"x_adv leaves the CPU's budget {budget:.4g} by {over:.3g} or the pixel range [{lo:g}, {hi:g}]")
    x_diff = (xd - xr).abs()
    # weights and BN buffers element-wise, momentum norm-wise, method state
    bad, worst_param, worst_grad = [], 0.0, 0.0
    for k, r in ref["state"].items():
        d = dev["state"][k]
        if not r.is_floating_point():
            if not torch.equal(r, d):
                bad.append(k)
            continue
        if d.numel():
            worst_param = max(worst_param, float((d - r).abs().max()))
        if not torch.allclose(d, r, rtol=tol["param_rtol"], atol=tol["param_atol"]):
            bad.append(k)
    for k, r in ref["momentum"].items():
        d = dev["momentum"].get(k)
        err = math.inf if d is None else float((d - r).norm()) / max(float(r.norm()), 1e-30)
        worst_grad = max(worst_grad, err if float(r.norm()) > 0 else 0.0)
        if d is None or float((d - r).norm()) > tol["grad_rtol"] * float(r.norm()):
            bad.append(k)
    after_attack = max((float((buffers[1][k] - v).abs().max()) for k, v in buffers[0].items() if v.is_floating_point() and v.numel()),
                       default=0.0)
    ms_ref, ms_dev = ref["method_state"], dev["method_state"]
    state_diff = max((abs(ms_dev.get(k, math.nan) - v) for k, v in ms_ref.items()), default=0.0)
    bad += [f"method.{k}" for k, v in ms_ref.items() if not abs(ms_dev.get(k, math.nan) - v) <= tol["param_atol"] + tol["state_rtol"] * abs(v)]
    bad += [f"method.{k}" for k in sorted(set(ms_dev) - set(ms_ref))]
    if bad:
        why.append(f"{len(bad)} tensors beyond tolerance ({', '.join(bad[:3])})")
    if ref["draws"] != dev["draws"]:
        why.append(f"random draws differ: {ref['draws']} on the CPU, {dev['draws']} on the device")
    return {
        "pass": not why,
        "why": "; ".join(why),
        "loss_cpu": float(ref["loss"][0]),
        "loss_device": float(dev["loss"][0]),
        "loss_abs_diff": loss_diff,
        "one_iteration_fraction_beyond_atol": first_beyond,
        "x_adv_fraction_beyond_atol": float((x_diff > tol["x_adv_atol"]).float().mean()),
        "x_adv_max_abs_diff": float(x_diff.max()),
        "x_adv_budget_excess": over,
        "param_max_abs_diff": worst_param,
        "attack_bn_buffers_max_abs_diff": after_attack,
        "grad_max_rel_norm_diff": worst_grad,
        "method_state_max_abs_diff": state_diff,
        "tensors_beyond_tolerance": bad,
        "random_draws": ref["draws"],
    }


def merge_steps(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the per-step comparisons: the worst value of each measure, the failing steps named."""
    why = [f"step {i + 1}: {s['why']}" for i, s in enumerate(steps) if not s["pass"]]
    row: dict[str, Any] = {"pass": not why, "why": "; ".join(why), "steps": len(steps),
                           "loss_cpu": [s["loss_cpu"] for s in steps], "loss_device": [s["loss_device"] for s in steps],
                           "tensors_beyond_tolerance": sorted({t for s in steps for t in s["tensors_beyond_tolerance"]}),
                           "random_draws": sum(s["random_draws"] for s in steps)}
    for key in ("loss_abs_diff", "one_iteration_fraction_beyond_atol", "x_adv_fraction_beyond_atol", "x_adv_max_abs_diff",
                "x_adv_budget_excess", "param_max_abs_diff", "attack_bn_buffers_max_abs_diff", "grad_max_rel_norm_diff", "method_state_max_abs_diff"):
        row[key] = max(s[key] for s in steps)
    return row
