"""Curated v2 (the lexically hard yardstick) and the lexical baselines of probe_lens.data.lexical."""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter, defaultdict
from importlib import resources

import numpy as np
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import LeaveOneGroupOut as LOGO, cross_val_predict

from probe_lens.behaviours import _jsonl
from probe_lens.data.curated import (
    CURATED_V2_FILES,
    HARD_KINDS,
    SET_KIND_LABELS,
    SET_V2_KIND_LABELS,
    CuratedText,
    curated_arrays,
    hard_subset,
    load_curated,
)
from probe_lens.data.lexical import (
    INSULT_LEXICON,
    LEXICONS,
    NEGATIVE_LEXICON,
    auroc_by_kind,
    bow_oof_scores,
    curated_baselines,
    length_scores,
    lexical_baselines,
    lexicon_hits,
)

MIN_TOXICITY = {"implicit_toxic": 60, "lexical_trap": 60, "matched_negative": 40, "second_person_toxic": 40}
MIN_SENTIMENT_NEW = 100


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


@pytest.mark.parametrize("name", ["toxicity", "sentiment"])
def test_v1_is_unchanged_and_default(name):
    v1 = load_curated(name)
    assert v1 == load_curated(name, version=1)
    assert len(v1) == {"toxicity": 345, "sentiment": 305}[name]
    assert {r.kind for r in v1} == set(SET_KIND_LABELS[name])
    v2 = load_curated(name, version=2)
    assert v2[: len(v1)] == v1
    assert hard_subset(v1) == []


@pytest.mark.parametrize("name", ["toxicity", "sentiment"])
def test_v2_file_matches_loader(name):
    raw = resources.files("probe_lens.data").joinpath(CURATED_V2_FILES[name]).read_text(encoding="utf-8")
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    new = load_curated(name, version=2)[len(load_curated(name)) :]
    assert [r.to_dict() for r in new] == lines
    assert all(set(d) == {"id", "text", "label", "kind", "topic"} for d in lines)
    assert {r.kind for r in new} == set(SET_V2_KIND_LABELS[name])
    assert all(r.label == SET_V2_KIND_LABELS[name][r.kind] for r in new)
    assert load_curated(name, version=2, subset="hard") == new


def test_toxicity_v2_counts_per_kind():
    kinds = Counter(r.kind for r in load_curated("toxicity", version=2))
    assert all(kinds[k] >= n for k, n in MIN_TOXICITY.items()), kinds
    assert sum(kinds[k] for k in MIN_TOXICITY) >= 220


def test_sentiment_v2_counts_per_kind():
    new = load_curated("sentiment", version=2, subset="hard")
    kinds = Counter(r.kind for r in new)
    assert len(new) >= MIN_SENTIMENT_NEW
    for stem in ("negation", "mixed", "contrast"):
        assert kinds[f"{stem}_negative"] >= 10 and kinds[f"{stem}_clean"] >= 10


@pytest.mark.parametrize("name", ["toxicity", "sentiment"])
def test_v2_unique_texts_ids_and_no_near_duplicates(name):
    rows = load_curated(name, version=2)
    ids = [r.id for r in rows]
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    normed = [_norm(r.text) for r in rows]
    assert len(set(normed)) == len(normed)
    words = [t.split() for t in normed]
    n_new = len(rows) - len(load_curated(name))
    near = []
    for i in range(len(rows) - n_new, len(rows)):
        for j in range(i):
            m = difflib.SequenceMatcher(None, words[i], words[j])
            if m.real_quick_ratio() > 0.7 and m.quick_ratio() > 0.7 and m.ratio() > 0.7:
                near.append((normed[i], normed[j]))
    assert not near, near[:3]


@pytest.mark.parametrize("name", ["toxicity", "sentiment"])
def test_every_topic_has_both_classes_in_v2_and_hard(name):
    for rows in (load_curated(name, version=2), load_curated(name, version=2, subset="hard")):
        by_topic: dict[str, set[int]] = defaultdict(set)
        for r in rows:
            by_topic[r.topic].add(r.label)
        assert all(labels == {0, 1} for labels in by_topic.values()), by_topic
    assert {r.topic for r in load_curated(name, version=2)} == {r.topic for r in load_curated(name)}


def _ends_in_vocative_insult(text: str) -> bool:
    """``..., you <words with an insult>.`` at the end of the text."""
    m = re.search(r",\s+(you\s+[\w\s'-]+?)[.!?]*\s*$", text, re.IGNORECASE)
    return bool(m) and lexicon_hits([m.group(1)])[0] > 0


