"""TransformerLens 3.9 compatibility fixes, kept in one place.

TL 3.9's ``Unembed`` and ``GatedMLP`` call ``F.linear(x, W.T.contiguous())``: a fresh transposed
copy of every weight on every forward (670 MB per decoded token for Gemma's 262k vocab). That makes
CPU generation 5-9x slower than HF. The patched forwards below compute the same product as ``x @ W``
on the stored weights (and, for batched no-grad calls on CPU, ``F.linear`` on a cached transposed
copy of ``W_U``, which CPU BLAS runs faster at 4+ rows).

Its attention does the same with the head-shaped weights: ``rearrange(W_Q, "h d_model d_head ->
(h d_head) d_model")`` (also ``W_K``, ``W_V``) and ``rearrange(W_O, ...).contiguous()`` copy every
attention weight on every forward, about a quarter of the time of a decoding step. Rather than
changing TL's code, :func:`apply_fast_cpu_patches` stores those parameters in the memory order those
rearranges read, so they become free views: same shapes, same values, different strides.

Last, the layout of the product itself: on the CPU these figures come from (AMD EPYC, MKL, 2 threads)
``x @ W`` for a few rows (batched decoding: one row per sequence) runs at 10-25 GFLOP/s, while the same
product computed weight-first, ``(W^T @ x^T)^T`` with ``W^T`` stored contiguously, runs 1.3-2.3x faster
from 2 to 64 rows (``benchmarks/bench_matmul_layout.py``; even at 128, not from 256 on), while at 1 row
``x @ W`` on TL's own layout is the fastest form.
Batched no-grad CPU forwards of ``Unembed`` and ``GatedMLP`` therefore read cached transposed copies of
their weights (rebuilt when a weight changes; :func:`clear_transposed_copies` frees them). The copies
cost one more ``W_U`` and MLP in memory: 0.95 GB for Gemma-3-270M, 3.7 GB for Gemma-3-1B.

Under autocast (bf16 training) the unembedding runs in fp32 (autocast off, and no TF32 on CUDA): bf16
logits of magnitude 16-64 are rounded to steps of 0.125-0.25, too coarse for log-probs. The fast paths
above are fp32-CPU-only and off under autocast, so a forward computes the same products with or
without autograd there; :func:`training_products` makes that so without autocast too (for reference
passes that must equal the training pass bit for bit, e.g. DPO reference log-probs).

``tests/unit/models/test_compat.py`` proves the outputs and gradients equal the stock code's; ``tests/unit/models/test_precision.py``
the fp32 unembedding under autocast.

**TransformerBridge, padded batches**: in compatibility mode TL 3.9's attention bridges turn HF's finite
mask value into ``-inf``, so a left-padding query row (which may attend to nothing) gets a NaN softmax;
the forward scrubs it to 0, but the backward through that softmax is NaN, and every gradient of a
left-padded batch with it (probe-SFT and DPO stop at step 1). :func:`finite_bridge_masks` keeps the mask
finite, per instance, at -65504 (finite in fp16 and bf16 too: HF's fp32 minimum overflows to ``-inf``
when cast to bf16 under autocast): real positions are bit-for-bit unchanged (their masked scores still
give exp(...) = 0), pad rows get a finite pattern nothing reads.

**TransformerBridge, speed**: a bridge runs the HF model's own modules (``nn.Linear`` reads its weight in place
through ``F.linear``: no per-forward copies to remove), so none of the above applies to it:
:func:`apply_fast_cpu_patches` leaves a bridge unchanged (``is_patched`` stays False) and a bridge runs
HF's products, with or without :func:`training_products` (``tests/unit/models/test_bridge_backend.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import types
import warnings
from typing import TypeVar

import torch
from jaxtyping import Float
from transformer_lens.components import AbstractAttention, Unembed
from transformer_lens.components.mlps.gated_mlp import GatedMLP

_PATCHED_FLAG = "_probe_lens_fast_cpu"
M = TypeVar("M", bound=torch.nn.Module)


# Rows (batch x positions) for which a no-grad CPU product runs weight-first, (W^T @ x^T)^T: 1.3-2.3x
# faster than x @ W from 2 to 64 rows (batched decoding: one row per sequence) on the CPU measured;
# at 1 row (a GEMV) and from 256 rows on, the plain layouts are as fast or faster.
_WEIGHT_FIRST_ROWS = range(2, 129)
# From this many rows on, a no-grad unembedding reads a [d_vocab, d_model] copy of W_U (weight-first up
# to 128 rows, F.linear beyond, which is ~20% faster than x @ W_U there).
_ROWS_FOR_TRANSPOSED_UNEMBED = 2


_TRAINING_PRODUCTS: contextvars.ContextVar[bool] = contextvars.ContextVar("probe_lens_training_products", default=False)


@contextlib.contextmanager
def training_products():
    """Inside this block the patched forwards compute exactly the products they compute with autograd on.

    The no-grad CPU fast paths (cached transposed weights, weight-first products) round differently in
    the last bits; a no-grad pass that must equal a training pass bit for bit (a DPO reference pass, a
    KL reference) runs inside this block.
    """
    token = _TRAINING_PRODUCTS.set(True)
    try:
        yield
    finally:
        _TRAINING_PRODUCTS.reset(token)


def _rows(x: torch.Tensor) -> int:
    return x.numel() // max(x.shape[-1], 1)


def _no_grad_fast_ok(x: torch.Tensor) -> bool:
    """Whether the fp32 CPU no-grad fast paths may run: no autograd, CPU, no autocast, not told otherwise."""
    return (
        not torch.is_grad_enabled()
        and x.device.type == "cpu"
        and not torch.is_autocast_enabled("cpu")
        and not _TRAINING_PRODUCTS.get()
    )


def _weight_first_ok(x: torch.Tensor) -> bool:
    return _no_grad_fast_ok(x) and _rows(x) in _WEIGHT_FIRST_ROWS


@contextlib.contextmanager
def _full_fp32(device: torch.device):
    """Autocast off for ``device``'s type and, on CUDA, fp32 matmuls without TF32 (restored afterwards)."""
    with torch.autocast(device.type, enabled=False):
        if device.type != "cuda":
            yield
            return
        before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(before)


