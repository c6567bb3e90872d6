"""The device of ``--device`` and mixed precision on it (autocast and gradient scaling, CUDA only)."""

from __future__ import annotations

import contextlib

import torch

from ggmnet.engine.config import DEVICE_PATTERN
from ggmnet.errors import UserError


def resolve_device(arg: str) -> torch.device:
    """The device named by a ``--device`` option: ``auto`` (CUDA when available, else CPU), ``cpu``,
    ``cuda`` or ``cuda:N``.

    Raises
    ------
    UserError
        For another name, for CUDA on a machine without it, or for a GPU index it does not have.
    """
    name = str(arg).strip().lower()
    if not DEVICE_PATTERN.match(name):
        raise UserError(f"--device {arg}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"--device {arg}: CUDA is not available on this machine")
    dev = torch.device(name)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {arg}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype used on ``device``: bfloat16 on GPUs that support it, else float16; None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """Autocast to :func:`amp_dtype` on CUDA when ``enabled``; a null context on CPU (CPU AMP is slower here)."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def make_grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A gradient scaler, active only for float16 autocast on CUDA (bfloat16 needs none)."""
    active = enabled and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu", enabled=active)
