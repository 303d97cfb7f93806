"""The dataset builder on the tiny model: masks, labels, balance, split, save/load, resume."""

import numpy as np
import pytest
import torch

from probe_lens.activations import pool
from probe_lens.data import Prompt
from probe_lens.data.builder import ActivationDataset, BuildConfig, build_dataset
from probe_lens.scorers import Scorer


class ByteScorer(Scorer):
    """A deterministic real scorer for random-byte text: share of non-ASCII characters."""

    name = "byte-share"
    version = "test"

    def __init__(self, fail_after: int | None = None):
        super().__init__()
        self.calls = 0
        self.fail_after = fail_after

    def _score(self, texts):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        return [sum(ord(c) > 127 for c in t) / max(1, len(t)) for t in texts]


PROMPTS = [
    Prompt(id=f"t{i:02d}", text=f"prompt number {i} says", tag="provocative" if i % 3 else "neutral", topic="t")
    for i in range(10)
]


def _cfg(**kw):
    base = dict(
        hooks=[0, 1],
        samples_per_prompt=2,
        max_new_tokens=4,
        chunk_prompts=3,
        batch_size=4,
        threshold=0.75,
        min_minority=0,
        max_rounds=1,
        seed=3,
    )
    base.update(kw)
    return BuildConfig(**base)


def test_masks_select_exactly_the_response_tokens(tiny):
    ds = build_dataset(tiny, PROMPTS[:4], ByteScorer(), _cfg(), progress=False)
    gen = ds.generation
    assert len(ds) == 8 and gen.tokens.shape[0] == 8
    for i in range(len(ds)):
        resp = gen.tokens[i][gen.response_mask[i].bool()]
        assert tiny.tokenizer.decode(resp.tolist(), skip_special_tokens=True) == ds.examples["response"][i]
        assert int(gen.response_mask[i].sum()) == ds.examples["n_response_tokens"][i]
    # pooled activations equal a hand pooling over the response mask of a fresh forward pass
    _, cache = tiny.run_with_cache(gen.tokens, attention_mask=gen.attention_mask)
    expect = pool(cache["blocks.1.hook_resid_post"], gen.response_mask)
    assert torch.allclose(ds.acts["blocks.1.hook_resid_post"], expect, atol=1e-5)


def test_labels_balance_and_prompt_level_split(tiny):
    ds = build_dataset(tiny, PROMPTS, ByteScorer(), _cfg(test_fraction=0.3), progress=False)
    ex = ds.examples
    assert (ex["label"] == (ex["score"] >= 0.75)).all()
    bal = ex[ex["balanced"]]
    assert bal["label"].sum() == (bal["label"] == 0).sum() == min(ex["label"].sum(), (ex["label"] == 0).sum())
    # no prompt has examples in both splits
    assert ex.groupby("prompt_id")["split"].nunique().max() == 1
    assert ds.X(1, "train").shape == (len(ds.y("train")), tiny.cfg.d_model)


def test_save_load_roundtrip_and_finished_build_is_reused(tiny, tmp_path):
    a = build_dataset(tiny, PROMPTS, ByteScorer(), _cfg(), out_dir=tmp_path, progress=False)
    b = ActivationDataset.load(tmp_path)
    assert torch.equal(a.acts["blocks.0.hook_resid_post"], b.acts["blocks.0.hook_resid_post"])
    assert a.examples.equals(b.examples)
    scorer = ByteScorer()
    c = build_dataset(tiny, PROMPTS, scorer, _cfg(), out_dir=tmp_path, progress=False)
    assert scorer.calls == 0  # loaded, not recomputed
    assert torch.equal(c.generation.tokens, a.generation.tokens)
    with pytest.raises(ValueError, match="different settings"):
        build_dataset(tiny, PROMPTS, ByteScorer(), _cfg(max_new_tokens=5), out_dir=tmp_path, progress=False)


