"""Seeds are independent replicates: each draws its own evaluation prompts, probe pool, continuations of each
pool prompt, probe-fit split and training prompts (provocative only by default); probes fit on every drawn
row with class weights (or the old balanced rows); the ``contrast`` preset and its dry-run budget."""

from __future__ import annotations

import json

import numpy as np
import pytest

from probe_lens.data.reference import ReferenceConfig, build_reference
from probe_lens.experiments import Study
from probe_lens.experiments.prompt_plan import make_prompt_plan, pool_union, train_prompts
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config

R, K = 4, 2
"""Continuations per prompt in the tiny reference set, and read per prompt by each seed."""


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "tiny.jsonl.gz"
    # every pool prompt either seed draws, in both prompt modes (a reference must cover the study's pool)
    cfgs = [tiny_study_config(seeds=[0, 1], eval={"prompts_per_seed": m}) for m in (True, False)]
    pool = list({p.id: p for cfg in cfgs for p in pool_union(cfg)}.values())
    cfg = ReferenceConfig(samples_per_prompt=R, max_new_tokens=6, batch_size=64, chunk_prompts=256)
    build_reference(tiny_model(n_layers=4), pool, non_ascii_scorer(), cfg, out=path, progress=False)
    return path


def _study(out, reference, **overrides) -> Study:
    overrides["eval"] = {"prompts_per_seed": True, **overrides.get("eval", {})}  # real studies' default
    cfg = tiny_study_config(seeds=[0, 1], data_source=str(reference), **overrides)
    return Study(
        cfg, out, resume=True, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False
    )


@pytest.fixture(scope="module")
def two_seeds(tiny_reference, tmp_path_factory):
    study = _study(tmp_path_factory.mktemp("study"), tiny_reference)
    return study, {s: study.seed_split(s) for s in (0, 1)}


def test_two_seeds_draw_their_own_prompts_and_continuations(two_seeds):
    study, splits = two_seeds
    s0, s1 = (json.loads(study.folder.split_json(s).read_text()) for s in (0, 1))
    # evaluation prompts, training prompts and the pool's partition all differ between the seeds
    assert set(s0["eval_prompts"]) != set(s1["eval_prompts"])
    assert set(s0["train_prompts"]) != set(s1["train_prompts"])
    assert set(s0["fit_prompts"]) != set(s1["fit_prompts"])
    # the neutral perplexity texts stay fixed
    assert s0["fluency_prompts"] == s1["fluency_prompts"]
    # every seed reads K of the R continuations of each of its pool prompts, and two seeds read different ones
    shared = sorted(set(s0["continuations"]) & set(s1["continuations"]))
    assert len(shared) >= 3  # the seeds' pools of 60 overlap by chance only
    assert all(len(v) == K and len(set(v)) == K and set(v) <= set(range(R)) for v in s0["continuations"].values())
    assert any(s0["continuations"][p] != s1["continuations"][p] for p in shared)
    assert any(max(v) >= K for v in s0["continuations"].values())  # not samples 0..K-1 as before
    # the pool dataset holds all R continuations of every seed's pool prompts, built once
    ds = study.build_data()
    assert set(ds.examples["prompt_id"]) == {p.id for p in pool_union(study.config)}
    assert (ds.examples.groupby("prompt_id").size() == R).all()
    # each seed's prompts of every role are disjoint, and its evaluation prompts are none of its pool's
    for sp in (s0, s1):
        roles = [set(sp[k]) for k in ("eval_prompts", "fit_prompts", "onpolicy_prompts", "train_prompts")]
        assert sum(map(len, roles)) == len(set().union(*roles))
    # the rows read are the drawn continuations
    samples = ds.examples["sample"].to_numpy()
    pid = ds.examples["prompt_id"].to_numpy()
    got = {(pid[i], int(samples[i])) for i in splits[0].onpolicy_rows}
    want = {(p, i) for p in s0["onpolicy_prompts"] for i in s0["continuations"][p]}
    assert got == want
    # prompts.json records every seed's plan
    record = json.loads(study.folder.prompts_json.read_text())
    assert record["prompts_per_seed"] and set(record["seeds"]) == {"0", "1"}


