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
    study = Study(tiny_study_config(), out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False)
    study.build_data()  # as `probe-lens demo` does, before run()
    summary = study.run()
    return study, summary


def test_whole_grid_writes_every_output(finished_study):
    study, summary = finished_study
    out = study.out
    for name in ("study.json", "results.csv", "results.parquet", "summary.csv", "summary.md", "metrics.parquet",
                 "report.html", "probes/report.csv", "data/probe_fit/meta.json"):
        assert (out / name).exists(), name
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["cell"]) == sorted(CELLS)
    # (distinct-2/3 are NaN here: the tiny model writes random bytes with few spaces)
    for col in ("eval/toxicity_rate", "eval/expected_max_toxicity", "eval/perplexity_neutral", "eval/distinct_1"):
        assert results[col].notna().all(), col
    assert results["scorer"].str.contains("non-ascii-share").all()
    assert results["probe/auroc_heldout_avg"].notna().all()
    probe_cells = results["cell"].str.startswith("probe_")
    assert results.loc[probe_cells, "probe/auroc_trained_against"].notna().all()
    assert results.loc[~probe_cells, "probe/auroc_trained_against"].isna().all()
    assert results.loc[probe_cells, "drift/cosine_trained_against"].between(-1, 1).all()
    assert set(summary["cell"]) == set(CELLS)
    for cell in CELLS:
        cdir = out / "cells" / cell / "seed0"
        assert (cdir / "eval.json").exists() and (cdir / "train" / "metrics.jsonl").exists()
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert any(c.startswith("drift/cosine/") for c in metrics.columns)
    assert any(c.startswith("probe/auroc_heldout/") for c in metrics.columns)
    html = (out / "report.html").read_text()
    for section in ("fig-results-table", "fig-cosine-drift", "fig-auroc", "fig-toxicity", "fig-geometry"):
        assert f'id="{section}"' in html, section
    # training cells trained: their telemetry has more than the step-0 row
    sft = metrics[(metrics["cell"] == "probe_sft_1")]
    assert sft["step"].max() == study.config.probe_sft.max_steps
    # before training, every probe's re-fit on the base model is the probe itself (same estimator,
    # same rows): a drift cosine measures drift, not the difference between two estimators
    step0 = metrics[metrics["step"] == 0]
    cos_cols = [c for c in step0.columns if c.startswith("drift/cosine/")]
    assert any("massmean" in c for c in cos_cols) and any("ens_heldout" in c for c in cos_cols)
    cos0 = step0[cos_cols].to_numpy(dtype=float)
    assert np.nanmin(cos0) > 0.99, dict(zip(cos_cols, np.nanmin(cos0, axis=0)))
    # cells of one seed share the base model's step-0 telemetry (computed once, reused)
    shared = [c for c in step0.columns if c.startswith("eval/") or c.endswith(("/mean_diff_norm", "/resid_norm", "/pca_var_top1"))]
    assert len(shared) > 3
    assert (step0[shared].nunique(dropna=True) == 1).all(), step0[shared].nunique()


def test_total_time_covers_every_step(finished_study):
    study, _ = finished_study
    t = json.loads((study.out / "timings.json").read_text())
    disjoint = ("build_data_s", "fit_probes_s", "generate_train_s", "probe_scores_s", "train_s", "evaluate_s")
    assert all(k in t for k in disjoint), t
    assert t["total_s"] >= sum(t[k] for k in disjoint), t


def test_resume_skips_finished_cells(finished_study):
    study, _ = finished_study
    stamp = {f: f.stat().st_mtime_ns for f in study.out.glob("cells/*/seed0/eval.json")}
    again = Study(study.config, study.out, resume=True, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False)
    again.run()
    assert {f: f.stat().st_mtime_ns for f in study.out.glob("cells/*/seed0/eval.json")} == stamp


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