def test_toxicity_v2_rows_do_what_their_kind_says():
    new = load_curated("toxicity", version=2, subset="hard")
    hits = lexicon_hits([r.text for r in new])
    kinds = np.array([r.kind for r in new])
    assert (hits[kinds == "lexical_trap"] >= 1).all()
    for kind in ("implicit_toxic", "second_person_toxic", "matched_negative"):
        assert (hits[kinds == kind] == 0).all(), kind
    assert not [r.text for r in new if r.kind == "second_person_toxic" and _ends_in_vocative_insult(r.text)]
    # the detector finds the pattern v1 is full of
    assert sum(_ends_in_vocative_insult(r.text) for r in load_curated("toxicity") if r.label == 1) >= 30
    assert all(re.search(r"\byou", r.text, re.IGNORECASE) for r in new if r.kind == "second_person_toxic")


def test_toxicity_matched_negatives_are_length_matched():
    new = load_curated("toxicity", version=2, subset="hard")
    toxic = [len(r.text) for r in new if r.label == 1]
    matched = [len(r.text) for r in new if r.kind == "matched_negative"]
    assert abs(np.mean(matched) - np.mean(toxic)) < 5
    _, labels = curated_arrays(new)
    assert 0.4 <= roc_auc_score(labels, length_scores([r.text for r in new])) <= 0.6


def test_lexicon_hit_auroc_hard_subset_and_whole_v2(capsys):
    for name in ("toxicity", "sentiment"):
        for version, subset in ((1, "all"), (2, "all"), (2, "hard")):
            texts, labels = curated_arrays(load_curated(name, version=version, subset=subset))
            auc = roc_auc_score(labels, lexicon_hits(texts, LEXICONS[name]))
            with capsys.disabled():
                print(f"\nlexicon-hit AUROC, {name} v{version} {subset}: {auc:.3f}")
            if subset == "hard":
                assert auc <= 0.65
            if name == "toxicity" and version == 1:
                assert auc > 0.9  # v1 is lexically separable: the reason v2 exists


def test_lexicon_hits_folding():
    texts = ["You brain-dead idiots!", "Bitches and a pig's ear", "classes pass assess", "", "DAMN 'stupid'"]
    assert lexicon_hits(texts).tolist() == [2.0, 2.0, 0.0, 0.0, 2.0]
    assert lexicon_hits(["not bad at all", "lovely"], NEGATIVE_LEXICON).tolist() == [1.0, 0.0]
    assert "idiot" in INSULT_LEXICON and "bad" in NEGATIVE_LEXICON
    with pytest.raises(ValueError, match="lexicon is empty"):
        lexicon_hits(["a"], [])


