"""Sampling primitives shared by the reference and the fast generation paths.

Left padding, the last position's logits through a KV cache, and inverse-CDF sampling with one uniform
draw per row (so the fast path draws exactly the reference path's random numbers).

Both backends share the reference path: a ``HookedTransformer`` decodes through TransformerLens's
KV cache, a ``TransformerBridge`` through the HF model's own cache (:class:`BridgeKVCache`);
:func:`init_kv_cache` picks the one the model needs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.utilities.activation_functions import apply_softcap

from probe_lens.models.bridge import LensModel, is_bridge

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def tokenizer_of(model: LensModel) -> PreTrainedTokenizerBase:
    """``model.tokenizer``; ValueError when the model has none."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; load it with probe_lens.load_model or set model.set_tokenizer")
    return model.tokenizer


def left_pad(
    prompt_ids: list[list[int]], pad_id: int
) -> tuple[Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]:
    """Token ids and attention mask ``[batch, longest]`` of ``prompt_ids``, padded on the left."""
    b, width = len(prompt_ids), max(len(t) for t in prompt_ids)
    tokens = torch.full((b, width), pad_id, dtype=torch.long)
    attn = torch.zeros((b, width), dtype=torch.long)
    for i, t in enumerate(prompt_ids):
        tokens[i, width - len(t) :] = torch.tensor(t)
        attn[i, width - len(t) :] = 1
    return tokens, attn


@dataclasses.dataclass
class BridgeKVCache:
    """A bridge's decoding state: the HF ``past_key_values`` and the attention mask over every cached
    position (HF takes the whole mask at each step; TransformerLens's cache keeps its own)."""

    past_key_values: Any = None
    attention_mask: Int[torch.Tensor, "batch cached"] | None = None


KVCache = TransformerLensKeyValueCache | BridgeKVCache


def init_kv_cache(model: LensModel, batch: int) -> KVCache:
    """An empty KV cache for ``batch`` sequences, of the kind ``model``'s backend decodes with."""
    if is_bridge(model):
        return BridgeKVCache()
    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch)


def last_position_logits(
    model: LensModel,
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"],
    past_kv_cache: KVCache,
) -> Float[torch.Tensor, "batch d_vocab"]:
    """Logits of the last position only: unembedding every prompt position is wasted work.

    ``attention_mask`` covers ``tokens`` alone; the cache remembers the earlier positions' mask.
    """
    if isinstance(past_kv_cache, BridgeKVCache):
        return _bridge_last_position_logits(model, tokens, attention_mask, past_kv_cache)
    assert not is_bridge(model), "a TransformerBridge decodes with a BridgeKVCache (init_kv_cache)"
    resid = model(tokens, attention_mask=attention_mask, past_kv_cache=past_kv_cache, stop_at_layer=model.cfg.n_layers)[
        :, -1:
    ]
    if model.cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    return apply_softcap(model.unembed(resid), model.cfg.output_logits_soft_cap)[:, -1]


def _bridge_last_position_logits(
    model: LensModel,
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"],
    cache: BridgeKVCache,
) -> Float[torch.Tensor, "batch d_vocab"]:
    # The bridge derives rotary positions from the whole mask (as TransformerLens does); HF's
    # logits_to_keep=1 unembeds the last position only and applies the model's own logit soft-cap.
    mask = attention_mask if cache.attention_mask is None else torch.cat([cache.attention_mask, attention_mask], 1)
    logits, cache.past_key_values = model(
        tokens,
        attention_mask=mask,
        past_key_values=cache.past_key_values,
        use_cache=True,
        logits_to_keep=1,
        return_type="logits_and_cache",
    )
    cache.attention_mask = mask
    return logits[:, -1]


def uniform_rows(n: int, generator: torch.Generator | list[torch.Generator] | None) -> Float[torch.Tensor, "n 1"]:
    """One uniform draw per row: from one shared generator, or from each row's own (``row_seeds``)."""
    if isinstance(generator, list):
        if len(generator) != n:
            raise ValueError(f"{len(generator)} row generators for {n} rows")
        return torch.cat([torch.rand((1, 1), generator=g) for g in generator])
    return torch.rand((n, 1), generator=generator)


def sample_logits(
    logits: torch.Tensor,
    *,
    do_sample: bool,
    temperature: float,
    top_p: float,
    generator: torch.Generator | list[torch.Generator] | None,
) -> Int[torch.Tensor, " batch"]:
    """One token id per row of ``logits``: argmax (greedy), or inverse-CDF sampling at ``temperature``
    within the ``top_p`` nucleus, one uniform draw per row from ``generator`` (see :func:`uniform_rows`)."""
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = probs.cumsum(dim=-1)
        drop = (cum - probs) >= top_p  # keep the smallest prefix with mass >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, sorted_idx, sorted_logits)
    # inverse-CDF sampling: one uniform per row (torch.multinomial is ~10x slower on a 262k vocab)
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    u = uniform_rows(logits.shape[0], generator).to(logits.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp_(max=logits.shape[-1] - 1)
