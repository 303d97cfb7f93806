"""Faster no-grad sampling: fp16-weight products on CPU, one prefill per distinct prompt, lean sampling.

Used by ``generate(..., fast=True)``. Three independent parts (:class:`FastSampling` switches each):

- **fp16-weight products** (CPU with fbgemm): the unembedding (262k x 640, ~63% of a decoded token's
  FLOPs for Gemma-3) and the gated-MLP products read fp16 copies of their weights through fbgemm's
  ``linear_dynamic_fp16`` (fp32 activations and accumulation): half the bytes read per product, which
  is what bounds these skinny products here. The copies are cached on the modules, keyed on each
  weight's storage and in-place version counter (an optimizer step or ``load_state_dict`` bumps it), so
  they are rebuilt after training; :func:`clear_half_copies` frees them. Gradients never see them: the
  swapped forwards fall back to the original ones whenever grad is enabled, and are swapped in only
  inside :func:`half_weight_products` (which ``generate`` enters under ``torch.no_grad``). int8 with
  per-row activation scales was measured and rejected: Gemma's outlier activation channels (row max
  ~24x the row RMS) wreck it (``benchmarks/RESULTS.md``).
- **shared prefill**: identical consecutive prompts (``[p for p in prompts for _ in range(k)]``) are
  prefilled once and their KV cache rows copied to the k samples.
- **lean sampling**: inverse-CDF sampling with the same uniform draws as the reference path, computed
  in place (``exp(l - max)`` then ``cumsum_``): no softmax normalisation pass, no fresh 262k-wide buffers.

Quality and speed against the reference path: ``benchmarks/bench_sampling.py``, ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.components import Unembed
from transformer_lens.components.mlps.gated_mlp import GatedMLP

from probe_lens.models.generation import _sample, last_position_logits, left_pad, tokenizer_of, uniform_rows

_SLOT = "_probe_lens_fp16_"
_FALLBACK = "_probe_lens_fallback_forward"


@dataclasses.dataclass(frozen=True)
class FastSampling:
    """Which speed-ups ``generate(..., fast=...)`` applies (``fast=True`` means all of them)."""

    half_unembed: bool = True
    """fp16-weight unembedding on CPU (the largest product by far)."""
    half_mlp: bool = True
    """fp16-weight gated-MLP products on CPU."""
    share_prefill: bool = True
    """Prefill identical consecutive prompts once and copy their KV cache to each sample."""


def half_products_available() -> bool:
    """Whether this torch build has fbgemm's fp16-weight linear (x86 builds do)."""
    return "fbgemm" in torch.backends.quantized.supported_engines and hasattr(
        torch.ops.quantized, "linear_dynamic_fp16"
    )


# ---------------------------------------------------------------------------------------- fp16 math
def pack_half(w: Float[torch.Tensor, "d_in d_out"], bias: Float[torch.Tensor, " d_out"] | None = None) -> Any:
    """fbgemm's packed fp16 copy of ``w`` (and fp32 ``bias``) for :func:`half_matmul`."""
    return torch.ops.quantized.linear_prepack_fp16(w.detach().float().T.contiguous(), bias)


def half_matmul(x: Float[torch.Tensor, "... d_in"], packed: Any, d_out: int) -> Float[torch.Tensor, "... d_out"]:
    """``x @ w + bias`` with ``w`` rounded to fp16 (fp32 activations and accumulation)."""
    y = torch.ops.quantized.linear_dynamic_fp16(x.reshape(-1, x.shape[-1]).float().contiguous(), packed)
    return y.view(*x.shape[:-1], d_out)


def _weight_key(*ws: torch.Tensor) -> tuple:
    return tuple((w.data_ptr(), w._version, tuple(w.shape), w.dtype, w.device) for w in ws)


