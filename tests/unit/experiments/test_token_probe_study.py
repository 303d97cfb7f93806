"""Token probes (max-pooled, attention) tracked in a study: ``probes.token_probes`` adds ``maxpool_L<layer>`` and
``attention_L<layer>`` to every cell, fit on the base model's response-token activations of the probe-fit rows,
scored on every set at every telemetry step, and reported like the other probes (issue 27's required test: a tiny
study with ``probe_rloo_1`` and the new probe families runs and reports them in every cell); a cell trained against
the max-pooled probe (``probe_sft_max``) records it as trained against and the mean-pooled probe as held out."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from probe_lens.activations import collect_tokens
from probe_lens.experiments import Study
from probe_lens.experiments.probe_suite import ProbeSuite
from probe_lens.probes import AttentionProbe, MaxPooledLogisticProbe, load_probe
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config
from probe_lens.training import read_metrics
from probe_lens.training.metric_keys import output_split_key

CELLS_RUN = ["base", "probe_rloo_1", "probe_sft_max"]
SETTINGS = {"rloo": {"max_steps": 2, "batch_size": 2, "samples_per_prompt": 2, "max_new_tokens": 4, "lr": 1e-3}}
TOKEN = ["maxpool_L2", "attention_L2"]
SETS = ("onpolicy", "curated", "curated_hard")


def _study(out, **kw):
    # no fresh re-fit (token probes get none; it would only cost time here)
    cfg = tiny_study_config(cells=CELLS_RUN, objectives=SETTINGS, telemetry_every=2, eval={"fresh_refit": False})
    return Study(
        cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False, **kw
    )


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenprobes") / "study"
    _study(out).run()
    return out


def test_token_probes_config_names_and_clear_errors():
    cfg = tiny_study_config()
    assert cfg.probes.token_probes == ["maxpool", "attention"]  # on by default
    suite = ProbeSuite(cfg.probes, "mean", "percentile")
    assert suite.names()["token"] == TOKEN and suite.tracked()[-2:] == TOKEN
    assert not set(TOKEN) & set(suite.names()["heldout"])  # outside the held-out average
    off = tiny_study_config(probes={"token_probes": []})
    assert ProbeSuite(off.probes, "mean", "percentile").names()["token"] == []
    assert not any("maxpool" in n for n in ProbeSuite(off.probes, "mean", "percentile").tracked())
    with pytest.raises(
        ValueError, match=r"probes.token_probes must list distinct families of \['maxpool', 'attention'\]"
    ):
        tiny_study_config(probes={"token_probes": ["maxpool", "meanpool"]})
    with pytest.raises(ValueError, match="repeated"):
        tiny_study_config(probes={"token_probes": ["maxpool", "maxpool"]})
    with pytest.raises(ValueError, match=r"must be a list .*\(\[\] for none\)"):
        tiny_study_config(probes={"token_probes": "maxpool"})


def test_every_cell_reports_the_token_probes_on_every_set(study):
    results = pd.read_csv(study / "results.csv")
    assert sorted(results["cell"]) == sorted(CELLS_RUN)
    summary = pd.read_csv(study / "summary.csv")
    for name in TOKEN:
        for which in SETS:
            col = f"probe/{which}_auroc/{name}"
            assert results[col].between(0, 1).all(), col  # every cell, finite
            assert f"{col}_mean" in summary.columns
        assert results[f"drift/cosine/{name}"].notna().all()
        assert results[f"drift/cosine_floor/{name}"].notna().all()  # the noise floor covers them
        assert results[f"outputs/mean_trained/{name}"].notna().all()  # behaviour vs representation
    base = results[results["cell"] == "base"].iloc[0]
    for name in TOKEN:  # the base cell reads its own weights: no drift, no representation change
        assert base[f"drift/cosine/{name}"] == pytest.approx(1.0, abs=1e-6)
        assert base[f"outputs/mean_representation/{name}"] == 0.0
    report = pd.read_csv(study / "probes" / "seed0" / "report.csv").set_index("probe")
    assert report.loc[TOKEN, "role"].tolist() == ["held out (token)"] * 2
    assert report.loc[TOKEN, "type"].tolist() == ["MaxPooledLogisticProbe", "AttentionProbe"]
    assert isinstance(load_probe(study / "probes" / "seed0" / "maxpool_L2"), MaxPooledLogisticProbe)
    assert isinstance(load_probe(study / "probes" / "seed0" / "attention_L2"), AttentionProbe)


def test_the_trained_cell_logs_them_at_every_telemetry_step(study):
    m = read_metrics(study / "cells" / "probe_rloo_1" / "seed0" / "train")
    tele = m[m["probe/onpolicy_auroc/logistic_L2"].notna()]
    assert tele["step"].tolist() == [0, 2]
    for name in TOKEN:
        for which in SETS:
            assert tele[f"probe/{which}_auroc/{name}"].notna().all()
        assert tele[f"drift/cosine/{name}"].notna().all()
    info = json.loads((study / "cells" / "probe_rloo_1" / "seed0" / "eval.json").read_text())["info"]
    assert info["trained_against"] == ["logistic_L2"]  # token probes are held out here


def _token_scores(model, ds, name, probe):
    """Oracle: the saved probe on token activations collected here, at its hook, on the set's eval rows."""
    rows = np.flatnonzero(ds.is_eval)
    i = torch.as_tensor(rows)
    acts, _ = collect_tokens(
        model, ds.tokens[i], ds.attention_mask[i], ds.pool_mask[i], [probe.metadata.hook], progress=False
    )
    return probe.predict_proba(acts[probe.metadata.hook].numpy())[:, 1], ds.labels[rows]