def fp32_unembed(
    residual: Float[torch.Tensor, "... d_model"],
    W_U: Float[torch.Tensor, "d_model d_vocab"],
    b_U: Float[torch.Tensor, " d_vocab"],
) -> Float[torch.Tensor, "... d_vocab"]:
    """``residual @ W_U + b_U`` in full fp32 whatever autocast says (fp32 logits)."""
    with _full_fp32(residual.device):
        return residual.float() @ W_U.float() + b_U.float()


def weight_first_matmul(
    x: Float[torch.Tensor, "... d_in"],
    w_t: Float[torch.Tensor, "d_out d_in"],
    bias: Float[torch.Tensor, " d_out"] | None = None,
) -> Float[torch.Tensor, "... d_out"]:
    """``x @ w_t.T + bias`` computed as ``(w_t @ x^T)^T`` (the faster layout for a few rows on CPU BLAS)."""
    x2d = x.reshape(-1, x.shape[-1])
    y = torch.mm(w_t, x2d.T) if bias is None else torch.addmm(bias.unsqueeze(1), w_t, x2d.T)
    return y.T.contiguous().view(*x.shape[:-1], w_t.shape[0])


def _transposed_copy(module: torch.nn.Module, name: str) -> torch.Tensor:
    """``module.<name>.T`` as a contiguous tensor, cached until the weight changes (in place or replaced)."""
    w = getattr(module, name)
    key = (w.data_ptr(), w._version, w.dtype, w.device)
    slot = f"_probe_lens_{name}_t"
    cached = module.__dict__.get(slot)
    if cached is not None and cached[0] != key and cached[0][2:] == key[2:] and cached[1].shape == w.shape[::-1]:
        cached[1].copy_(w.detach().T)  # refreshed in place after an optimizer step: no new allocation
        cached = (key, cached[1])
        module.__dict__[slot] = cached
    elif cached is None or cached[0] != key:
        cached = (key, w.detach().T.contiguous())
        module.__dict__[slot] = cached
    return cached[1]


def clear_transposed_copies(model: torch.nn.Module) -> None:
    """Free the cached transposed weights (they are rebuilt by the next batched no-grad CPU forward)."""
    for module in model.modules():
        for slot in [k for k in module.__dict__ if k.startswith("_probe_lens_") and k.endswith("_t")]:
            del module.__dict__[slot]


def _unembed_forward(
    self: Unembed, residual: Float[torch.Tensor, "batch pos d_model"]
) -> Float[torch.Tensor, "batch pos d_vocab_out"]:
    residual = self.hook_in(residual)
    if torch.is_autocast_enabled(residual.device.type):
        return self.hook_out(fp32_unembed(residual, self.W_U, self.b_U))
    rows = _rows(residual)
    if rows >= _ROWS_FOR_TRANSPOSED_UNEMBED and _no_grad_fast_ok(residual):
        w_u_t = _transposed_copy(self, "W_U")
        if rows in _WEIGHT_FIRST_ROWS:
            return self.hook_out(weight_first_matmul(residual, w_u_t, self.b_U))
        return self.hook_out(torch.nn.functional.linear(residual, w_u_t, self.b_U))
    return self.hook_out(residual @ self.W_U + self.b_U)