def _half_copy(module: torch.nn.Module, slot: str, weights: tuple[str, ...], bias: str | None = None) -> Any:
    """Packed fp16 copy of the named weights (concatenated along the output dim), cached until one changes."""
    ws = [getattr(module, n) for n in weights]
    b = getattr(module, bias) if bias is not None else None
    key = _weight_key(*ws, *([b] if b is not None else []))
    cached = module.__dict__.get(_SLOT + slot)
    if cached is None or cached[0] != key:
        module.__dict__.pop(_SLOT + slot, None)  # free the stale copy before building the new one
        w = torch.cat(ws, dim=1) if len(ws) > 1 else ws[0]
        n = w.numel() * 2 + (b.numel() * 4 if b is not None else 0)
        cached = (key, pack_half(w, None if b is None else b.detach().float()), n)
        module.__dict__[_SLOT + slot] = cached
    return cached[1]


def clear_half_copies(model: torch.nn.Module) -> int:
    """Free the cached fp16 weight copies; returns how many were freed (rebuilt on next use)."""
    n = 0
    for module in model.modules():
        for slot in [k for k in module.__dict__ if k.startswith(_SLOT)]:
            del module.__dict__[slot]
            n += 1
    return n


def half_copy_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the cached fp16 copies (weights and biases)."""
    return sum(v[2] for m in model.modules() for k, v in m.__dict__.items() if k.startswith(_SLOT))


# ------------------------------------------------------------------------------ swapped forwards
def _use_half(x: torch.Tensor) -> bool:
    return not torch.is_grad_enabled() and x.device.type == "cpu" and x.dtype == torch.float32


def _unembed_half(self: Unembed, residual: Float[torch.Tensor, "batch pos d_model"]) -> torch.Tensor:
    if not _use_half(residual) or self.W_U.device.type != "cpu":
        return getattr(self, _FALLBACK)(residual)
    residual = self.hook_in(residual)
    return self.hook_out(half_matmul(residual, _half_copy(self, "W_U", ("W_U",), "b_U"), self.W_U.shape[1]))


def _gated_mlp_half(self: GatedMLP, x: Float[torch.Tensor, "batch pos d_model"]) -> torch.Tensor:
    if not _use_half(x) or self.W_gate.device != x.device:
        return getattr(self, _FALLBACK)(x)
    d_mlp = self.W_gate.shape[1]
    both = half_matmul(x, _half_copy(self, "W_gate_in", ("W_gate", "W_in")), 2 * d_mlp)
    pre_act = self.hook_pre(both[..., :d_mlp])
    pre_linear = self.hook_pre_linear(both[..., d_mlp:])
    post_act = self.hook_post(self.act_fn(pre_act) * pre_linear + self.b_in)
    return half_matmul(post_act, _half_copy(self, "W_out", ("W_out",), "b_out"), self.W_out.shape[1])


@contextlib.contextmanager
def half_weight_products(
    model: HookedTransformer, *, unembed: bool = True, mlp: bool = True
) -> Iterator[HookedTransformer]:
    """Within the block, no-grad fp32 CPU forwards of ``Unembed`` and ``GatedMLP`` read fp16 weight copies.

    Per instance (the TransformerLens classes are untouched); the previous forwards are restored on
    exit. Grad-enabled, non-CPU or non-fp32 calls inside the block still run the previous forwards.
    Without fbgemm (see :func:`half_products_available`) nothing is swapped.
    """
    swapped: list[tuple[torch.nn.Module, Callable[..., Any] | None]] = []
    try:
        for module in model.modules() if half_products_available() else ():
            if _FALLBACK in module.__dict__:
                continue  # already swapped by an enclosing block
            new: Callable[..., torch.Tensor]
            if unembed and type(module) is Unembed:
                new = _unembed_half
            elif mlp and type(module) is GatedMLP and not module.cfg.is_layer_norm_activation():
                new = _gated_mlp_half
            else:
                continue
            previous = module.__dict__.get("forward")  # an instance-level patch (compat) or None
            module.__dict__[_FALLBACK] = module.forward
            module.forward = types.MethodType(new, module)  # type: ignore[method-assign]  # per instance
            swapped.append((module, previous))
        yield model
    finally:
        for module, previous in reversed(swapped):
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
            module.__dict__.pop(_FALLBACK, None)


# ------------------------------------------------------------------------------------ sampling
def sample_in_place(
    logits: Float[torch.Tensor, "batch d_vocab"],
    *,
    do_sample: bool,
    temperature: float,
    top_p: float,
    generator: torch.Generator | list[torch.Generator] | None,
) -> Int[torch.Tensor, " batch"]:
    """The reference path's inverse-CDF sampling (same uniform draws), computed in place in ``logits``.

    ``logits`` is overwritten. Nucleus sampling (``top_p < 1``) uses the reference code.
    """
    if not do_sample or top_p < 1.0 or logits.dtype != torch.float32:
        return _sample(logits, do_sample=do_sample, temperature=temperature, top_p=top_p, generator=generator)
    x = logits
    if temperature != 1.0:
        x.div_(temperature)
    x.sub_(x.amax(dim=-1, keepdim=True)).exp_()
    cdf = x.cumsum_(dim=-1)
    u = uniform_rows(x.shape[0], generator).to(x.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp_(max=x.shape[-1] - 1)


def _runs(prompt_ids: list[list[int]]) -> list[int]:
    """Index of the first row of each run of identical consecutive prompts, per row."""
    first, out = 0, []
    for i, t in enumerate(prompt_ids):
        if i and t != prompt_ids[i - 1]:
            first = i
        out.append(first)
    return out


def _select_cache_rows(cache: TransformerLensKeyValueCache, rows: torch.Tensor) -> None:
    for entry in cache.entries:
        entry.past_keys = entry.past_keys.index_select(0, rows.to(entry.past_keys.device))
        entry.past_values = entry.past_values.index_select(0, rows.to(entry.past_values.device))
    cache.previous_attention_mask = cache.previous_attention_mask.index_select(
        0, rows.to(cache.previous_attention_mask.device)
    )


@torch.no_grad()
def generate_batch_fast(
    model: HookedTransformer,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    do_sample: bool,
    temperature: float,
    top_p: float,
    generator: torch.Generator | list[torch.Generator] | None,
    stop_at_eos: bool,
    share_prefill: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One left-padded batch, as the reference ``_generate_batch`` returns it (prompt tokens, mask,
    response tokens, response mask), with shared prefill and in-place sampling."""
    device = model.cfg.device
    tokenizer = tokenizer_of(model)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    tokens, attn = left_pad(prompt_ids, pad_id)
    b = len(prompt_ids)
    firsts = _runs(prompt_ids) if share_prefill else list(range(b))
    uniq = sorted(set(firsts))
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(uniq))
    logits = last_position_logits(model, tokens[uniq].to(device), attn[uniq].to(device), cache)
    if len(uniq) < b:
        pos = {row: j for j, row in enumerate(uniq)}
        expand = torch.tensor([pos[f] for f in firsts], dtype=torch.long)
        _select_cache_rows(cache, expand)
        logits = logits.index_select(0, expand.to(logits.device))
    resp = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    resp_mask = torch.zeros((b, max_new_tokens), dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    ones = torch.ones((b, 1), dtype=torch.long, device=device)
    check_every = 1 if device == "cpu" or str(device) == "cpu" else 8  # a host sync per check on accelerators
    for step in range(max_new_tokens):
        nxt = sample_in_place(logits, do_sample=do_sample, temperature=temperature, top_p=top_p, generator=generator)
        nxt = nxt.masked_fill(done, pad_id)
        resp[:, step] = nxt
        resp_mask[:, step] = (~done).long()
        if stop_at_eos and eos_id is not None:
            done |= nxt == eos_id
        if step == max_new_tokens - 1 or ((step + 1) % check_every == 0 and bool(done.all())):
            break
        logits = last_position_logits(model, nxt.view(b, 1), ones, cache)
    return tokens, attn, resp.cpu(), resp_mask.cpu()
