"""Preference-pair construction on fixed scores; configs and parameter selection."""

import json

import numpy as np
import pytest
import torch

from probe_lens.models import Generation
from probe_lens.training import (
    ClassifierSFTConfig,
    DPOConfig,
    ProbeSFTConfig,
    TrainConfig,
    build_pairs,
    select_trainable,
)


def _gen(prompts, k):
    rows = [p for p in prompts for _ in range(k)]
    n = len(rows)
    tokens = torch.arange(n * 4).view(n, 4)
    am = torch.ones(n, 4, dtype=torch.long)
    rm = torch.tensor([[0, 0, 1, 1]] * n)
    return Generation(rows, tokens, am, rm, 2, [f"r{i}" for i in range(n)])


def test_pairs_pick_lowest_as_chosen_highest_as_rejected():
    gen = _gen(["a", "b"], 3)
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
    pairs = build_pairs(gen, scores, k=3)
    assert pairs.prompts == ["a", "b"]
    assert pairs.chosen.response_texts == ["r1", "r5"]
    assert pairs.rejected.response_texts == ["r2", "r4"]
    assert pairs.chosen_scores.tolist() == [0.1, 0.2]
    assert pairs.rejected_scores.tolist() == [0.9, 0.7]
    assert torch.equal(pairs.chosen.tokens, gen.tokens[[1, 5]])
    assert (pairs.n_dropped_margin, pairs.n_dropped_ties) == (0, 0)


def test_pairs_ties_and_margin_are_dropped_and_counted():
    gen = _gen(["tie", "close", "far", "partial-tie"], 2)
    scores = np.array([0.4, 0.4, 0.50, 0.55, 0.1, 0.9, 0.3, 0.3])
    pairs = build_pairs(gen, scores, k=2, margin=0.1)
    assert pairs.prompts == ["far"]
    assert pairs.n_dropped_ties == 2  # "tie" and "partial-tie" (all scores equal)
    assert pairs.n_dropped_margin == 1  # "close": gap 0.05 < 0.1
    assert pairs.summary()["n_pairs"] == 1
    # with margin 0 only exact ties are dropped
    assert build_pairs(gen, scores, k=2).prompts == ["close", "far"]


def test_pairs_equal_extremes_take_first_sample():
    gen = _gen(["a"], 4)
    pairs = build_pairs(gen, [0.2, 0.8, 0.2, 0.8], k=4)
    assert pairs.chosen.response_texts == ["r0"] and pairs.rejected.response_texts == ["r1"]


def test_pairs_bad_input_errors():
    gen = _gen(["a", "b"], 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        build_pairs(gen, np.zeros(4), k=1)
    with pytest.raises(ValueError, match="not a multiple"):
        build_pairs(_gen(["a"], 3), np.zeros(3), k=2)
    with pytest.raises(ValueError, match="3 scores for 4 responses"):
        build_pairs(gen, np.zeros(3), k=2)
    with pytest.raises(ValueError, match=r"proba\[:, 1\]"):
        build_pairs(gen, np.zeros((4, 2)), k=2)
    with pytest.raises(ValueError, match="NaN"):
        build_pairs(gen, [0.1, np.nan, 0.2, 0.3], k=2)
    with pytest.raises(ValueError, match="share one prompt"):
        build_pairs(_gen(["a", "b"], 1), np.zeros(2), k=2)


def test_configs_validate_and_round_trip(tmp_path):
    cfg = DPOConfig(beta=0.2, max_steps=7, trainable="blocks:0-1", out_dir=str(tmp_path))
    d = cfg.to_dict()
    assert d["method"] == "dpo" and json.loads(json.dumps(d)) == d
    assert DPOConfig.from_dict(d) == cfg
    cfg.save(tmp_path / "c.json")
    assert TrainConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ValueError, match=r"unknown DPOConfig field\(s\): \['betta'\]"):
        DPOConfig.from_dict({**d, "betta": 1})
    with pytest.raises(ValueError, match="not 'probe_sft'"):
        ProbeSFTConfig.from_dict(d)
    for bad, match in [
        (dict(lr=0), "lr"),
        (dict(scheduler="step"), "scheduler"),
        (dict(warmup_steps=10, max_steps=5), "warmup_steps"),
        (dict(trainable="blocks:3-1"), "below its start"),
        (dict(trainable="(("), "regex"),
        (dict(batch_size=0), "batch_size"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="nothing to train"):
        ProbeSFTConfig(probe_weight=0, lm_weight=0)
    with pytest.raises(ValueError, match="aggregate"):
        ProbeSFTConfig(aggregate="median")
    with pytest.raises(ValueError, match="threshold"):
        ClassifierSFTConfig(threshold=0)
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=-1)


def test_select_trainable_specs(tiny4):
    assert len(select_trainable(tiny4, "all")) == len(list(tiny4.parameters()))
    names = select_trainable(tiny4, "blocks:1-2")
    assert names and all(n.startswith(("blocks.1.", "blocks.2.")) for n in names)
    assert {n.split(".")[1] for n in names} == {"1", "2"}
    assert select_trainable(tiny4, r"mlp\.W_out$") == [f"blocks.{i}.mlp.W_out" for i in range(4)]
    with pytest.raises(ValueError, match="selects no parameter"):
        select_trainable(tiny4, "nothing_matches")
    with pytest.raises(ValueError, match="blocks 0..3"):
        select_trainable(tiny4, "blocks:2-9")
