"""Interpretability instruments in a study (issue 24): with ``eval.causal`` every probe cell and its controls
report the steering slope and ablation effect of the trained-against probe and the held-out mass-mean probe
on the cell's model and on the seed's base model; every cell reports the signal decomposition; with
``eval.attribution`` every cell and the seed's base model save the probe-score attribution."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from probe_lens import collect
from probe_lens.activations import resolve_hook
from probe_lens.experiments import Study, instruments as instruments_module
from probe_lens.experiments.score_attribution import (
    BASE_MODEL,
    TOLERANCE,
    attribution_contrasts,
    attribution_rows,
    measure_attribution,
)
from probe_lens.interventions import components
from probe_lens.interventions.figures import attribution_grid
from probe_lens.plots import fig_attribution_contrast
from probe_lens.testing import non_ascii_scorer, run_tiny_study, tiny_model, tiny_study_config
from probe_lens.training.metric_keys import causal_key, evasion_key

CAUSAL = {"causal": True, "causal_prompts": 2, "causal_alphas": [-0.1, 0.1]}
ATTRIBUTION = {"attribution": True, "attribution_rows": 4}
FAST = dict(
    probes={"noise_floor_resamples": 2}, eval={"n_telemetry_prompts": 4, "n_curated": 16, **CAUSAL, **ATTRIBUTION}
)
CELLS = ("base", "probe_sft_1", "classifier_sft")
STATS = ("steer_slope", "ablation_effect", "rate_unsteered", "rate_ablated", "kl_ablated", "kl_max_steer")
PROBES = ("logistic_L2", "massmean_L2")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cfg = tiny_study_config(cells=list(CELLS), **FAST)
    return run_tiny_study(cfg, tmp_path_factory.mktemp("instruments"))


def test_causal_metrics_for_every_probe_cell_and_its_controls(study):
    results = pd.read_csv(study.out / "results.csv").set_index("cell")
    assert set(results.index) == {"base", "probe_sft_1", "classifier_sft"}
    for probe in PROBES:
        for stat in STATS:
            for base in (False, True):
                key = str(causal_key(stat, probe, base=base))
                assert results[key].notna().all(), key
            # the base model is measured once per seed: the same numbers in every cell's row
            assert results[str(causal_key(stat, probe, base=True))].nunique() == 1
        # the base cell's model is the base model, sampled with the same seed: its numbers are the base's
        for stat in STATS:
            assert results.loc["base", str(causal_key(stat, probe))] == pytest.approx(
                results.loc["base", str(causal_key(stat, probe, base=True))]
            )
        assert results[str(causal_key("kl_ablated", probe))].ge(0).all()
    saved = json.loads((study.out / "seeds" / "0" / "causal_base.json").read_text())
    assert saved[str(causal_key("steer_slope", "logistic_L2", base=True))] == pytest.approx(
        results.loc["probe_sft_1", "causal/steer_slope_base/logistic_L2"]
    )
    headline = (study.out / "headline.md").read_text()
    assert "## Instruments" in headline and "logistic_L2 steer_slope (base)" in headline


def test_signal_decomposition_in_every_cell(study):
    results = pd.read_csv(study.out / "results.csv")
    for probe in PROBES:
        on, off, norm = (results[str(evasion_key(k, probe))] for k in ("on_probe", "off_probe", "signal_norm"))
        np.testing.assert_allclose(on**2 + off**2, norm**2, rtol=1e-6)  # the split is orthogonal (a float32 direction)
        share = results[str(evasion_key("share_on_probe", probe))]
        np.testing.assert_allclose(share, on**2 / norm**2, rtol=1e-6)
        assert results[str(evasion_key("angle_deg", probe))].between(0, 180).all()
        assert (results[str(evasion_key("n_components", probe))] >= 1).all()


def test_causal_settings_are_checked(tmp_path):
    with pytest.raises(ValueError, match="causal_alphas needs at least one non-zero"):
        tiny_study_config(eval={"causal_alphas": [0.0]})
    with pytest.raises(ValueError, match="causal_prompts must be an int >= 1"):
        tiny_study_config(eval={"causal_prompts": 0})
    assert tiny_study_config().eval.causal is False  # off by default: it samples


# ---- probe-score attribution (eval.attribution) ------------------------------------------------------------
def _attributions(out) -> dict[str, dict]:
    """``{source: record}``: every cell's seed-0 attribution and the seed's base model's."""
    files = {cell: out / "cells" / cell / "seed0" / "attribution.json" for cell in CELLS}
    files[BASE_MODEL] = out / "seeds" / "0" / "attribution_base.json"
    return {k: json.loads(p.read_text()) for k, p in files.items()}


