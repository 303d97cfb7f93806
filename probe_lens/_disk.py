"""Disk honesty: estimate what a run will write and check it fits before starting.

A study writes one checkpoint per training cell (the embedded Gemma-3-270M's trainable weights alone
are ~1 GB in fp32, ~3.2 GB with AdamW moments); running out of disk mid-write costs hours.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

_GB = 1024**3


class DiskSpaceError(OSError):
    """Not enough free disk for what a run is about to write."""


def _gb(n: float) -> str:
    return f"{n / _GB:.2f} GB"


def checkpoint_bytes(
    model: torch.nn.Module,
    trainable_names: Iterable[str] | None,
    with_optimizer: bool,
    *,
    params: str = "trainable",
) -> int:
    """Estimated size in bytes of one checkpoint (see ``probe_lens.training.checkpoint``).

    Args:
        model: the model being trained.
        trainable_names: names of the trained parameters (None: all of them).
        with_optimizer: include AdamW's two moments per trained parameter (intermediate checkpoints).
        params: ``"trainable"`` saves the trained parameters, ``"all"`` every parameter
            (``TrainConfig.checkpoint_params``).
    """
    named = dict(model.named_parameters())
    chosen = set(named) if trainable_names is None else set(trainable_names)
    unknown = sorted(chosen - set(named))
    if unknown:
        raise ValueError(f"trainable_names has names the model lacks, e.g. {unknown[:3]}")
    if params not in ("trainable", "all"):
        raise ValueError(f"params must be 'trainable' or 'all', got {params!r}")
    saved = named if params == "all" else {n: named[n] for n in chosen}
    total = sum(p.numel() * p.element_size() for p in saved.values())
    if with_optimizer:  # exp_avg + exp_avg_sq in the parameter's dtype, plus a scalar step each
        total += sum(2 * named[n].numel() * named[n].element_size() + 8 for n in chosen)
    return int(total + 64 * 1024)  # headers, RNG states, state.json


def check_free_disk(path: str | Path, need_bytes: int, what: str) -> int:
    """Raise :class:`DiskSpaceError` if the disk holding ``path`` has less than ``need_bytes`` free.

    ``path`` may not exist yet (its nearest existing parent is checked). ``what`` says what will be
    written, for the message. Returns the free bytes.
    """
    if need_bytes < 0:
        raise ValueError(f"need_bytes must be >= 0, got {need_bytes}")
    p = Path(path).expanduser().absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(p).free
    if free < need_bytes:
        raise DiskSpaceError(
            f"not enough free disk for {what} under {path}: it needs about {_gb(need_bytes)}, "
            f"only {_gb(free)} is free on that disk. Free some space, choose an --out on a larger disk, "
            "or write fewer checkpoints (checkpoint_every=0, keep_checkpoints=1, checkpoint_params='trainable')"
        )
    return free
