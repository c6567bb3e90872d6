"""Data-parallel plumbing: process groups from torchrun's environment, reductions, broadcasts, DDP.

A single process without torchrun's environment gets a :class:`DistContext` of world size 1 and every helper
here is then a cheap no-op, so the stages call them unconditionally.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ggmnet.engine.device import resolve_device


@dataclasses.dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and logs."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when several processes share the work through a process group."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def init_distributed(device: str = "auto", *, rank: int | None = None, world_size: int | None = None,
                     init_method: str | None = None) -> DistContext:
    """Join the process group described by torchrun's environment, or run alone without it.

    Parameters
    ----------
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. With CUDA and several processes each process takes
        the GPU of its local rank (``LOCAL_RANK``), whatever ``N`` says.
    rank, world_size
        Override ``RANK`` and ``WORLD_SIZE`` (tests that spawn processes themselves).
    init_method
        Rendezvous URL, e.g. ``"file:///tmp/x/init"``; default ``"env://"`` (``MASTER_ADDR``/``MASTER_PORT``).

    Returns
    -------
    DistContext
        Backend ``"nccl"`` on CUDA, ``"gloo"`` on CPU, None when alone.
    """
    rank = _env_int("RANK", 0) if rank is None else rank
    world_size = _env_int("WORLD_SIZE", 1) if world_size is None else world_size
    local_rank = _env_int("LOCAL_RANK", rank if world_size > 1 else 0)
    dev = resolve_device(device)
    if dev.type == "cuda":
        if world_size > 1:
            dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        elif dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
    if world_size <= 1:
        return DistContext(0, 1, 0, dev, None)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, init_method=init_method or "env://", rank=rank,
                                world_size=world_size, **kwargs)
    return DistContext(rank, world_size, local_rank, dev, backend)


def init_distributed_for_test(rank: int, world_size: int, init_file: str | os.PathLike) -> DistContext:
    """A CPU (gloo) process group whose processes meet through the file ``init_file`` (tests)."""
    return init_distributed("cpu", rank=rank, world_size=world_size,
                            init_method=f"file://{os.path.abspath(init_file)}")


def _initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def cleanup() -> None:
    """Leave the process group (if any)."""
    if _initialised():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str = "auto", ctx: DistContext | None = None) -> Iterator[DistContext]:
    """``ctx`` as given, or the group of torchrun's environment, joined here and left on the way out.

    A stage's ``run_*`` function runs inside this: launched by torchrun it joins the group itself and must leave
    it when the run ends or fails (PyTorch asks every process to call ``destroy_process_group`` before it exits;
    NCCL warns otherwise). A group that the caller passed in, or that was already joined, is left to its owner.
    Leaving is local to each process, so a rank that fails does not wait for the others here.
    """
    joins_here = ctx is None and not _initialised()
    try:
        yield ctx if ctx is not None else init_distributed(device)
    finally:
        if joins_here:
            cleanup()


def barrier() -> None:
    """Wait for every rank (a no-op alone)."""
    if _initialised():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place and return it (CPU tensors work with NCCL too)."""
    if not _initialised():
        return tensor
    # NCCL only reduces CUDA tensors: a CPU tensor (a running total, a counter) travels through the GPU.
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
        tensor.copy_(on_gpu)
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of ``tensor`` over all ranks, as a new tensor (float64 for integer input)."""
    out = tensor.detach().clone()
    if not out.is_floating_point():
        out = out.double()
    if _initialised():
        all_reduce_sum_(out)
        out /= dist.get_world_size()
    return out


def broadcast_module_(module_or_params: nn.Module | Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite every rank's parameters (and a module's buffers) with rank ``src``'s, in place."""
    if not _initialised():
        return
    if isinstance(module_or_params, nn.Module):
        tensors = [*module_or_params.parameters(), *module_or_params.buffers()]
    else:
        tensors = list(module_or_params)
    with torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=src)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s picklable ``obj`` on every rank (e.g. the run folder rank 0 created)."""
    if not _initialised():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def maybe_sync_batchnorm(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Convert BatchNorm layers to SyncBatchNorm when training on several GPUs; otherwise return ``model``.

    SyncBatchNorm only runs on CUDA tensors (its forward refuses CPU input), so with gloo on CPU each rank
    keeps ordinary BatchNorm with statistics of its own batch; on one process there is nothing to sync.
    """
    if ctx.is_distributed and ctx.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap_ddp(model: nn.Module, ctx: DistContext, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(model)`` when distributed (model already on ``ctx.device``), else ``model``.

    ``find_unused_parameters=True`` is needed when some parameters get no gradient in a step, as in the
    supernet where only sampled paths run.
    """
    if not ctx.is_distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=find_unused_parameters)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself), e.g. to save its ``state_dict``."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