def _mlp_product(mlp: GatedMLP, x: torch.Tensor, name: str, weight_first: bool) -> torch.Tensor:
    """``x @ mlp.<name>``, weight-first on a cached transposed copy when ``weight_first``."""
    if weight_first:
        return weight_first_matmul(x, _transposed_copy(mlp, name))
    return x @ getattr(mlp, name)


def _gated_mlp_forward(
    self: GatedMLP, x: Float[torch.Tensor, "batch pos d_model"]
) -> Float[torch.Tensor, "batch pos d_model"]:
    if self.W_gate.device != x.device:
        x = x.to(self.W_gate.device)
    fast = _weight_first_ok(x)
    pre_act = self.hook_pre(_mlp_product(self, x, "W_gate", fast))
    if self.cfg.is_layer_norm_activation() and self.hook_mid is not None and self.ln is not None:
        mid_act = self.hook_mid(self.act_fn(pre_act))
        post_act = self.hook_post(self.ln(mid_act))
    else:
        pre_linear = self.hook_pre_linear(_mlp_product(self, x, "W_in", fast))
        post_act = self.hook_post((self.act_fn(pre_act) * pre_linear) + self.b_in)
    return _mlp_product(self, post_act, "W_out", fast) + self.b_out


# attention parameter -> the permutation whose result TL's rearranges read (stored contiguously)
_ATTENTION_STORAGE_ORDER = {
    "W_Q": (0, 2, 1),
    "W_K": (0, 2, 1),
    "W_V": (0, 2, 1),
    "_W_K": (0, 2, 1),
    "_W_V": (0, 2, 1),
    "W_O": (2, 0, 1),
}


def _store_for_rearrange(param: torch.nn.Parameter, order: tuple[int, ...]) -> None:
    """Re-store ``param`` so that ``param.permute(*order)`` is contiguous (values and shape unchanged)."""
    if param.ndim != len(order) or param.permute(*order).is_contiguous():
        return
    inverse = tuple(sorted(range(len(order)), key=order.__getitem__))
    with torch.no_grad():
        param.data = param.data.permute(*order).contiguous().permute(*inverse)


def apply_fast_cpu_patches(model: M) -> M:
    """Swap the copying forwards of ``Unembed`` and ``GatedMLP`` for plain (or weight-first) matmuls and
    store the attention weights in the order TL's rearranges read (in place).

    Only these instances change; the TransformerLens classes are untouched. Idempotent. Saving a
    re-stored weight needs ``.contiguous()`` (as safetensors requires anyway). A ``TransformerBridge``
    has none of these components and is returned unchanged.
    """
    for module in model.modules():
        if isinstance(module, AbstractAttention):
            for name, order in _ATTENTION_STORAGE_ORDER.items():
                param = module._parameters.get(name)
                if param is not None:
                    _store_for_rearrange(param, order)
            setattr(module, _PATCHED_FLAG, True)
            continue
        if getattr(module, _PATCHED_FLAG, False):
            continue
        if type(module) is Unembed:
            module.forward = types.MethodType(_unembed_forward, module)  # type: ignore[method-assign]  # per instance
            setattr(module, _PATCHED_FLAG, True)
        elif type(module) is GatedMLP:
            module.forward = types.MethodType(_gated_mlp_forward, module)  # type: ignore[method-assign]  # per instance
            setattr(module, _PATCHED_FLAG, True)
    return model


def is_patched(model: torch.nn.Module) -> bool:
    """Whether :func:`apply_fast_cpu_patches` has been applied to ``model``."""
    return any(getattr(m, _PATCHED_FLAG, False) for m in model.modules())


# The most negative fp16 value: finite in every float dtype the mask may be cast to (fp32's min is -inf
# in bf16 and fp16, as under autocast), and exp(-65504 + score - max) is still exactly 0.
_FINITE_MASK_MIN = torch.finfo(torch.float16).min


def _keep_finite_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    return attention_mask.clamp(min=_FINITE_MASK_MIN) if attention_mask.is_floating_point() else attention_mask


def finite_bridge_masks(model: M) -> M:
    """Keep HF's finite additive attention mask in every attention bridge of ``model`` (in place, per
    instance; see the module docstring): finite gradients for left-padded batches. Idempotent."""
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    for module in model.modules():
        if isinstance(module, AttentionBridge):
            module._normalize_compatibility_mask_sentinel = _keep_finite_mask  # type: ignore[method-assign]
    return model


@contextlib.contextmanager
def quiet_tl_deprecation():
    """Silence TL 3.9's 'HookedTransformer is deprecated' warnings around probe_lens's *own* constructions
    (probe_lens pins TL < 4 and offers ``backend="bridge"`` for 4.x). Nothing is silenced globally: a user
    who constructs a ``HookedTransformer`` still sees the warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*HookedTransformer.*deprecated", category=DeprecationWarning)
        yield
