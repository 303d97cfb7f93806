"""Civil Comments / RealToxicityPrompts loaders on small local files in the real schemas."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from probe_lens.data import DatasetUnavailableError, load_civil_comments, load_real_toxicity_prompts, truncate_prompt
from probe_lens.data.loaders import CIVIL_COMMENTS_COLUMNS

LONG = "You people are " + " ".join(["absolutely"] * 60) + " clueless"
CC_ROWS = [
    # text, toxicity (other columns filled below)
    ("What a lovely afternoon at the park.", 0.0),
    ("Anyone who believes this is an idiot.", 0.83),
    ("Exactly at the threshold, you fool.", 0.5),
    ("Just under the threshold, meh.", 0.4999),
    ("Line one\n\nline   two, you moron.", 0.7),
    (LONG, 0.9),
    ("Thanks for the helpful article!", 0.1),
]


def _cc_frame():
    rows = []
    for text, tox in CC_ROWS:
        row = {c: 0.0 for c in CIVIL_COMMENTS_COLUMNS}
        row.update(text=text, toxicity=tox, insult=tox / 2)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(CIVIL_COMMENTS_COLUMNS))


@pytest.fixture
def cc_jsonl(tmp_path):
    path = tmp_path / "civil_comments_train.jsonl"
    _cc_frame().to_json(path, orient="records", lines=True)
    return path


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf_cache")


def test_civil_comments_filter_and_truncation(cc_jsonl, cache):
    prompts = load_civil_comments(path=cc_jsonl, cache_dir=cache, max_prompt_chars=60)
    kept = {i for i, (_, tox) in enumerate(CC_ROWS) if tox >= 0.5}
    assert [p.id for p in prompts] == [f"civil_comments/train/{i}" for i in sorted(kept)]
    assert all(p.tag == "provocative" and p.topic == "civil_comments" for p in prompts)
    texts = [p.text for p in prompts]
    assert texts[0] == "Anyone who believes this is an idiot."
    assert texts[1] == "Exactly at the threshold, you fool."  # >= 0.5 is kept
    assert texts[2] == "Line one line two, you moron."  # whitespace collapsed
    long = texts[3]
    assert len(long) <= 60 and LONG.startswith(long) and LONG[len(long)] == " "  # cut at a word boundary
    assert not long.endswith(" ")


def test_civil_comments_threshold_limit_and_formats(cc_jsonl, tmp_path, cache):
    high = load_civil_comments(path=cc_jsonl, min_toxicity=0.8, cache_dir=cache)
    assert [p.id.rsplit("/", 1)[1] for p in high] == ["1", "5"]
    assert load_civil_comments(path=cc_jsonl, max_prompt_chars=None, cache_dir=cache)[3].text == LONG
    assert len(load_civil_comments(path=cc_jsonl, limit=2, cache_dir=cache)) == 2
    frame = _cc_frame()
    csv, parquet = tmp_path / "cc.csv", tmp_path / "cc.parquet"
    frame.to_csv(csv, index=False)
    frame.to_parquet(parquet)
    ref = [p.text for p in load_civil_comments(path=cc_jsonl, cache_dir=cache)]
    assert [p.text for p in load_civil_comments(path=csv, cache_dir=cache)] == ref
    assert [p.text for p in load_civil_comments(path=parquet, cache_dir=cache)] == ref


def test_civil_comments_folder_prefers_split_files(tmp_path, cache):
    folder = tmp_path / "cc"
    folder.mkdir()
    frame = _cc_frame()
    frame.to_parquet(folder / "train-00000.parquet")
    frame.iloc[[1]].to_parquet(folder / "test-00000.parquet")
    assert len(load_civil_comments("test", path=folder, cache_dir=cache)) == 1
    assert len(load_civil_comments("train", path=folder, cache_dir=cache)) == 4


def test_civil_comments_bad_input(cc_jsonl, tmp_path, cache):
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match="min_toxicity"):
            load_civil_comments(path=cc_jsonl, min_toxicity=bad)
    with pytest.raises(ValueError, match="max_prompt_chars"):
        load_civil_comments(path=cc_jsonl, max_prompt_chars=0)
    with pytest.raises(ValueError, match="limit"):
        load_civil_comments(path=cc_jsonl, limit=0)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_civil_comments(path=tmp_path / "nope.jsonl")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"comment": "hi", "score": 1.0}) + "\n")
    with pytest.raises(ValueError, match="lacks column"):
        load_civil_comments(path=wrong, cache_dir=cache)
    odd = tmp_path / "data.txt"
    odd.write_text("hello")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_civil_comments(path=odd)


def _rtp_rows():
    def part(text, tox):
        return {
            "text": text,
            "toxicity": tox,
            "profanity": tox,
            "sexually_explicit": 0.01,
            "flirtation": 0.1,
            "identity_attack": 0.02,
            "threat": 0.05,
            "insult": tox,
            "severe_toxicity": None if tox is None else tox / 3,
        }

    return [
        {
            "filename": "0001.txt",
            "begin": 0,
            "end": 80,
            "challenging": False,
            "prompt": part("The recipe calls for two cups of", 0.03),
            "continuation": part(" flour and sugar.", 0.01),
        },
        {
            "filename": "0002.txt",
            "begin": 10,
            "end": 95,
            "challenging": True,
            "prompt": part("He looked at me and said I was a", 0.2),
            "continuation": part(" total loser.", 0.8),
        },
        {
            "filename": "0003.txt",
            "begin": 5,
            "end": 60,
            "challenging": False,
            "prompt": part("Shut up, you stupid", 0.91),
            "continuation": part(" idiot.", 0.95),
        },
        {
            "filename": "0004.txt",
            "begin": 0,
            "end": 40,
            "challenging": False,
            "prompt": part("The weather  today is", None),
            "continuation": part(" sunny.", 0.0),
        },
    ]


@pytest.fixture
def rtp_jsonl(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rtp_rows()))
    return path


def test_real_toxicity_prompts(rtp_jsonl, cache):
    prompts = load_real_toxicity_prompts(path=rtp_jsonl, cache_dir=cache)
    assert [p.id for p in prompts] == ["rtp/0", "rtp/1", "rtp/2", "rtp/3"]
    assert [p.tag for p in prompts] == ["neutral", "provocative", "provocative", "neutral"]
    assert prompts[3].text == "The weather today is"
    assert prompts[1].topic == "real_toxicity_prompts_challenging"
    challenging = load_real_toxicity_prompts(path=rtp_jsonl, challenging_only=True, cache_dir=cache)
    assert [p.text for p in challenging] == ["He looked at me and said I was a"]
    assert len(load_real_toxicity_prompts(path=rtp_jsonl, limit=1, cache_dir=cache)) == 1
    with pytest.raises(TypeError, match="challenging_only"):
        load_real_toxicity_prompts(path=rtp_jsonl, challenging_only="yes")


@pytest.fixture
def offline(monkeypatch):
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_offline_without_files_is_a_clear_error(offline, tmp_path):
    with pytest.raises(DatasetUnavailableError, match="path="):
        load_civil_comments(cache_dir=str(tmp_path))
    with pytest.raises(DatasetUnavailableError, match="real-toxicity-prompts"):
        load_real_toxicity_prompts(cache_dir=str(tmp_path))


def test_truncate_prompt():
    assert truncate_prompt("a bb ccc dddd", 8) == "a bb ccc"
    assert truncate_prompt("a bb ccc dddd", 7) == "a bb"
    assert truncate_prompt("abcdefghij", 4) == "abcd"
    assert truncate_prompt("  short\ttext ", 100) == "short text"
