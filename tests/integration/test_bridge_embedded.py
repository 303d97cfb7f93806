"""The two backends on the embedded Gemma-3-270M: residual stream, probe transfer and greedy generation agree (HookedTransformer vs TransformerBridge in compatibility mode)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from probe_lens import load_model
from probe_lens.activations import collect
from probe_lens.models import generate, tokenize_pairs

EMBEDDED_PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "I think that people who",
    "def fibonacci(n):",
    "My favourite food is",
    "The weather today",
]


HOOKS = ["blocks.6.hook_resid_post", "blocks.12.hook_resid_post"]


RESID_RTOL = 1e-5
"""fp32 tolerance for the residual stream, relative to the largest |activation| at that hook (Gemma's
residual stream reaches ~1e4; measured differences are ~3e-7 of that: HF vs TL op order)."""


@pytest.fixture(scope="module")
def embedded_bridge():
    """The embedded Gemma-3-270M on the bridge (one extra copy of the model; freed after the module)."""
    model = load_model(device="cpu", backend="bridge")
    yield model
    del model
    gc.collect()


@pytest.fixture(scope="module")
def greedy_pair(embedded_model, embedded_bridge):
    """Greedy continuations of EMBEDDED_PROMPTS on each backend."""
    kw = dict(max_new_tokens=12, do_sample=False, progress=False)
    return generate(embedded_model, EMBEDDED_PROMPTS, **kw), generate(embedded_bridge, EMBEDDED_PROMPTS, **kw)


@pytest.mark.embedded
def test_embedded_greedy_generation_agrees_up_to_near_ties(embedded_model, greedy_pair):
    from probe_lens.testing import first_divergence_gap

    hooked, bridge = greedy_pair
    gaps = []
    for i in range(len(EMBEDDED_PROMPTS)):
        prompt = hooked.tokens[i, : hooked.prompt_len][hooked.attention_mask[i, : hooked.prompt_len].bool()].tolist()
        a, b = (g.tokens[i, g.prompt_len :][g.response_mask[i, g.prompt_len :].bool()].tolist() for g in greedy_pair)
        gaps.append(first_divergence_gap(embedded_model, prompt, a, b))
    assert sum(g is None for g in gaps) >= len(gaps) - 1, gaps
    assert all(g is None or g < 1e-2 for g in gaps), gaps  # a flip only at a near-tie


@pytest.mark.embedded
def test_embedded_residual_stream_agrees_between_backends(embedded_model, embedded_bridge, greedy_pair):
    g = greedy_pair[0]
    kw = dict(progress=False, batch_size=4)
    hooked = collect(embedded_model, g.tokens, g.attention_mask, g.response_mask, HOOKS, **kw)
    bridge = collect(embedded_bridge, g.tokens, g.attention_mask, g.response_mask, HOOKS, **kw)
    for hook in HOOKS:
        scale = float(hooked[hook].abs().max())
        torch.testing.assert_close(bridge[hook], hooked[hook], rtol=0, atol=RESID_RTOL * scale)
    with torch.no_grad():
        logits = [m(g.tokens, attention_mask=g.attention_mask) for m in (embedded_model, embedded_bridge)]
    real = g.attention_mask.bool()
    torch.testing.assert_close(logits[1][real], logits[0][real], rtol=0, atol=1e-3)


@pytest.mark.embedded
def test_embedded_probe_transfers_between_backends_with_equal_auroc(embedded_model, embedded_bridge):
    from probe_lens.data.curated import curated_arrays, load_curated
    from probe_lens.probes import LogisticProbe

    texts, labels = curated_arrays(load_curated("toxicity"))
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == c), 24, replace=False) for c in (0, 1)])
    texts, y = [texts[i] for i in pick], labels[pick]
    batch = tokenize_pairs(embedded_model, [""] * len(texts), texts)
    mask = batch.attention_mask
    acts = {
        name: collect(m, batch.tokens, mask, batch.response_mask, HOOKS[1], progress=False)[HOOKS[1]].numpy()
        for name, m in (("hooked", embedded_model), ("bridge", embedded_bridge))
    }
    train, test = np.arange(len(y)) % 2 == 0, np.arange(len(y)) % 2 == 1
    for fit_on, score_on in (("hooked", "bridge"), ("bridge", "hooked")):
        probe = LogisticProbe(C=1.0).fit(acts[fit_on][train], y[train])
        own, other = (probe.decision_function(acts[name][test]) for name in (fit_on, score_on))
        assert round(roc_auc_score(y[test], own), 3) == round(roc_auc_score(y[test], other), 3)
        np.testing.assert_allclose(other, own, rtol=0, atol=1e-3 * np.abs(own).max())