def _synthetic(n_topics: int = 4, per: int = 8, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    pos, neg, filler = ["awful", "idiot", "rude"], ["lovely", "kind", "calm"], ["the", "a", "day", "bus", "tea"]
    texts, labels, topics = [], [], []
    for t in range(n_topics):
        for i in range(per):
            y = i % 2
            words = list(rng.choice(filler, size=int(rng.integers(2, 9))))
            words += list(rng.choice(pos if y else neg, size=1 + (i % 3 == 0)))
            if rng.random() < 0.3:
                words.append(str(rng.choice(neg if y else pos)))
            texts.append(" ".join(rng.permutation(words)) + f" topic{t}")
            labels.append(y)
            topics.append(f"t{t}")
    return texts, np.asarray(labels), topics


class _LengthScorer:
    def score(self, texts):
        return np.asarray([min(len(t) / 100.0, 1.0) for t in texts])


def test_lexical_baselines_match_independent_computation():
    texts, labels, topics = _synthetic()
    got = lexical_baselines(texts, labels, topics, scorer=_LengthScorer())
    assert set(got) == {"classifier", "lexicon", "bow", "length"}
    lengths = [len(t) for t in texts]
    assert got["length"] == pytest.approx(roc_auc_score(labels, lengths), abs=1e-12)
    assert got["classifier"] == pytest.approx(roc_auc_score(labels, np.minimum(np.array(lengths) / 100, 1)))
    hits = [sum(w.strip("!.,") in {"idiot"} for w in t.split()) for t in texts]
    assert lexical_baselines(texts, labels, topics, lexicon=["idiot"])["lexicon"] == pytest.approx(
        roc_auc_score(labels, hits)
    )
    from sklearn.pipeline import Pipeline

    pipe = Pipeline([("bow", CountVectorizer(ngram_range=(1, 2))), ("lr", LogisticRegression(max_iter=2000))])
    oof = cross_val_predict(pipe, np.array(texts), labels, groups=topics, cv=LOGO(), method="predict_proba")[:, 1]
    assert got["bow"] == pytest.approx(roc_auc_score(labels, oof), abs=1e-9)
    np.testing.assert_allclose(bow_oof_scores(texts, labels, topics), oof, atol=1e-9)
    assert set(lexical_baselines(texts, labels, topics, lexicon=None)) == {"bow", "length"}


def test_bow_is_cross_validated_by_topic():
    # each topic's word predicts its labels perfectly only within that topic: a model that never saw
    # the topic cannot use it, so the out-of-fold AUROC stays at chance
    texts = [f"{'zork' if y else 'blip'}{t} word" for t in range(4) for y in (0, 1) for _ in range(3)]
    labels = [y for t in range(4) for y in (0, 1) for _ in range(3)]
    topics = [f"t{t}" for t in range(4) for _ in range(6)]
    assert lexical_baselines(texts, labels, topics)["bow"] == pytest.approx(0.5)


def test_lexical_baselines_errors():
    texts, labels, topics = _synthetic()
    with pytest.raises(ValueError, match="pair up"):
        lexical_baselines(texts, labels[:-1], topics)
    with pytest.raises(ValueError, match="both 0 and 1"):
        lexical_baselines(texts, np.zeros(len(texts), dtype=int), topics)
    with pytest.raises(ValueError, match="at least two topics"):
        bow_oof_scores(texts, labels, ["one"] * len(texts))
    with pytest.raises(TypeError, match="single string"):
        lexical_baselines("text", [1], ["t"])
    one_sided = ["t0"] * 4 + ["t1"] * 4
    with pytest.raises(ValueError, match="leaves one label only"):
        bow_oof_scores(["a", "b", "c", "d", "e", "f", "g", "h"], [1, 1, 1, 1, 0, 0, 0, 0], one_sided)


def test_auroc_by_kind():
    scores = [0.9, 0.8, 0.1, 0.7, 0.2, 0.6, 0.4]
    labels = [1, 1, 0, 0, 0, 1, 0]
    kinds = ["a", "a", "b", "b", "c", "mixed", "mixed"]
    got = auroc_by_kind(scores, labels, kinds)
    assert list(got) == ["a", "b", "c", "mixed"]
    # one-label kinds are scored against every row of the other label in the set
    assert got["a"] == pytest.approx(roc_auc_score([1, 1, 0, 0, 0, 0], [0.9, 0.8, 0.1, 0.7, 0.2, 0.4]))
    assert got["b"] == pytest.approx(roc_auc_score([1, 1, 0, 0, 1], [0.9, 0.8, 0.1, 0.7, 0.6]))
    assert got["mixed"] == pytest.approx(roc_auc_score([1, 0], [0.6, 0.4]))
    assert auroc_by_kind([0.1, 0.2], [1, 1], ["a", "b"]) == {}
    with pytest.raises(ValueError, match="pair up"):
        auroc_by_kind([0.1], [1, 0], ["a", "b"])


def test_curated_baselines_on_rows():
    rows = [r for r in load_curated("toxicity", version=2, subset="hard") if r.topic in ("food", "work", "tech")]
    texts, labels = curated_arrays(rows)
    got = curated_baselines(rows)
    assert got == lexical_baselines(texts, labels, [r.topic for r in rows])
    assert got["lexicon"] <= 0.65


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(version=3), "version must be one of"),
        (dict(version=True), "version must be one of"),
        (dict(subset="easy"), "subset must be"),
        (dict(subset="hard"), "pass version=2"),
    ],
)
def test_load_curated_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_curated("toxicity", **kwargs)


def test_users_file_may_tag_hard_kinds():
    lines = [
        {"text": "You again. Of course.", "label": 1, "kind": "implicit"},
        {"text": "He called me a fool, then apologised.", "label": 0, "kind": "lexical_trap"},
        {"text": "You are wrong about the date.", "label": 0, "kind": "matched_negative"},
        {"text": "What a lovely day.", "label": 0},
        {"text": "Shut up.", "label": 1},
    ]
    rows = _jsonl.read_curated("\n".join(json.dumps(d) for d in lines), "mine.jsonl")
    assert [r.kind for r in rows] == ["implicit", "lexical_trap", "matched_negative", "clean", "positive"]
    assert hard_subset(rows) == rows[:3]
    assert {"implicit", "lexical_trap", "matched_negative"} <= HARD_KINDS
    with pytest.raises(_jsonl.BehaviourFileError, match="implies label 1"):
        _jsonl.read_curated(json.dumps({"text": "a", "label": 0, "kind": "implicit"}), "mine.jsonl")


def test_curated_text_accepts_v2_kinds():
    row = CuratedText(id="x", text="t", label=1, kind="implicit_toxic", topic="work")
    assert row.kind in HARD_KINDS
    with pytest.raises(ValueError, match="implies label 0"):
        CuratedText(id="x", text="t", label=1, kind="lexical_trap", topic="work")
