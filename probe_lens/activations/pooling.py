"""Pooling token activations over a mask (typically the response tokens)."""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float, Int

from probe_lens._common import POOLINGS  # one definition for the whole package

Pooling = Literal["mean", "last", "max"]


def pool(
    acts: Float[torch.Tensor, "batch pos d"],
    mask: Int[torch.Tensor, "batch pos"] | torch.Tensor,
    method: Pooling | str = "mean",
) -> Float[torch.Tensor, "batch d"]:
    """Pool ``acts`` over the positions where ``mask`` is 1.

    ``mean`` averages the masked positions, ``last`` takes the right-most masked position, ``max``
    the element-wise maximum. Differentiable. Rows with an empty mask raise (nothing to pool).
    """
    if method not in POOLINGS:
        raise ValueError(f"unknown pooling {method!r}; choose one of {POOLINGS}")
    if acts.ndim != 3 or mask.shape != acts.shape[:2]:
        raise ValueError(
            f"acts must be [batch, pos, d] and mask [batch, pos]; got {tuple(acts.shape)} and {tuple(mask.shape)}"
        )
    m = mask.to(device=acts.device).bool()
    counts = m.sum(dim=1)
    if bool((counts == 0).any()):
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"rows {empty[:10]} have no masked positions to pool over (empty response?)")
    if method == "mean":
        w = m.to(acts.dtype).unsqueeze(-1)
        return (acts * w).sum(dim=1) / counts.to(acts.dtype).unsqueeze(-1)
    if method == "last":
        pos = torch.arange(m.shape[1], device=acts.device).expand_as(m)
        last = torch.where(m, pos, torch.full_like(pos, -1)).max(dim=1).values
        return acts[torch.arange(acts.shape[0], device=acts.device), last]
    neg = torch.finfo(acts.dtype).min
    return acts.masked_fill(~m.unsqueeze(-1), neg).max(dim=1).values


def gather_tokens(
    acts: Float[torch.Tensor, "batch pos d"],
    mask: Int[torch.Tensor, "batch pos"] | torch.Tensor,
    width: int | None = None,
    fill: float = float("nan"),
) -> Float[torch.Tensor, "batch width d"]:
    """The positions where ``mask`` is 1, left-aligned in order and padded with ``fill`` to ``width``.

    ``width`` defaults to the largest row count (a smaller one raises). Padding is NaN by default:
    the layout the token probes read (``probe_lens.probes.TokenProbe``).
    """
    if acts.ndim != 3 or mask.shape != acts.shape[:2]:
        raise ValueError(
            f"acts must be [batch, pos, d] and mask [batch, pos]; got {tuple(acts.shape)} and {tuple(mask.shape)}"
        )
    m = mask.to(device=acts.device).bool()
    counts = m.sum(dim=1)
    need = int(counts.max()) if m.shape[0] else 0
    width = need if width is None else width
    if width < need:
        raise ValueError(f"width={width} is smaller than the longest row's {need} masked positions")
    order = torch.argsort((~m).to(torch.int8), dim=1, stable=True)  # masked positions first, in order
    idx = torch.zeros(m.shape[0], width, dtype=torch.long, device=acts.device)
    keep = min(width, m.shape[1])
    idx[:, :keep] = order[:, :keep]
    out = acts.gather(1, idx.unsqueeze(-1).expand(-1, -1, acts.shape[-1]))
    real = torch.arange(width, device=acts.device) < counts.unsqueeze(1)
    return out.masked_fill(~real.unsqueeze(-1), fill)
