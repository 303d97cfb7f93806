"""Hook resolution, masked pooling, bulk collection and live capture (tiny model)."""

import pytest
import torch

from probe_lens.activations import UnknownHookError, capture, collect, pool, resolve_hook, resolve_hooks
from probe_lens.models import generate


def test_pool_respects_left_padding_mask_hand_computed():
    # batch 2, pos 4, d 2; row 0 left-padded by two positions
    acts = torch.tensor(
        [
            [[100.0, 100.0], [100.0, 100.0], [1.0, 2.0], [3.0, 6.0]],
            [[1.0, 0.0], [2.0, 4.0], [3.0, 1.0], [5.0, -1.0]],
        ]
    )
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    assert torch.allclose(pool(acts, mask, "mean"), torch.tensor([[2.0, 4.0], [2.5, 2.5]]))
    assert torch.allclose(pool(acts, mask, "last"), torch.tensor([[3.0, 6.0], [3.0, 1.0]]))
    assert torch.allclose(pool(acts, mask, "max"), torch.tensor([[3.0, 6.0], [3.0, 4.0]]))


def test_pool_bad_input():
    with pytest.raises(ValueError, match="no masked positions"):
        pool(torch.zeros(1, 3, 2), torch.zeros(1, 3), "mean")
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(torch.zeros(1, 3, 2), torch.ones(1, 3), "median")
    with pytest.raises(ValueError, match="must be"):
        pool(torch.zeros(1, 3, 2), torch.ones(1, 4), "mean")


def test_resolve_hook_by_layer_and_name(tiny):
    assert resolve_hook(tiny, 1) == "blocks.1.hook_resid_post"
    assert resolve_hook(tiny, -1) == "blocks.1.hook_resid_post"
    assert resolve_hook(tiny, "blocks.0.hook_resid_pre") == "blocks.0.hook_resid_pre"
    assert resolve_hooks(tiny, [0, "blocks.0.hook_resid_post", 1]) == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]


def test_unknown_hook_lists_closest_names(tiny):
    with pytest.raises(UnknownHookError, match=r"blocks\.1\.hook_resid_post"):
        resolve_hook(tiny, "blocks.1.hook_resid_pots")
    with pytest.raises(UnknownHookError, match="out of range"):
        resolve_hook(tiny, 7)


def test_collect_matches_run_with_cache_and_pooling(tiny):
    gen = generate(tiny, ["hello there", "a", "some longer prompt text"], max_new_tokens=5, seed=0, progress=False)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
    got = collect(tiny, gen.tokens, gen.attention_mask, gen.response_mask, hooks, batch_size=2, progress=False)
    _, cache = tiny.run_with_cache(gen.tokens, attention_mask=gen.attention_mask)
    for h in hooks:
        expect = pool(cache[h], gen.response_mask, "mean")
        assert got[h].shape == (3, tiny.cfg.d_model)
        assert torch.allclose(got[h], expect, atol=1e-5)


def test_capture_gradients_reach_blocks_at_or_below_layer_only(tiny4):
    gen = generate(tiny4, ["hello there", "abc"], max_new_tokens=4, seed=0, progress=False)
    k = 1
    hook = f"blocks.{k}.hook_resid_post"
    with capture(tiny4, [hook]) as acts:
        tiny4(gen.tokens, attention_mask=gen.attention_mask, stop_at_layer=None)
    loss = pool(acts[hook], gen.response_mask).pow(2).sum()
    loss.backward()
    for i, block in enumerate(tiny4.blocks):
        g = sum(p.grad.abs().sum().item() for p in block.parameters() if p.grad is not None)
        if i <= k:
            assert g > 0, f"block {i} should get gradient"
        else:
            assert g == 0, f"block {i} is above the probe layer and must get no gradient"
    assert tiny4.embed.W_E.grad is not None and tiny4.embed.W_E.grad.abs().sum() > 0
