"""What this CPU computes fast: the probe behind the CPU defaults of :mod:`advkd.core.accel`.

The CPU defaults follow measurements, not the device type alone (docs/speed.md): on an x86 CPU
with AVX-512 (this project's Zen 4 machine) channels-last tensors made every training step
1.24-1.36x faster and the evaluation attacks 1.2-1.3x; bf16 autocast on top made training
1.8-2.1x faster where the CPU has native bf16 instructions (``avx512_bf16``, AMX; ``bf16`` on
Arm), without costing accuracy at mini scale (benchmarks/README.md). On an AVX2 CPU (Zen 3) channels-last
made training steps 1.10-1.25x and PGD-10 1.37-1.47x faster, while emulated bf16 made a step 8x
slower: where a CPU lacks native bf16 the default stays fp32. Channels-last stays off only on CPUs
nobody has measured (no AVX2, non-x86 vector levels), where ``--channels-last`` turns it on by hand.
"""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

# x86 /proc/cpuinfo "flags" and Arm "Features" that mean bf16 matmuls run natively
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@dataclass(frozen=True)
class CpuProfile:
    """The facts the CPU defaults are decided from: torch's vector level and the CPU's flags."""

    capability: str  # torch.backends.cpu.get_cpu_capability(): AVX512, AVX2, SVE256, DEFAULT, ...
    flags: frozenset[str]

    @property
    def native_bf16(self) -> bool:
        return any(f in self.flags for f in NATIVE_BF16_FLAGS)

    @property
    def channels_last_fast(self) -> bool:
        """Channels-last measured faster: x86 with AVX2 or AVX-512 (oneDNN's NHWC kernels)."""
        return self.capability.upper().startswith(("AVX512", "AVX2"))

    def reason(self, *, channels_last: bool, amp: bool) -> str:
        """Why the CPU defaults are what they are, for the run's first lines."""
        bf16 = next((f for f in NATIVE_BF16_FLAGS if f in self.flags), None)
        what = f"{self.capability} {'with' if bf16 else 'without'} native bf16{f' ({bf16})' if bf16 else ''}"
        return what if channels_last or amp else f"{what}, no measured faster path"


def parse_cpuinfo(text: str) -> frozenset[str]:
    """The first processor's feature flags (x86 ``flags``, Arm ``Features``) of /proc/cpuinfo text."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def _flags() -> frozenset[str]:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return frozenset()


def _capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - torch builds without the probe: no measured fast path
        return platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def probe() -> CpuProfile:
    """This machine's profile (read once per process)."""
    return CpuProfile(capability=_capability(), flags=_flags())
