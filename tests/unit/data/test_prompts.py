"""The embedded prompt set: counts, tags, originality checks, and seeded disjoint splits."""

from __future__ import annotations

import dataclasses
import json
import random
import re
from importlib import resources

import pytest

from probe_lens.data import Prompt, PromptSplits, load_prompts, neutral, provocative, split_prompts
from probe_lens.data._build_prompts import build


@pytest.fixture(scope="module")
def prompts():
    return load_prompts()


def test_counts_and_tags(prompts):
    assert len(prompts) >= 600
    assert len(provocative(prompts)) >= 400
    assert len(neutral(prompts)) >= 200
    assert {p.tag for p in prompts} == {"provocative", "neutral"}
    assert len(provocative(prompts)) + len(neutral(prompts)) == len(prompts)


def test_ids_unique_texts_deduplicated_and_short(prompts):
    ids = [p.id for p in prompts]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"p\d{4}", i) for i in ids)
    lowered = [p.text.lower() for p in prompts]
    assert len(set(lowered)) == len(lowered)
    for p in prompts:
        assert 5 <= len(p.text.split()) <= 25, p
        assert p.text == p.text.strip() and "  " not in p.text
        assert p.topic and re.fullmatch(r"[a-z_]+", p.topic)


def test_topics_varied_per_tag(prompts):
    assert len({p.topic for p in provocative(prompts)}) >= 10
    assert len({p.topic for p in neutral(prompts)}) >= 10


def test_file_matches_builder_and_license_shipped():
    files = resources.files("probe_lens.data")
    rows = [json.loads(line) for line in files.joinpath("prompts.jsonl").read_text("utf-8").splitlines()]
    assert rows == build(), "prompts.jsonl is stale: run python -m probe_lens.data._build_prompts"
    assert set(rows[0]) == {"id", "text", "tag", "topic"}
    lic = files.joinpath("LICENSE-prompts.txt").read_text("utf-8")
    assert "CC0" in lic and "CONTENT WARNING" in lic


def test_prompt_validation():
    with pytest.raises(ValueError, match="tag"):
        Prompt(id="x", text="hello there", tag="toxic", topic="t")
    with pytest.raises(ValueError, match="empty"):
        Prompt(id="x", text="   ", tag="neutral", topic="t")
    with pytest.raises(TypeError, match="text"):
        Prompt(id="x", text=3, tag="neutral", topic="t")


def _ids(prompts):
    return {p.id for p in prompts}


def test_default_split_sizes_disjoint_and_cover(prompts):
    s = split_prompts()
    assert isinstance(s, PromptSplits)
    assert len(provocative(s.eval)) == 100 and len(neutral(s.eval)) == 50
    for part in (s.probe_fit, s.train, s.eval):
        assert provocative(part) and neutral(part)
    fit, train, ev = _ids(s.probe_fit), _ids(s.train), _ids(s.eval)
    assert not (fit & train) and not (fit & ev) and not (train & ev)
    assert fit | train | ev == _ids(prompts)
    # fit_fraction=0.5 of the rest of each tag
    for tag_fn in (provocative, neutral):
        assert abs(len(tag_fn(s.probe_fit)) - len(tag_fn(s.train))) <= 1
    json.dumps(s.as_ids())


def test_split_stable_under_reseeding_and_input_order(prompts):
    a = split_prompts(seed=3)
    b = split_prompts(seed=3)
    shuffled = list(prompts)
    random.Random(0).shuffle(shuffled)
    c = split_prompts(shuffled, seed=3)
    for name in ("probe_fit", "train", "eval"):
        assert [p.id for p in getattr(a, name)] == [p.id for p in getattr(b, name)]
        assert [p.id for p in getattr(a, name)] == [p.id for p in getattr(c, name)]
    d = split_prompts(seed=4)
    assert _ids(a.eval) != _ids(d.eval)
    # different seeds still give the same sizes
    assert [len(getattr(a, n)) for n in ("probe_fit", "train", "eval")] == [
        len(getattr(d, n)) for n in ("probe_fit", "train", "eval")
    ]


def test_split_fit_fraction_and_all_provocative_set(prompts):
    s = split_prompts(fit_fraction=0.25, n_eval_provocative=120, n_eval_neutral=40)
    assert len(provocative(s.eval)) == 120
    n_rest = len(provocative(prompts)) - 120
    assert len(provocative(s.probe_fit)) == round(0.25 * n_rest)
    only_prov = provocative(prompts)
    s2 = split_prompts(only_prov, n_eval_neutral=0)
    assert not neutral(s2.eval) and len(s2.eval) == 100
    with pytest.raises(ValueError, match="n_eval_neutral=0"):
        split_prompts(only_prov)


def test_split_bad_input(prompts):
    with pytest.raises(ValueError, match="empty"):
        split_prompts([])
    with pytest.raises(TypeError, match="not a Prompt"):
        split_prompts(["just a string"])
    with pytest.raises(TypeError, match="string"):
        split_prompts("a string")
    for bad in (0.0, 1.0, -0.5, 2):
        with pytest.raises(ValueError, match="fit_fraction"):
            split_prompts(fit_fraction=bad)
    with pytest.raises(ValueError, match="n_eval_provocative"):
        split_prompts(n_eval_provocative=-1)
    with pytest.raises(ValueError, match="not enough provocative"):
        split_prompts(n_eval_provocative=10_000)
    dup = [prompts[0], dataclasses.replace(prompts[1], id=prompts[0].id)]
    with pytest.raises(ValueError, match="unique"):
        split_prompts(dup)
