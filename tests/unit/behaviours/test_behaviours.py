"""Behaviours as plug-ins: every registered behaviour's data and names, the registry, the built-in
sentiment prompt and curated sets, and bring-your-own behaviours from JSONL (prompts + scorer, or
pre-labelled rows)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from importlib import resources

import numpy as np
import pytest

import probe_lens.scorers as scorers
from probe_lens.behaviours import (
    BEHAVIOURS,
    METRIC_ROLES,
    Behaviour,
    BehaviourFileError,
    LabelledRows,
    UnlabelledTextError,
    get_behaviour,
    register_behaviour,
)
from probe_lens.data.curated import CURATED_PROMPT, KIND_LABELS, SET_KIND_LABELS, CuratedText, load_curated
from probe_lens.data.prompts import Prompt, load_prompts, split_prompts
from probe_lens.scorers.base import Scorer


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


class _ConstScorer(Scorer):
    name = "const"

    def _score(self, texts):
        return np.full(len(texts), 0.7)


def _behaviour(**kw) -> Behaviour:
    base = dict(
        name="demo",
        positive_label="yes",
        negative_label="no",
        prompt_loader=lambda: [Prompt("a", "Tell me", "provocative", "t")],
        scorer="vader",
    )
    return Behaviour(**{**base, **kw})


@pytest.fixture
def registry(registries):
    """The registry, restored after the test."""
    return BEHAVIOURS


# ---- every registered behaviour ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
def test_registered_behaviour_prompts(name):
    b = get_behaviour(name)
    prompts = b.load_prompts()
    assert all(isinstance(p, Prompt) for p in prompts)
    assert {p.tag for p in prompts} == {"provocative", "neutral"}
    assert len({p.id for p in prompts}) == len(prompts)
    assert b.load_prompts() == prompts and b.load_prompts() is not prompts
    splits = split_prompts(prompts, seed=0)  # the study's default split fits
    assert len([p for p in splits.eval if p.tag == "provocative"]) == 100


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
def test_registered_behaviour_curated(name):
    b = get_behaviour(name)
    if not b.has_curated:
        pytest.skip(f"{name} has no curated set")
    rows = b.load_curated()
    assert all(isinstance(r, CuratedText) for r in rows)
    labels_by_topic: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        labels_by_topic[r.topic].add(r.label)
    sizes = Counter(r.topic for r in rows)
    assert all(labels_by_topic[t] == {0, 1} for t, n in sizes.items() if n >= 4)  # topic alone does not predict


@pytest.mark.parametrize("name", sorted(BEHAVIOURS))
def test_registered_behaviour_names_and_record(name, monkeypatch):
    b = get_behaviour(name)
    keys = b.metric_keys
    assert tuple(keys) == METRIC_ROLES
    assert len(set(keys.values())) == len(keys)
    eval_roles = ("rate", "mean", "expected_max", "probability", "probe_p")
    assert all(keys[role].startswith("eval/") for role in eval_roles)
    assert b.metric_prefix in keys["rate"] and b.metric_prefix in keys["mean"]
    assert b.class_names == (b.negative_label, b.positive_label)
    assert 0 < b.threshold < 1
    record = json.loads(json.dumps(b.describe()))
    assert record["name"] == name and record["metric_prefix"] == b.metric_prefix
    assert record["metric_keys"] == keys
    calls = []
    monkeypatch.setattr(scorers, "get_scorer", lambda n, **kw: calls.append((n, kw)) or "built")
    assert b.get_scorer(device="cuda:1") == "built"  # resolved lazily, by name, on the asked device
    assert calls == [(b.scorer, {"device": "cuda:1", **dict(b.scorer_kwargs)})]


def test_default_is_toxicity_and_wraps_todays_data():
    tox = get_behaviour()
    assert tox is get_behaviour("toxicity") is BEHAVIOURS.get("toxicity")
    assert (tox.positive_label, tox.negative_label, tox.scorer, tox.threshold) == ("toxic", "clean", "auto", 0.5)
    assert tox.load_prompts() == load_prompts()
    assert tox.load_curated() == load_curated("toxicity")
    from probe_lens.data.builder import class_record

    assert class_record(None) == class_record(tox) == class_record(tox.describe())  # data's default: toxicity
    assert tox.curated_prompt == CURATED_PROMPT
    assert len({tox, get_behaviour("toxicity"), get_behaviour("sentiment")}) == 2  # hashable, by identity


def test_toxicity_metric_keys_are_todays_keys():
    """Equivalence guard for the integration: the toxicity behaviour names every key as the code does now."""
    assert get_behaviour("toxicity").metric_keys == {
        "rate": "eval/toxicity_rate",
        "mean": "eval/mean_toxicity",
        "expected_max": "eval/expected_max_toxicity",
        "probability": "eval/toxicity_probability",
        "probe_p": "eval/probe_p_toxic",
        "n_positive": "n_toxic",
        "n_negative": "n_clean",
        "n_fit_positive": "n_fit_toxic",
        "n_onpolicy_positive": "n_onpolicy_toxic",
        "proj_positive": "proj_toxic",
        "proj_negative": "proj_clean",
    }


def test_sentiment_behaviour():
    pytest.importorskip("vaderSentiment")
    s = get_behaviour("sentiment")
    assert (s.positive_label, s.negative_label, s.scorer, s.threshold) == ("negative", "not negative", "vader", 0.5)
    assert s.metric_keys["rate"] == "eval/negativity_rate"
    assert s.metric_keys["n_negative"] == "n_not_negative"
    assert s.noun == "negativity"
    vader = s.get_scorer()
    assert isinstance(vader, scorers.VaderScorer)
    assert list(s.label(vader.score(["I hate this awful place.", "I love this lovely place."]))) == [1, 0]


# ---- the sentiment data files --------------------------------------------------------------------


def _resource_rows(filename: str) -> list[dict]:
    raw = resources.files("probe_lens.data").joinpath(filename).read_text(encoding="utf-8")
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def test_sentiment_prompt_file():
    lines = _resource_rows("prompts_sentiment.jsonl")
    prompts = get_behaviour("sentiment").load_prompts()
    assert [p.to_dict() for p in prompts] == lines
    assert all(set(d) == {"id", "text", "tag", "topic"} for d in lines)
    tags = Counter(p.tag for p in prompts)
    assert tags["provocative"] == 300 and tags["neutral"] == 150
    topics = {p.topic for p in prompts}
    assert len(topics) == 12
    for t in topics:
        assert {p.tag for p in prompts if p.topic == t} == {"provocative", "neutral"}
    assert all(6 <= len(p.text.split()) <= 20 for p in prompts)
    normed = Counter(_norm(p.text) for p in prompts)
    assert not [t for t, c in normed.items() if c > 1]
    ids = [p.id for p in prompts]
    assert ids == sorted(ids)


def test_sentiment_curated_file():
    lines = _resource_rows("curated_sentiment.jsonl")
    rows = load_curated("sentiment")
    assert [r.to_dict() for r in rows] == lines
    assert all(set(d) == {"id", "text", "label", "kind", "topic"} for d in lines)
    kinds = Counter(r.kind for r in rows)
    assert set(kinds) == set(SET_KIND_LABELS["sentiment"])
    assert kinds["negative"] >= 125 and kinds["hard_negative"] >= 75 and kinds["clean"] >= 85
    assert all(r.label == SET_KIND_LABELS["sentiment"][r.kind] for r in rows)
    by_topic: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        by_topic[r.topic].add(r.kind)
    assert len(by_topic) == 12 and all(k == {"negative", "hard_negative", "clean"} for k in by_topic.values())
    ids = [r.id for r in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    normed = Counter(_norm(r.text) for r in rows)
    assert not [t for t, c in normed.items() if c > 1]
    prompt_texts = {_norm(p.text) for p in get_behaviour("sentiment").load_prompts()}
    assert not prompt_texts & set(normed)


def test_toxicity_curated_unchanged():
    rows = load_curated("toxicity")
    assert len(rows) == 345 and {r.kind for r in rows} == set(KIND_LABELS)
    assert load_curated() == rows


# ---- the registry --------------------------------------------------------------------------------


def test_unknown_behaviour_suggests():
    with pytest.raises(ValueError, match=r"unknown behaviour 'toxicty' \(did you mean 'toxicity'\?\).*registered"):
        get_behaviour("toxicty")
    with pytest.raises(ValueError, match="registered: .*'sentiment'"):
        get_behaviour("deception")
    with pytest.raises(TypeError, match="by name"):
        get_behaviour(3)  # type: ignore[arg-type]


def test_register(registry):
    b = _behaviour()
    assert register_behaviour(b) is b and get_behaviour("demo") is b and get_behaviour(b) is b
    assert register_behaviour(b) is b  # same object again: fine
    other = _behaviour(positive_label="si")
    with pytest.raises(ValueError, match="already registered.*replace=True"):
        register_behaviour(other)
    register_behaviour(other, replace=True)
    assert get_behaviour("demo") is other
    with pytest.raises(TypeError, match="only Behaviour"):
        register_behaviour("demo")  # type: ignore[arg-type]


# ---- Behaviour validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(name="Toxicity"), ValueError, r"\[a-z\]"),
        (dict(name="two words"), ValueError, "name must match"),
        (dict(positive_label=""), ValueError, "positive_label"),
        (dict(negative_label="Yes"), ValueError, "must differ"),
        (dict(threshold=1.0), ValueError, "strictly between"),
        (dict(threshold="0.5"), TypeError, "threshold"),
        (dict(metric_prefix="eval/x"), ValueError, "metric_prefix"),
        (dict(scorer="vadr"), ValueError, r"unknown scorer 'vadr' \(did you mean 'vader'\?\)"),
        (dict(scorer=object()), TypeError, r"lacks \['score', 'describe'\]"),
        (dict(scorer=_ConstScorer(), scorer_kwargs={"a": 1}), TypeError, "not to a scorer object"),
        (dict(scorer_kwargs=[1]), TypeError, "scorer_kwargs"),
        (dict(prompt_loader=[]), TypeError, "prompt_loader"),
        (dict(curated_loader="file.jsonl"), TypeError, "curated_loader"),
    ],
)
def test_behaviour_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        _behaviour(**kwargs)


def test_behaviour_defaults_and_object_scorer():
    const = _ConstScorer()
    b = _behaviour(scorer=const, threshold=0.6)
    assert b.metric_prefix == "demo" and b.get_scorer() is const
    assert b.describe()["scorer"] == const.describe()
    assert list(b.label(np.array([0.59, 0.6]))) == [0, 1]
    assert not b.has_curated
    with pytest.raises(ValueError, match="has no curated set"):
        b.load_curated()
    with pytest.raises(AttributeError):
        b.threshold = 0.1  # type: ignore[misc]
    with pytest.raises(TypeError):
        b.scorer_kwargs["x"] = 1  # type: ignore[index]


def test_loader_output_is_checked():
    p = Prompt("a", "Tell me", "provocative", "t")
    with pytest.raises(ValueError, match="duplicated"):
        _behaviour(prompt_loader=lambda: [p, p]).load_prompts()
    with pytest.raises(ValueError, match="no prompt is tagged 'provocative'"):
        _behaviour(prompt_loader=lambda: [Prompt("a", "Hi", "neutral", "t")]).load_prompts()
    with pytest.raises(TypeError, match="non-Prompt"):
        _behaviour(prompt_loader=lambda: ["Tell me"]).load_prompts()
    one_class = [CuratedText("c1", "fine", 0, "clean", "t")]
    with pytest.raises(ValueError, match="both labels"):
        _behaviour(curated_loader=lambda: one_class).load_curated()


# ---- bring your own: prompts + scorer ------------------------------------------------------------


def test_from_jsonl(tmp_path):
    prompts = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "q1", "text": "You are absolutely right that", "tag": "flatter", "topic": "opinions"},
            {"text": "The capital of France is", "tag": "plain"},
            "",
            {"id": "q3", "text": "Great question! As you said,", "tag": "flatter", "topic": "opinions"},
        ],
    )
    curated = _write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "a", "text": "What a brilliant idea, you are so right.", "label": 1, "topic": "opinions"},
            {"text": "Paris.", "label": 0},
            {"text": "I disagree, and here is why.", "label": 0, "kind": "hard_negative"},
        ],
    )
    b = Behaviour.from_jsonl(
        "sycophancy",
        prompts,
        positive_label="sycophantic",
        negative_label="candid",
        scorer="vader",
        curated_path=curated,
        provocative_tag="flatter",
        neutral_tag="plain",
    )
    rows = b.load_prompts()
    assert [(p.id, p.tag, p.topic) for p in rows] == [
        ("q1", "provocative", "opinions"),
        ("p00002", "neutral", "none"),
        ("q3", "provocative", "opinions"),
    ]
    cur = b.load_curated()
    assert [(r.id, r.label, r.kind, r.topic) for r in cur] == [
        ("a", 1, "positive", "opinions"),
        ("c00002", 0, "clean", "none"),
        ("c00003", 0, "hard_negative", "none"),
    ]
    assert b.metric_keys["rate"] == "eval/sycophancy_rate" and b.metric_keys["n_negative"] == "n_candid"
    record = b.describe()
    assert record["prompts"] == prompts and record["curated"] == curated


@pytest.mark.parametrize(
    "lines, match",
    [
        (['{"text": "Hi", "tag": "provocative"}', "{not json"], r"p\.jsonl:2: not valid JSON"),
        (['["Hi", "provocative"]'], r"p\.jsonl:1: expected a JSON object"),
        ([{"tag": "provocative"}], r"p\.jsonl:1: missing key\(s\) \['text'\]"),
        ([{"text": "Hi", "tag": "provocative", "tags": "x"}], r"p\.jsonl:1: unknown key\(s\) \['tags'\]"),
        ([{"text": "Hi", "tag": "rude"}], r"p\.jsonl:1: tag 'rude' is neither 'provocative'"),
        ([{"text": "  ", "tag": "provocative"}], r"p\.jsonl:1: 'text' must be a non-empty string"),
        ([{"text": "Hi", "tag": "provocative", "topic": 3}], r"p\.jsonl:1: 'topic' must be a non-empty string"),
        (
            [{"id": "x", "text": "Hi", "tag": "provocative"}, {"id": "x", "text": "Yo", "tag": "neutral"}],
            r"p\.jsonl:2: id 'x' repeats line 1",
        ),
        ([{"text": "Hi", "tag": "neutral"}], r"p\.jsonl: no prompt is tagged 'provocative'"),
        (["", "  "], r"p\.jsonl: holds no rows"),
    ],
)
def test_from_jsonl_prompt_errors(tmp_path, lines, match):
    path = _write_jsonl(tmp_path / "p.jsonl", lines)
    with pytest.raises(BehaviourFileError, match=match):
        Behaviour.from_jsonl("demo", path, positive_label="yes", negative_label="no", scorer="vader")


@pytest.mark.parametrize(
    "lines, match",
    [
        ([{"text": "a", "label": 2}], r"c\.jsonl:1: 'label' must be 0 or 1"),
        ([{"text": "a", "label": True}], r"c\.jsonl:1: 'label' must be 0 or 1"),
        ([{"text": "a", "label": 0, "kind": "positive"}], r"c\.jsonl:1: .*implies label 1"),
        ([{"text": "a", "label": 1, "kind": "spicy"}], r"c\.jsonl:1: .*kind 'spicy'.*kinds for your own set"),
        ([{"text": "a", "label": 1}, {"text": "b", "label": 1}], r"c\.jsonl: every row has label 1"),
        ([{"text": "a"}], r"c\.jsonl:1: missing key\(s\) \['label'\]"),
    ],
)
def test_from_jsonl_curated_errors(tmp_path, lines, match):
    prompts = _write_jsonl(tmp_path / "p.jsonl", [{"text": "Hi", "tag": "provocative"}])
    curated = _write_jsonl(tmp_path / "c.jsonl", lines)
    with pytest.raises(BehaviourFileError, match=match):
        Behaviour.from_jsonl(
            "demo", prompts, positive_label="yes", negative_label="no", scorer="vader", curated_path=curated
        )


def test_from_jsonl_missing_file_and_bad_scorer(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        Behaviour.from_jsonl("demo", tmp_path / "nope.jsonl", positive_label="yes", negative_label="no", scorer="vader")
    prompts = _write_jsonl(tmp_path / "p.jsonl", [{"text": "Hi", "tag": "provocative"}])
    with pytest.raises(ValueError, match="did you mean 'profanity'"):
        Behaviour.from_jsonl("demo", prompts, positive_label="yes", negative_label="no", scorer="profanty")


# ---- bring your own: pre-labelled rows -----------------------------------------------------------


LABELLED = [
    {"prompt": "Is my essay good?", "response": "It is perfect, you are a genius.", "label": 1, "topic": "essays"},
    {"prompt": "Is my essay good?", "response": "The argument in part two is weak.", "label": 0, "topic": "essays"},
    {"prompt": "Was I right?", "response": "Absolutely, you are always right.", "label": 1},
    {"prompt": "What is 2 + 2?", "response": "4", "label": 0, "tag": "neutral"},
    {"prompt": "Was I right?", "response": "4", "label": 0},
]


def test_from_labelled_jsonl(tmp_path):
    path = _write_jsonl(tmp_path / "rows.jsonl", LABELLED)
    b = Behaviour.from_labelled_jsonl("sycophancy", path, positive_label="sycophantic", negative_label="candid")
    prompts = b.load_prompts()
    assert [(p.id, p.text, p.tag, p.topic) for p in prompts] == [
        ("l0001", "Is my essay good?", "provocative", "essays"),
        ("l0002", "Was I right?", "provocative", "none"),
        ("l0003", "What is 2 + 2?", "neutral", "none"),
    ]
    scorer = b.get_scorer()
    assert isinstance(scorer, LabelledRows) and len(scorer) == 5 and b.threshold == 0.5
    got = scorer.score(["The argument in part two is weak.", "Absolutely, you are always right.", "4"])
    assert got.dtype == np.float64 and list(got) == [0.0, 1.0, 0.0]
    assert list(scorer.score_pairs(["Was I right?"], ["4"])) == [0.0]
    record = json.loads(json.dumps(b.describe()))
    assert record["scorer"]["name"] == "labelled" and record["scorer"]["version"].startswith("sha256:")
    assert record["scorer"]["details"] == {"source": path, "rows": 5, "n_positive": 2, "n_negative": 3}
    unknown = r"no label for 1 of 2 text\(s\), e\.g\. response 'Nice essay!'.*needs a real scorer"
    with pytest.raises(UnlabelledTextError, match=unknown):
        scorer.score(["4", "Nice essay!"])
    with pytest.raises(UnlabelledTextError, match="prompt 'What is 2 \\+ 2\\?' / response 'It is perfect"):
        scorer.score_pairs(["What is 2 + 2?"], ["It is perfect, you are a genius."])


def test_labelled_rows_ambiguous_and_invalid():
    rows = LabelledRows([("p1", "Sure.", 1), ("p2", "Sure.", 0), ("p1", "Sure.", 1)])
    assert len(rows) == 2 and rows.rows == [("p1", "Sure.", 1), ("p2", "Sure.", 0)]
    with pytest.raises(UnlabelledTextError, match="use score_pairs"):
        rows.score(["Sure."])
    assert list(rows.score_pairs(["p2", "p1"], ["Sure.", "Sure."])) == [0.0, 1.0]
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        rows.score_pairs(["p1", "p2"], ["Sure."])
    assert LabelledRows([("a", "b", 1)]).version == LabelledRows([("a", "b", 1)]).version != rows.version
    with pytest.raises(ValueError, match="both labels 0 and 1"):
        LabelledRows([("p", "r", 1), ("p", "r", 0)])
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        LabelledRows([("p", "r", 0.5)])
    with pytest.raises(TypeError, match="triple"):
        LabelledRows([("p", "r")])
    with pytest.raises(ValueError, match="at least one"):
        LabelledRows([])


@pytest.mark.parametrize(
    "lines, match",
    [
        (
            [{"prompt": "p", "response": "r", "label": 1}, {"prompt": "p", "response": "r", "label": 0}],
            r"rows\.jsonl:2: .*label 0 here but 1 on line 1",
        ),
        (
            [
                {"prompt": "p", "response": "r", "label": 1},
                {"prompt": "p", "response": "s", "label": 0, "tag": "neutral"},
            ],
            r"rows\.jsonl:2: this prompt is tagged 'neutral' here but 'provocative' on line 1",
        ),
        ([{"prompt": "p", "response": 3, "label": 1}], r"rows\.jsonl:1: 'response' must be a string"),
        ([{"prompt": "p", "label": 1}], r"rows\.jsonl:1: missing key\(s\) \['response'\]"),
        (
            [{"prompt": "p", "response": "r", "label": 0, "tag": "neutral"}],
            r"rows\.jsonl: no row is tagged 'provocative'",
        ),
    ],
)
def test_from_labelled_jsonl_errors(tmp_path, lines, match):
    path = _write_jsonl(tmp_path / "rows.jsonl", lines)
    with pytest.raises(BehaviourFileError, match=match):
        Behaviour.from_labelled_jsonl("demo", path, positive_label="yes", negative_label="no")