def _gaps(record: dict, probe: str) -> pd.DataFrame:
    return pd.DataFrame(record["probes"][probe]["components"])


def test_attribution_for_every_probe_cell_its_control_and_the_base_model(study):
    saved = _attributions(study.out)
    study.reset_model()  # the base weights
    curated = study.curated_set()
    probes = study.load_probes(0)
    rows = saved[BASE_MODEL]["rows"]
    y = curated.labels[rows]
    assert saved[BASE_MODEL]["n_positive"] == saved[BASE_MODEL]["n_negative"] == 4
    for source, record in saved.items():
        assert record["rows"] == rows  # the same curated texts in every cell and for the base model
        assert record["seconds"] > 0
        assert set(record["probes"]) == set(PROBES)
        for probe in PROBES:
            rec = record["probes"][probe]
            gaps = _gaps(record, probe)
            # embedding, each head, b_O and MLP of layers 0..2 (the probes read blocks.2.hook_resid_post), bias
            assert len(gaps) == len(components(study.model, rec["hook"])) + 1
            assert gaps["gap"].sum() == pytest.approx(rec["logit_gap"], abs=TOLERANCE)
    # oracle: the probe's own decision_function on activations collected apart, on the base model
    for probe in PROBES:
        p = probes[probe]
        hook = saved[BASE_MODEL]["probes"][probe]["hook"]
        X = collect(study.model, curated.tokens[rows], curated.attention_mask[rows], curated.pool_mask[rows], [hook],
                    progress=False)[hook].double().numpy()  # fmt: skip
        logit = p.decision_function(X)
        expected = logit[y == 1].mean() - logit[y == 0].mean()
        assert _gaps(saved[BASE_MODEL], probe)["gap"].sum() == pytest.approx(expected, abs=TOLERANCE)
        # the base cell's model is the base model: the same split
        np.testing.assert_allclose(_gaps(saved["base"], probe)["gap"], _gaps(saved[BASE_MODEL], probe)["gap"],
                                   atol=1e-9)  # fmt: skip
    assert json.loads((study.out / "timings.json").read_text())["attribution_s"] > 0


def test_a_decomposition_that_misses_the_logit_gap_fails_loudly(study):
    study.reset_model()
    curated = study.curated_set()
    probe = study.load_probes(0)["logistic_L2"]
    hook = resolve_hook(study.model, probe.hook)
    X = collect(study.model, curated.tokens, curated.attention_mask, curated.pool_mask, [hook], progress=False)
    acts = {k: v.double().numpy() for k, v in X.items()}
    ok = measure_attribution(study.model, {"p": probe}, curated, acts, n_per_class=4, pooling="mean")
    assert abs(ok["probes"]["p"]["components_sum"] - ok["probes"]["p"]["logit_gap"]) <= TOLERANCE
    y = curated.labels
    shifted = {hook: acts[hook] + np.outer(y, probe.coef_raw_) * 1e-3 / float(probe.coef_raw_ @ probe.coef_raw_)}
    with pytest.raises(RuntimeError, match="components sum to a gap of"):
        measure_attribution(study.model, {"p": probe}, curated, shifted, n_per_class=4, pooling="mean")


def test_instruments_md_and_report_show_the_attribution_and_the_causal_metrics_over_seeds(study):
    text = (study.out / "instruments.md").read_text()
    assert "## Causal metrics over seeds" in text and "probe_sft_1 − classifier_sft" in text
    assert "probe_sft_1 − base model" in text
    assert "## Attribution: which components moved" in text and "### logistic_L2: probe_sft_1 − classifier_sft" in text
    con = pd.read_csv(study.out / "attribution.csv")
    assert set(zip(con["cell"], con["control"], strict=True)) == {("probe_sft_1", "classifier_sft")}
    saved = _attributions(study.out)
    for probe in PROBES:
        got = con[con["probe"] == probe].set_index("label")
        cell, control = _gaps(saved["probe_sft_1"], probe), _gaps(saved["classifier_sft"], probe)
        by_hand = pd.Series(cell["gap"].to_numpy() - control["gap"].to_numpy(), index=cell["label"])
        np.testing.assert_allclose(got.loc[by_hand.index, "difference"], by_hand, atol=1e-12)
        assert (got["n_seeds"] == 1).all() and got["difference_sd"].isna().all()
    html = (study.out / "report.html").read_text()
    assert "fig-attribution-probe_sft_1-classifier_sft" in html


