"""Speed switches that change no algorithm: bf16 autocast, channels-last, torch.compile, malloc.

Each switch resolves once per command into a ``FastPaths`` value (``None`` on the command line
means "the default for this device") that the training loop and the evaluator read; no other
module checks the device to decide how fast to go. CUDA: everything on. CPU: what the CPU
measures faster (:mod:`advkd.core.cpu`): channels-last on AVX-512 CPUs, bf16 autocast of the
training forwards where bf16 is native, never torch.compile (it does not pay back within a mini
run, docs/speed.md); evaluation stays fp32 unless asked.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from advkd.core.errors import AdvkdError, spell

NOT_SWITCHES = ("open", "remeasure", "why")  # FastPaths fields that say how the switches were decided
MEASURED = ("amp", "channels_last")
PATHS_MODES = ("auto", "measure", "exact")  # --paths / ADVKD_PATHS  # the switches a measurement decides when a command leaves them unset


@dataclass(frozen=True)
class FastPaths:
    """Resolved speed switches. ``amp`` is bf16 autocast of forward passes (training only unless
    asked for evaluation); ``data_on_device`` keeps the uint8 training set on the device (pinned
    host memory and asynchronous copies otherwise); ``fold_bn`` evaluates a copy of the model with
    each eval-mode BatchNorm folded into the convolution before it (the same function, one pass
    fewer per layer; training never folds); ``freeze`` answers that copy's no-grad forwards with a
    frozen TorchScript copy (:mod:`advkd.core.frozen`; CPU default, unmeasured on CUDA).

    ``open`` names the switches the command left unset: their values here are the device's prior
    (:func:`device_defaults`) until a command that runs steps measures them
    (:mod:`advkd.core.speed_choice`, ``remeasure`` forcing a new measurement); ``why`` says how the
    values were decided, for the run's first line. None of the three is a speed switch: they are not
    compared and not recorded."""

    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    data_on_device: bool = True
    fold_bn: bool = True
    freeze: bool = True
    open: tuple[str, ...] = field(default=(), compare=False)
    remeasure: bool = field(default=False, compare=False)
    why: str = field(default="", compare=False)

    def as_record(self) -> dict[str, bool]:
        return {k: v for k, v in asdict(self).items() if k not in NOT_SWITCHES}

    @property
    def precision(self) -> str:
        return "bf16-autocast" if self.amp else "fp32"

    @property
    def memory_format(self) -> str:
        return "channels-last" if self.channels_last else "NCHW"

    def describe(self) -> str:
        """What runs, in the words of the run's first lines: ``bf16-autocast, channels-last``."""
        return ", ".join([self.precision, self.memory_format] + (["compiled"] if self.compile else []))


