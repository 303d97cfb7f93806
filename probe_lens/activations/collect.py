"""Reading activations: pooled (:func:`collect`) or per token (:func:`collect_tokens`) and detached in bulk,
or live for training (:func:`capture`).

Both work on a ``HookedTransformer`` and on a ``TransformerBridge``. Activations are filed under the
name they were asked for, not ``hook.name``: a bridge in compatibility mode serves
``blocks.L.hook_resid_post`` from a hook point whose own name is ``blocks.L.hook_out``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from tqdm.auto import tqdm

from probe_lens.activations.hooks import HookSpec, resolve_hooks, stop_layer_for
from probe_lens.activations.pooling import POOLINGS, Pooling, gather_tokens, pool
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
    return _run_batches(
        model,
        (tokens, attention_mask, pool_mask),
        hooks,
        lambda act, pm: pool(act, pm, pooling).to("cpu", dtype),
        batch_size=batch_size,
        progress=progress,
    )


@torch.no_grad()
def collect_tokens(
    model: LensModel,
    tokens: Int[torch.Tensor, "n pos"],
    attention_mask: Int[torch.Tensor, "n pos"],
    pool_mask: Int[torch.Tensor, "n pos"],
    hooks: HookSpec | Sequence[HookSpec],
    *,
    batch_size: int = 16,
    progress: bool = True,
    dtype: torch.dtype = torch.float32,
) -> tuple[dict[str, Float[torch.Tensor, "n width d"]], Bool[torch.Tensor, "n width"]]:
    """Every token where ``pool_mask`` is 1, per hook, for probes that read tokens (no pooling).

    Row i holds its masked tokens in order, left-aligned and NaN-padded to ``width`` (the longest
    row's count): ``acts[h][i, :k_i] == activation at the i-th row's masked positions``. Returns
    CPU ``({hook_name: [n, width, d]}, mask [n, width])``; the NaN padding lets the arrays go
    straight into ``MaxPooledLogisticProbe`` / ``AttentionProbe``. For a ``Generation`` pass
    ``gen.tokens, gen.attention_mask, gen.response_mask``. Batching as in :func:`collect`.
    """
    _check_batch(tokens, attention_mask, pool_mask)
    counts = pool_mask.bool().sum(dim=1)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty[:10]} have no masked positions to collect (empty response?)")
    width = int(counts.max())
    acts = _run_batches(
        model,
        (tokens, attention_mask, pool_mask),
        hooks,
        lambda act, pm: gather_tokens(act, pm, width).to("cpu", dtype),
        batch_size=batch_size,
        progress=progress,
    )
    return acts, torch.arange(width) < counts.unsqueeze(1)


def _run_batches(
    model: LensModel,
    grid: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    hooks: HookSpec | Sequence[HookSpec],
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    progress: bool,
) -> dict[str, torch.Tensor]:
    """``{hook: cat(reduce(act, pool_mask) per batch)}`` in input order; batches sorted by length."""
    tokens, attention_mask, pool_mask = grid
    names = resolve_hooks(model, hooks)
    stop = stop_layer_for(names, model.cfg.n_layers)
    device = model.cfg.device
    n = tokens.shape[0]
    order = torch.argsort(attention_mask.sum(dim=1), stable=True)
    out: dict[str, list[torch.Tensor]] = {h: [] for h in names}
    current_mask: list[torch.Tensor] = []

    def save(name: str, act: torch.Tensor) -> None:
        out[name].append(reduce(act, current_mask[0]))

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