def test_training_prompts_are_provocative_by_default(two_seeds):
    study, splits = two_seeds
    for split in splits.values():
        assert {p.tag for p in split.train_prompts} == {"provocative"}
        assert len(split.train_prompts) == study.config.train_data.n_prompts
    # neutral_share: null restores the train split's proportion; a number sets it
    plan = make_prompt_plan(tiny_study_config(train_data={"neutral_share": None}), 0)
    pool = plan.train_pool
    mixed = train_prompts(pool, 40, 0, "topic", None)
    share = sum(p.tag == "neutral" for p in pool) / len(pool)
    assert sum(p.tag == "neutral" for p in mixed) == pytest.approx(40 * share, abs=1)
    half = train_prompts(pool, 40, 0, "topic", 0.5)
    assert sum(p.tag == "neutral" for p in half) == 20
    with pytest.raises(ValueError, match="neutral_share must be a number in"):
        tiny_study_config(train_data={"neutral_share": 1.5})


def test_resume_reads_the_same_draws(two_seeds):
    study, splits = two_seeds
    again = _study(study.out, study.config.data_source)
    for s in (0, 1):
        assert again.seed_split(s).info == splits[s].info
        np.testing.assert_array_equal(again.seed_split(s).fit_rows, splits[s].fit_rows)


def test_fixed_prompts_mode_shares_the_prompts_but_not_the_continuations(tiny_reference, tmp_path):
    study = _study(tmp_path, tiny_reference, eval={"prompts_per_seed": False})
    s0, s1 = study.seed_split(0).info, study.seed_split(1).info
    assert s0["eval_prompts"] == s1["eval_prompts"]
    assert set(s0["fit_prompts"]) | set(s0["onpolicy_prompts"]) == set(s1["fit_prompts"]) | set(s1["onpolicy_prompts"])
    differ = [p for p in s0["continuations"] if s0["continuations"][p] != s1["continuations"][p]]
    assert len(differ) > len(s0["continuations"]) // 2  # a 2-of-4 draw repeats with probability 1/6


def test_weighted_fits_every_row_and_balanced_reproduces_the_old_rows(two_seeds, tiny_reference, tmp_path):
    study, splits = two_seeds
    ds = study.build_data()
    labels = ds.examples["label"].to_numpy()
    pid = ds.examples["prompt_id"].to_numpy()
    info = splits[0].info
    drawn = np.sort(np.flatnonzero([(p in set(info["fit_prompts"])) for p in pid]))
    drawn = np.array([i for i in drawn if int(ds.examples["sample"].iloc[i]) in info["continuations"][pid[i]]])
    # weighted (default): every drawn continuation of the probe-fit prompts, imbalanced classes kept
    np.testing.assert_array_equal(splits[0].fit_rows, drawn)
    assert info["fit_rows_mode"] == "weighted"
    probes = study.fit_probes(0)
    assert probes["logistic_L2"].class_weight == "balanced" and probes["logistic_L2"].n_fit_ == len(drawn)
    # balanced: the old rows, the majority class downsampled with the seed (the code before this change, inline)
    old = _study(tmp_path, tiny_reference, probes={"fit_rows": "balanced"}).seed_split(0)
    rng = np.random.default_rng(0)
    pos, neg = drawn[labels[drawn] == 1], drawn[labels[drawn] == 0]
    n = min(len(pos), len(neg))
    want = np.sort(np.concatenate([rng.permutation(pos)[:n], rng.permutation(neg)[:n]]))
    np.testing.assert_array_equal(old.fit_rows, want)
    assert old.info["fit_rows_mode"] == "balanced" and labels[old.fit_rows].mean() == 0.5
    with pytest.raises(ValueError, match="probes.fit_rows must be one of"):
        tiny_study_config(probes={"fit_rows": "all"})


def test_contrast_preset_resolves_and_its_dry_run_states_the_budget(capsys):
    from probe_lens.cli import main
    from probe_lens.experiments.plan import estimate_plan
    from probe_lens.experiments.presets import make_config

    cfg = make_config("contrast")
    assert len(cfg.seeds) >= 10
    assert [c.name for c in cfg.cell_specs] == [
        "base",
        "probe_sft_1",
        "classifier_sft",
        "probe_dpo_1",
        "classifier_dpo",
    ]
    assert cfg.eval.prompts_per_seed and cfg.train_data.neutral_share == 0.0 and cfg.probes.fit_rows == "weighted"
    plan = estimate_plan(cfg)
    assert 60 * 60 <= plan.wall_s <= 2 * 3600  # ~87 min at the rates measured on quick and contrast (AMD EPYC)
    assert main(["reproduce", "--preset", "contrast", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "estimated wall time: ~" in out and "within the contrast preset's budget of 2.0 h" in out
    assert main(["reproduce", "--preset", "contrast", "--dry-run", "--seeds", "40"]) == 0
    assert "WARNING: over the contrast preset's budget" in capsys.readouterr().out