def resolve_fast_paths(
    device: torch.device,
    *,
    amp: bool | None = None,
    channels_last: bool | None = None,
    compile: bool | None = None,
    data_on_device: bool | None = None,
    fold_bn: bool | None = None,
    freeze: bool | None = None,
    amp_default: bool | None = None,
    paths: str | None = None,
) -> FastPaths:
    """Fill unset switches with the device's defaults (:func:`device_defaults`; data on the
    device everywhere). ``amp_default`` overrides the amp default (evaluation keeps fp32 unless asked).
    ``paths`` (None: ``$ADVKD_PATHS``, else "auto") says how unset ``amp`` and ``channels_last`` are
    decided on a CPU or a GPU: "auto" leaves them ``open`` to the cached or a new measurement,
    "measure" to a new one, "exact" sets them to fp32 NCHW without measuring."""
    paths = paths or os.environ.get("ADVKD_PATHS") or "auto"
    if paths not in PATHS_MODES:
        raise AdvkdError(f"{spell('--paths', 'paths (ADVKD_PATHS)')} must be one of {', '.join(PATHS_MODES)}, got {paths!r}")
    if paths == "exact":
        exact = resolve_fast_paths(device, amp=False if amp is None and amp_default is None else amp, channels_last=bool(channels_last),
                                   compile=compile, data_on_device=data_on_device, fold_bn=fold_bn, freeze=freeze,
                                   amp_default=amp_default, paths="auto")
        return dataclasses.replace(exact, why="" if (amp is not None and channels_last is not None) else "--paths exact: no measurement")
    if amp and device.type not in ("cuda", "cpu"):
        raise AdvkdError(f"{spell('--amp', 'amp=True')} needs a CUDA or CPU device, not {device.type}")
    if compile and not hasattr(nn.Module, "compile"):
        raise AdvkdError(f"{spell('--compile', 'compile=True')} needs torch >= 2.2 (nn.Module.compile)")
    default = device_defaults(device)
    unset = {"amp": amp is None and amp_default is None, "channels_last": channels_last is None}
    measurable = device.type in ("cpu", "cuda")
    return FastPaths(
        open=tuple(k for k in MEASURED if unset[k]) if measurable else (),
        remeasure=paths == "measure",
        amp=(default.amp if amp_default is None else amp_default) if amp is None else amp,
        channels_last=default.channels_last if channels_last is None else channels_last,
        compile=default.compile if compile is None else compile,
        data_on_device=True if data_on_device is None else data_on_device,
        fold_bn=True if fold_bn is None else fold_bn,
        freeze=default.freeze if freeze is None else freeze,
    )


def device_defaults(device: torch.device) -> FastPaths:
    """The switches a command uses when none is given. CUDA: bf16, channels-last and compile
    (no frozen copy: unmeasured there). CPU: channels-last where the CPU has AVX-512 and bf16
    autocast where bf16 is native (:mod:`advkd.core.cpu`, measured); compile never (its
    compile time outweighs a mini run's gain). Other devices: the plain path."""
    if device.type == "cuda":
        return FastPaths(amp=True, channels_last=True, compile=True, freeze=False)
    if device.type == "cpu":
        from advkd.core.cpu import probe

        cpu = probe()
        return FastPaths(amp=cpu.native_bf16, channels_last=cpu.channels_last_fast, compile=False, freeze=True)
    return FastPaths()


def defaults_note(device: torch.device, paths: FastPaths, *, evaluation: bool = False) -> str:
    """One line for the start of a run (or an attack, ``evaluation``: fp32 by default): what runs
    and why (measured, cached, as a resumed run's epochs ran, as asked, or, for a switch an attack
    leaves to the CPU, what the CPU has), with the flags that restore fp32 NCHW."""
    why = paths.why
    if not why and device.type == "cpu":
        if not paths.open:
            why = "as asked"
        else:
            from advkd.core.cpu import probe

            default = device_defaults(device)
            if evaluation:
                default = dataclasses.replace(default, amp=False)
            chosen = "the CPU defaults" if (paths.amp, paths.channels_last) == (default.amp, default.channels_last) else "as asked"
            why = f"{chosen}; this CPU: {probe().reason(channels_last=default.channels_last, amp=default.amp)}"
    restore = " ".join(f for f, on in (("--no-amp", paths.amp), ("--no-channels-last", paths.channels_last)) if on)
    return f"speed paths: {paths.describe()}{f' ({why})' if why else ''}{f'; {restore} for fp32 NCHW' if restore and why else ''}"


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """bf16 autocast on ``device`` when enabled (no GradScaler: bf16 keeps fp32's exponent range).
    Models prepared with ``amp`` return fp32 logits (``fp32_logits``), so every loss, softmax and
    balancer statistic is computed in fp32 on any device (CPU autocast would keep them in bf16)."""
    if not enabled:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


