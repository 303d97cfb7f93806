"""Generation on the tiny model: batching, seeds, masks, bad input."""

import pytest
import torch

from probe_lens.models import Generation, generate, tokenize_pairs

PROMPTS = ["hello world", "hi", "a much longer prompt with more bytes", "x"]


def test_greedy_batched_equals_unbatched(tiny):
    batched = generate(tiny, PROMPTS, max_new_tokens=6, do_sample=False, batch_size=4, progress=False)
    for i, p in enumerate(PROMPTS):
        single = generate(tiny, [p], max_new_tokens=6, do_sample=False, progress=False)
        assert batched.response_texts[i] == single.response_texts[0]
        resp = batched.tokens[i][batched.response_mask[i].bool()]
        assert torch.equal(resp, single.tokens[0][single.response_mask[0].bool()])


def test_same_seed_same_samples(tiny):
    a = generate(tiny, PROMPTS, max_new_tokens=6, seed=7, batch_size=2, progress=False)
    b = generate(tiny, PROMPTS, max_new_tokens=6, seed=7, batch_size=2, progress=False)
    c = generate(tiny, PROMPTS, max_new_tokens=6, seed=8, batch_size=2, progress=False)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_masks_select_prompt_and_response(tiny):
    g = generate(tiny, PROMPTS, max_new_tokens=5, seed=0, progress=False)
    assert isinstance(g, Generation) and len(g) == 4
    assert g.tokens.shape[1] == g.prompt_len + 5
    assert int(g.response_mask[:, : g.prompt_len].sum()) == 0
    assert torch.all(g.response_mask <= g.attention_mask)
    for i, p in enumerate(PROMPTS):
        prompt_ids = g.tokens[i][g.prompt_mask[i].bool()]
        assert tiny.tokenizer.decode(prompt_ids[1:].tolist()) == p
        # the decoded response equals the decoded response tokens
        resp_ids = g.tokens[i][g.response_mask[i].bool()]
        assert tiny.tokenizer.decode(resp_ids.tolist(), skip_special_tokens=True) == g.response_texts[i]


def test_stop_at_eos_masks_after_eos(tiny):
    eos = tiny.tokenizer.eos_token_id
    with torch.no_grad():
        tiny.unembed.b_U[eos] = 1e4  # force EOS as the first token
    g = generate(tiny, PROMPTS, max_new_tokens=5, do_sample=False, progress=False)
    assert g.response_mask.sum(dim=1).tolist() == [1, 1, 1, 1]
    assert g.response_texts == ["", "", "", ""]


def test_top_p_sampling_restricts_to_argmax_when_tiny(tiny):
    greedy = generate(tiny, PROMPTS, max_new_tokens=4, do_sample=False, progress=False)
    nucleus = generate(tiny, PROMPTS, max_new_tokens=4, top_p=1e-6, seed=0, progress=False)
    assert torch.equal(greedy.tokens, nucleus.tokens)


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="empty"):
        generate(tiny, [], progress=False)
    with pytest.raises(TypeError, match="single string"):
        generate(tiny, "hello", progress=False)
    with pytest.raises(TypeError, match="prompt 1"):
        generate(tiny, ["ok", 3], progress=False)
    with pytest.raises(ValueError, match="top_p"):
        generate(tiny, ["ok"], top_p=0, progress=False)


def test_long_prompt_truncated_with_warning(tiny):
    long = "z" * (tiny.cfg.n_ctx + 50)
    with pytest.warns(UserWarning, match="exceed"):
        g = generate(tiny, [long, "short"], max_new_tokens=3, seed=0, progress=False)
    assert g.tokens.shape[1] <= tiny.cfg.n_ctx
    assert g.response_mask[0].sum() == 3


def test_tokenize_pairs_marks_response(tiny):
    g = tokenize_pairs(tiny, ["ab", "hello"], ["cd", "!"])
    assert g.response_mask.sum(dim=1).tolist() == [2, 1]
    assert tiny.tokenizer.decode(g.tokens[0][g.response_mask[0].bool()].tolist()) == "cd"
    with pytest.raises(ValueError, match="pair up"):
        tokenize_pairs(tiny, ["a"], ["b", "c"])
