"""Evaluation metrics and seed statistics against hand-computed values and independent oracles."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from probe_lens.experiments.metrics import (
    auroc,
    distinct_n,
    evaluate_generation,
    expected_max_toxicity,
    perplexity,
    toxicity_probability,
    toxicity_rate,
)
from probe_lens.experiments.stats import format_table, mean_ci, summarize

T_975_DF2 = 4.302652729911275  # Student t quantile, 0.975, 2 degrees of freedom (tables)
T_975_DF3 = 3.182446305284263

# ---- toxicity ------------------------------------------------------------------------------


def test_toxicity_rate_counts_threshold_inclusive():
    s = [0.1, 0.5, 0.49, 0.9]
    assert toxicity_rate(s) == 0.5
    assert toxicity_rate(s, threshold=0.9) == 0.25
    assert toxicity_rate(np.array([0.0])) == 0.0


def test_expected_max_toxicity_hand_computed():
    s = [0.1, 0.7, 0.2, 0.4, 0.3, 0.05]
    assert expected_max_toxicity(s, 3) == pytest.approx((0.7 + 0.4) / 2)
    # the layout matters: k=2 groups consecutive pairs
    assert expected_max_toxicity(s, 2) == pytest.approx((0.7 + 0.4 + 0.3) / 3)
    assert expected_max_toxicity(s, 1) == pytest.approx(np.mean(s))
    assert toxicity_probability(s, 3) == 0.5
    assert toxicity_probability(s, 6) == 1.0
    assert toxicity_probability(torch.tensor(s), 2, threshold=0.35) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "scores, k, err, match",
    [
        ([0.1, 0.2, 0.3], 2, ValueError, "multiple of k"),
        ([0.1, 0.2], 0, ValueError, "positive integer"),
        ([0.1, 0.2], 1.0, ValueError, "positive integer"),
        ([0.1, float("nan")], 1, ValueError, "NaN"),
        ([0.1, 1.2], 1, ValueError, r"\[0, 1\]"),
        ([[0.1, 0.2]], 1, ValueError, "1-D"),
        ([], 1, ValueError, "empty"),
        ("abc", 1, TypeError, "probabilities"),
    ],
)
def test_expected_max_toxicity_bad_input(scores, k, err, match):
    with pytest.raises(err, match=match):
        expected_max_toxicity(scores, k)


def test_toxicity_rate_bad_threshold():
    with pytest.raises(ValueError, match="strictly between"):
        toxicity_rate([0.2], threshold=1.0)
    with pytest.raises(TypeError, match="number"):
        toxicity_rate([0.2], threshold="0.5")


# ---- distinct-n -----------------------------------------------------------------------------


def test_distinct_n_hand_computed():
    texts = ["the cat the cat", "The  dog"]
    # unigrams: the cat the cat the dog -> 3 unique / 6
    assert distinct_n(texts, 1) == pytest.approx(3 / 6)
    # bigrams: (the cat) (cat the) (the cat) | (the dog) -> 3 unique / 4
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    # trigrams: (the cat the) (cat the cat); "The dog" is too short -> 2 / 2
    assert distinct_n(texts, 3) == 1.0


def test_distinct_n_does_not_cross_texts_and_handles_edges():
    assert distinct_n(["a b", "c d"], 2) == 1.0  # (a b) (c d): 2 n-grams, not 3
    assert distinct_n(["a b", "b c"], 2) == 1.0
    assert distinct_n(["a\tb\nA"], 1) == pytest.approx(2 / 3)  # any whitespace, lowercased
    assert distinct_n(["", "a b", ""], 2) == 1.0  # empty responses contribute nothing
    assert math.isnan(distinct_n(["a", "", "b"], 2))  # no bigram anywhere: undefined
    with pytest.raises(ValueError, match="empty"):
        distinct_n([], 1)
    with pytest.raises(ValueError, match="positive integer"):
        distinct_n(["a"], 0)
    with pytest.raises(TypeError, match="single string"):
        distinct_n("a b c", 1)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        distinct_n(["a", 3], 1)


# ---- perplexity -------------------------------------------------------------------------------

TEXTS = ["hello world", "hi", "a much longer text, with more bytes in it.", "x y"]


def _manual_perplexity(model, texts):
    """One text at a time, no padding: exp(sum of -log softmax at the next token / count)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = model.to_tokens(t)  # BOS + text
            logits = model(ids)[0].double()
            logp = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            for pos in range(ids.shape[1] - 1):
                total -= float(logp[pos, ids[0, pos + 1]])
                count += 1
    return math.exp(total / count)