def test_the_attribution_figure_draws_base_cell_control_and_their_paired_difference(study):
    con = pd.read_csv(study.out / "attribution.csv")
    fig = fig_attribution_contrast(con, "probe_sft_1", "classifier_sft")
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert len(heatmaps) == 4 * len(PROBES)
    saved = _attributions(study.out)
    for i, probe in enumerate(PROBES):
        panels = heatmaps[4 * i : 4 * i + 4]
        cell, control, base = (_gaps(saved[k], probe) for k in ("probe_sft_1", "classifier_sft", BASE_MODEL))
        expected = {
            "base model": base.assign(v=base["gap"]),
            "probe_sft_1": cell.assign(v=cell["gap"]),
            "classifier_sft": control.assign(v=control["gap"]),
            "probe_sft_1 − classifier_sft": cell.assign(v=cell["gap"] - control["gap"]),
        }
        for trace, (title, table) in zip(panels, expected.items(), strict=True):
            assert trace.name == f"{probe}: {title}"
            grid, _, _ = attribution_grid(table.astype({"layer": "Int64", "head": "Int64"}), "v")
            np.testing.assert_allclose(np.asarray(trace.z, dtype=float), grid, atol=1e-9)
    assert {t.coloraxis for t in heatmaps} == {"coloraxis", "coloraxis2"}
    with pytest.raises(ValueError, match="no attribution of cell"):
        fig_attribution_contrast(con, "classifier_sft")


def test_resume_keeps_saved_attributions(study, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(study.out, out)
    before = _attributions(out)
    (out / "cells" / "probe_sft_1" / "seed0" / "eval.json").unlink()  # stopped after the attribution was saved

    def refuse(*args, **kwargs):
        raise AssertionError("a saved attribution was recomputed")

    monkeypatch.setattr(instruments_module, "measure_attribution", refuse)
    cfg = tiny_study_config(cells=list(CELLS), **FAST)
    s = Study(cfg, out, resume=True, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False,
              export_png=False)  # fmt: skip
    s.run()
    assert (out / "cells" / "probe_sft_1" / "seed0" / "eval.json").exists()
    assert _attributions(out) == before


def test_attribution_contrasts_pair_cells_by_seed():
    rows = []
    # seed: (base, cell, control) gap of two components
    values = {
        0: {"L0H0": (1.0, 0.5, 1.5), "L0 mlp": (2.0, 2.0, 1.0)},
        1: {"L0H0": (1.0, 1.0, 1.2), "L0 mlp": (2.0, 3.0, 1.0)},
    }
    for seed, comps in values.items():
        for label, triple in comps.items():
            kind, head = ("head", 0) if "H" in label else ("mlp", None)
            for source, gap in zip((BASE_MODEL, "cell", "control"), triple, strict=True):
                rows.append(
                    dict(source=source, seed=seed, probe="p", component=kind, layer=0, head=head, label=label, gap=gap)
                )
    table = pd.DataFrame(rows).astype({"layer": "Int64", "head": "Int64"})
    con = attribution_contrasts(table, [("cell", "control")]).set_index("label")
    # by hand: L0H0 differences -1.0 and -0.2; L0 mlp +1.0 and +2.0
    assert con.loc["L0H0", "difference"] == pytest.approx(-0.6)
    assert con.loc["L0H0", "difference_sd"] == pytest.approx(np.std([-1.0, -0.2], ddof=1))
    assert con.loc["L0 mlp", "difference"] == pytest.approx(1.5)
    assert con.loc["L0 mlp", "cell_gap"] == pytest.approx(2.5) and con.loc["L0 mlp", "base"] == pytest.approx(2.0)
    assert (con["n_seeds"] == 2).all() and (con["n_agree"] == 2).all()
    assert pd.isna(con.loc["L0 mlp", "head"]) and con.loc["L0H0", "head"] == 0
    assert attribution_contrasts(table, [("cell", "missing")]).empty


def test_attribution_rows_are_a_fixed_draw_per_class():
    y = np.array([0, 1] * 10)
    rows = attribution_rows(y, 3)
    assert (y[rows] == 1).sum() == 3 and (y[rows] == 0).sum() == 3
    np.testing.assert_array_equal(rows, attribution_rows(y, 3))
    with pytest.raises(ValueError, match="both classes"):
        attribution_rows(np.zeros(5), 3)


def test_attribution_settings_are_checked():
    with pytest.raises(ValueError, match="eval.attribution_rows must be an int >= 2"):
        tiny_study_config(eval={"attribution_rows": 1})
    with pytest.raises(ValueError, match="eval.curated is null"):
        tiny_study_config(eval={"attribution": True, "curated": None})
    with pytest.raises(ValueError, match="data.pooling is 'max'"):
        tiny_study_config(eval={"attribution": True}, data={"pooling": "max"}, probe_sft={"pooling": "max"})
    assert tiny_study_config().eval.attribution is False  # off by default: it costs a cached forward pass
