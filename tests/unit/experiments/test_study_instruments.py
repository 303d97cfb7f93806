"""Interpretability instruments in a study (issue 24): with ``eval.causal`` every probe cell and its controls
report the steering slope and ablation effect of the trained-against probe and the held-out mass-mean probe
on the cell's model and on the seed's base model; every cell reports the signal decomposition."""

import json

import numpy as np
import pandas as pd
import pytest

from probe_lens.experiments import Study
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config
from probe_lens.training.metric_keys import causal_key, evasion_key

CAUSAL = {"causal": True, "causal_prompts": 2, "causal_alphas": [-0.1, 0.1]}
FAST = dict(probes={"noise_floor_resamples": 2}, eval={"n_telemetry_prompts": 4, "n_curated": 16, **CAUSAL})
STATS = ("steer_slope", "ablation_effect", "rate_unsteered", "rate_ablated", "kl_ablated", "kl_max_steer")
PROBES = ("logistic_L2", "massmean_L2")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cfg = tiny_study_config(cells=["base", "probe_sft_1", "classifier_sft"], **FAST)
    s = Study(
        cfg,
        tmp_path_factory.mktemp("instruments"),
        model=tiny_model(n_layers=4),
        scorer=non_ascii_scorer(),
        progress=False,
        export_png=False,
    )
    s.run()
    return s


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