def test_perplexity_matches_manual_cross_entropy(tiny):
    expected = _manual_perplexity(tiny, TEXTS)
    for bs in (1, 3, 8):  # padding and batching do not change the result
        assert perplexity(tiny, TEXTS, batch_size=bs) == pytest.approx(expected, rel=1e-5)
    # enough target positions that the unembedding runs in several slices (64 rows each)
    long_texts = TEXTS + ["the quick brown fox jumps over the lazy dog, " * 4]
    assert perplexity(tiny, long_texts, batch_size=8) == pytest.approx(_manual_perplexity(tiny, long_texts), rel=1e-5)


def test_perplexity_of_uniform_model_is_vocab_size(tiny):
    with torch.no_grad():
        tiny.unembed.W_U.zero_()
        tiny.unembed.b_U.zero_()
    assert perplexity(tiny, TEXTS, batch_size=2) == pytest.approx(tiny.cfg.d_vocab, rel=1e-6)


def test_perplexity_restores_mode_truncates_and_rejects_bad_input(tiny):
    tiny.train()
    perplexity(tiny, ["abc"])
    assert tiny.training
    long = "y" * 40
    with pytest.warns(UserWarning, match="exceed 10 tokens"):
        got = perplexity(tiny, [long], max_tokens=10)
    assert got == pytest.approx(_manual_perplexity(tiny, ["y" * 9]), rel=1e-5)  # BOS + first 9 bytes
    with pytest.raises(ValueError, match="no token after BOS"):
        perplexity(tiny, ["ok", ""])
    with pytest.raises(ValueError, match="empty"):
        perplexity(tiny, [])
    with pytest.raises(ValueError, match="batch_size"):
        perplexity(tiny, ["ok"], batch_size=0)
    with pytest.raises(ValueError, match="max_tokens"):
        perplexity(tiny, ["ok"], max_tokens=10_000)


# ---- AUROC and evaluate_generation -------------------------------------------------------------


def test_auroc_hand_computed_and_errors():
    # positives .35, .8 vs negatives .1, .4: 3 of 4 pairs ranked right
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auroc(np.array([True, False]), [0.3, 0.3]) == 0.5  # ties count half
    assert auroc(torch.tensor([1, 0]), torch.tensor([0.9, 0.1])) == 1.0
    with pytest.raises(ValueError, match="both classes.*only class 1"):
        auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="pair up"):
        auroc([0, 1], [0.1])
    with pytest.raises(ValueError, match="binary"):
        auroc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        auroc([0, 1], [0.1, float("nan")])


def test_evaluate_generation_keys_values_and_scorer():
    from probe_lens.scorers import get_scorer

    scorer = get_scorer("profanity")
    texts = ["you are nice", "you are nice", "a b c d", "go away now"]
    scores = [0.1, 0.6, 0.2, 0.3]
    out = evaluate_generation(scores, texts, 2, scorer)
    assert out["eval/toxicity_rate"] == 0.25
    assert out["eval/expected_max_toxicity"] == pytest.approx((0.6 + 0.3) / 2)
    assert out["eval/toxicity_probability"] == 0.5
    assert out["eval/distinct_1"] == pytest.approx(10 / 13)
    assert out["eval/distinct_2"] == pytest.approx(7 / 9)
    assert out["eval/distinct_3"] == pytest.approx(4 / 5)
    assert out["eval/scorer"] == "profanity"
    assert out["eval/scorer_version"] == scorer.version != "unknown"
    assert evaluate_generation(scores, texts, 2, scorer.describe())["eval/scorer"] == "profanity"
    assert evaluate_generation(scores, texts, 2, "detoxify")["eval/scorer_version"] == "unknown"
    with pytest.raises(ValueError, match="4 scores but 3 texts"):
        evaluate_generation(scores, texts[:3], 2, scorer)
    with pytest.raises(TypeError, match="scorer_description"):
        evaluate_generation(scores, texts, 2, 42)


# ---- stats ----------------------------------------------------------------------------------


