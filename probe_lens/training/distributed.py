"""Running the loops under ``torchrun`` with DistributedDataParallel (gloo on CPU, nccl on GPU).

Every process holds the whole dataset; the batch of an optimizer step is chosen from the seed and
the step number alone, and rank r takes its slice of it. Losses are normalised by the size of the
*global* batch, so the gradient DDP averages equals the single-process gradient of the combined batch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str | torch.device = "cpu") -> DistInfo:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); a no-op otherwise.

    Uses nccl for CUDA devices, gloo otherwise. An existing process group is reused.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size())


def shard(indices: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Rank ``info.rank``'s contiguous slice of a global batch (its length must divide evenly)."""
    n = len(indices)
    if n % info.world_size:
        raise ValueError(f"a global batch of {n} does not split evenly over {info.world_size} processes")
    per = n // info.world_size
    return indices[info.rank * per : (info.rank + 1) * per]


def wrap_model(model: torch.nn.Module, info: DistInfo, *, find_unused_parameters: bool = False) -> Any:
    """``DistributedDataParallel(model)`` when distributed, else ``model`` itself."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = next(model.parameters()).device
    return DDP(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,
        find_unused_parameters=find_unused_parameters,
    )


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``t`` over processes (in place on a copy); identity when not distributed."""
    if not info.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_grads(model: torch.nn.Module, info: DistInfo) -> None:
    """Average gradients over processes by hand (for loops that do not use the DDP wrapper)."""
    if not info.enabled:
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= info.world_size


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class RankFailed(RuntimeError):
    """Raised on the other ranks when rank 0 failed in a step they were waiting for (see :func:`on_main`)."""


def on_main(fn: Callable[[], Any], info: DistInfo, *, share: bool = False) -> Any:
    """Run ``fn()`` on rank 0 only; every rank waits for it.

    Returns ``fn()``'s result on rank 0, and on the other ranks too when ``share`` (broadcast: it must
    pickle), else None there. When ``fn`` raises, rank 0 re-raises it and the other ranks raise
    :class:`RankFailed` with its message, so no rank waits at a later collective for a step that failed.
    Not distributed: ``fn()``.
    """
    if not info.enabled:
        return fn()
    result, error, failure = None, None, None
    if info.is_main:
        try:
            result = fn()
        except BaseException as e:  # noqa: BLE001 -- every rank must learn of it, then rank 0 re-raises
            failure, error = e, f"{type(e).__name__}: {e}"
    error, shared = broadcast_object((error, result if share else None), info)
    if failure is not None:
        raise failure
    if error is not None:
        raise RankFailed(f"rank 0 failed: {error}")
    return result if info.is_main else shared


def cleanup() -> None:
    """Leave the process group if one is active."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
