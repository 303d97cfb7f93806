"""Issue 25, the researcher's path: settings a study accepts must work (or be refused when checked),
configs derived for a model fit that model, plug-ins from the command line, an API without traps."""

import json

import pytest

from probe_lens.experiments import Study
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config


def _run(cfg, out):
    study = Study(cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False)
    study.run()
    return study


@pytest.mark.parametrize(
    ("cell", "settings"),
    [("probe_sft_1", {"probe_sft": {"kl_weight": 0.1}}), ("probe_dpo_1", {"dpo": {"precompute_reference": False}})],
)
def test_a_live_reference_model_is_provided_by_the_study(tmp_path, cell, settings):
    """probe_sft.kl_weight > 0 (and DPO without precomputed reference log-probs) train against a frozen copy
    of the cell's starting model instead of failing after the data and probes were built."""
    study = _run(tiny_study_config(cells=["base", cell], **settings), tmp_path)
    assert study.is_done(cell, 0)
    cdir = tmp_path / "cells" / cell / "seed0"
    assert json.loads((cdir / "eval.json").read_text())["info"]["final_step"] == 2
    if cell == "probe_sft_1":  # the KL term was trained
        rows = [json.loads(line) for line in (cdir / "train" / "metrics.jsonl").read_text().splitlines()]
        assert any(r.get("train/kl", 0) > 0 for r in rows)
