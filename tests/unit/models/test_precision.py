"""Precision under bf16 autocast (on CPU): fp32 unembedding and losses, and a DPO margin of exactly 0 at
step 0. Oracles: the same products in fp64 from the autocast pass's own residual stream, and the fp32
forward without autocast."""

import math

import pytest
import torch

from probe_lens.activations import capture
from probe_lens.models import compat, tokenize_pairs
from probe_lens.models.compat import training_products
from probe_lens.testing import tiny_model
from probe_lens.training import (
    DPOConfig,
    ProbeSFTConfig,
    dpo_loss,
    kl_per_token,
    lm_loss,
    sequence_logps,
    train_dpo,
    train_probe_sft,
)
from probe_lens.training.pairs import PreferencePairs

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)
LN_FINAL = "ln_final.hook_normalized"
# Logits of a trained LM are tens of nats (Gemma: 16-64); bf16 rounds those to steps of 0.125-0.25.
LOGIT_SCALE = 40.0

# prompts and responses of very different lengths, so per-batch padding differs between batches
PROMPTS = [
    "Hi",
    "A much longer prompt that goes on and on:",
    "Mid-sized prompt here",
    "Q:",
    "Tell me a story about",
    "x",
    "Another fairly long prompt, with commas, and more",
    "Short one",
]
CHOSEN = [
    " fine",
    " a long and very calm answer, thank you kindly",
    " ok",
    " sure thing, friend",
    " no",
    " kind",
    " this is a pleasant and rather lengthy continuation",
    " yes",
]
REJECTED = [
    " you absolute idiot, get lost right now",
    " bad",
    " shut up",
    " awful",
    " go away loser, nobody likes you",
    " stupid trash",
    " hate",
    " what a dumb and annoying question that was",
]


def _scaled_tiny(seed: int = 0):
    model = tiny_model(seed=seed)
    with torch.no_grad():
        model.unembed.W_U.mul_(LOGIT_SCALE / model.unembed.W_U.std() / model.cfg.d_model**0.5)
    return model


def _batch(model):
    data = tokenize_pairs(model, PROMPTS, CHOSEN, add_eos=True)
    return data.tokens, data.attention_mask, data.response_mask


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_logits_are_fp32_under_bf16_autocast(grad):
    model = _scaled_tiny()
    tokens, am, _ = _batch(model)
    with torch.set_grad_enabled(grad), torch.autocast(**BF16), capture(model, [LN_FINAL]) as acts:
        logits = model(tokens, attention_mask=am)
    assert logits.dtype == torch.float32
    resid = acts[LN_FINAL]
    oracle = resid.double() @ model.unembed.W_U.double() + model.unembed.b_U.double()
    assert oracle.abs().max() > 16  # logits in the range where bf16 steps are >= 0.125
    # fp32 product of the same residual: rounding ~1e-6 relative; a bf16 unembedding errs by up to 0.125 here
    torch.testing.assert_close(logits.double(), oracle, rtol=0, atol=2e-4)
    with torch.no_grad():
        fp32 = model(tokens, attention_mask=am)
    # the bf16 residual stream differs from fp32's by ~1% of the logits' scale
    err = (logits - fp32).abs().max().item()
    assert err < 0.02 * fp32.abs().max().item(), err


def test_training_products_make_no_grad_pass_equal_training_pass():
    model = tiny_model(seed=1)
    tokens, am, _ = _batch(model)
    with torch.enable_grad():
        trained = model(tokens, attention_mask=am).detach()
    with torch.no_grad(), training_products():
        assert torch.equal(model(tokens, attention_mask=am), trained)


