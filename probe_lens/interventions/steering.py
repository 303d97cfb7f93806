"""Interventions along one direction of the residual stream: :func:`steer` and :func:`ablate`.

Both are context managers over TransformerLens hooks (``model.hooks``), so they compose (nest two,
at one hook point or several: inner hooks run after outer ones) and act on every forward pass run
inside them: :func:`probe_lens.generate` (reference and fast paths; the fast path's swapped modules
keep the residual-stream hook points), :func:`probe_lens.collect`, :func:`probe_lens.capture` and
training steps. The hooks return a new tensor built from the live one, so gradients flow through
them (ablate a direction while fine-tuning).

A ``direction`` is a tensor ``[d_model]`` or a fitted single probe (``LogisticProbe``,
``MassMeanProbe``...). A probe scores *raw* activations as ``x @ coef_raw_ + bias_`` whatever
standardisation it used while fitting, so its direction in the residual basis is
``coef_raw_ / ||coef_raw_||`` (``direction_``), not the standardised-space weight; its ``hook`` is
the default hook point.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer

from probe_lens.activations import resolve_hook
from probe_lens.activations.hooks import HookSpec
from probe_lens.probes.base import BaseProbe, Probe

Direction = Float[torch.Tensor, " d_model"] | Float[np.ndarray, " d_model"] | Probe
Positions = Literal["all", "response"] | Int[torch.Tensor, "batch pos"]

__all__ = ["Direction", "Positions", "ablate", "direction_vector", "steer", "target_hook"]


def direction_vector(direction: Direction, d_model: int | None = None) -> Float[torch.Tensor, " d_model"]:
    """The unit vector (float32, CPU) of a tensor/array direction or of a fitted single probe.

    A probe gives ``coef_raw_ / ||coef_raw_||``: its weight on raw activations, so a probe fit on
    standardised features is steered and ablated along what it actually reads.
    """
    if isinstance(direction, Probe):
        direction = _probe_weight(direction)
    vec = torch.as_tensor(np.asarray(direction.detach().cpu() if isinstance(direction, torch.Tensor) else direction))
    if vec.ndim != 1 or not torch.is_floating_point(vec):
        raise ValueError(f"a direction must be a 1-D float vector [d_model], got shape {tuple(vec.shape)}")
    if d_model is not None and vec.shape[0] != d_model:
        raise ValueError(f"direction has {vec.shape[0]} entries but the model's d_model is {d_model}")
    norm = vec.to(torch.float64).norm()
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("a direction must be finite and non-zero")
    return (vec.to(torch.float64) / norm).to(torch.float32)


def _probe_weight(probe: Probe) -> np.ndarray:
    if not isinstance(probe, BaseProbe):
        raise TypeError(
            f"{type(probe).__name__} has several directions; pass one member (probe.member_probes()[i]) or a tensor"
        )
    probe._check_fitted()
    return probe.coef_raw_


def target_hook(model: HookedTransformer, direction: Direction, hook: HookSpec | None) -> str:
    """The hook name to act at: ``hook`` if given, else the probe's own ``hook``."""
    if hook is None:
        hook = getattr(direction, "hook", None) if isinstance(direction, Probe) else None
        if hook is None:
            raise ValueError("pass hook= (a hook name or layer index); only a probe with a recorded hook implies one")
    return resolve_hook(model, hook)


def _position_weights(act: torch.Tensor, positions: Positions) -> torch.Tensor | None:
    """[batch, pos, 1] 0/1 weights of the positions to act on; None for every position."""
    if isinstance(positions, torch.Tensor):
        if positions.shape != act.shape[:2]:
            raise ValueError(
                f"positions mask has shape {tuple(positions.shape)} but the activation at this hook is "
                f"{tuple(act.shape[:2])} (batch, pos); pass a mask aligned with the forward's tokens"
            )
        return positions.to(device=act.device, dtype=act.dtype).unsqueeze(-1)
    if positions == "all":
        return None
    # "response": a KV-cached decoding step feeds one new (generated) token; a multi-position
    # forward (the prompt's prefill) is left alone.
    return None if act.shape[1] == 1 else torch.zeros_like(act[..., :1])


def _check_positions(positions: Any) -> None:
    if isinstance(positions, torch.Tensor):
        if positions.ndim != 2:
            raise ValueError(f"a positions mask must be [batch, pos], got shape {tuple(positions.shape)}")
        return
    if positions not in ("all", "response"):
        raise ValueError(f"positions must be 'all', 'response' or a [batch, pos] mask, got {positions!r}")


def _intervene(
    model: HookedTransformer,
    direction: Direction,
    hook: HookSpec | None,
    positions: Positions,
    edit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> contextlib.AbstractContextManager[Any]:
    _check_positions(positions)
    name = target_hook(model, direction, hook)
    unit = direction_vector(direction, model.cfg.d_model)

    def apply(act: torch.Tensor, hook: Any) -> torch.Tensor:
        u = unit.to(device=act.device, dtype=act.dtype)
        weights = _position_weights(act, positions)
        delta = edit(act, u)
        return act + delta if weights is None else act + weights * delta

    return model.hooks(fwd_hooks=[(name, apply)])


@contextlib.contextmanager
def steer(
    model: HookedTransformer,
    direction: Direction,
    alpha: float,
    hook: HookSpec | None = None,
    *,
    positions: Positions = "all",
) -> Iterator[HookedTransformer]:
    """Add ``alpha`` x the unit ``direction`` to the activation at ``hook`` inside the block.

    Args:
        direction: a tensor/array ``[d_model]`` (normalised here) or a fitted single probe.
        alpha: step along the unit direction, in the residual stream's units (0: the identity).
        hook: hook point (name or layer index, as :func:`probe_lens.resolve_hook`); default: the probe's.
        positions: ``"all"``; ``"response"``: only the generated tokens under ``generate`` (each
            KV-cached decoding step; the prompt's prefill is untouched); or a 0/1 ``[batch, pos]``
            mask aligned with the tokens of every forward run inside the block (e.g. a
            ``Generation``'s ``response_mask`` for a training forward on its grid).
    """
    alpha = float(alpha)
    if not np.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    with _intervene(model, direction, hook, positions, lambda act, u: alpha * u):
        yield model


@contextlib.contextmanager
def ablate(
    model: HookedTransformer,
    direction: Direction,
    hook: HookSpec | None = None,
    *,
    positions: Positions = "all",
) -> Iterator[HookedTransformer]:
    """Project the unit ``direction`` out of the activation at ``hook``: ``x - (x . u) u``.

    A probe's logit on activations ablated along its own direction is its bias. Arguments as
    :func:`steer`.
    """
    with _intervene(model, direction, hook, positions, lambda act, u: -(act @ u).unsqueeze(-1) * u):
        yield model
