"""Which CPU this is: its model name and the instruction-set flags that change floating-point results.

Products of the same tensors round differently on different CPU kinds (AMD EPYC vs Intel Xeon with
AMX/AVX-512 take other kernels), so sampled tokens and AUROCs are bit-identical only within a kind.
Results record :func:`cpu_info`; :func:`same_cpu_kind` says whether two records are of one kind.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

NUMERIC_FLAGS = (
    "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
    "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
)  # fmt: skip
"""The flags whose presence changes which kernels torch's CPU products take."""


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_info() -> dict[str, Any]:
    """``{"model": ..., "vendor": ..., "flags": [...]}``: the model name, the vendor and the numeric flags present."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return {
        "model": _cpuinfo_field("model name") or platform.processor() or "unknown",
        "vendor": _cpuinfo_field("vendor_id") or "unknown",
        "flags": [f for f in NUMERIC_FLAGS if f in flags],
    }


def same_cpu_kind(recorded: dict[str, Any] | str | None, current: dict[str, Any] | None = None) -> bool | None:
    """Whether ``recorded`` (a :func:`cpu_info` dict, or an older record's bare model name) is this CPU's kind.

    Same model name and, when both records list them, the same numeric flags. None when nothing was recorded.
    """
    if not recorded:
        return None
    now = current or cpu_info()
    if isinstance(recorded, str):
        return recorded == now["model"]
    if recorded.get("model") != now["model"]:
        return False
    return "flags" not in recorded or sorted(recorded["flags"]) == sorted(now["flags"])
