"""Faster no-grad sampling: fp16-weight products on CPU, a rotated-key KV cache, one prefill per prompt.

Used by ``generate(..., fast=True)``. Independent parts (:class:`FastSampling` switches each):

- **fp16-weight products** (CPU with fbgemm): the unembedding (262k x 640, ~63% of a decoded token's
  FLOPs for Gemma-3), the gated-MLP products and (inside the rotated-key attention) the Q/K/V/O
  projections read fp16 copies of their weights through fbgemm's ``linear_dynamic_fp16`` (fp32
  activations and accumulation): half the bytes read per product, which is what bounds these skinny
  products here. The copies are cached on the modules, keyed on each weight's storage and in-place
  version counter (an optimizer step or ``load_state_dict`` bumps it), so they are rebuilt after
  training; :func:`clear_half_copies` frees them. Gradients never see them: the swapped forwards fall
  back to the original ones whenever grad is enabled, and are swapped in only inside
  :func:`half_weight_products` (which ``generate`` enters under ``torch.no_grad``). int8 with per-row
  activation scales was measured and rejected: Gemma's outlier activation channels (row max ~24x the
  row RMS) wreck it (``benchmarks/RESULTS.md``).
- **rotated-key attention**: TransformerLens caches keys before rotary, so every decode step re-rotates
  every cached key, copies the cache once per query head for grouped-query attention, and appends by
  copying the whole cache. :func:`rotated_key_attention` (for caches marked by
  :func:`mark_rotated_key_cache`) rotates each key once, appends it to a buffer with spare positions and
  lets each KV head's query heads share one product. Hooks on attention hook points, and TL options it
  does not reproduce, keep TL's forward.
- **shared prefill**: identical consecutive prompts (``[p for p in prompts for _ in range(k)]``) are
  prefilled once and their KV cache rows copied to the k samples.
- **lean sampling**: inverse-CDF sampling with the same uniform draws as the reference path, computed
  in place (``exp(l - max)`` then ``cumsum_``): no softmax normalisation pass, no fresh 262k-wide buffers.

Quality and speed against the reference path: ``benchmarks/bench_sampling.py``, ``benchmarks/RESULTS.md``.

**TransformerBridge**: every part above swaps or reads TransformerLens components (``Unembed``,
``GatedMLP``, ``AbstractAttention``, TL's KV cache) that a bridge does not have, so none applies to one:
``generate(bridge, ..., fast=...)`` samples on the reference path (HF's KV cache), :func:`sampler_id`
says so when given the model, and :func:`fast_path_logits` returns the bridge's plain logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Callable, Iterator
from typing import Any

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.components import Attention, GroupedQueryAttention, Unembed
from transformer_lens.components.abstract_attention import AbstractAttention
from transformer_lens.components.mlps.gated_mlp import GatedMLP
from transformer_lens.hook_points import HookPoint
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.utilities.activation_functions import apply_softcap

from probe_lens.models.bridge import LensModel, is_bridge
from probe_lens.models.sampling import last_position_logits, left_pad, sample_logits, tokenizer_of, uniform_rows

FAST_PATH_VERSION = 2
"""Bumped whenever the fast path's numerics change (2: rotated-key attention, fp16 attention weights).
Saved sampling chunks record :func:`sampler_id`, so a resumed build never mixes samples of two paths."""

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
    cached_rotary_keys: bool = True
    """Cache keys after rotary (each key rotated once, not at every step) in a preallocated cache, and
    attend grouped-query heads without copying each KV head to its query heads
    (:func:`rotated_key_attention`)."""
    half_attention: bool = True
    """fp16-weight Q/K/V/O projections on CPU (only within the rotated-key attention)."""


def sampler_id(fast: bool | FastSampling, model: Any = None) -> str:
    """Which sampling code made a sample: ``"reference"``, or the fast path's version and switches;
    ``"bridge-reference"`` for a ``TransformerBridge`` ``model`` (whatever ``fast`` says: it falls back)."""
    if model is not None and is_bridge(model):
        return "bridge-reference"
    if fast is False or fast is None:
        return "reference"
    parts = FastSampling() if fast is True else fast
    off = [f.name for f in dataclasses.fields(parts) if not getattr(parts, f.name)]
    return f"fast-{FAST_PATH_VERSION}" + (f" without {','.join(off)}" if off else "")


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


def _as_matrix(w: torch.Tensor) -> torch.Tensor:
    """A weight as ``[d_in, d_out]``: TL's head-shaped ``[head, d_model, d_head]`` (W_Q/W_K/W_V) become
    ``[d_model, head * d_head]``; 2-D weights pass through. (W_O is passed as ``[head * d_head, d_model]``.)"""
    return w.permute(1, 0, 2).reshape(w.shape[1], -1) if w.dim() == 3 else w


def _half_copy(module: torch.nn.Module, slot: str, weights: tuple[str, ...], bias: str | None = None) -> Any:
    """Packed fp16 copy of the named weights (concatenated along the output dim), cached until one changes.

    Head-shaped weights are laid out by :func:`_as_matrix`; ``"W_O"`` (``[head, d_head, d_model]``)
    is flattened to ``[head * d_head, d_model]``.
    """
    ws = [getattr(module, n) for n in weights]
    b = getattr(module, bias) if bias is not None else None
    key = _weight_key(*ws, *([b] if b is not None else []))
    cached = module.__dict__.get(_SLOT + slot)
    if cached is None or cached[0] != key:
        module.__dict__.pop(_SLOT + slot, None)  # free the stale copy before building the new one
        mats = [w.reshape(-1, w.shape[-1]) if n == "W_O" else _as_matrix(w) for n, w in zip(weights, ws)]
        w = torch.cat(mats, dim=1) if len(mats) > 1 else mats[0]
        b_flat = None if b is None else b.detach().float().reshape(-1)
        n = w.numel() * 2 + (b_flat.numel() * 4 if b_flat is not None else 0)
        cached = (key, pack_half(w, b_flat), n)
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
    if not half_products_available():
        yield model
        return

    def choose(module: torch.nn.Module) -> Callable[..., torch.Tensor] | None:
        if unembed and type(module) is Unembed:
            return _unembed_half
        if mlp and type(module) is GatedMLP and not module.cfg.is_layer_norm_activation():
            return _gated_mlp_half
        return None

    with _swapped_forwards(model, choose):
        yield model


@contextlib.contextmanager
def _swapped_forwards(
    model: torch.nn.Module, choose: Callable[[torch.nn.Module], Callable[..., torch.Tensor] | None]
) -> Iterator[torch.nn.Module]:
    """Per module instance, ``choose(module)`` (when not None) replaces its forward for the block; the
    replaced forward stays reachable as ``module._probe_lens_fallback_forward``. Restored on exit."""
    swapped: list[tuple[torch.nn.Module, Callable[..., Any] | None]] = []
    try:
        for module in model.modules():
            new = choose(module)
            if new is None or _FALLBACK in module.__dict__:
                continue  # not chosen, or already swapped by an enclosing block
            previous = module.__dict__.get("forward")  # an instance-level patch (compat) or None
            module.__dict__[_FALLBACK] = module.forward
            module.forward = types.MethodType(new, module)  # per instance
            swapped.append((module, previous))
        yield model
    finally:
        for module, previous in reversed(swapped):
            if previous is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
            module.__dict__.pop(_FALLBACK, None)


# ------------------------------------------------------------------ attention over rotated keys
_ROTATED = "_probe_lens_rotated_keys"
_BUFFER = "_probe_lens_kv_buffer"
_OLMO_QK_NORM = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")


def _attention_supported(attn: AbstractAttention) -> bool:
    """Whether :func:`_attention_rotated_keys` computes what TL's forward does for this module."""
    cfg = attn.cfg
    off = ("use_attn_result", "use_split_qkv_input", "use_attn_in", "load_in_4bit", "use_logn_attn",
           "use_attention_sinks", "use_dynamic_ntk_rope", "ungroup_grouped_query_attention")  # fmt: skip
    return (
        type(attn) in (Attention, GroupedQueryAttention)
        and cfg.positional_embedding_type == "rotary"
        and (getattr(attn, "_attention_dir_override", None) or cfg.attention_dir) == "causal"
        and not any(getattr(cfg, name, False) for name in off)
        and getattr(cfg, "clip_qkv", None) is None
        and cfg.original_architecture not in _OLMO_QK_NORM
        and cfg.dtype == torch.float32
        and attn.W_O.device.type == "cpu"
        and not any(h._forward_hooks or h._forward_pre_hooks for h in attn.modules() if isinstance(h, HookPoint))
    )


