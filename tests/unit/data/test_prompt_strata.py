"""Stratified partitions of a prompt set: exact sizes, per-stratum proportions, coverage, determinism."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from probe_lens.data.prompts import Prompt, load_prompts, provocative, stratified_partition, stratified_sample

FRACTIONS = {"probe_fit": 0.4, "drift": 0.1, "train": 0.5}
COUNTS = {"probe_fit": 150, "drift": 60, "train": 200}


@pytest.fixture(scope="module")
def prov():
    return provocative(load_prompts())


def _ids(part):
    return [p.id for p in part]


def _check_partition(prompts, parts, expected_sizes, key="topic"):
    names = list(expected_sizes)
    assert list(parts) == names
    assert {k: len(v) for k, v in parts.items()} == expected_sizes
    all_ids = [i for v in parts.values() for i in _ids(v)]
    assert len(all_ids) == len(set(all_ids)), "parts overlap"
    assert set(all_ids) <= set(_ids(prompts))
    for v in parts.values():
        assert _ids(v) == sorted(_ids(v))
    strata = Counter(getattr(p, key) for p in prompts)
    n = len(prompts)
    for name, part in parts.items():
        got = Counter(getattr(p, key) for p in part)
        for s, m in strata.items():
            assert abs(got[s] - m * len(part) / n) < 1.0, (name, s, got[s], m * len(part) / n)
            if m >= len(names):
                assert got[s] >= 1, (name, s)


def test_fractions(prov):
    assert len(prov) == 477
    parts = stratified_partition(prov, FRACTIONS, seed=0)
    # 477 * (0.4, 0.1, 0.5) = 190.8, 47.7, 238.5: floors sum to 475, the two largest remainders round up
    _check_partition(prov, parts, {"probe_fit": 191, "drift": 48, "train": 238})
    # fractions below 1 leave prompts out: 95.4, 143.1 and 238.5 left over -> the left-out share rounds up
    parts = stratified_partition(prov, {"a": 0.2, "b": 0.3}, seed=0)
    _check_partition(prov, parts, {"a": 95, "b": 143})


def test_counts_and_tag_key(prov):
    _check_partition(prov, stratified_partition(prov, COUNTS, seed=3), COUNTS)
    everything = load_prompts()
    parts = stratified_partition(everything, {"x": 100, "y": 30}, seed=1, key="tag")
    _check_partition(everything, parts, {"x": 100, "y": 30}, key="tag")
    whole = stratified_partition(prov, {"all": 477}, seed=0)["all"]
    assert _ids(whole) == _ids(prov)


def test_every_topic_with_three_prompts_in_every_part(prov):
    topics = Counter(p.topic for p in prov)
    for sizes in (FRACTIONS, COUNTS, {"probe_fit": 0.05, "drift": 0.05, "train": 0.05}):
        for part in stratified_partition(prov, sizes, seed=2).values():
            present = {p.topic for p in part}
            assert {t for t, m in topics.items() if m >= 3} <= present


def test_deterministic_in_seed_and_input_order(prov):
    a = stratified_partition(prov, FRACTIONS, seed=5)
    assert a == stratified_partition(prov, FRACTIONS, seed=5)
    shuffled = list(prov)
    random.Random(0).shuffle(shuffled)
    assert a == stratified_partition(shuffled, FRACTIONS, seed=5)
    assert a == stratified_partition(list(reversed(prov)), FRACTIONS, seed=5)
    b = stratified_partition(prov, FRACTIONS, seed=6)
    assert {k: len(v) for k, v in a.items()} == {k: len(v) for k, v in b.items()}
    for name in FRACTIONS:
        assert _ids(a[name]) != _ids(b[name])


def test_coverage_beats_proportion_when_needed():
    # stratum "rare" (3 prompts) must reach each of 3 parts of 3 prompts, although its share of each is 0.09
    prompts = [Prompt(f"r{i}", "a rare opener here", "neutral", "rare") for i in range(3)]
    prompts += [Prompt(f"c{i:02d}", "a common opener here", "neutral", "common") for i in range(97)]
    parts = stratified_partition(prompts, {"a": 3, "b": 3, "c": 3}, seed=0)
    for part in parts.values():
        assert len(part) == 3 and Counter(p.topic for p in part)["rare"] == 1
    # no stratum big enough to cover 4 parts: plain proportional allocation, sizes still exact
    singles = [Prompt(f"s{i}", "a single opener", "neutral", f"t{i}") for i in range(3)]
    parts = stratified_partition(singles, {"a": 1, "b": 1, "c": 0, "d": 1}, seed=0)
    assert [len(v) for v in parts.values()] == [1, 1, 0, 1]


def test_stratified_sample(prov):
    s = stratified_sample(prov, 34, seed=0)
    assert s == stratified_partition(prov, {"sample": 34}, seed=0)["sample"]
    assert len(s) == 34 and len(set(_ids(s))) == 34
    topics = Counter(p.topic for p in prov)
    got = Counter(p.topic for p in s)
    for t, m in topics.items():
        assert abs(got[t] - m * 34 / 477) < 1.0
    # 5 prompts from 17 topics: the 5 largest shares (insult 46, drivers 45, work 40, neighbours 39, public_spaces 36)
    assert {p.topic for p in stratified_sample(prov, 5, seed=1)} == {
        "insult",
        "drivers",
        "work",
        "neighbours",
        "public_spaces",
    }
    assert stratified_sample(prov, 0, seed=0) == []


def test_errors(prov):
    with pytest.raises(ValueError, match="ask for 478 prompts.*only 477"):
        stratified_partition(prov, {"a": 400, "b": 78}, seed=0)
    with pytest.raises(ValueError, match="sum to at most 1"):
        stratified_partition(prov, {"a": 0.6, "b": 0.5}, seed=0)
    with pytest.raises(TypeError, match="mix counts"):
        stratified_partition(prov, {"a": 0.5, "b": 10}, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        stratified_partition(prov, {"a": -1, "b": 10}, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        stratified_partition(prov, {"a": -0.1}, seed=0)
    with pytest.raises(TypeError, match="ints .*or floats"):
        stratified_partition(prov, {"a": True}, seed=0)
    with pytest.raises(ValueError, match="key must be one of"):
        stratified_partition(prov, FRACTIONS, seed=0, key="colour")
    with pytest.raises(ValueError, match="empty"):
        stratified_partition([], FRACTIONS, seed=0)
    with pytest.raises(ValueError, match="non-empty mapping"):
        stratified_partition(prov, {}, seed=0)
    with pytest.raises(ValueError, match="unique"):
        stratified_partition([prov[0], prov[0]], {"a": 1}, seed=0)
    with pytest.raises(TypeError, match="not a Prompt"):
        stratified_partition(["hello"], {"a": 1}, seed=0)
    with pytest.raises(ValueError, match="seed"):
        stratified_partition(prov, FRACTIONS, seed=-1)
    with pytest.raises(TypeError, match="n must be an int"):
        stratified_sample(prov, 3.0, seed=0)
    with pytest.raises(ValueError, match="only 477"):
        stratified_sample(prov, 500, seed=0)
