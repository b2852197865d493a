"""The machine a computation runs on: choosing the device, describing it, its
fastest memory layout and precision, and one hardware record for every provenance
file (grids, curves, benchmarks). Below the model and training code; imports only
torch and :mod:`starunet.config`.
"""
from __future__ import annotations

import contextlib
import os
import platform

import torch
from torch import nn

from starunet.config import cpu_model

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def select_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks cuda > mps > cpu; a named device must be available."""
    if name not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {name!r}; valid: {', '.join(DEVICE_CHOICES)}")
    cuda_ok = torch.cuda.is_available()
    mps_ok = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda_ok else "mps" if mps_ok else "cpu")
    if (name == "cuda" and not cuda_ok) or (name == "mps" and not mps_ok):
        raise ValueError(f"device {name!r} was requested but is not available here; "
                         "use device='auto' or 'cpu'")
    return torch.device(name)


def device_description(device: torch.device | str | None = None) -> str:
    """A one-line human description of ``device`` (GPU name, or CPU model and threads)."""
    device = torch.device(device) if device is not None else select_device("auto")
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return f"mps: Apple GPU ({platform.machine()})"
    return f"cpu: {cpu_model()}, {torch.get_num_threads()} torch threads"


def hardware_record(device: torch.device) -> dict:
    """What a results folder records about the machine that made it."""
    return {"summary": f"{device_description(device)}, {os.cpu_count()} logical CPUs",
            "device": str(device), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


def preferred_memory_format(device: torch.device | str) -> torch.memory_format:
    """channels-last on CPU (measured faster for training and inference there),
    the default (contiguous) layout elsewhere. A concrete layout, never
    ``preserve_format``: ``Tensor.contiguous`` refuses that one."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def to_device(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Move ``model`` to ``device`` in the memory layout that is fastest there
    (:func:`preferred_memory_format`): channels-last (NHWC) on CPU, where
    ``benchmarks/cpu.md`` measures a training step x1.14-1.38 faster than in the
    default NCHW layout, with the same numbers run to run. Elsewhere the default
    layout is kept (``benchmarks/cuda.md``: channels-last pays off on a GPU only at
    large batches, with bf16).
    """
    return model.to(device, memory_format=preferred_memory_format(device))


PRECISION_CHOICES = ("auto", "fp32", "bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16_cpu(flags: set[str] | None = None) -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16) and
    PyTorch's oneDNN can use it. oneDNN's own check
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on any AVX-512 CPU,
    where bf16 is emulated and slower than fp32, so the flags decide."""
    flags = cpu_flags() if flags is None else flags
    if not {"avx512_bf16", "amx_bf16"} & flags:
        return False
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"fp32"`` or ``"bf16"``: what training steps on ``device`` compute in.
    ``"auto"``: bf16 on GPUs that support it and on CPUs with native bf16
    (:func:`native_bf16_cpu`; about 2x faster there), fp32 elsewhere."""
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISION_CHOICES)}")
    device = torch.device(device)
    if precision != "auto":
        if precision == "bf16" and device.type == "mps":
            raise ValueError("precision 'bf16' is not supported on mps; use 'auto' or 'fp32'")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and native_bf16_cpu() else "fp32"


def training_autocast(device: torch.device, precision: str):
    """The autocast context of a training step in ``precision`` (a resolved one:
    ``"fp32"`` or ``"bf16"``). Only the forward pass runs under it; the loss, the
    gradients' master copies, the optimiser and all validation and test inference
    stay fp32."""
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
