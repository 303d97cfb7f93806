"""The curated toxicity set: size, balance, label consistency, loader errors, and an independent
sanity check of the labels by the offline classifier (alt-profanity-check)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from importlib import resources

import numpy as np
import pytest

from probe_lens.data.curated import (
    CURATED_PROMPT,
    CURATED_SETS,
    KIND_LABELS,
    CuratedText,
    curated_arrays,
    load_curated,
)


@pytest.fixture(scope="module")
def rows() -> list[CuratedText]:
    return load_curated()


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def test_loads_with_enough_rows_of_each_kind(rows):
    kinds = Counter(r.kind for r in rows)
    labels = Counter(r.label for r in rows)
    assert len(rows) >= 300
    assert labels[1] >= 150 and labels[0] >= 150
    assert kinds["hard_negative"] >= 75
    assert set(kinds) == set(KIND_LABELS)
    assert all(r.label == KIND_LABELS[r.kind] for r in rows)
    assert isinstance(CURATED_PROMPT, str) and CURATED_PROMPT.strip()


def test_ids_and_texts_unique(rows):
    ids = [r.id for r in rows]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    normed = [_norm(r.text) for r in rows]
    dupes = [t for t, c in Counter(normed).items() if c > 1]
    assert not dupes, dupes


def test_topic_does_not_predict_label(rows):
    by_topic: dict[str, set[int]] = defaultdict(set)
    counts = Counter(r.topic for r in rows)
    for r in rows:
        by_topic[r.topic].add(r.label)
    assert all(by_topic[t] == {0, 1} for t, n in counts.items() if n >= 4)
    assert sum(by_topic[t] == {0, 1} for t in by_topic) >= 6


def test_file_matches_loader(rows):
    # the package resource (what ships in the wheel) is what the loader reads
    raw = resources.files("probe_lens.data").joinpath(CURATED_SETS["toxicity"]).read_text(encoding="utf-8")
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert [r.to_dict() for r in rows] == lines
    assert all(set(d) == {"id", "text", "label", "kind", "topic"} for d in lines)


def test_arrays(rows):
    texts, labels = curated_arrays(rows)
    assert texts == [r.text for r in rows]
    assert labels.dtype == np.int64 and labels.shape == (len(rows),)
    assert labels.sum() == sum(r.kind == "toxic" for r in rows)
    texts0, labels0 = curated_arrays([])
    assert texts0 == [] and labels0.shape == (0,)


def test_loader_returns_fresh_lists(rows):
    again = load_curated("toxicity")
    assert again == rows and again is not rows
    again.clear()
    assert len(load_curated()) == len(rows)


def test_unknown_name_lists_valid_and_suggests():
    with pytest.raises(ValueError, match=r"valid names: \['sentiment', 'toxicity'\].*did you mean 'toxicity'"):
        load_curated("toxicty")
    with pytest.raises(ValueError, match="valid names"):
        load_curated("deception")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(label=0, kind="toxic"), "implies label 1"),
        (dict(label=1, kind="hard_negative"), "implies label 0"),
        (dict(label=1, kind="rude"), "kind"),
        (dict(label=2, kind="toxic"), "0 or 1"),
        (dict(label=True, kind="toxic"), "0 or 1"),
        (dict(label=1, kind="toxic", text="   "), "empty text"),
        (dict(label=1, kind="toxic", id=""), "non-empty"),
        (dict(label=1, kind="toxic", topic=""), "empty topic"),
    ],
)
def test_validation(kwargs, match):
    base = dict(id="x1", text="some text", topic="work")
    with pytest.raises(ValueError, match=match):
        CuratedText(**{**base, **kwargs})


def test_validation_types():
    with pytest.raises(TypeError, match="text must be a string"):
        CuratedText(id="x1", text=None, label=0, kind="clean", topic="work")  # type: ignore[arg-type]


def test_offline_classifier_agrees_with_labels(rows):
    """Independent check: a bag-of-words classifier trained on other data ranks the labels well,
    and hard negatives are harder for it than ordinary clean texts."""
    pytest.importorskip("profanity_check")
    from sklearn.metrics import roc_auc_score

    from probe_lens.scorers import get_scorer

    texts, labels = curated_arrays(rows)
    scores = get_scorer("profanity").score(texts)
    kinds = np.array([r.kind for r in rows])
    auroc_all = roc_auc_score(labels, scores)
    easy = kinds != "hard_negative"
    hard = kinds != "clean"
    auroc_easy = roc_auc_score(labels[easy], scores[easy])
    auroc_hard = roc_auc_score(labels[hard], scores[hard])
    assert auroc_all > 0.7
    assert auroc_hard < auroc_easy
    assert scores[kinds == "hard_negative"].mean() > scores[kinds == "clean"].mean()
