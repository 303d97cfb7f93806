"""Helpers the objective files share (padding, checks); the interface itself is :mod:`probe_lens.training.objective`."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Int

from probe_lens.activations import trim_left_padding
from probe_lens.models import Generation
from probe_lens.training.objective import MicroBatch, Objective, StepOutput, model_device

__all__ = ["MicroBatch", "Objective", "StepOutput", "check_config", "check_generation", "model_device", "trim_padding"]


def trim_padding(tokens: Int[torch.Tensor, "batch pos"], *masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop columns that are padding in every row, on both sides (``masks[0]``: the attention mask)."""
    tokens, *kept = trim_left_padding(tokens, *masks)
    real = kept[0].bool().any(dim=0)
    last = int(real.nonzero()[-1]) + 1 if bool(real.any()) else tokens.shape[1]
    return (tokens[:, :last], *(m[:, :last] for m in kept))


def check_generation(data: Generation, what: str) -> None:
    """Refuse anything but a non-empty Generation whose every row has response tokens."""
    if not isinstance(data, Generation):
        raise TypeError(
            f"{what} must be a probe_lens Generation (from generate(...) or tokenize_pairs(...)), got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError(f"{what} is empty")
    empty = torch.nonzero(data.response_mask.sum(dim=1) == 0).flatten().tolist()
    if empty:
        raise ValueError(f"{what} rows {empty[:10]} have no response tokens; drop them (e.g. data.select(...))")


def check_config(config: Any, cls: type) -> None:
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
