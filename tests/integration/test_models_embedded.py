"""The embedded Gemma-3-270M: TransformerLens agrees with HF transformers on the same weights."""

import pytest
import torch

from probe_lens.models import ModelUnavailableError, generate, load_model
from probe_lens.testing import first_divergence_gap

pytestmark = pytest.mark.embedded

TEXT = "The committee met on Tuesday to discuss the new budget, and"


def test_logits_match_hf(embedded_model, embedded_hf):
    hf, tok = embedded_hf
    ids = tok(TEXT, return_tensors="pt").input_ids
    assert ids[0, 0] == tok.bos_token_id
    tl_ids = embedded_model.to_tokens(TEXT)
    assert torch.equal(ids, tl_ids)
    with torch.no_grad():
        hf_logits = hf(ids).logits
        tl_logits = embedded_model(ids)
    assert (hf_logits - tl_logits).abs().max().item() < 1e-4


def test_resid_post_equals_hf_hidden_states(embedded_model, embedded_hf):
    hf, tok = embedded_hf
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        hs = hf(ids, output_hidden_states=True).hidden_states
        _, cache = embedded_model.run_with_cache(ids)
    n = embedded_model.cfg.n_layers
    # hidden_states[l + 1] is the output of block l; HF applies the final norm to the last one
    for layer in (0, n // 2, n - 2):
        tl = cache[f"blocks.{layer}.hook_resid_post"]
        rel = (tl - hs[layer + 1]).abs().max() / hs[layer + 1].abs().max()
        assert rel.item() < 1e-5, layer


NEAR_TIE_LOGITS = 2e-2
"""Greedy tokens may differ between batch layouts or code paths only where the top two logits are this close:
another padding width, or another CPU kind, rounds the products differently and can flip a near-tie."""


def _response(gen, i: int) -> list[int]:
    return gen.tokens[i][gen.response_mask[i].bool()].tolist()


def test_greedy_batched_equals_unbatched_up_to_near_ties(embedded_model):
    prompts = ["I can't believe you would", "The recipe calls for two cups of", "Hi"]
    batched = generate(embedded_model, prompts, max_new_tokens=8, do_sample=False, progress=False)
    for i, p in enumerate(prompts):
        single = generate(embedded_model, [p], max_new_tokens=8, do_sample=False, progress=False)
        ids = embedded_model.to_tokens(p)[0].tolist()
        gap = first_divergence_gap(embedded_model, ids, _response(single, 0), _response(batched, i))
        assert gap is None or gap < NEAR_TIE_LOGITS, (p, batched.response_texts[i], single.response_texts[0], gap)


def test_greedy_matches_hf_generate_up_to_near_ties(embedded_model, embedded_hf):
    hf, tok = embedded_hf
    prompt = "The capital of France is"
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = hf.generate(ids, max_new_tokens=8, do_sample=False)
    ours = generate(embedded_model, [prompt], max_new_tokens=8, do_sample=False, progress=False)
    gap = first_divergence_gap(embedded_model, ids[0].tolist(), out[0, ids.shape[1] :].tolist(), _response(ours, 0))
    assert gap is None or gap < NEAR_TIE_LOGITS, (ours.response_texts, tok.decode(out[0, ids.shape[1] :]), gap)


def test_same_seed_same_samples(embedded_model):
    prompts = ["You absolute", "Today I went to the"]
    a = generate(embedded_model, prompts, max_new_tokens=6, seed=1, progress=False)
    b = generate(embedded_model, prompts, max_new_tokens=6, seed=1, progress=False)
    assert a.response_texts == b.response_texts


def test_unknown_model_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="embedded"):
        load_model("google/gemma-3-1b-pt", device="cpu")
    with pytest.raises(ValueError, match="neither a local model folder"):
        load_model("not-a-real/model-xyz", device="cpu")
