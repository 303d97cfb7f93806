"""Losses against independent oracles: hand-computed DPO, explicit log-softmax loops, HF log-probs."""

import math

import pytest
import torch

from probe_lens.models import tokenize_pairs
from probe_lens.training import dpo_loss, kl_per_token, lm_loss, sequence_logps, token_logps
from probe_lens.training.losses import response_logits_start, response_token_logps


def test_dpo_loss_matches_hand_computed_values():
    pc = torch.tensor([-10.0, -5.0])
    pr = torch.tensor([-12.0, -4.0])
    rc = torch.tensor([-11.0, -5.5])
    rr = torch.tensor([-11.0, -4.5])
    beta = 0.5
    # pair 0: (pc-rc) - (pr-rr) = 1 - (-1) = 2  -> -log sigmoid(1.0)
    # pair 1: 0.5 - 0.5 = 0                      -> log 2
    expected0 = math.log(1 + math.exp(-1.0))
    expected1 = math.log(2.0)
    loss, m = dpo_loss(pc, pr, rc, rr, beta)
    assert loss.item() == pytest.approx((expected0 + expected1) / 2, abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx((0.5 * 1.0 + 0.5 * 0.5) / 2)
    assert m["rewards/rejected"].item() == pytest.approx((0.5 * -1.0 + 0.5 * 0.5) / 2)
    assert m["rewards/margins"].item() == pytest.approx((1.0 + 0.0) / 2)
    assert m["rewards/accuracies"].item() == pytest.approx(0.5)  # pair 1 is a tie, not a win
    assert m["logps/chosen"].item() == pytest.approx(-7.5)
    assert m["logps/rejected"].item() == pytest.approx(-8.0)
    losses, _ = dpo_loss(pc, pr, rc, rr, beta, reduction="none")
    assert losses.tolist() == pytest.approx([expected0, expected1], abs=1e-6)
    assert dpo_loss(pc, pr, rc, rr, beta, reduction="sum")[0].item() == pytest.approx(expected0 + expected1, abs=1e-6)


def test_dpo_loss_gradient_and_bad_input():
    pc = torch.tensor([-3.0], requires_grad=True)
    pr = torch.tensor([-2.0], requires_grad=True)
    loss, _ = dpo_loss(pc, pr, torch.tensor([-3.0]), torch.tensor([-2.0]), beta=0.1)
    loss.backward()
    # d/dpc [-log sigmoid(beta*z)] at z=0 = -beta * sigmoid(0) = -0.05
    assert pc.grad.item() == pytest.approx(-0.05)
    assert pr.grad.item() == pytest.approx(0.05)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, pc, pr, beta=0.0)
    with pytest.raises(ValueError, match="same shape"):
        dpo_loss(pc, torch.zeros(2), pc, pr, beta=0.1)


def _oracle_logps(model, tokens, attention_mask, response_mask):
    logits = model(tokens, attention_mask=attention_mask)
    out = []
    for b in range(tokens.shape[0]):
        total = 0.0
        for t in range(1, tokens.shape[1]):
            if response_mask[b, t]:
                total += torch.log_softmax(logits[b, t - 1].double(), -1)[tokens[b, t]].item()
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture
def pairs(tiny):
    return tokenize_pairs(tiny, ["hi", "a longer prompt here"], [" there friend", " ok"], add_eos=True)


def test_sequence_logps_and_lm_loss_match_explicit_loop(tiny, pairs):
    with torch.no_grad():
        got = sequence_logps(tiny, pairs.tokens, pairs.attention_mask, pairs.response_mask)
        oracle = _oracle_logps(tiny, pairs.tokens, pairs.attention_mask, pairs.response_mask)
        assert torch.allclose(got.double(), oracle, atol=1e-4)
        n_tok = pairs.response_mask.sum()
        assert lm_loss(tiny, pairs.tokens, pairs.attention_mask, pairs.response_mask).item() == pytest.approx(
            (-oracle.sum() / n_tok).item(), abs=1e-5
        )


def test_response_logits_skip_prompt_positions_and_equal_the_full_forward(tiny, pairs):
    start = response_logits_start(pairs.response_mask)
    assert start > 0  # both prompts are longer than one token
    with torch.no_grad():
        lp, logits = response_token_logps(
            tiny, pairs.tokens, pairs.attention_mask, pairs.response_mask, return_logits=True
        )
        full = token_logps(tiny(pairs.tokens, attention_mask=pairs.attention_mask), pairs.tokens, pairs.response_mask)
    assert logits.shape[1] == pairs.tokens.shape[1] - start  # the LM head saw only these positions
    assert torch.allclose(lp, full[:, start:], atol=1e-5)
    assert torch.count_nonzero(full[:, :start]) == 0  # nothing dropped that a response token needs
    assert not tiny.hook_dict["ln_final.hook_normalized"].fwd_hooks  # the slicing hook is gone


def test_sequence_logps_rejects_inconsistent_masks(tiny, pairs):
    bad = pairs.response_mask.clone()
    bad[:, 0] = 1
    with pytest.raises(ValueError, match="position 0"):
        sequence_logps(tiny, pairs.tokens, pairs.attention_mask, bad)
    with pytest.raises(ValueError, match="batch, pos"):
        sequence_logps(tiny, pairs.tokens, pairs.attention_mask[:, 1:], pairs.response_mask)


def test_kl_per_token_matches_formula():
    torch.manual_seed(0)
    p, q = torch.randn(1, 3, 5), torch.randn(1, 3, 5)
    mask = torch.tensor([[0, 1, 1]])
    got = kl_per_token(p, q, mask)
    P, Q = torch.softmax(p[0, :2], -1), torch.softmax(q[0, :2], -1)
    want = (P * (P.log() - Q.log())).sum(-1)
    assert torch.allclose(got[0], want, atol=1e-6)
    assert torch.allclose(kl_per_token(p, p, mask), torch.zeros(1, 2), atol=1e-6)
