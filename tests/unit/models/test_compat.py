"""The TL speed patches change speed only: outputs equal the stock TransformerLens code."""

import torch

from probe_lens.models.compat import apply_fast_cpu_patches, is_patched
from probe_lens.testing import tiny_config


def _stock_and_patched():
    from transformer_lens import HookedTransformer

    from probe_lens.testing import tiny_tokenizer

    torch.manual_seed(0)
    stock = HookedTransformer(tiny_config(n_layers=3), tokenizer=tiny_tokenizer(), default_padding_side="left")
    patched = HookedTransformer(tiny_config(n_layers=3), tokenizer=tiny_tokenizer(), default_padding_side="left")
    patched.load_state_dict(stock.state_dict())
    apply_fast_cpu_patches(patched)
    return stock.eval(), patched.eval()


def test_patched_logits_and_grads_equal_stock():
    stock, patched = _stock_and_patched()
    assert is_patched(patched) and not is_patched(stock)
    tokens = stock.to_tokens(["hello world", "hi"])
    out_s = stock(tokens)
    out_p = patched(tokens)
    assert torch.allclose(out_s, out_p, atol=1e-5)
    out_s.square().mean().backward()
    out_p.square().mean().backward()
    for (n, p_s), (_, p_p) in zip(stock.named_parameters(), patched.named_parameters()):
        assert torch.allclose(p_s.grad, p_p.grad, atol=1e-5, rtol=1e-4), n


def test_attention_weights_are_stored_for_free_rearranges():
    import einops

    stock, patched = _stock_and_patched()
    attn_s, attn_p = stock.blocks[0].attn, patched.blocks[0].attn
    names = [n for n in ("W_Q", "_W_K", "_W_V", "W_K", "W_V", "W_O") if n in attn_p._parameters]
    assert "W_Q" in names and "W_O" in names
    for n in names:
        assert (
            torch.equal(getattr(attn_s, n), getattr(attn_p, n)) and getattr(attn_p, n).shape == getattr(attn_s, n).shape
        )
    w_q = einops.rearrange(attn_p.W_Q, "head_index d_model d_head -> (head_index d_head) d_model")
    w_o = einops.rearrange(attn_p.W_O, "head_index d_head d_model -> d_model (head_index d_head)")
    assert w_q.data_ptr() == attn_p.W_Q.data_ptr() and w_q.is_contiguous()  # a view, not a copy
    assert w_o.data_ptr() == attn_p.W_O.data_ptr() and w_o.is_contiguous()
    # the re-stored model round-trips through a state dict and keeps its outputs
    tokens = stock.to_tokens(["hello world"])
    apply_fast_cpu_patches(patched)  # idempotent
    state = {k: v.contiguous() for k, v in patched.state_dict().items()}
    stock.load_state_dict(state)
    assert torch.allclose(stock(tokens), patched(tokens), atol=1e-5)


def test_batched_no_grad_unembedding_uses_a_fresh_transposed_copy():
    stock, patched = _stock_and_patched()
    resid = torch.randn(2, 5, stock.cfg.d_model)  # 10 rows: the transposed-copy path
    with torch.no_grad():
        assert torch.allclose(patched.unembed(resid), stock.unembed(resid), atol=1e-5)
        assert "_probe_lens_W_U_t" in patched.unembed.__dict__
        patched.unembed.W_U.mul_(2.0)  # an in-place change (an optimizer step) invalidates the copy
        assert torch.allclose(
            patched.unembed(resid), 2 * (stock.unembed(resid) - stock.unembed.b_U) + stock.unembed.b_U, atol=1e-4
        )
    out = patched.unembed(resid)  # with grad: the stored weight itself, so gradients reach W_U
    out.sum().backward()
    assert patched.unembed.W_U.grad is not None


def test_patched_hooks_still_fire():
    _, patched = _stock_and_patched()
    _, cache = patched.run_with_cache("hello")
    for name in (
        "blocks.0.mlp.hook_pre",
        "blocks.0.mlp.hook_post",
        "unembed.hook_out" if "unembed.hook_out" in patched.hook_dict else "blocks.2.hook_resid_post",
    ):
        assert name in cache


def test_weight_first_products_equal_stock_and_their_copies_follow_the_weights():
    from probe_lens.models.compat import clear_transposed_copies, weight_first_matmul

    stock, patched = _stock_and_patched()
    mlp_s, mlp_p = stock.blocks[0].mlp, patched.blocks[0].mlp
    x = torch.randn(3, 5, 7)
    w_t = torch.randn(4, 7)
    b = torch.randn(4)
    assert torch.allclose(weight_first_matmul(x, w_t, b), x @ w_t.T + b, atol=1e-5)
    assert weight_first_matmul(x, w_t).is_contiguous()
    # 1 row (GEMV), 2-128 rows (weight-first) and > 128 rows (plain): all equal the stock MLP and unembed
    for batch, pos in ((1, 1), (4, 1), (2, 9), (3, 100)):
        resid = torch.randn(batch, pos, stock.cfg.d_model)
        with torch.no_grad():
            assert torch.allclose(mlp_p(resid), mlp_s(resid), atol=1e-5), (batch, pos)
            assert torch.allclose(patched.unembed(resid), stock.unembed(resid), atol=1e-5), (batch, pos)
    assert {"_probe_lens_W_gate_t", "_probe_lens_W_in_t", "_probe_lens_W_out_t"} <= set(mlp_p.__dict__)
    resid = torch.randn(4, 1, stock.cfg.d_model)
    with torch.no_grad():  # an optimizer-style in-place update reaches the weight-first path
        mlp_p.W_out.mul_(2.0)
        mlp_s.W_out.mul_(2.0)
        assert torch.allclose(mlp_p(resid), mlp_s(resid), atol=1e-5)
    clear_transposed_copies(patched)
    assert not any(k.startswith("_probe_lens_") and k.endswith("_t") for m in patched.modules() for k in m.__dict__)

    # hooks inside the weight-first MLP see [batch, pos, d_mlp] activations and can edit them
    def zero_pre(act, hook):
        assert act.shape == (4, 1, stock.cfg.d_mlp)
        return torch.zeros_like(act)

    with torch.no_grad():
        mlp_p.hook_pre.add_hook(zero_pre)
        mlp_s.hook_pre.add_hook(zero_pre)
        try:
            assert torch.allclose(mlp_p(resid), mlp_s(resid), atol=1e-6)
        finally:
            mlp_p.hook_pre.remove_hooks()
            mlp_s.hook_pre.remove_hooks()
