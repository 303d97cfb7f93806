"""Reading activations: pooled and detached in bulk (:func:`collect`), or live for training (:func:`capture`).

Both work on a ``HookedTransformer`` and on a ``TransformerBridge``. Activations are filed under the
name they were asked for, not ``hook.name``: a bridge in compatibility mode serves
``blocks.L.hook_resid_post`` from a hook point whose own name is ``blocks.L.hook_out``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from probe_lens.activations.hooks import HookSpec, resolve_hooks, stop_layer_for
from probe_lens.activations.pooling import POOLINGS, Pooling, pool
from probe_lens.models.bridge import LensModel


def _named(
    names: Sequence[str], fn: Callable[[str, torch.Tensor], None]
) -> list[tuple[str | Callable[..., Any], Callable[..., Any]]]:
    """Forward hooks calling ``fn(name, activation)`` with the hook name each was registered under."""
    return [(name, lambda act, hook, name=name: fn(name, act)) for name in names]


def trim_left_padding(tokens: Int[torch.Tensor, "batch pos"], *masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop leading columns that are padding in every row (``masks[0]`` is the attention mask).

    TransformerLens derives rotary positions from the attention mask, so this changes nothing but cost.
    """
    attention_mask = masks[0]
    real = attention_mask.bool().any(dim=0)
    first = int(real.nonzero()[0]) if bool(real.any()) else 0
    return (tokens[:, first:], *(m[:, first:] for m in masks))


def _check_batch(tokens: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor) -> None:
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [batch, pos], got shape {tuple(tokens.shape)}")
    if tokens.shape[0] == 0:
        raise ValueError("no sequences given (tokens has 0 rows)")
    for name, m in (("attention_mask", attention_mask), ("pool_mask", pool_mask)):
        if m.shape != tokens.shape:
            raise ValueError(f"{name} shape {tuple(m.shape)} does not match tokens {tuple(tokens.shape)}")


@torch.no_grad()
def collect(
    model: LensModel,
    tokens: Int[torch.Tensor, "n pos"],
    attention_mask: Int[torch.Tensor, "n pos"],
    pool_mask: Int[torch.Tensor, "n pos"],
    hooks: HookSpec | Sequence[HookSpec],
    *,
    pooling: Pooling | str = "mean",
    batch_size: int = 16,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Float[torch.Tensor, "n d"]]:
    """Pooled activations at several hooks in one forward pass per batch, without grad.

    Pools over the positions where ``pool_mask`` is 1 (e.g. the response tokens). Sequences are
    batched by length, and the model stops after the last layer needed, so memory is bounded by one
    batch. Returns CPU tensors ``{hook_name: [n, d]}`` in the input order.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
    _check_batch(tokens, attention_mask, pool_mask)
    names = resolve_hooks(model, hooks)
    stop = stop_layer_for(names, model.cfg.n_layers)
    device = model.cfg.device
    n = tokens.shape[0]
    order = torch.argsort(attention_mask.sum(dim=1), stable=True)
    out: dict[str, list[torch.Tensor]] = {h: [] for h in names}
    current_mask: list[torch.Tensor] = []

    def save(name: str, act: torch.Tensor) -> None:
        out[name].append(pool(act, current_mask[0], pooling).to("cpu", dtype))

    fwd_hooks = _named(names, save)
    batches = range(0, n, batch_size)
    for start in tqdm(batches, desc="collect activations", disable=not progress, leave=False):
        idx = order[start : start + batch_size]
        tok, am, pm = trim_left_padding(tokens[idx], attention_mask[idx], pool_mask[idx])
        current_mask[:] = [pm.to(device)]
        with model.hooks(fwd_hooks=fwd_hooks):
            model(tok.to(device), attention_mask=am.to(device), stop_at_layer=stop, return_type=None)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(n)
    return {h: torch.cat(v)[inverse] for h, v in out.items()}


@contextlib.contextmanager
def capture(
    model: LensModel, hooks: HookSpec | Sequence[HookSpec]
) -> Iterator[dict[str, Float[torch.Tensor, "batch pos d"]]]:
    """Keep the *live* activation tensors of a forward pass, so a loss on them backpropagates.

    ``run_with_cache`` detaches; this does not::

        with capture(model, ["blocks.6.hook_resid_post"]) as acts:
            model(tokens, attention_mask=mask)
        loss = probe.forward(pool(acts["blocks.6.hook_resid_post"], response_mask)).mean()
    """
    names = resolve_hooks(model, hooks)
    acts: dict[str, torch.Tensor] = {}

    def keep(name: str, act: torch.Tensor) -> None:
        acts[name] = act

    with model.hooks(fwd_hooks=_named(names, keep)):
        yield acts