def mark_rotated_key_cache(
    model: HookedTransformer, cache: TransformerLensKeyValueCache, *, half: bool = False
) -> bool:
    """Mark a fresh ``cache`` to hold keys after rotary, if every attention module supports it
    (``half``: its attention also reads fp16 weight copies, where fbgemm has them).

    Only marked caches take the rotated-key forward (inside :func:`rotated_key_attention`); the
    decision is made once per cache, so a generation never mixes the two key layouts. Unsupported:
    non-rotary or non-causal attention, non-fp32 or non-CPU weights, TL options the forward does not
    reproduce (attention results, split inputs, 4-bit, sinks, log-n, NTK, QKV clipping, OLMo QK-norm),
    and any hook on an attention hook point (``hook_rot_k`` would see only the new keys).
    """
    attns = [m for m in model.modules() if isinstance(m, AbstractAttention)]
    ok = (
        bool(attns)
        and all(_attention_supported(a) for a in attns)
        and all(not e.past_keys.shape[1] and not e.frozen for e in cache.entries)
    )
    if ok:
        for entry in cache.entries:
            entry.__dict__[_ROTATED] = "half" if half and half_products_available() else True
    return ok


def grouped_scores(
    attn: AbstractAttention,
    q: Float[torch.Tensor, "batch q_pos head d_head"],
    k: Float[torch.Tensor, "batch k_pos kv_head d_head"],
) -> Float[torch.Tensor, "batch head q_pos k_pos"]:
    """TL's attention scores with each KV head shared by its query heads (no repeated copies)."""
    b, qp, h, d = q.shape
    kp, g = k.shape[1], k.shape[2]
    q_ = q.reshape(b, qp, g, h // g, d).permute(0, 2, 3, 1, 4).reshape(b, g, h // g * qp, d)
    scores = (q_ @ k.permute(0, 2, 3, 1)).view(b, g, h // g, qp, kp).reshape(b, h, qp, kp) / attn.attn_scale
    return apply_softcap(scores, attn.cfg.attn_scores_soft_cap)


def grouped_z(
    pattern: Float[torch.Tensor, "batch head q_pos k_pos"], v: Float[torch.Tensor, "batch k_pos kv_head d_head"]
) -> Float[torch.Tensor, "batch q_pos head d_head"]:
    """TL's ``pattern @ v`` per head, with each KV head shared by its query heads."""
    b, h, qp, kp = pattern.shape
    g, d = v.shape[2], v.shape[3]
    z = pattern.reshape(b, g, h // g * qp, kp) @ v.permute(0, 2, 1, 3)
    return z.view(b, g, h // g, qp, d).permute(0, 3, 1, 2, 4).reshape(b, qp, h, d)


def _project_qkv(
    self: AbstractAttention,
    query_input: Float[torch.Tensor, "batch pos d_model"],
    key_input: Float[torch.Tensor, "batch pos d_model"],
    value_input: Float[torch.Tensor, "batch pos d_model"],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TL's ``calculate_qkv_matrices`` with fp16-weight products (hooks and QK-norm as TL applies them)."""
    kv = ("_W_K", "_b_K", "_W_V", "_b_V") if isinstance(self, GroupedQueryAttention) else ("W_K", "b_K", "W_V", "b_V")

    def project(x: torch.Tensor, w: str, b: str) -> torch.Tensor:
        heads, d_head = getattr(self, b).shape
        return half_matmul(x, _half_copy(self, w, (w,), b), heads * d_head).view(*x.shape[:-1], heads, d_head)

    q = self.hook_q(project(query_input, "W_Q", "b_Q"))
    k = self.hook_k(project(key_input, kv[0], kv[1]))
    v = self.hook_v(project(value_input, kv[2], kv[3]))
    if self.cfg.use_qk_norm:
        assert self.q_norm is not None and self.k_norm is not None
        q = self._apply_qk_norm(q, self.q_norm)
        k = self._apply_qk_norm(k, self.k_norm)
    return q, k, v


def _append_in_place(
    entry: Any, k: Float[torch.Tensor, "batch new kv_head d_head"], v: Float[torch.Tensor, "batch new kv_head d_head"]
) -> tuple[torch.Tensor, torch.Tensor]:
    """TL's ``entry.append`` into a buffer with spare positions (TL copies the whole cache every step)."""
    old, new = entry.past_keys.shape[1], k.shape[1]
    buf = entry.__dict__.get(_BUFFER)
    fits = buf is not None and buf[0].shape[1] >= old + new and buf[0].shape[0] == k.shape[0]
    if not (fits and entry.past_keys.data_ptr() == buf[0].data_ptr() and old):  # rows were re-selected, or full
        cap = old + new + max(64, old + new)
        buf = tuple(t.new_empty((t.shape[0], cap, *t.shape[2:])) for t in (k, v))
        buf[0][:, :old], buf[1][:, :old] = entry.past_keys, entry.past_values
        entry.__dict__[_BUFFER] = buf
    buf[0][:, old : old + new], buf[1][:, old : old + new] = k, v
    entry.past_keys, entry.past_values = buf[0][:, : old + new], buf[1][:, : old + new]
    return entry.past_keys, entry.past_values


def _attention_rotated_keys(
    self: AbstractAttention,
    query_input: Float[torch.Tensor, "batch pos d_model"],
    key_input: Float[torch.Tensor, "batch pos d_model"],
    value_input: Float[torch.Tensor, "batch pos d_model"],
    past_kv_cache_entry: Any = None,
    additive_attention_mask: torch.Tensor | None = None,
    attention_mask: Int[torch.Tensor, "batch offset_pos"] | None = None,
    position_bias: torch.Tensor | None = None,
) -> Float[torch.Tensor, "batch pos d_model"]:
    """TL's attention forward for a marked cache: only the new keys are rotated, then cached."""
    entry = past_kv_cache_entry
    marked = entry is not None and entry.__dict__.get(_ROTATED)
    if marked and (additive_attention_mask is not None or position_bias is not None):
        raise RuntimeError(
            "a rotated-key cache (probe_lens fast sampling) was given an additive attention mask or a position "
            "bias, which its attention does not apply; sample with fast=FastSampling(cached_rotary_keys=False)"
        )
    if not marked:
        return getattr(self, _FALLBACK)(
            query_input, key_input, value_input, past_kv_cache_entry=entry,
            additive_attention_mask=additive_attention_mask, attention_mask=attention_mask,
            position_bias=position_bias,
        )  # fmt: skip
    half = entry.__dict__[_ROTATED] == "half" and _use_half(query_input)
    q, k, v = (_project_qkv if half else type(self).calculate_qkv_matrices)(self, query_input, key_input, value_input)
    offset = entry.past_keys.size(1)
    q = self.hook_rot_q(self.apply_rotary(q, offset, attention_mask))
    k, v = _append_in_place(entry, self.hook_rot_k(self.apply_rotary(k, offset, attention_mask)), v)
    scores = self.hook_attn_scores(self.apply_causal_mask(grouped_scores(self, q, k), offset, attention_mask))
    pattern = F.softmax(scores, dim=-1)
    pattern = self.hook_pattern(torch.where(torch.isnan(pattern), torch.zeros_like(pattern), pattern))
    z = self.hook_z(grouped_z(pattern, v))
    z = z.reshape(z.shape[0], z.shape[1], -1)
    if half:
        return half_matmul(z, _half_copy(self, "W_O", ("W_O",), "b_O"), self.W_O.shape[-1])
    w_o = einops.rearrange(self.W_O, "head_index d_head d_model -> d_model (head_index d_head)").contiguous()
    return F.linear(z, w_o, self.b_O)


@contextlib.contextmanager
def rotated_key_attention(model: HookedTransformer) -> Iterator[HookedTransformer]:
    """Within the block, attention called with a cache marked by :func:`mark_rotated_key_cache` rotates
    only the new keys and appends them, rotated, to a cache with spare positions (TL rotates every
    cached key again and copies the whole cache at every step), attends grouped-query heads without
    repeating each KV head, and (when marked ``half``) reads fp16 copies of the Q/K/V/O weights.
    Unmarked calls run TL's forward."""
    with _swapped_forwards(model, lambda m: _attention_rotated_keys if isinstance(m, AbstractAttention) else None):
        yield model


@contextlib.contextmanager
def fast_sampling_context(model: HookedTransformer, fast: FastSampling) -> Iterator[HookedTransformer]:
    """The swapped forwards ``generate(..., fast=fast)`` runs under."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(half_weight_products(model, unembed=fast.half_unembed, mlp=fast.half_mlp))
        if fast.cached_rotary_keys:
            stack.enter_context(rotated_key_attention(model))
        yield model


@torch.no_grad()
def fast_path_logits(
    model: LensModel,
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"],
    fast: FastSampling | None = None,
) -> Float[torch.Tensor, "batch pos d_vocab"]:
    """Every position's logits as the fast path computes them: one prefill through a fresh cache (marked
    for rotated keys when ``fast`` says so) under the fast path's forwards. For checks against
    ``model(tokens, attention_mask=...)`` (tests, ``benchmarks/bench_sampling.py``). On a bridge (which
    samples on the reference path) that is what it returns."""
    if isinstance(model, TransformerBridge):
        return model(tokens, attention_mask=attention_mask)
    fast = fast or FastSampling()
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, tokens.shape[0])
    if fast.cached_rotary_keys:
        mark_rotated_key_cache(model, cache, half=fast.half_attention)
    with fast_sampling_context(model, fast):
        return model(tokens, attention_mask=attention_mask, past_kv_cache=cache)


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
        return sample_logits(logits, do_sample=do_sample, temperature=temperature, top_p=top_p, generator=generator)
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
    rotated_keys: bool = True,
    half_attention: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One left-padded batch, as the reference ``generation._generate_batch`` returns it (prompt tokens, mask,
    response tokens, response mask), with shared prefill and in-place sampling; with ``rotated_keys``
    its cache holds rotated keys where :func:`mark_rotated_key_cache` allows it (the caller enters
    :func:`rotated_key_attention`)."""
    device = model.cfg.device
    tokenizer = tokenizer_of(model)
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    tokens, attn = left_pad(prompt_ids, pad_id)
    b = len(prompt_ids)
    firsts = _runs(prompt_ids) if share_prefill else list(range(b))
    uniq = sorted(set(firsts))
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, len(uniq))
    if rotated_keys:
        mark_rotated_key_cache(model, cache, half=half_attention)
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