def test_loss_pieces_match_fp64_oracle_under_autocast():
    model = _scaled_tiny(seed=2)
    tokens, am, rm = _batch(model)
    with torch.no_grad(), torch.autocast(**BF16):
        with capture(model, [LN_FINAL]) as acts:
            lp = sequence_logps(model, tokens, am, rm)
        lm = lm_loss(model, tokens, am, rm)
    assert lp.dtype == torch.float32 and lm.dtype == torch.float32
    # oracle: unembedding, log-softmax and sums in fp64 from the autocast pass's own residual stream
    resid = acts[LN_FINAL]
    start = tokens.shape[1] - resid.shape[1]  # the forward unembeds only from the first response column on
    logits = resid.double() @ model.unembed.W_U.double() + model.unembed.b_U.double()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, tokens[:, start + 1 :, None])[..., 0]
    logp = logp * rm[:, start + 1 :]
    torch.testing.assert_close(lp.double(), logp.sum(1), rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(lm.double(), -logp.sum() / rm[:, 1:].sum(), rtol=1e-6, atol=1e-6)

    # KL and DPO from bf16 / fp32 inputs under autocast equal fp64 formulas
    g = torch.Generator().manual_seed(0)
    p_logits = (torch.randn(3, 5, 50, generator=g) * LOGIT_SCALE / 4).bfloat16()
    q_logits = (torch.randn(3, 5, 50, generator=g) * LOGIT_SCALE / 4).bfloat16()
    mask = torch.ones(3, 5, dtype=torch.long)
    with torch.autocast(**BF16):
        kl = kl_per_token(p_logits, q_logits, mask)
    p64, q64 = torch.log_softmax(p_logits[:, :-1].double(), -1), torch.log_softmax(q_logits[:, :-1].double(), -1)
    assert kl.dtype == torch.float32
    torch.testing.assert_close(kl.double(), (p64.exp() * (p64 - q64)).sum(-1), rtol=1e-5, atol=1e-5)
    pc, pr, rc, rr = (torch.randn(4, generator=g) * 30 - 100 for _ in range(4))
    with torch.autocast(**BF16):
        loss, m = dpo_loss(pc, pr, rc, rr, beta=0.1)
    z = 0.1 * ((pc.double() - rc.double()) - (pr.double() - rr.double()))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), torch.nn.functional.softplus(-z).mean(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(m["rewards/margins"].double(), z.mean(), rtol=1e-5, atol=1e-5)


def _pairs(model) -> PreferencePairs:
    chosen = tokenize_pairs(model, PROMPTS, CHOSEN, add_eos=True)
    rejected = tokenize_pairs(model, PROMPTS, REJECTED, add_eos=True)
    n = len(PROMPTS)
    return PreferencePairs(list(PROMPTS), chosen, rejected, [0.1] * n, [0.9] * n)


def _record_forwards(model, seen: dict) -> list:
    """Record, per real token sequence, how each forward laid it out: padded row, batch rows, unembedded
    columns and whether the training-pass products ran. Returns the hook handles."""
    pending = {}

    def before(module, args, kwargs):
        tokens, am = args[0], kwargs["attention_mask"]
        pending["rows"] = [
            (tuple(tokens[i][am[i].bool()].tolist()), tuple(tokens[i].tolist())) for i in range(len(tokens))
        ]
        pending["training_path"] = torch.is_grad_enabled() or compat._TRAINING_PRODUCTS.get()

    def unembed(module, args):
        for real, padded in pending["rows"]:
            seen.setdefault(real, set()).add((padded, len(pending["rows"]), args[0].shape[1], pending["training_path"]))

    return [model.register_forward_pre_hook(before, with_kwargs=True), model.unembed.register_forward_pre_hook(unembed)]


@pytest.mark.parametrize("precompute", [True, False], ids=["precomputed", "live"])
def test_dpo_reference_and_policy_passes_lay_out_each_row_alike(precompute):
    """Bitwise-equal log-probs on any kernel (GPU kernels are chosen by shape) need the reference and the
    policy pass to see each row identically: same padded row, batch size, unembedded columns, products."""
    model = tiny_model(seed=3)
    ref = None if precompute else tiny_model(seed=3)
    seen: dict = {}
    handles = _record_forwards(model, seen) + (_record_forwards(ref, seen) if ref is not None else [])
    try:
        cfg = DPOConfig(
            lr=1e-3,
            max_steps=3,
            batch_size=3,
            grad_accum_steps=2,
            precompute_reference=precompute,
            seed=5,
            progress=False,
        )
        train_dpo(model, _pairs(model), cfg, reference_model=ref)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 2 * len(PROMPTS)
    # (padded width, batch rows, unembedded columns, training-pass products) of each differing row
    different = [sorted((len(p), *rest) for p, *rest in layouts) for layouts in seen.values() if len(layouts) > 1]
    assert not different, f"{len(different)} rows laid out differently between passes, e.g. {different[0]}"


@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp32"])
@pytest.mark.parametrize("precompute", [True, False], ids=["precomputed", "live"])
def test_dpo_margin_is_exactly_zero_at_step_0(bf16, precompute):
    """Reference batches (in order, 3 pairs, the last one short) and the policy's (seeded random, 2 x 3
    pairs) mix rows of very different lengths, so per-batch padding differs between the two passes."""
    model = _scaled_tiny(seed=3)
    ref = None if precompute else _scaled_tiny(seed=3)
    cfg = DPOConfig(
        lr=1e-3,
        max_steps=1,
        batch_size=3,
        grad_accum_steps=2,
        bf16=bf16,
        precompute_reference=precompute,
        seed=5,
        progress=False,
    )
    row = train_dpo(model, _pairs(model), cfg, reference_model=ref).history[0]
    assert row["step"] == 1
    assert row["rewards/chosen"] == 0.0 and row["rewards/rejected"] == 0.0 and row["rewards/margins"] == 0.0
    assert row["train/loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_sft_kl_is_exactly_zero_at_step_0_under_autocast():
    model = _scaled_tiny(seed=4)
    data = tokenize_pairs(model, PROMPTS, CHOSEN, add_eos=True)
    cfg = ProbeSFTConfig(lr=1e-3, max_steps=1, batch_size=4, kl_weight=1.0, bf16=True, progress=False)
    row = train_probe_sft(model, data, None, cfg, reference_model=_scaled_tiny(seed=4)).history[0]
    assert row["train/kl"] == 0.0