def test_base_cell_numbers_equal_the_saved_probes_on_independent_token_activations(study):
    reader = _study(study, resume=True)
    model = tiny_model(n_layers=4)  # the base weights, loaded afresh
    ev = json.loads((study / "cells" / "base" / "seed0" / "eval.json").read_text())
    saved = json.loads((study / "cells" / "base" / "seed0" / "probe_scores.json").read_text())
    sets = {"onpolicy": reader.drift_set(0), **reader.eval_sets()}
    for name in TOKEN:
        probe = load_probe(study / "probes" / "seed0" / name)
        for which, ds in sets.items():
            s, y = _token_scores(model, ds, name, probe)
            np.testing.assert_allclose(saved[which][name], s, rtol=1e-5, atol=1e-6)
            assert ev[f"probe/{which}_auroc/{name}"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)


def test_pool_token_activations_are_cached_and_reused_on_resume(study, monkeypatch):
    import probe_lens.activations as A

    path = study / "data" / "probe_pool_tokens.safetensors"
    assert path.exists()
    reader = _study(study, resume=True)
    ds = reader.build_data()

    def refuse(*a, **k):
        raise AssertionError("the pool's token activations were collected again")

    monkeypatch.setattr(A, "collect_tokens", refuse)
    tokens = reader.pool_tokens()
    lengths = ds.generation.response_mask.sum(dim=1)
    assert tokens.shape[:2] == (len(ds), int(lengths.max())) and tokens.dtype == torch.float32
    real = ~torch.isnan(tokens).all(dim=2)
    assert torch.equal(real.sum(dim=1), lengths)  # each row holds exactly its response tokens


def test_a_cell_trained_against_the_max_pooled_probe(study):
    cell = study / "cells" / "probe_sft_max" / "seed0"
    info = json.loads((cell / "eval.json").read_text())["info"]
    assert (info["objective"], info["signal"], info["trained_against"]) == ("probe_sft", "maxpool", ["maxpool_L2"])
    run = json.loads((cell / "train" / "run_info.json").read_text())
    assert run["probes"] == {"maxpool_L2": "blocks.2.hook_resid_post"}  # the loss's probe: the token probe alone
    results = pd.read_csv(study / "results.csv").set_index("cell")
    row = results.loc["probe_sft_max"]
    assert row["trained_against"] == "maxpool_L2"
    assert row["probe/curated_auroc_trained_against"] == row["probe/curated_auroc/maxpool_L2"]
    assert np.isfinite(row["probe/curated_auroc/logistic_L2"])  # the mean-pooled probe: held out, still measured
    m = read_metrics(cell / "train")
    tele = m[m["probe/curated_auroc/logistic_L2"].notna()]  # the telemetry rows (not loss-only ones)
    assert len(tele) >= 2 and tele["drift/cosine/maxpool_L2"].notna().all()
    con = pd.read_csv(study / "contrasts.csv")
    pairs = set(zip(con["a"], con["b"], con["metric"]))
    assert ("probe_sft_max", "base", "probe/curated_auroc/maxpool_L2") in pairs
    assert ("probe_sft_max", "base", str(output_split_key("mean", "representation", "maxpool_L2"))) in pairs


def test_training_samples_are_scored_by_the_token_signal_on_response_tokens(study):
    """The seed's training samples carry the ``maxpool`` signal's scores (what probe-DPO/filtered SFT rank by):
    the saved probe's own ``predict_proba`` on token activations collected here from the base model."""
    from probe_lens.experiments.study_data import load_train_data

    gen, scores = load_train_data(study / "seeds" / "0" / "train_data")
    assert set(scores) >= {"classifier", "probe", "ensemble", "maxpool"} and "attention" not in scores
    probe = load_probe(study / "probes" / "seed0" / "maxpool_L2")
    model = tiny_model(n_layers=4)
    acts, _ = collect_tokens(
        model, gen.tokens, gen.attention_mask, gen.response_mask, [probe.metadata.hook], progress=False
    )
    np.testing.assert_allclose(
        scores["maxpool"], probe.predict_proba(acts[probe.metadata.hook].numpy())[:, 1], atol=1e-5
    )