def _logits_to_fp32(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def fp32_logits(model: nn.Module) -> nn.Module:
    """Cast the model's output to fp32 (a forward hook, once per module; parameter names and
    checkpoints unchanged): under autocast the layers run in bf16, the losses do not."""
    if not getattr(model, "_advkd_fp32_logits", False):
        model.register_forward_hook(_logits_to_fp32)
        model._advkd_fp32_logits = True
    return model


FLAGS = {"amp": "--no-amp", "channels_last": "--no-channels-last", "compile": "--no-compile"}  # the switches, in the order they are applied


def apply_to_model(model: nn.Module, paths: FastPaths, *, compile_backend: str | None = None) -> nn.Module:
    """Channels-last weights, fp32 logits under amp, and an in-place compiled forward
    (``nn.Module.compile`` keeps the parameter names, so checkpoints and state dicts are
    unchanged). Returns the same module."""
    for name in FLAGS:
        if getattr(paths, name):
            _enable(name, model, compile_backend=compile_backend)
    return model


def _enable(name: str, model: nn.Module, *, compile_backend: str | None = None) -> None:
    if name == "amp":
        fp32_logits(model)
    elif name == "channels_last":
        model.to(memory_format=torch.channels_last)
    elif name == "compile":
        model.compile(**({"backend": compile_backend} if compile_backend else {}))


def _disable(name: str, model: nn.Module) -> None:
    if name == "channels_last":
        model.to(memory_format=torch.contiguous_format)
    elif name == "compile":
        model._compiled_call_impl = None  # what nn.Module.compile set: back to the eager forward
    # amp: the fp32-logits hook is a no-op without autocast


def _trial_step(student: nn.Module, teachers: list[nn.Module], x: torch.Tensor, paths: FastPaths, device: torch.device) -> None:
    """One train-mode forward and backward of the student and a forward of each teacher, with
    the student's parameters, BN statistics and gradients put back as they were."""
    saved = {k: v.detach().clone() for k, v in student.state_dict().items()}
    was_training = student.training
    try:
        student.train()
        with autocast(device, paths.amp):
            out = student(to_memory_format(x, paths))
            with torch.no_grad():
                for t in teachers:
                    t(to_memory_format(x, paths))
        out.float().sum().backward()
    finally:
        student.load_state_dict(saved)
        student.zero_grad(set_to_none=True)
        student.train(was_training)


def apply_checked(
    paths: FastPaths, device: torch.device, student: nn.Module, teachers: list[nn.Module], x: torch.Tensor, warn,
) -> FastPaths:
    """Turn the switches of ``paths`` on one at a time (amp, channels-last, compile), each checked
    by a trial step on the batch ``x``; a switch whose trial raises (an inductor without a C
    compiler, an op bf16 lacks, a torch version quirk) is turned back off with ONE warning that
    names the flag, and training goes on with the plain path. Returns the switches really on —
    what checkpoints and records must report. Without any switch on (the CPU default) nothing runs.
    """
    effective = dataclasses.replace(paths, amp=False, channels_last=False, compile=False)
    models = [student, *teachers]
    for name in FLAGS:
        if not getattr(paths, name):
            continue
        candidate = dataclasses.replace(effective, **{name: True})
        try:
            for m in models:
                _enable(name, m)
            _trial_step(student, teachers, x, candidate, device)
        except Exception as e:  # noqa: BLE001 - any failure of an optional speed path falls back to the plain path
            for m in models:
                _disable(name, m)
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
            warn(f"{FLAGS[name][5:]} failed on this machine ({reason}); continuing without it (pass {FLAGS[name]} to skip the attempt)")
            continue
        effective = candidate
    return effective


def eval_model(model: nn.Module, paths: FastPaths) -> nn.Module:
    """The module evaluation should call: ``model`` itself, or (``fold_bn``, eval mode) a traced
    copy with conv->BN pairs folded, whose no-grad forwards go through a frozen copy when
    ``freeze`` is on and amp is off (channels-last weights with ``channels_last``). Pre-activation BNs (BN before its conv) stay as they are;
    a model torch.fx cannot trace is evaluated unfolded. ``model`` is never modified."""
    net = _folded(model) if paths.fold_bn and not model.training else model
    if net is not model and paths.channels_last:
        net.to(memory_format=torch.channels_last)  # the folded weights follow the inputs' layout
    if net is not model and paths.freeze and not paths.amp:
        from advkd.core.frozen import FrozenInference

        net = FrozenInference(net)
    return fp32_logits(net) if paths.amp else net


def _folded(model: nn.Module) -> nn.Module:
    """An eval-only traced copy of ``model`` with conv->BN pairs fused, or ``model`` if untraceable."""
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(model, inplace=False)
    except Exception:  # untraceable (data-dependent control flow): evaluate as is  # noqa: BLE001
        return model
    folded.eval()
    folded.requires_grad_(False)  # evaluation needs input gradients only
    return folded


def to_memory_format(x: torch.Tensor, paths: FastPaths) -> torch.Tensor:
    """Inputs follow the weights' layout, so the first convolution needs no conversion."""
    if paths.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def is_channels_last(x: torch.Tensor) -> bool:
    """A 4-D tensor laid out channels-last (and not also plain contiguous, as 1x1 images are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _ChannelsLastInside(torch.autograd.Function):
    """Channels-last on the way in, a contiguous (NCHW) gradient on the way out."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad.contiguous()


class NCHWBoundary(nn.Module):
    """``model`` seen from outside as an NCHW network: inputs and input gradients contiguous,
    channels-last inside. For libraries that reshape tensors with ``.view`` (pyautoattack's
    gradient checks), which fail on channels-last strides."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.model(_ChannelsLastInside.apply(x) if x.dim() == 4 else x)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


_MALLOC_TUNED: bool | None = None  # once per process: the first call decides


def tune_malloc() -> bool:
    """Keep freed activation buffers in the heap instead of returning them to the kernel.

    glibc maps every block over its (adaptive) mmap threshold afresh and unmaps it on free, so a
    training step on the CPU page-faults on each of its large activations (~460k faults per AdaAD
    step on the mini nets, 20-30 % of the step). Raising both thresholds makes the allocator reuse
    them. No effect on numbers; set ``ADVKD_NO_MALLOPT=1`` to skip. Returns whether it applied.
    Applied once per process by every entry point that runs work: the CLI, ``advkd.train``,
    ``advkd.evaluate`` and the ``advkd.api`` functions.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        _MALLOC_TUNED = _mallopt()
    return _MALLOC_TUNED


def _mallopt() -> bool:
    if os.environ.get("ADVKD_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads: ``--threads N`` / ``ADVKD_THREADS`` (default: torch's, one per core).

    Why: two advkd processes with all cores each run at a fraction of their speed (they fight for
    the same cores); ``--threads`` splits the machine between them."""
    if threads is None and os.environ.get("ADVKD_THREADS"):
        threads = int(os.environ["ADVKD_THREADS"])
    if threads is not None:
        if threads < 1:
            raise AdvkdError(f"{spell('--threads', 'threads (ADVKD_THREADS)')} must be >= 1, got {threads}")
        torch.set_num_threads(threads)
        from advkd.core.idle_cores import fix_threads

        fix_threads()  # the user's count: not changed when other processes take cores


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for result files and per-machine caches."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def busy_machine_warning() -> str:
    """One line when the 1-minute load exceeds the cores this process uses ('' otherwise, or
    with ``ADVKD_NO_LOAD_WARNING=1``): someone else is computing, so timings will be slower."""
    if os.environ.get("ADVKD_NO_LOAD_WARNING") or not hasattr(os, "getloadavg"):
        return ""
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    if load <= cores + 0.5:
        return ""
    from advkd.core.idle_cores import enabled

    did = ("training follows the idle cores (fewer threads while others compute; --threads N fixes the count)" if enabled()
           else f"processes sharing cores should split them (--threads {max(1, cores // 2)} each) or run one after the other")
    return f"the machine is busy (load {load:.1f} on {cores} cores): this run will be slower than usual; {did}"
