"""``trainer.precision=auto``: bfloat16 mixed precision where the hardware runs it fast, float32 elsewhere.

bf16 keeps float32's exponent range, so GAN losses and gradients neither overflow nor need a loss scaler (fp16
does); Lightning's "bf16-mixed" keeps float32 master weights and runs convolutions and matrix products in bf16.
It pays on GPUs with bf16 units (Ampere and newer) and on CPUs with AVX-512 BF16 or AMX instructions; on other
CPUs bf16 is emulated and slower than float32, so "auto" picks float32 there.
"""

from __future__ import annotations

import torch

from artgan.errors import ConfigError

# What Lightning's Trainer accepts, plus our "auto".
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "bf16", "bf16-true", "16-mixed", "16", "16-true", "64-true",
              "64", "transformer-engine")


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX, as torch itself detects them (torch.cpu's capability checks)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if callable(check))


def resolve_precision(precision, accelerator: str = "auto") -> tuple[str, str]:
    """(the precision to give Lightning, why). ``precision`` other than "auto" passes through (validated)."""
    text = str(precision).strip()
    if text not in PRECISIONS:
        raise ConfigError(f"trainer.precision={precision!r} is not a precision Lightning knows; use auto (bf16 where "
                          "the hardware is fast at it), 32-true, bf16-mixed or 16-mixed.")
    if text != "auto":
        return text, "set by trainer.precision"
    accelerator = str(accelerator or "auto").lower()
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"auto: {torch.cuda.get_device_name(0)} has bf16 units"
        return "32-true", f"auto: {torch.cuda.get_device_name(0)} has no fast bf16"
    if cpu_has_fast_bf16():
        return "bf16-mixed", "auto: the CPU has AVX-512 BF16 / AMX"
    return "32-true", "auto: the CPU has no AVX-512 BF16 or AMX (bf16 would be emulated, slower than float32)"