def test_resume_after_interruption_equals_uninterrupted(tiny, tmp_path):
    full = build_dataset(tiny, PROMPTS, ByteScorer(), _cfg(), out_dir=tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(tiny, PROMPTS, ByteScorer(fail_after=2), _cfg(), out_dir=tmp_path / "cut", progress=False)
    assert len(list((tmp_path / "cut" / "chunks").glob("*.json"))) == 2
    assert not (tmp_path / "cut" / "meta.json").exists()
    scorer = ByteScorer()
    resumed = build_dataset(tiny, PROMPTS, scorer, _cfg(), out_dir=tmp_path / "cut", progress=False)
    assert scorer.calls == 2  # only the two missing chunks were computed
    assert resumed.examples.drop(columns=[]).equals(full.examples)
    for h in full.hooks:
        assert torch.equal(resumed.acts[h], full.acts[h])


def test_extra_rounds_until_budget_and_shortfall_reported(tiny):
    with pytest.warns(UserWarning, match="short of min_minority"):
        ds = build_dataset(tiny, PROMPTS[:3], ByteScorer(), _cfg(min_minority=1000, max_rounds=2), progress=False)
    assert set(ds.examples["round"]) == {0, 1}
    # round 1 re-samples the provocative prompts only
    assert set(ds.examples[ds.examples["round"] == 1]["tag"]) == {"provocative"}
    assert "min_minority=1000" in ds.meta["shortfall"]


def test_bad_input(tiny):
    with pytest.raises(ValueError, match="empty"):
        build_dataset(tiny, [], ByteScorer(), _cfg(), progress=False)
    with pytest.raises(TypeError, match="prompts\\[1\\]"):
        build_dataset(tiny, ["ok", 5], ByteScorer(), _cfg(), progress=False)
    with pytest.raises(ValueError, match="threshold"):
        BuildConfig(threshold=1.0)
    with pytest.raises(ValueError, match="threshold"):
        BuildConfig(threshold=0)
    with pytest.raises(ValueError, match="unknown hook"):
        build_dataset(tiny, ["ok"], ByteScorer(), _cfg(hooks=["blocks.0.hook_nope"]), progress=False)


def test_a_larger_budget_grows_a_finished_build_from_its_chunks(tiny, tmp_path):
    small = _cfg(min_minority=1000, max_rounds=1)
    with pytest.warns(UserWarning, match="short of min_minority"):
        build_dataset(tiny, PROMPTS, ByteScorer(), small, out_dir=tmp_path / "grown", progress=False)
    n_chunks_round0 = len(list((tmp_path / "grown" / "chunks").glob("r00_*.json")))
    scorer = ByteScorer()
    with pytest.warns(UserWarning, match="after 2 round"):
        grown = build_dataset(
            tiny, PROMPTS, scorer, _cfg(min_minority=1000, max_rounds=2), out_dir=tmp_path / "grown", progress=False
        )
    n_provocative = sum(p.tag == "provocative" for p in PROMPTS)
    assert scorer.calls == -(-n_provocative // 3)  # only round 1's chunks were sampled, round 0 was reused
    assert len(list((tmp_path / "grown" / "chunks").glob("r00_*.json"))) == n_chunks_round0
    assert set(grown.examples["round"]) == {0, 1} and grown.meta["config"]["max_rounds"] == 2
    with pytest.warns(UserWarning):
        fresh = build_dataset(
            tiny,
            PROMPTS,
            ByteScorer(),
            _cfg(min_minority=1000, max_rounds=2),
            out_dir=tmp_path / "fresh",
            progress=False,
        )
    assert grown.examples.equals(fresh.examples)
    for h in fresh.hooks:
        assert torch.equal(grown.acts[h], fresh.acts[h])
    # the grown build is now the finished one: loaded as is, and a different non-budget setting is refused
    scorer = ByteScorer()
    build_dataset(
        tiny, PROMPTS, scorer, _cfg(min_minority=1000, max_rounds=2), out_dir=tmp_path / "grown", progress=False
    )
    assert scorer.calls == 0
    with pytest.raises(ValueError, match="different settings"):
        build_dataset(
            tiny,
            PROMPTS,
            ByteScorer(),
            _cfg(min_minority=1000, max_rounds=2, seed=4),
            out_dir=tmp_path / "grown",
            progress=False,
        )


def test_drift_set_from_a_dataset_keeps_its_balanced_rows_and_prompt_split(tiny):
    from probe_lens.training import DriftSet

    ds = build_dataset(
        tiny, PROMPTS, ByteScorer(), _cfg(threshold=0.5), progress=False
    )  # seeded: both classes on both sides
    drift = DriftSet.from_dataset(ds)
    rows = ds.rows()
    assert len(drift) == len(rows) and np.array_equal(drift.labels, ds.y())
    assert np.array_equal(drift.is_eval, ds.examples["split"].to_numpy()[rows] == "test")
    assert torch.equal(drift.tokens, ds.generation.tokens[torch.as_tensor(rows)])
    assert torch.equal(drift.pool_mask, ds.generation.response_mask[torch.as_tensor(rows)])


class BadAfter(ByteScorer):
    """The byte scorer, returning ``bad(scores)`` from its ``good``-th call on (a buggy backend)."""

    def __init__(self, bad, good: int = 2, via_score: bool = True):
        super().__init__()
        self.bad, self.good, self.via_score = bad, good, via_score

    def score(self, texts):
        if not self.via_score:
            return super().score(texts)
        s = list(ByteScorer._score(self, texts))
        return self.bad(s) if self.calls > self.good else s

    def _score(self, texts):
        s = super()._score(texts)
        return self.bad(s) if (not self.via_score and self.calls > self.good) else s


@pytest.mark.parametrize(
    "bad, via_score, message",
    [
        (lambda s: s[:-1], True, r"returned 5 scores for 6 texts"),
        (lambda s: [float("nan")] + s[1:], True, r"returned NaN/inf for 1 of 6 texts"),
        (lambda s: [1.5] + s[1:], True, r"1 of 6 scores outside \[0, 1\] \(min .*, max 1\.5\)"),
        (lambda s: [-0.1] + s[1:], True, r"outside \[0, 1\]"),
        (lambda s: s[:-1], False, r"returned 5 scores for 6 texts \(one per text is needed\)\. The build"),
    ],
)
def test_a_bad_scorer_stops_the_build_and_keeps_finished_chunks(tiny, tmp_path, bad, via_score, message):
    from probe_lens.data.builder import ScorerOutputError

    full = build_dataset(tiny, PROMPTS, ByteScorer(), _cfg(), out_dir=tmp_path / "full", progress=False)
    scorer = BadAfter(bad, good=2, via_score=via_score)
    scorer.calls = 0
    with pytest.raises(
        ScorerOutputError,
        match=r"scorer 'byte-share' .*" + message + r".*stopped at chunk r00_c0002; the 2 finished chunk",
    ):
        build_dataset(tiny, PROMPTS, scorer, _cfg(), out_dir=tmp_path / "cut", progress=False)
    assert sorted(p.name for p in (tmp_path / "cut" / "chunks").glob("*.json")) == ["r00_c0000.json", "r00_c0001.json"]
    good = ByteScorer()
    resumed = build_dataset(tiny, PROMPTS, good, _cfg(), out_dir=tmp_path / "cut", progress=False)
    assert good.calls == 2  # the finished chunks were reused
    assert resumed.examples.equals(full.examples)


def test_corrupt_or_foreign_chunks_are_named_and_rebuilt(tiny, tmp_path):
    import json
    import shutil

    full = build_dataset(tiny, PROMPTS, ByteScorer(), _cfg(), out_dir=tmp_path / "full", progress=False)
    other = build_dataset(tiny, PROMPTS[1:], ByteScorer(), _cfg(), out_dir=tmp_path / "other", progress=False)
    assert len(other) > 0
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", cut)
    (cut / "meta.json").unlink()  # an interrupted build with all four chunks on disk...
    chunks = cut / "chunks"
    st = chunks / "r00_c0001.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])  # ...one truncated,
    for ext in ("json", "safetensors"):  # one copied from a build over other prompts,
        shutil.copy(tmp_path / "other" / "chunks" / f"r00_c0002.{ext}", chunks / f"r00_c0002.{ext}")
    payload = json.loads((tmp_path / "other" / "chunks" / "r00_c0000.json").read_text())
    del payload["stamp"], payload["tensors_sha256"]  # and one foreign chunk in the older, unstamped format
    (chunks / "r00_c0003.json").write_text(json.dumps(payload))
    shutil.copy(tmp_path / "other" / "chunks" / "r00_c0000.safetensors", chunks / "r00_c0003.safetensors")
    scorer = ByteScorer()
    with pytest.warns(RuntimeWarning) as record:
        resumed = build_dataset(tiny, PROMPTS, scorer, _cfg(), out_dir=cut, progress=False)
    msgs = [str(w.message) for w in record if "chunk" in str(w.message)]
    assert any("r00_c0001" in m and "checksum" in m for m in msgs), msgs
    assert any("r00_c0002" in m and "other settings (prompt_ids_sha)" in m for m in msgs), msgs
    assert any("r00_c0003" in m and "other prompts" in m for m in msgs), msgs
    assert scorer.calls == 3  # exactly the three bad chunks were rebuilt
    assert resumed.examples.equals(full.examples)
    for h in full.hooks:
        assert torch.equal(resumed.acts[h], full.acts[h])


def test_labelled_rows_are_read_teacher_forced_and_keep_their_labels(tiny, tmp_path):
    """dataset_from_labelled: one row per labelled pair of a given prompt, its label as its score, activations
    pooled over its response tokens (oracle: pool over a hand-tokenized pair), reused from out_dir."""
    from probe_lens.behaviours import LabelledRows
    from probe_lens.data.builder import dataset_from_labelled
    from probe_lens.models import tokenize_pairs

    pairs = [(p.text, f" answer {i}{'!' * (i % 3)}", i % 2) for i, p in enumerate(PROMPTS[:6])]
    pairs.append((PROMPTS[0].text, " a second answer", 1))
    rows = LabelledRows([*pairs, ("a prompt not asked for", " no", 0)], source="test")
    cfg = _cfg(threshold=0.5, balance=False, test_fraction=0.0)
    ds = dataset_from_labelled(tiny, PROMPTS, rows, cfg, out_dir=tmp_path / "l", progress=False)
    ex = ds.examples
    assert ex["response"].tolist() == [r for _, r, _ in pairs]
    assert ex["score"].tolist() == ex["label"].tolist() == [float(y) for _, _, y in pairs]
    assert ex["sample"].tolist() == [0, 0, 0, 0, 0, 0, 1] and (ex["round"] == 0).all()
    assert ds.meta["source"] == {"labelled": "test", "labelled_version": rows.version}
    assert ds.counts()["n_toxic"] == sum(y for _, _, y in pairs)  # no behaviour: toxicity's words
    gen = tokenize_pairs(tiny, [pairs[6][0]], [pairs[6][1]])
    from probe_lens.activations import collect

    want = collect(tiny, gen.tokens, gen.attention_mask, gen.response_mask, [ds.hooks[0]], progress=False)
    torch.testing.assert_close(ds.acts[ds.hooks[0]][6], want[ds.hooks[0]][0], rtol=1e-4, atol=1e-5)
    again = dataset_from_labelled(tiny, PROMPTS, rows, cfg, out_dir=tmp_path / "l", progress=False)
    assert again.examples.equals(ds.examples)
    other = LabelledRows(pairs[:-1], source="test")
    with pytest.raises(ValueError, match="other labelled rows"):
        dataset_from_labelled(tiny, PROMPTS, other, cfg, out_dir=tmp_path / "l", progress=False)
    with pytest.raises(ValueError, match="none of the 2 prompts has a labelled row"):
        dataset_from_labelled(tiny, ["x", "y"], rows, cfg, progress=False)


def test_the_behaviour_names_the_classes_in_meta(tiny):
    from probe_lens.data.builder import DEFAULT_CLASSES, class_record

    class Names:
        name, positive_label, negative_label = "rudeness", "rude", "polite"

    ds = build_dataset(tiny, PROMPTS[:4], ByteScorer(), _cfg(), progress=False, behaviour=Names())
    assert ds.meta["behaviour"] == {"name": "rudeness", "positive_label": "rude", "negative_label": "polite"}
    assert {"n_rude", "n_polite"} <= set(ds.counts()) and {"n_rude", "n_polite"} <= set(ds.meta["counts"])
    assert class_record(None) == DEFAULT_CLASSES and class_record(dict(vars(Names))) == ds.meta["behaviour"]
    with pytest.raises(TypeError, match=r"get_behaviour\('sentiment'\)"):
        class_record("sentiment")
    with pytest.raises(TypeError, match=r"lacks \['negative_label'\]"):
        class_record({"name": "x", "positive_label": "y"})
