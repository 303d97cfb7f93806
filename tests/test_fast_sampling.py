"""``generate(fast=True)`` on the tiny model: equal to the reference path within the stated tolerance.

Tolerance: fp16 weight copies change the tiny model's logits by at most 1e-2 (measured ~2.5e-3 at
logit std ~0.8), and greedy decoding gives the reference path's tokens for every prompt here.
"""

import pytest
import torch

from probe_lens.models import generate
from probe_lens.models.fast_sampling import (
    FastSampling,
    clear_half_copies,
    half_copy_bytes,
    half_products_available,
    half_weight_products,
    sample_in_place,
)
from probe_lens.models.generation import _sample

PROMPTS = ["hello world", "hi", "a much longer prompt with more bytes", "x", "the cat sat on", "zzz", "Once upon", "1 2 3"]

needs_fbgemm = pytest.mark.skipif(not half_products_available(), reason="this torch build has no fbgemm fp16 linear")


@needs_fbgemm
def test_half_products_logits_within_tolerance(tiny):
    toks = tiny.to_tokens(PROMPTS)
    with torch.no_grad():
        ref = tiny(toks)
        with half_weight_products(tiny):
            fast = tiny(toks)
    assert 0 < (ref - fast).abs().max() < 1e-2  # different (fp16 weights are in use), but close


def test_greedy_equals_reference(tiny):
    ref = generate(tiny, PROMPTS, max_new_tokens=12, do_sample=False, progress=False)
    fast = generate(tiny, PROMPTS, max_new_tokens=12, do_sample=False, progress=False, fast=True)
    assert torch.equal(ref.tokens, fast.tokens)
    assert torch.equal(ref.response_mask, fast.response_mask)
    assert ref.response_texts == fast.response_texts


def test_seeded_sampling_deterministic(tiny):
    a = generate(tiny, PROMPTS, max_new_tokens=8, seed=5, batch_size=3, progress=False, fast=True)
    b = generate(tiny, PROMPTS, max_new_tokens=8, seed=5, batch_size=3, progress=False, fast=True)
    c = generate(tiny, PROMPTS, max_new_tokens=8, seed=6, batch_size=3, progress=False, fast=True)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_greedy_batched_equals_unbatched(tiny):
    batched = generate(tiny, PROMPTS, max_new_tokens=8, do_sample=False, batch_size=8, progress=False, fast=True)
    for i, p in enumerate(PROMPTS):
        single = generate(tiny, [p], max_new_tokens=8, do_sample=False, progress=False, fast=True)
        assert torch.equal(batched.tokens[i][batched.response_mask[i].bool()], single.tokens[0][single.response_mask[0].bool()])


def test_shared_prefill_equals_separate_prefill(tiny):
    texts = [p for p in PROMPTS[:4] for _ in range(3)]
    shared = generate(tiny, texts, max_new_tokens=6, seed=1, batch_size=12, progress=False, fast=True)
    separate = generate(tiny, texts, max_new_tokens=6, seed=1, batch_size=12, progress=False,
                        fast=FastSampling(share_prefill=False))
    assert torch.equal(shared.tokens, separate.tokens)
    assert len({tuple(t.tolist()) for t in shared.tokens[:3]}) > 1  # the k samples of a prompt differ


def test_in_place_sampling_uses_the_reference_draws():
    logits = torch.randn(6, 50) * 3
    for temperature in (1.0, 0.7):
        ref = _sample(logits.clone(), do_sample=True, temperature=temperature, top_p=1.0,
                      generator=torch.Generator().manual_seed(0))
        fast = sample_in_place(logits.clone(), do_sample=True, temperature=temperature, top_p=1.0,
                               generator=torch.Generator().manual_seed(0))
        assert torch.equal(ref, fast)


@needs_fbgemm
def test_half_copies_rebuilt_after_weight_change_and_freeable(tiny):
    generate(tiny, PROMPTS[:2], max_new_tokens=2, do_sample=False, progress=False, fast=True)
    assert half_copy_bytes(tiny) > 0
    eos = tiny.tokenizer.eos_token_id
    with torch.no_grad():
        tiny.unembed.b_U[eos] = 1e4  # an in-place change, as an optimizer step makes
    g = generate(tiny, PROMPTS[:2], max_new_tokens=4, do_sample=False, progress=False, fast=True)
    assert g.response_mask.sum(dim=1).tolist() == [1, 1]  # the new bias is used: EOS at once
    toks = tiny.to_tokens(PROMPTS[:2])
    with torch.no_grad():
        before = tiny(toks)
        tiny.blocks[0].mlp.W_out.mul_(0)
        after = tiny(toks)
        with half_weight_products(tiny):
            fast = tiny(toks)
    assert (before - after).abs().max() > 0.05  # the change matters: a stale copy would show it
    assert (after - fast).abs().max() < 1e-2  # the zeroed MLP weight is read from a rebuilt copy
    assert clear_half_copies(tiny) > 0
    assert half_copy_bytes(tiny) == 0


@needs_fbgemm
def test_gradients_untouched_inside_the_block(tiny):
    toks = tiny.to_tokens(PROMPTS[:3])
    forwards = {id(m): m.__dict__.get("forward") for m in tiny.modules()}
    ref_loss = tiny(toks, return_type="loss")
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in tiny.named_parameters()}
    tiny.zero_grad(set_to_none=True)
    with half_weight_products(tiny):
        loss = tiny(toks, return_type="loss")
        loss.backward()
    assert torch.equal(loss.detach(), ref_loss.detach())
    for n, p in tiny.named_parameters():
        assert torch.equal(p.grad, ref_grads[n]), n
    assert all(m.__dict__.get("forward") is forwards[id(m)] for m in tiny.modules())  # restored on exit


def test_bad_fast_argument(tiny):
    with pytest.raises(TypeError, match="FastSampling"):
        generate(tiny, ["hi"], max_new_tokens=2, progress=False, fast="yes")
