"""The RLOO cells in a tiny study: ``probe_rloo_1`` (reward = minus the trained-against probe's score) and its
control ``classifier_rloo`` train, are evaluated like every cell and reach the headline's contrasts."""

from __future__ import annotations

import json

import pytest

from probe_lens.experiments import Study, StudyConfig
from probe_lens.experiments.adapters import cell_settings
from probe_lens.experiments.config import CELLS
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config
from probe_lens.training import RLOOConfig, read_metrics

CELLS_RUN = ["base", "probe_rloo_1", "classifier_rloo"]
SETTINGS = {"rloo": {"max_steps": 2, "batch_size": 2, "samples_per_prompt": 2, "max_new_tokens": 4, "lr": 1e-3}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("rloo") / "study"
    cfg = tiny_study_config(cells=CELLS_RUN, objectives=SETTINGS, telemetry_every=2)
    Study(cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False).run()
    return cfg, out


def test_the_rloo_section_is_typed_and_kept_out_of_the_default_grid():
    cfg = tiny_study_config(cells=CELLS_RUN, objectives=SETTINGS)
    assert isinstance(cfg.objectives["rloo"], RLOOConfig) and cfg.objectives["rloo"].samples_per_prompt == 2
    assert StudyConfig.from_dict(cfg.to_dict()).objectives == cfg.objectives
    assert tiny_study_config(cells=CELLS_RUN).objectives == {"rloo": RLOOConfig()}
    assert "probe_rloo_1" not in CELLS and "classifier_rloo" not in CELLS
    assert cell_settings(cfg, cfg.cell("probe_rloo_1")).pooling == cfg.data.pooling
    with pytest.raises(ValueError, match="samples_per_prompt must be an int >= 2"):
        tiny_study_config(cells=CELLS_RUN, objectives={"rloo": {"samples_per_prompt": 1}})


def test_both_rloo_cells_train_on_their_signal_and_are_evaluated(study):
    cfg, out = study
    for cell, reward in (("probe_rloo_1", "-probe"), ("classifier_rloo", "-classifier")):
        train = out / "cells" / cell / "seed0" / "train"
        saved = json.loads((train / "config.json").read_text())
        assert (saved["method"], saved["max_steps"], saved["samples_per_prompt"]) == ("rloo", 2, 2)
        info = json.loads((train / "run_info.json").read_text())
        assert info["reward"] == reward and info["n_examples"] == cfg.train_data.n_prompts
        m = read_metrics(train)
        kl = m["objective/kl"].dropna().tolist()
        assert m["objective/scores"].dropna().size == 2 and len(kl) == 2
        assert kl[0] == 0.0 and kl[1] != 0.0  # step 1 samples from the reference itself; step 2 has moved
        ev = json.loads((out / "cells" / cell / "seed0" / "eval.json").read_text())
        assert 0 <= ev["probe/curated_auroc/logistic_L2"] <= 1
    info = json.loads((out / "cells" / "probe_rloo_1" / "seed0" / "train" / "run_info.json").read_text())
    assert list(info["probes"]) == ["logistic_L2"]


def test_the_headline_contrasts_probe_rloo_with_its_classifier_control(study):
    _, out = study
    text = (out / "headline.md").read_text()
    assert "| probe_rloo_1 − classifier_rloo | probe/curated_auroc/logistic_L2 |" in text
    assert "| probe_rloo_1 − base | probe/curated_auroc/logistic_L2 |" in text
    assert "| classifier_rloo − base |" in text
