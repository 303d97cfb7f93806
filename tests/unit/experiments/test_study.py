"""The whole study grid on the tiny model: every output, resume, and bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from probe_lens.experiments import CELLS, Study, StudyConfig, StudyFolderError, make_config
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    cfg = tiny_study_config(seeds=[0, 1])
    study = Study(cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False)
    study.build_data()  # as `probe-lens demo` does, before run()
    summary = study.run()
    return study, summary


def test_whole_grid_writes_every_output(finished_study):
    study, summary = finished_study
    out = study.out
    for name in (
        "study.json",
        "prompts.json",
        "results.csv",
        "results.parquet",
        "summary.csv",
        "summary.md",
        "headline.md",
        "contrasts.csv",
        "metrics.parquet",
        "report.html",
        "probes/seed0/report.csv",
        "probes/seed1/report.csv",
        "data/probe_pool/meta.json",
        "seeds/0/split.json",
        "seeds/1/noise_floor.json",
    ):
        assert (out / name).exists(), name
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["cell"]) == sorted(list(CELLS) * 2)
    # (distinct-2/3 are NaN here: the tiny model writes random bytes with few spaces)
    for col in (
        "eval/toxicity_rate",
        "eval/expected_max_toxicity",
        "eval/perplexity_neutral",
        "eval/distinct_1",
        "eval/response_length",
        "eval/eos_rate",
        "baseline/auroc_prompt_type",
    ):
        assert results[col].notna().all(), col
    assert results["scorer"].str.contains("non-ascii-share").all()
    assert set(summary["cell"]) == set(CELLS)
    html = (out / "report.html").read_text()
    for section in (
        "fig-headline",
        "fig-results-table",
        "fig-cosine-drift",
        "fig-auroc",
        "fig-toxicity",
        "fig-geometry",
    ):
        assert f'id="{section}"' in html, section
    metrics = pd.read_parquet(out / "metrics.parquet")
    sft = metrics[(metrics["cell"] == "probe_sft_1")]
    assert sft["step"].max() == study.config.probe_sft.max_steps
    # before training, every probe's re-fit on the base model is the probe itself (same estimator,
    # same rows): a drift cosine measures drift, not the difference between two estimators
    step0 = metrics[metrics["step"] == 0]
    cos_cols = [c for c in step0.columns if c.startswith("drift/cosine/")]
    assert any("massmean" in c for c in cos_cols) and any("ens_heldout" in c for c in cos_cols)
    assert np.nanmin(step0[cos_cols].to_numpy(dtype=float)) > 0.99
    # cells of one seed share the base model's step-0 telemetry (computed once, reused)
    for seed in (0, 1):
        s0 = step0[step0["seed"] == seed]
        shared = [
            c
            for c in s0.columns
            if c.startswith(("eval/", "probe/")) or c.endswith(("/mean_diff_norm", "/pca_var_top1"))
        ]
        assert len(shared) > 3
        assert (s0[shared].nunique(dropna=True) <= 1).all(), s0[shared].nunique()


def test_every_cell_tracks_every_probe_on_both_sets(finished_study):
    """The control: a probe trained against in one cell is measured the same way in every other cell."""
    study, _ = finished_study
    results = pd.read_csv(study.out / "results.csv")
    for probe in study.tracked_probes():
        for col in (f"probe/onpolicy_auroc/{probe}", f"probe/curated_auroc/{probe}"):
            assert results[col].between(0, 1).all(), (col, results[col].tolist())
            lo, hi = results[f"{col}/ci_low"], results[f"{col}/ci_high"]
            assert ((lo <= results[col] + 1e-12) & (results[col] <= hi + 1e-12)).all(), col
        cos = f"drift/cosine/{probe}" if not probe.startswith("ensemble") else f"drift/cosine/{probe}/m0"
        assert results[cos].between(-1, 1).all(), cos
    trained = results.set_index(["cell", "seed"])["trained_against"]
    assert trained[("probe_sft_1", 0)] == "logistic_L2" and trained[("base", 0)] == "none"
    assert trained[("probe_dpo_ens", 1)] == "ensemble2_L2" and trained[("classifier_sft", 1)] == "none"
    # the headline contrasts pair the trained-against probe with its controls
    con = pd.read_csv(study.out / "contrasts.csv")
    row = con[
        (con["a"] == "probe_sft_1")
        & (con["b"] == "classifier_sft")
        & (con["metric"] == "probe/curated_auroc/logistic_L2")
    ]
    assert len(row) == 1 and row["n_seeds"].item() == 2
    by = results.set_index(["cell", "seed"])["probe/curated_auroc/logistic_L2"]
    expect = np.mean([by[("probe_sft_1", s)] - by[("classifier_sft", s)] for s in (0, 1)])
    assert row["mean_diff"].item() == pytest.approx(expect)
    assert "s0:" in row["within_seed"].item() and "s1:" in row["within_seed"].item()


def test_seeds_redraw_probe_data_so_base_intervals_are_not_zero(finished_study):
    study, summary = finished_study
    s0, s1 = (json.loads((study.out / "seeds" / str(s) / "split.json").read_text()) for s in (0, 1))
    assert set(s0["fit_prompts"]) != set(s1["fit_prompts"])
    base = summary[summary["cell"] == "base"].iloc[0]
    for probe in ("logistic_L2", "massmean_L2"):
        m = f"probe/curated_auroc/{probe}"
        assert base[f"{m}_ci_high"] - base[f"{m}_ci_low"] > 0, m
    # the probes differ between seeds (they were fit on different rows)
    from probe_lens.probes import load_probe

    d0, d1 = (load_probe(study.out / "probes" / f"seed{s}" / "logistic_L2").direction_ for s in (0, 1))
    assert not np.allclose(d0, d1)


def test_training_cells_record_the_toxic_share_of_their_training_samples(finished_study):
    study, _ = finished_study
    results = pd.read_csv(study.out / "results.csv")
    trains = results["cell"].map(lambda c: study.config.cell(c).trains)
    assert results.loc[~trains, "train_positive_share"].isna().all()
    for seed in (0, 1):
        _, scores = study.train_data(seed)
        want = float(np.mean(scores["classifier"] >= study.config.eval.threshold))  # by hand, from the saved scores
        got = results.loc[trains & (results["seed"] == seed), "train_positive_share"]
        np.testing.assert_allclose(got.to_numpy(), want)
    headline = (study.out / "headline.md").read_text()
    assert "Training samples:" in headline and "0 of them neutral (train_data.neutral_share)" in headline


def test_geometry_uses_one_reference_direction_in_every_cell(finished_study):
    study, _ = finished_study
    for seed in (0, 1):
        befores = [json.loads(f.read_text())["before"] for f in study.out.glob(f"cells/*/seed{seed}/geometry.json")]
        assert len(befores) == len(CELLS)
        assert all(b == befores[0] for b in befores)  # same rows, same base activations, same direction
        ref = study._base.reference[seed]["blocks.2.hook_resid_post"]
        split = study.seed_split(seed)
        # only held-out (on-policy) rows are drawn
        assert len(befores[0]["blocks.2.hook_resid_post"]["label"]) == len(split.onpolicy_rows)
        assert np.linalg.norm(ref) == pytest.approx(1.0)
    metrics = pd.read_parquet(study.out / "metrics.parquet")
    col = "geometry/blocks.2.hook_resid_post/mean_diff_cos_orig"
    step0 = metrics[(metrics["step"] == 0) & (metrics["seed"] == 0)]
    assert step0[col].nunique() == 1  # the reference direction is the same in every cell


def test_prompt_plan_and_seed_splits_are_stratified_disjoint_and_deterministic(finished_study):
    study, _ = finished_study
    # the checks hold for every seed's plan (shared here: the tiny config fixes eval.prompts_per_seed=false;
    # tests/unit/experiments/test_replicates.py covers per-seed plans)
    for seed in (0, 1):
        plan = study.plan_for(seed)
        parts = [plan.eval_provocative, plan.eval_neutral, plan.pool, plan.train_pool]
        ids = [p.id for part in parts for p in part]
        assert len(ids) == len(set(ids))
        assert {p.tag for p in plan.pool} == {"provocative"}  # one prompt distribution for both classes
        sp = json.loads((study.out / "seeds" / str(seed) / "split.json").read_text())
        fit, onp, train = set(sp["fit_prompts"]), set(sp["onpolicy_prompts"]), set(sp["train_prompts"])
        assert not (fit & onp) and not (fit & train) and not (onp & train)
        assert fit | onp == {p.id for p in plan.pool}
        topics = {}
        for p in plan.pool:
            topics.setdefault(p.topic, []).append(p.id)
        for topic, members in topics.items():
            if len(members) >= 2:  # every topic with enough prompts reaches both parts
                assert set(members) & fit and set(members) & onp, topic
    again = Study(
        study.config,
        study.out,
        resume=True,
        model=tiny_model(n_layers=4),
        scorer=non_ascii_scorer(),
        progress=False,
        export_png=False,
    )
    assert again.prompt_plan.as_ids() == study.prompt_plan.as_ids()
    assert again.plan_for(1).as_ids() == study.plan_for(1).as_ids()
    assert again.seed_split(1).info["fit_prompts"] == study.seed_split(1).info["fit_prompts"]


def test_cross_validated_C_runs_a_study(tmp_path):
    # 4 samples per prompt at threshold 0.5: 5-fold CV needs >= 5 probe-fit rows of each class
    data = {"samples_per_prompt": 4, "threshold": 0.5}
    cfg = tiny_study_config(cells=["base", "probe_sft_1"], probes={"C": "cv"}, data=data)
    assert cfg.probes.C == "cv"
    study = Study(
        cfg, tmp_path, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False
    )
    study.run()
    results = pd.read_csv(tmp_path / "results.csv")
    assert results["probe/curated_auroc/logistic_L2"].notna().all()
    assert study.fit_probes(0)["logistic_L2"].C == "cv"


def test_total_time_covers_every_step(finished_study):
    study, _ = finished_study
    t = json.loads((study.out / "timings.json").read_text())
    disjoint = (
        "build_data_s",
        "fit_probes_s",
        "noise_floor_s",
        "generate_train_s",
        "probe_scores_s",
        "train_s",
        "evaluate_s",
    )
    assert all(k in t for k in disjoint), t
    assert t["total_s"] >= sum(t[k] for k in disjoint), t


def test_resume_skips_finished_cells(finished_study):
    study, _ = finished_study
    stamp = {f: f.stat().st_mtime_ns for f in study.out.glob("cells/*/seed*/eval.json")}
    again = Study(
        study.config,
        study.out,
        resume=True,
        model=tiny_model(n_layers=4),
        scorer=non_ascii_scorer(),
        progress=False,
        export_png=False,
    )
    again.run()
    assert {f: f.stat().st_mtime_ns for f in study.out.glob("cells/*/seed*/eval.json")} == stamp


def test_a_folder_with_another_study_is_refused(finished_study):
    study, _ = finished_study
    other = tiny_study_config(probe_sft={"max_steps": 3})
    with pytest.raises(StudyFolderError, match="different study"):
        Study(other, study.out, resume=True, progress=False)
    with pytest.raises(StudyFolderError, match="--resume"):
        Study(study.config, study.out, resume=False, progress=False)


def test_bad_config_input(tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("fast")
    with pytest.raises(ValueError, match="unknown cell"):
        tiny_study_config(cells=["base", "probe_ppo"])
    with pytest.raises(ValueError, match="objective 'probe_sft' takes signal"):
        tiny_study_config(cells=["base", {"name": "x", "objective": "probe_sft", "signal": "classifier"}])
    with pytest.raises(ValueError, match="probes.C must be a number > 0 or 'cv'"):
        tiny_study_config(probes={"C": "abc"})
    with pytest.raises(ValueError, match="probe_sft.pooling"):
        tiny_study_config(probe_sft={"pooling": "last"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['max_step'\] in probe_sft"):
        tiny_study_config(probe_sft={"max_step": 3})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rate'\] in study config"):
        StudyConfig.from_dict({"learning_rate": 1})
    bad = tmp_path / "study.yaml"
    bad.write_text("probes:\n  layer: 6\n  heldout: [1]\n")
    with pytest.raises(ValueError, match="heldout"):
        make_config("quick", config_file=str(bad))


def test_config_round_trips_through_yaml(tmp_path):
    import yaml

    cfg = make_config("quick", overrides=["probe_sft.max_steps=7", "seeds=[3, 4]"])
    assert cfg.probe_sft.max_steps == 7 and cfg.seeds == [3, 4]
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(cfg.to_dict()))
    again = make_config(None, config_file=str(f))
    assert again.to_dict() == cfg.to_dict()


def test_cli_errors_are_clear(tmp_path, capsys):
    from probe_lens.cli import main

    assert main(["reproduce", "--preset", "quick", "--set", "probe_sft.nope=1", "--out", str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "--bogus"])


def test_a_study_stops_before_training_when_the_disk_is_short(tmp_path, monkeypatch):
    import shutil

    from probe_lens._disk import DiskSpaceError

    study = Study(
        tiny_study_config(cells=["base", "probe_sft_1"]),
        tmp_path,
        model=tiny_model(n_layers=4),
        scorer=non_ascii_scorer(),
        progress=False,
        export_png=False,
    )
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1024))
    with pytest.raises(DiskSpaceError, match="checkpoints"):
        study.run()
    assert not (tmp_path / "data").exists()  # nothing was built


def test_a_study_file_can_set_checkpoint_every(tiny):
    """The runner fills in each cell's out_dir, so a study file may ask for intermediate checkpoints."""
    from probe_lens.training import ProbeSFTConfig, train_probe_sft

    cfg = make_config("quick", overrides=["probe_sft.checkpoint_every=2", "dpo.checkpoint_every=1"])
    assert cfg.probe_sft.checkpoint_every == 2 and cfg.dpo.checkpoint_every == 1
    # training without a folder to write them to is still refused, when it starts
    from probe_lens.models import generate

    gen = generate(tiny, ["hello there"], max_new_tokens=3, seed=0, progress=False)
    with pytest.raises(ValueError, match="checkpoint_every > 0 needs out_dir"):
        train_probe_sft(
            tiny, gen, None, ProbeSFTConfig(max_steps=1, probe_weight=0.0, checkpoint_every=1, progress=False)
        )