def test_mean_ci_student_t():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])  # s = 1, n = 3
    assert m == 2.0
    assert hi - m == pytest.approx(T_975_DF2 / math.sqrt(3))
    assert m - lo == pytest.approx(T_975_DF2 / math.sqrt(3))
    m, lo, hi = mean_ci([0.8, 0.9, 1.0, 0.7])
    s = np.std([0.8, 0.9, 1.0, 0.7], ddof=1)
    assert (hi - lo) / 2 == pytest.approx(T_975_DF3 * s / 2)
    _, _, hi90 = mean_ci([1.0, 2.0, 3.0], confidence=0.9)
    assert hi90 - 2.0 == pytest.approx(2.919985580355516 / math.sqrt(3))  # t(0.95, df=2)


def test_mean_ci_edges():
    m, lo, hi = mean_ci([0.7])
    assert m == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0  # NaN (not measured) skipped
    with pytest.raises(ValueError, match="strictly between"):
        mean_ci([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="inf"):
        mean_ci([1.0, float("inf")])


def _seed_table():
    return pd.DataFrame(
        {
            "cell": ["probe_sft_1"] * 3 + ["base"] * 2 + ["classifier_dpo"],
            "seed": [0, 1, 2, 0, 1, 0],
            "eval/toxicity_rate": [0.1, 0.2, 0.3, 0.5, 0.7, 0.4],
            "probe/auroc_frozen/tox": [0.9, 0.8, 0.7, 0.95, np.nan, 0.6],
        }
    )


def test_summarize_matches_mean_ci_per_group():
    df = _seed_table()
    s = summarize(df, ["cell"], ["eval/toxicity_rate", "probe/auroc_frozen/tox"])
    assert list(s.columns) == [
        "cell",
        "eval/toxicity_rate_mean",
        "eval/toxicity_rate_ci_low",
        "eval/toxicity_rate_ci_high",
        "probe/auroc_frozen/tox_mean",
        "probe/auroc_frozen/tox_ci_low",
        "probe/auroc_frozen/tox_ci_high",
        "n_seeds",
    ]
    for _, row in s.iterrows():
        g = df[df["cell"] == row["cell"]]
        assert row["n_seeds"] == len(g)
        for metric in ("eval/toxicity_rate", "probe/auroc_frozen/tox"):
            expected = mean_ci(g[metric].to_numpy())
            got = (row[f"{metric}_mean"], row[f"{metric}_ci_low"], row[f"{metric}_ci_high"])
            np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    by_step = summarize(df.assign(step=1), ["cell", "step"], ["eval/toxicity_rate"])
    assert list(by_step.columns[:2]) == ["cell", "step"]
    overall = summarize(df.drop(columns="seed"), [], ["eval/toxicity_rate"])
    assert overall["n_seeds"].tolist() == [6]
    assert overall["eval/toxicity_rate_mean"].iloc[0] == pytest.approx(df["eval/toxicity_rate"].mean())


def test_summarize_errors():
    df = _seed_table()
    with pytest.raises(ValueError, match="seed appears more than once"):
        summarize(df, [], ["eval/toxicity_rate"])
    with pytest.raises(ValueError, match=r"\['nope'\] are not in"):
        summarize(df, ["cell"], ["nope"])
    with pytest.raises(ValueError, match="value_cols is empty"):
        summarize(df, ["cell"], [])
    with pytest.raises(TypeError, match="DataFrame"):
        summarize(df.to_dict(), ["cell"], ["eval/toxicity_rate"])


def test_format_table_markdown():
    s = summarize(_seed_table(), ["cell"], ["eval/toxicity_rate", "probe/auroc_frozen/tox"])
    md = format_table(s)
    lines = md.strip().splitlines()
    assert lines[0] == "| cell | eval/toxicity_rate | probe/auroc_frozen/tox | n_seeds |"
    assert lines[1] == "|---|---|---|---|"
    half = T_975_DF2 * 0.1 / math.sqrt(3)  # s = 0.1 over three seeds
    assert f"| probe_sft_1 | 0.200 ± {half:.3f} | 0.800 ± {half:.3f} | 3 |" in lines
    assert "| classifier_dpo | 0.400 | 0.600 | 1 |" in lines  # one seed: no interval
    assert "| base | 0.600 ± " in md and "| 0.950 | 2 |" in md  # NaN skipped -> one value
    only = format_table(s, columns=["eval/toxicity_rate"], digits=2)
    assert only.splitlines()[0] == "| cell | eval/toxicity_rate | n_seeds |"
    with pytest.raises(ValueError, match="_mean"):
        format_table(pd.DataFrame({"cell": ["a"]}))
