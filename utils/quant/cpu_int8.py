"""Whether this CPU's int8 dot products saturate in onnxruntime's kernels.

On x86 CPUs without VNNI (AVX2 only: older Intel, AMD before Zen 4), onnxruntime's u8 x s8 kernels add
pairs of products in 16 bits (``vpmaddubsw``), which saturates once |a0 w0 + a1 w1| passes 32767: 8-bit
activations near their range times 8-bit weights near theirs do. Its own documentation says to quantise
weights to 7 bits there (``reduce_range``). VNNI (AVX512-VNNI, AVX-VNNI), AMX and ARM's dot-product
instructions accumulate in 32 bits, as NPUs do. So on a saturating CPU, onnxruntime's int8 results say
what that CPU gives, not what an 8-bit NPU gives; the QDQ graph run as written (every QuantizeLinear /
DequantizeLinear executed in float, no int8 kernel fusion) gives the 8-bit arithmetic exactly.
"""
from __future__ import annotations

import platform
from functools import lru_cache

NON_SATURATING_X86 = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo flags with a 32-bit int8 dot


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_kernels_saturate() -> bool:
    """True on an x86 CPU whose flags show no VNNI / AMX (onnxruntime's int8 convs saturate there)."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    flags = cpu_flags()
    return bool(flags) and not any(f in flags for f in NON_SATURATING_X86)
