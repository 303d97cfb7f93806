"""Batched sampling from a HookedTransformer or a TransformerBridge with a KV cache and left padding.

The returned :class:`Generation` keeps exactly what later steps need: the token grid, the attention
mask and a mask of the response tokens (pooling and losses act on those alone).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from collections.abc import Sequence
from typing import cast

import torch
from jaxtyping import Int
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from probe_lens.models.bridge import LensModel
from probe_lens.models.fast_sampling import FastSampling, fast_sampling_context, generate_batch_fast
from probe_lens.models.sampling import init_kv_cache, last_position_logits, left_pad, sample_logits, tokenizer_of

__all__ = ["Generation", "generate", "left_pad", "tokenize_pairs", "tokenize_prompts", "tokenizer_of"]


@dataclasses.dataclass
class Generation:
    """Prompts and their continuations on one token grid.

    ``tokens[:, :prompt_len]`` is the left-padded prompt (BOS first), ``tokens[:, prompt_len:]`` the
    response, right-padded with the pad token after it ends. ``response_mask`` is 1 exactly on the
    generated tokens, including the terminating EOS when one was produced.
    """

    prompts: list[str]
    tokens: Int[torch.Tensor, "batch pos"]
    attention_mask: Int[torch.Tensor, "batch pos"]
    response_mask: Int[torch.Tensor, "batch pos"]
    prompt_len: int
    response_texts: list[str]

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def texts(self) -> list[str]:
        """Prompt followed by response, as plain strings."""
        return [p + r for p, r in zip(self.prompts, self.response_texts)]

    @property
    def prompt_mask(self) -> Int[torch.Tensor, "batch pos"]:
        """1 on the real (non-pad) prompt tokens."""
        m = self.attention_mask.clone()
        m[:, self.prompt_len :] = 0
        return m

    def select(self, indices: Sequence[int] | torch.Tensor) -> Generation:
        """The rows ``indices`` as a new :class:`Generation` (shared padding kept)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Generation(
            prompts=[self.prompts[i] for i in idx.tolist()],
            tokens=self.tokens[idx],
            attention_mask=self.attention_mask[idx],
            response_mask=self.response_mask[idx],
            prompt_len=self.prompt_len,
            response_texts=[self.response_texts[i] for i in idx.tolist()],
        )

    @staticmethod
    def concat(parts: Sequence[Generation], pad_token_id: int) -> Generation:
        """Join generations, re-padding prompts on the left and responses on the right."""
        if not parts:
            raise ValueError("nothing to concatenate")
        p_len = max(g.prompt_len for g in parts)
        r_len = max(g.tokens.shape[1] - g.prompt_len for g in parts)

        def regrid(g: Generation, t: torch.Tensor, fill: int) -> torch.Tensor:
            out = torch.full((len(g), p_len + r_len), fill, dtype=t.dtype)
            out[:, p_len - g.prompt_len : p_len] = t[:, : g.prompt_len]
            resp = t[:, g.prompt_len :]
            out[:, p_len : p_len + resp.shape[1]] = resp
            return out

        return Generation(
            prompts=[p for g in parts for p in g.prompts],
            tokens=torch.cat([regrid(g, g.tokens, pad_token_id) for g in parts]),
            attention_mask=torch.cat([regrid(g, g.attention_mask, 0) for g in parts]),
            response_mask=torch.cat([regrid(g, g.response_mask, 0) for g in parts]),
            prompt_len=p_len,
            response_texts=[r for g in parts for r in g.response_texts],
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors for safetensors (texts go to JSON/parquet separately)."""
        return {
            "tokens": self.tokens.contiguous(),
            "attention_mask": self.attention_mask.contiguous(),
            "response_mask": self.response_mask.contiguous(),
        }


def _validate_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, got a single string; wrap it in a list")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt list is empty; pass at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i} is a {type(p).__name__}, not a string")
    return prompts


def _tokenize_one(model: LensModel, text: str) -> list[int]:
    return model.to_tokens(text, prepend_bos=True, truncate=False)[0].tolist()


def tokenize_prompts(model: LensModel, prompts: Sequence[str], *, max_prompt_tokens: int) -> list[list[int]]:
    """Token ids with BOS, keeping BOS plus the *last* tokens of over-long prompts (with a warning)."""
    ids = [_tokenize_one(model, p) for p in prompts]
    too_long = [i for i, t in enumerate(ids) if len(t) > max_prompt_tokens]
    if too_long:
        warnings.warn(
            f"{len(too_long)} prompt(s) exceed {max_prompt_tokens} tokens (e.g. prompt {too_long[0]} has "
            f"{len(ids[too_long[0]])}); keeping BOS and their last {max_prompt_tokens - 1} tokens",
            stacklevel=3,
        )
        for i in too_long:
            ids[i] = ids[i][:1] + ids[i][-(max_prompt_tokens - 1) :]
    return ids


@torch.no_grad()
def _generate_batch(
    model: LensModel,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    generator: torch.Generator | list[torch.Generator] | None,
    stop_at_eos: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    device = model.cfg.device
    tokenizer = tokenizer_of(model)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    tokens, attn = left_pad(prompt_ids, pad_id)
    b = len(prompt_ids)
    cache = init_kv_cache(model, b)
    logits = last_position_logits(model, tokens.to(device), attn.to(device), cache)
    resp = torch.full((b, max_new_tokens), pad_id, dtype=torch.long)
    resp_mask = torch.zeros((b, max_new_tokens), dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool)
    ones = torch.ones((b, 1), dtype=torch.long, device=device)
    for step in range(max_new_tokens):
        nxt = sample_logits(
            logits, do_sample=do_sample, temperature=temperature, top_p=top_p, generator=generator
        ).cpu()
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        resp[:, step] = nxt
        resp_mask[:, step] = (~done).long()
        if stop_at_eos and eos_id is not None:
            done |= nxt == eos_id
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        logits = last_position_logits(model, nxt.view(b, 1).to(device), ones, cache)
    return tokens, attn, resp, resp_mask


def generate(
    model: LensModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    do_sample: bool = True,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    batch_size: int = 16,
    max_prompt_tokens: int | None = None,
    stop_at_eos: bool = True,
    progress: bool = True,
    fast: bool | FastSampling = False,
    row_seeds: Sequence[int] | None = None,
) -> Generation:
    """Continue each prompt; batched with left padding and a KV cache.

    Greedy (``do_sample=False``) output does not depend on ``batch_size``. Sampling with a ``seed``
    is reproducible for the same prompts and ``batch_size``. Prompts longer than
    ``max_prompt_tokens`` (default: context minus ``max_new_tokens``) keep their last tokens.

    ``fast=True`` (or a :class:`~probe_lens.models.fast_sampling.FastSampling`) samples with fp16
    copies of the unembedding, MLP and attention weights on CPU, keys cached after rotary, one prefill
    per run of identical prompts and in-place sampling arithmetic: faster (2.6x on the embedded model,
    2 cores), with logits within fp16 weight rounding of the reference
    path's, so samples for a seed are close to but not always the same as ``fast=False``'s (see
    ``benchmarks/RESULTS.md``). It never touches gradients or the weights. On a ``TransformerBridge``
    the fast path does not apply (it swaps TransformerLens components the bridge does not have) and
    ``fast`` is ignored: the bridge samples on the reference path, through the HF model's KV cache.

    ``row_seeds`` (one int per prompt, instead of ``seed``) gives every row its own random stream, so
    a row's sample does not depend on which rows share its batch: one row can be regenerated alone
    (up to floating-point differences between batch shapes, which can flip a near-tie token).
    """
    prompts = _validate_prompts(prompts)
    for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not hasattr(value, "__index__"):  # int, numpy int: yes; 2.5, "3": no
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}; use do_sample=False for greedy")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; load it with probe_lens.load_model or set model.set_tokenizer")
    limit = model.cfg.n_ctx - max_new_tokens
    if limit < 2:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in a context of {model.cfg.n_ctx}"
        )
    max_prompt_tokens = min(max_prompt_tokens or limit, limit)
    ids = tokenize_prompts(model, prompts, max_prompt_tokens=max_prompt_tokens)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if row_seeds is not None:
        row_seeds = [int(r) for r in row_seeds]
        if seed is not None:
            raise ValueError("pass seed or row_seeds, not both")
        if len(row_seeds) != len(prompts):
            raise ValueError(f"row_seeds has {len(row_seeds)} seeds for {len(prompts)} prompts; pass one per prompt")
    pad_id = model.tokenizer.pad_token_id
    parts: list[Generation] = []
    was_training = model.training
    model.eval()
    batch_fn, products = _sampling_backend(model, fast)
    try:
        with products:
            for start in tqdm(range(0, len(order), batch_size), desc="generate", disable=not progress, leave=False):
                idx = order[start : start + batch_size]
                tok, attn, resp, resp_mask = batch_fn(
                    model,
                    [ids[i] for i in idx],
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    temperature=temperature,
                    top_p=top_p,
                    generator=generator
                    if row_seeds is None
                    else [torch.Generator().manual_seed(row_seeds[i]) for i in idx],
                    stop_at_eos=stop_at_eos,
                )
                texts = [
                    cast(str, model.tokenizer.decode(r[m.bool()].tolist(), skip_special_tokens=True))  # ids -> one str
                    for r, m in zip(resp, resp_mask)
                ]
                parts.append(
                    Generation(
                        prompts=[prompts[i] for i in idx],
                        tokens=torch.cat([tok, resp], dim=1),
                        attention_mask=torch.cat([attn, resp_mask], dim=1),
                        response_mask=torch.cat([torch.zeros_like(attn), resp_mask], dim=1),
                        prompt_len=tok.shape[1],
                        response_texts=texts,
                    )
                )
    finally:
        model.train(was_training)
    merged = Generation.concat(parts, pad_id)
    inverse = [0] * len(order)
    for pos, i in enumerate(order):
        inverse[i] = pos
    return merged.select(inverse)


def _sampling_backend(model: LensModel, fast: bool | FastSampling):
    """The batch function and the context (swapped forwards or nothing) ``generate`` runs under.

    A bridge always takes the reference path (see :func:`generate`)."""
    if fast is False or fast is None:
        return _generate_batch, contextlib.nullcontext()
    if fast is True:
        fast = FastSampling()
    if not isinstance(fast, FastSampling):
        raise TypeError(f"fast must be a bool or a FastSampling, got {type(fast).__name__}")
    if isinstance(model, TransformerBridge):
        return _generate_batch, contextlib.nullcontext()
    batch_fn = functools.partial(
        generate_batch_fast,
        share_prefill=fast.share_prefill,
        rotated_keys=fast.cached_rotary_keys,
        half_attention=fast.half_attention,
    )
    return batch_fn, fast_sampling_context(model, fast)


def tokenize_pairs(
    model: LensModel,
    prompts: Sequence[str],
    responses: Sequence[str],
    *,
    add_eos: bool = False,
    max_prompt_tokens: int | None = None,
    max_response_tokens: int | None = None,
) -> Generation:
    """A :class:`Generation` for given (prompt, response) texts, e.g. an external SFT set.

    The response is tokenized on its own (no BOS) and appended to the prompt tokens.
    """
    prompts = _validate_prompts(prompts)
    responses = _validate_prompts(responses)
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; they must pair up")
    limit = model.cfg.n_ctx - (max_response_tokens or 1)
    p_ids = tokenize_prompts(model, prompts, max_prompt_tokens=min(max_prompt_tokens or limit, limit))
    r_ids = [model.to_tokens(r, prepend_bos=False, truncate=False)[0].tolist() if r else [] for r in responses]
    tokenizer = tokenizer_of(model)
    eos = tokenizer.eos_token_id
    if add_eos:
        r_ids = [r + [eos] for r in r_ids]
    if max_response_tokens is not None:
        r_ids = [r[:max_response_tokens] for r in r_ids]
    if any(len(r) == 0 for r in r_ids):
        raise ValueError("a response is empty; every pair needs at least one response token (or add_eos=True)")
    pad_id = tokenizer.pad_token_id
    p_len, r_len = max(map(len, p_ids)), max(map(len, r_ids))
    n = len(prompts)
    tokens = torch.full((n, p_len + r_len), pad_id, dtype=torch.long)
    attn = torch.zeros_like(tokens)
    resp = torch.zeros_like(tokens)
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):
        tokens[i, p_len - len(p) : p_len] = torch.tensor(p)
        tokens[i, p_len : p_len + len(r)] = torch.tensor(r)
        attn[i, p_len - len(p) : p_len + len(r)] = 1
        resp[i, p_len : p_len + len(r)] = 1
    return Generation(list(prompts), tokens, attn, resp, p_len, list(responses))
