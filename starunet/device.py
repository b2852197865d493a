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


def autocast_bf16(device: torch.device, enabled: bool = True):
    """bf16 autocast for training steps on GPUs that support it (a no-op elsewhere or
    when not ``enabled``). Not fp16: products of unnormalised features (the star
    fusion) overflow fp16's range easily; bf16 has fp32's range."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
