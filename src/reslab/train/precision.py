"""Numeric policy of a run: seeding, and the precision (fp32, bf16 or fp16 autocast) the hardware supports."""

from __future__ import annotations

import random
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from .config import ConfigError


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: the CPUs on which bf16 autocast is faster than fp32 (emulated bf16 is slower)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            "train.precision: fp16 (AMP with a gradient scaler) needs CUDA; use bf16 or fp32 on the CPU"
        )
    return precision


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager:
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


__all__ = ["autocast_context", "cpu_has_native_bf16", "resolve_precision", "seed_everything"]
