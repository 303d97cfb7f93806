"""Token probes (max-pooled, attention) as trained-against signals: probe-SFT's probe term, the probe scores that
rank DPO pairs and filter probe-filtered SFT, and RLOO's reward read every response token, as the probe's own
``predict_proba`` on ``collect_tokens`` does, never a pooled vector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probe_lens.activations import capture, collect_tokens
from probe_lens.models import tokenize_pairs
from probe_lens.probes import AttentionProbe, LogisticProbe, MaxPooledLogisticProbe
from probe_lens.testing import tiny_model
from probe_lens.training import probe_probability, probe_scores

HOOK = "blocks.1.hook_resid_post"
PROMPTS = [f"Prompt number {i}:" for i in range(4)]
RESPONSES = [" nice day", " kind words here", " hate you", " stupid idiot, go away"]


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(seed=0)
    g = tokenize_pairs(model, PROMPTS * 2, RESPONSES * 2, add_eos=True)
    tok, _ = collect_tokens(model, g.tokens, g.attention_mask, g.response_mask, [HOOK], progress=False)
    X, y = tok[HOOK].numpy(), np.array([0, 0, 1, 1] * 2)
    probes = {
        "max": MaxPooledLogisticProbe(C=1.0, hook=HOOK).fit(X, y),
        "attention": AttentionProbe(C=0.1, hook=HOOK).fit(X, y),
    }
    return model, g, X, probes


@pytest.mark.parametrize("kind", ["max", "attention"])
def test_probe_scores_of_a_token_probe_read_every_token(setup, kind):
    model, g, X, probes = setup
    got = probe_scores(model, g, probes[kind], progress=False)
    np.testing.assert_allclose(got, probes[kind].predict_proba(X)[:, 1], atol=1e-6)
    # with a pooled probe beside it, each reads its own input
    mean_probe = LogisticProbe(C=0.1, hook=HOOK).fit(np.nanmean(X, axis=1), np.array([0, 0, 1, 1] * 2))
    both = probe_scores(model, g, {"tok": probes[kind], "mean": mean_probe}, progress=False)
    want = (probes[kind].predict_proba(X)[:, 1] + mean_probe.predict_proba(np.nanmean(X, axis=1))[:, 1]) / 2
    np.testing.assert_allclose(both, want, atol=1e-5)


@pytest.mark.parametrize("kind", ["max", "attention"])
def test_probe_sfts_probe_term_reads_every_token_and_is_differentiable(setup, kind):
    model, g, X, probes = setup
    with capture(model, [HOOK]) as acts:
        model(g.tokens, attention_mask=g.attention_mask)
    p = probe_probability(acts, g.response_mask, [(HOOK, probes[kind])], pooling="mean")
    np.testing.assert_allclose(p.detach().numpy(), probes[kind].predict_proba(X)[:, 1], atol=1e-5)
    p.sum().backward()
    assert any(q.grad is not None and float(q.grad.abs().max()) > 0 for q in model.parameters())
    model.zero_grad(set_to_none=True)
    assert torch.is_grad_enabled()
