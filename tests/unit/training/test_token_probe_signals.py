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


def test_drift_telemetry_scores_and_refits_token_probes_on_response_tokens(setup):
    """Telemetry reads a token probe on the current model's response tokens (not the pooled vector): its scores
    equal ``predict_proba`` on ``collect_tokens``, its AUROC key is the held-out one, its drift cosine compares it
    with its own estimator re-fit on the fit rows' tokens, and a pooled probe beside it still reads the pooled
    activations."""
    from sklearn.metrics import roc_auc_score

    from probe_lens.training import DriftSet, DriftTelemetry

    model, g, X, probes = setup
    y = np.array([0, 0, 1, 1] * 2)
    is_eval = np.array([False] * 4 + [True] * 4)
    drift = DriftSet(g.tokens, g.attention_mask, g.response_mask, y, is_eval)
    mean_probe = LogisticProbe(C=0.1, hook=HOOK).fit(np.nanmean(X, axis=1)[:4], y[:4])
    tele = DriftTelemetry(drift, heldout_probes={"max": probes["max"], "attn": probes["attention"], "mean": mean_probe})
    assert tele.token_hooks(model) == [HOOK]
    scores = tele.scores(model)["drift"]
    for name, kind in (("max", "max"), ("attn", "attention")):
        np.testing.assert_allclose(scores[name], probes[kind].predict_proba(X[4:])[:, 1], atol=1e-6)
    np.testing.assert_allclose(scores["mean"], mean_probe.predict_proba(np.nanmean(X[4:], axis=1))[:, 1], atol=1e-5)
    m = tele.measure(model)
    assert m["probe/auroc_heldout/max"] == pytest.approx(roc_auc_score(y[4:], scores["max"]))
    refit_max = MaxPooledLogisticProbe(C=1.0).fit(X[:4], y[:4])  # the clone's fit on the drift set's fit rows
    cos = float(refit_max.direction_ @ probes["max"].direction_)
    assert m["drift/cosine/max"] == pytest.approx(cos, abs=1e-6)  # solver tolerance
    assert tele.token_activations(model) is tele.token_activations(model)  # cached per model state


def test_the_monitor_split_reads_token_probes_on_response_tokens(setup):
    from probe_lens.experiments.monitor_split import outputs_scores

    model, g, X, probes = setup
    got = outputs_scores(model, g, {"max": probes["max"], "attn": probes["attention"]}, pooling="mean", batch_size=3)
    np.testing.assert_allclose(got["max"], probes["max"].predict_proba(X)[:, 1], atol=1e-6)
    np.testing.assert_allclose(got["attn"], probes["attention"].predict_proba(X)[:, 1], atol=1e-6)
