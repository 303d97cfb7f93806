"""The VADER scorer: the P(negative) map against VADER's own compound score and documented cut-off,
and VADER as an independent oracle for the hand-labelled curated sentiment set."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vaderSentiment")

from sklearn.metrics import roc_auc_score  # noqa: E402
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # noqa: E402

from probe_lens.data.curated import curated_arrays, load_curated  # noqa: E402
from probe_lens.scorers import SCORERS, VaderScorer, get_scorer, label  # noqa: E402
from probe_lens.scorers.vader import NEGATIVE_CUTOFF, THRESHOLD, negative_probability  # noqa: E402


@pytest.fixture(scope="module")
def vader() -> VaderScorer:
    return get_scorer("vader")


def test_registered_and_described(vader):
    assert "vader" in SCORERS
    assert isinstance(vader, VaderScorer)
    d = vader.describe()
    assert d["name"] == "vader" and d["version"] not in ("", "unknown")
    assert d["details"]["negative_cutoff"] == NEGATIVE_CUTOFF == -0.05
    with pytest.raises(TypeError, match="no options besides device"):
        get_scorer("vader", batch_size=4)


def test_scorer_protocol(vader):
    s = vader.score(["I love it.", "I hate it.", ""])
    assert s.dtype == np.float64 and s.shape == (3,)
    assert np.all((s >= 0) & (s <= 1))
    assert vader.score([]).shape == (0,)
    with pytest.raises(TypeError, match="single string"):
        vader.score("I love it.")


def test_map_hinges_at_vaders_cutoff():
    c = np.array([-1.0, -0.5, -0.05, -0.0499, 0.0, 0.05, 0.5, 1.0])
    p = negative_probability(c)
    assert p[0] == 1.0 and p[-1] == 0.0
    assert p[2] == THRESHOLD == 0.5
    assert np.all(np.diff(p) < 0)  # strictly monotone decreasing
    assert list(p >= THRESHOLD) == list(c <= NEGATIVE_CUTOFF)
    grid = np.round(np.linspace(-1, 1, 20001), 4)  # VADER rounds compound to 4 decimals
    assert np.array_equal(negative_probability(grid) >= 0.5, grid <= -0.05)


def test_label_is_vaders_convention_on_real_text(vader):
    """Oracle: VADER's own compound score and its documented rule (negative iff compound <= -0.05)."""
    texts, _ = curated_arrays(load_curated("sentiment"))
    analyzer = SentimentIntensityAnalyzer()
    compound = np.array([analyzer.polarity_scores(t)["compound"] for t in texts])
    assert np.array_equal(vader.compound(texts), compound)
    assert np.array_equal(label(vader.score(texts), THRESHOLD), (compound <= -0.05).astype(np.int64))


def test_obvious_sentences_land_on_the_right_side(vader):
    negative = [
        "This is the worst film I have ever seen. I hated every minute.",
        "The food was disgusting and the waiter was rude.",
        "I am so angry and disappointed with this terrible service.",
        "What an awful, miserable day.",
    ]
    positive = [
        "I love this place, the staff are wonderful and the food is delicious.",
        "What a beautiful, happy morning!",
        "Thank you so much, this is great news.",
        "The concert was fantastic and we had a brilliant time.",
    ]
    assert np.all(vader.score(negative) >= THRESHOLD)
    assert np.all(vader.score(positive) < THRESHOLD)


def test_vader_ranks_the_curated_sentiment_set_well(vader):
    """Independent check of the hand labels (the texts were written before VADER was run on them).

    Measured once: AUROC 0.924 over all 305 rows; 0.877 negative vs hard negatives, 0.967 negative vs
    clean. Hard negatives (complaint vocabulary, no negative sentiment) are harder for a word-level
    scorer than ordinary texts, which is what they are for.
    """
    rows = load_curated("sentiment")
    texts, labels = curated_arrays(rows)
    scores = vader.score(texts)
    kinds = np.array([r.kind for r in rows])
    easy, hard = kinds != "hard_negative", kinds != "clean"
    auroc_all = roc_auc_score(labels, scores)
    auroc_easy = roc_auc_score(labels[easy], scores[easy])
    auroc_hard = roc_auc_score(labels[hard], scores[hard])
    assert auroc_all > 0.88
    assert auroc_hard < auroc_easy
    assert scores[kinds == "hard_negative"].mean() > scores[kinds == "clean"].mean()
    assert (scores[kinds == "negative"] >= THRESHOLD).mean() > 0.8
