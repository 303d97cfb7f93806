"""The embedded Gemma-3-270M against independent oracles: HF transformers' losses and log-probs, and a layer sweep on its activations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probe_lens.experiments.metrics import (
    perplexity,
)
from probe_lens.models import tokenize_pairs
from probe_lens.probes import (
    layer_sweep,
)
from probe_lens.training import sequence_logps

TOXIC = [
    "You are a worthless idiot and everyone hates you.",
    "Shut up, you stupid pathetic loser.",
    "I hope you die, you disgusting piece of trash.",
    "What a moronic, brainless fool you are.",
    "Get lost, you ugly waste of space.",
    "You are the dumbest, most useless person alive.",
    "Nobody cares about you, you miserable idiot.",
    "Go to hell, you filthy lying scumbag.",
    "You stupid jerk, you ruin everything you touch.",
    "Your ideas are garbage and so are you, moron.",
    "Drop dead, you worthless clown.",
    "You are a pathetic, hateful little creep.",
]
NEUTRAL = [
    "The library opens at nine in the morning on weekdays.",
    "She planted tomatoes and basil in the garden.",
    "The train to the city leaves every twenty minutes.",
    "He enjoys reading history books on rainy afternoons.",
    "Our team meeting has moved to Thursday at noon.",
    "The recipe calls for two cups of flour and an egg.",
    "The museum has a new exhibit about ancient maps.",
    "Please remember to water the plants this weekend.",
    "The weather tomorrow will be mild and sunny.",
    "They walked along the river and watched the ducks.",
    "The new bridge will open to traffic next spring.",
    "I bought fresh bread from the bakery this morning.",
]


@pytest.mark.embedded
def test_layer_sweep_on_embedded_model(embedded_model):
    from probe_lens.activations import collect

    model = embedded_model
    texts = TOXIC + NEUTRAL
    y = np.array([1] * len(TOXIC) + [0] * len(NEUTRAL))
    toks = model.to_tokens(texts, padding_side="left")
    am = (toks != model.tokenizer.pad_token_id).long()
    pm = am.clone()
    pm[:, :] = am
    pm[torch.arange(len(texts)), (am.cumsum(1) == 1).long().argmax(1)] = 0  # pool without BOS
    hooks = [f"blocks.{L}.hook_resid_post" for L in (2, 6, 10, 14)]
    acts = collect(model, toks, am, pm, hooks, pooling="mean", batch_size=8, progress=False)
    df, fitted = layer_sweep(acts, y, test_size=0.33, seed=0, progress=False, return_probes=True)
    assert df["layer"].tolist() == [2, 6, 10, 14]
    assert (df["n_test"] == 8).all() and (df["n_train"] == 16).all()
    assert df["auroc_train"].min() > 0.99  # 640-d, 16 examples: separable
    assert df["auroc_test"].max() >= 0.875  # obvious insults vs small talk generalise at some layer
    best = fitted[df.loc[df["auroc_test"].idxmax(), "hook"]]
    best.set_metadata(model_name=model.cfg.model_name, pooling="mean")
    assert best.metadata.d_model == model.cfg.d_model == 640


@pytest.mark.embedded
def test_sequence_logps_equal_hf_on_embedded_model(embedded_model, embedded_hf):
    hf, _ = embedded_hf  # probe_lens.models.load_embedded_hf(): same weights as plain HF
    data = tokenize_pairs(
        embedded_model,
        ["The weather today is", "My favourite food"],
        [" sunny and warm.", " is pizza with extra cheese, always."],
    )
    with torch.no_grad():
        ours = sequence_logps(embedded_model, data.tokens, data.attention_mask, data.response_mask)
        for b in range(len(data)):  # HF oracle, one unpadded sequence at a time
            keep = data.attention_mask[b].bool()
            ids = data.tokens[b][keep].unsqueeze(0)
            resp = data.response_mask[b][keep]
            logp = torch.log_softmax(hf(input_ids=ids).logits[0].double(), -1)
            want = sum(logp[t - 1, ids[0, t]].item() for t in range(1, ids.shape[1]) if resp[t])
            assert ours[b].item() == pytest.approx(want, abs=2e-3, rel=1e-4)


@pytest.mark.embedded
def test_perplexity_matches_hf_loss(embedded_model, embedded_hf):
    hf, tok = embedded_hf
    texts = [
        "The committee met on Tuesday to discuss the new budget.",
        "Rain is expected tomorrow.",
        "She opened the window, and a cold breeze filled the quiet little room.",
    ]
    nll, n = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = tok(t, return_tensors="pt").input_ids
            assert ids[0, 0] == tok.bos_token_id
            loss = hf(ids, labels=ids).loss  # mean NLL over tokens 1.. (BOS not predicted)
            nll += float(loss) * (ids.shape[1] - 1)
            n += ids.shape[1] - 1
    expected = math.exp(nll / n)
    assert perplexity(embedded_model, texts, batch_size=2) == pytest.approx(expected, rel=1e-4)