def test_a_token_signal_needs_its_family():
    with pytest.raises(
        ValueError, match=r"cell\(s\) \{'probe_sft_max': 'maxpool'\} train against token probe families"
    ):
        tiny_study_config(cells=["base", "probe_sft_max"], probes={"token_probes": ["attention"]})
    with pytest.raises(ValueError, match="takes signal probe or ensemble or maxpool or attention"):
        tiny_study_config(cells=[{"name": "x", "objective": "probe_sft", "signal": "classifier"}])


def test_every_probe_cell_is_contrasted_on_the_pooling_families_it_does_not_train_against(study):
    con = pd.read_csv(study / "contrasts.csv")
    pairs = set(zip(con["a"], con["b"], con["metric"]))
    # trained against the mean-pooled probe: the max and attention probes held out
    for name in TOKEN:
        assert ("probe_rloo_1", "base", f"probe/curated_auroc/{name}") in pairs
    # trained against the max-pooled probe: the mean-pooled and attention probes held out
    assert ("probe_sft_max", "base", "probe/curated_auroc/logistic_L2") in pairs
    assert ("probe_sft_max", "base", "probe/curated_auroc/attention_L2") in pairs
    assert not con["primary"].loc[con["metric"].str.endswith("attention_L2")].any()  # secondary: Holm as one family


def test_obfuscation_presets_resolve_and_keep_to_the_budget(capsys):
    from probe_lens.cli import main
    from probe_lens.experiments.headline import contrast_specs
    from probe_lens.experiments.plan import estimate_plan
    from probe_lens.experiments.presets import PRESET_BUDGET_S, make_config

    cfg = make_config("obfuscation")
    cells = [c.name for c in cfg.cell_specs]
    assert cells == ["base", "probe_sft_1", "classifier_sft", "probe_rloo_1", "classifier_rloo", "probe_sft_max"]
    assert cfg.probes.token_probes == ["maxpool", "attention"] and len(cfg.seeds) == 3
    assert {(c["a"], c["b"]) for c in cfg.primary_contrasts} == {
        ("probe_sft_1", "classifier_sft"),
        ("probe_rloo_1", "classifier_rloo"),
    }
    names = ProbeSuite(cfg.probes, "mean", "percentile").names()
    specs = set(contrast_specs(cfg, names))
    behaviour = "eval/toxicity_rate"
    for cell, control in (("probe_sft_1", "classifier_sft"), ("probe_rloo_1", "classifier_rloo")):
        for metric in ("probe/curated_auroc/logistic_L6", "probe/curated_auroc/maxpool_L6", behaviour):
            assert (metric, cell, control) in specs  # gradient-through vs reward-only: each minus its control
    assert ("probe/curated_auroc/maxpool_L6", "probe_sft_max", "classifier_sft") in specs
    assert ("probe/curated_auroc/logistic_L6", "probe_sft_max", "classifier_sft") in specs
    plan = estimate_plan(cfg)
    assert plan.flops["token_probes"] > 0 and plan.wall_s <= PRESET_BUDGET_S["obfuscation"]
    assert main(["reproduce", "--preset", "obfuscation", "--dry-run"]) == 0
    assert "within the obfuscation preset's budget of 2.0 h" in capsys.readouterr().out
    paper = make_config("paper_obfuscation")
    assert {"probe_rloo_1", "probe_dpo_1", "probe_sft_max", "probe_rloo_max", "probe_sft_attn"} <= {
        c.name for c in paper.cell_specs
    }


def test_a_cell_added_on_resume_gets_its_token_signal_scored(study):
    """Growing the study by a cell trained against the attention probe scores the saved training samples by it
    (the samples and the other signals' scores kept). Last in this file: it grows the shared study."""
    from probe_lens.experiments.study_data import load_train_data

    folder = study / "seeds" / "0" / "train_data"
    gen0, before = load_train_data(folder)
    cfg = tiny_study_config(
        cells=[*CELLS_RUN, "probe_dpo_attn"], objectives=SETTINGS, telemetry_every=2, eval={"fresh_refit": False}
    )
    grown = Study(cfg, study, resume=True, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False)
    gen, scores = grown.train_data(0)
    assert torch.equal(gen.tokens, gen0.tokens) and set(scores) == set(before) | {"attention"}
    for k, v in before.items():
        np.testing.assert_array_equal(scores[k], v)
    assert set(load_train_data(folder)[1]) == set(scores)  # saved
    probe = load_probe(study / "probes" / "seed0" / "attention_L2")
    acts, _ = collect_tokens(
        tiny_model(n_layers=4), gen.tokens, gen.attention_mask, gen.response_mask, [probe.metadata.hook], progress=False
    )
    np.testing.assert_allclose(
        scores["attention"], probe.predict_proba(acts[probe.metadata.hook].numpy())[:, 1], atol=1e-5
    )
