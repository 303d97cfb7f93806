"""Rank coordination under torchrun: which steps rank 0 does alone, which every rank does, and how the
other ranks get rank 0's results (by its files, or sent to them). One process: every step runs as is."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch

from probe_lens.models.loading import default_device
from probe_lens.training import distributed as D


def rank_device(device: str | None) -> str:
    """This torchrun rank's device: ``cuda:$LOCAL_RANK`` for None or ``"cuda"`` on a GPU machine, else ``device``."""
    if device is not None and torch.device(device).type != "cuda":
        return str(device)
    local = default_device()
    if device is not None:
        if torch.device(local).type != "cuda":
            raise RuntimeError(f"device {device!r} but no CUDA device is visible")
        if torch.device(device).index not in (None, torch.device(local).index):
            raise ValueError(
                f"device {device!r} under torchrun: each rank takes cuda:$LOCAL_RANK (here {local}); "
                "pass device 'cuda' or leave it unset"
            )
    return local


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class Ranks:
    """This process's place among the torchrun ranks (``dist``), and rank 0's solo steps."""

    def __init__(self, dist: D.DistInfo) -> None:
        self.dist = dist
        self._solo_depth = 0  # > 0 while this process runs a step on its own (rank 0's part of a step)

    @contextlib.contextmanager
    def _solo(self) -> Iterator[None]:
        self._solo_depth += 1
        try:
            yield
        finally:
            self._solo_depth -= 1

    def collective(self) -> bool:
        """True when every rank makes this call (distributed, and not inside rank 0's part of a step)."""
        return self.dist.enabled and self._solo_depth == 0

    def on_main(self, fn: Callable[[], Any], *, share: bool = False) -> Any:
        """``fn()`` on rank 0 only (every rank waits; errors reach every rank): see ``distributed.on_main``."""
        if not self.collective():
            return fn()

        def alone():
            with self._solo():
                return fn()

        return D.on_main(alone, self.dist, share=share)

    def shared(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0, then on the other ranks (which then find rank 0's files and read them)."""
        result = self.on_main(fn)
        if not self.collective() or self.dist.is_main:
            return result
        with self._solo():
            return fn()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (in a collective call; else ``obj``)."""
        return D.broadcast_object(obj, self.dist) if self.collective() else obj


def rank0_then_read(method):
    """A file-backed step of an object with ``ranks``: under torchrun rank 0 runs it (writing its files), then
    the other ranks run it, reading those files back. One process: the step itself."""

    @functools.wraps(method)
    def step(self, *args, **kwargs):
        return self.ranks.shared(lambda: method(self, *args, **kwargs))

    return step


def rank0_only(method):
    """A step that under torchrun only rank 0 runs (it writes files); its result reaches every rank."""

    @functools.wraps(method)
    def step(self, *args, **kwargs):
        return self.ranks.on_main(lambda: method(self, *args, **kwargs), share=True)

    return step