def test_contrast_specs_pair_each_probe_cell_with_its_controls():
    from probe_lens.experiments.headline import contrast_specs

    cfg = tiny_study_config(seeds=[0, 1])
    names = {"single": ["logistic_L2"], "ensemble": ["ensemble2_L2"], "heldout": ["massmean_L2"], "heldout_members": []}
    specs = set(contrast_specs(cfg, names))
    assert ("probe/curated_auroc/logistic_L2", "probe_sft_1", "classifier_sft") in specs
    assert ("probe/curated_auroc/logistic_L2", "probe_sft_1", "base") in specs
    assert ("probe/curated_auroc/ensemble2_L2", "probe_dpo_ens", "classifier_dpo") in specs
    assert ("probe/curated_auroc/logistic_L2", "probe_filtered_sft", "classifier_sft") in specs
    assert ("eval/toxicity_rate", "classifier_dpo", "base") in specs
    # the field's monitor reading of the trained-against and held-out probes, against the same control
    assert ("probe/curated_recall_at_fpr01/logistic_L2", "probe_sft_1", "classifier_sft") in specs
    assert ("probe/curated_recall_at_fpr01/massmean_L2", "probe_dpo_1", "classifier_dpo") in specs
    # a drift cosine is 1 by construction in base: only trained controls
    assert ("drift/cosine/logistic_L2", "probe_sft_1", "classifier_sft") in specs
    assert not any(m.startswith("drift/cosine/") and b == "base" for m, _, b in specs)
    # no probe cell is its own control, and classifier cells are compared with base only
    assert all(a != b for _, a, b in specs)
    assert {b for _, a, b in specs if a.startswith("classifier_")} == {"base"}
