"""Studies grow (issue 25): more seeds or more cells extend a finished study with --resume and compute only
what is new; any other change is refused, naming the keys that differ and what to do."""

import logging

import pytest

from probe_lens.experiments import Study, StudyFolderError
from probe_lens.experiments.run_folder import study_changes
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config

SMALL = dict(probes={"noise_floor_resamples": 2}, eval={"n_telemetry_prompts": 4, "n_curated": 16})


def _config(**kw):
    return tiny_study_config(**{**SMALL, **kw})


def test_study_changes_tells_growth_from_invalidating_keys():
    saved = _config(seeds=[0], cells=["base", "probe_sft_1"]).to_dict()
    grown = _config(seeds=[0, 1], cells=["base", "probe_sft_1", "classifier_sft"]).to_dict()
    assert study_changes(saved, grown) == {"additive": ["seeds", "cells"], "invalidating": []}
    assert study_changes(saved, saved) == {"additive": [], "invalidating": []}
    other = _config(
        seeds=[0, 1],
        cells=["base", "probe_sft_1"],
        probes={"layer": 1, "noise_floor_resamples": 2},
        data={"max_new_tokens": 5},
    )
    assert study_changes(saved, other.to_dict()) == {
        "additive": ["seeds"],
        "invalidating": ["data.max_new_tokens", "probes.layer"],
    }
    # fewer or other seeds/cells drop finished work: not growth
    assert study_changes(grown, saved)["invalidating"] == ["cells", "seeds"]
    swapped = _config(seeds=[1], cells=["base", "probe_sft_1"]).to_dict()
    assert study_changes(saved, swapped) == {"additive": [], "invalidating": ["seeds"]}


def test_a_study_written_before_token_probes_tracked_none():
    saved = _config(seeds=[0], cells=["base"], probes={"token_probes": [], "noise_floor_resamples": 2}).to_dict()
    del saved["probes"]["token_probes"]  # the study.json of a study run before token probes existed
    without = _config(seeds=[0], cells=["base"], probes={"token_probes": [], "noise_floor_resamples": 2})
    assert study_changes(saved, without.to_dict()) == {"additive": [], "invalidating": []}
    with_them = _config(seeds=[0], cells=["base"], probes={"token_probes": ["maxpool"], "noise_floor_resamples": 2})
    assert study_changes(saved, with_them.to_dict())["invalidating"] == ["probes.token_probes"]
    from probe_lens.experiments.config import StudyConfig

    assert StudyConfig.from_dict(saved).probes.token_probes == []  # report/status/resume read it as it ran
    partial = {"probes": {"layer": 6}}  # a user's file naming a few settings gets the default families
    assert StudyConfig.from_dict(partial).probes.token_probes == ["maxpool", "attention"]


def _study(cfg, out, **kw):
    return Study(
        cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False, **kw
    )


def test_a_finished_study_grows_by_a_cell(tmp_path, caplog):
    """One new cell (a new seed goes through the same finished-cell check; kept out to keep CI cheap)."""
    first = _study(_config(seeds=[0], cells=["base", "probe_sft_1"]), tmp_path)
    first.run()
    stamps = {f: f.stat().st_mtime_ns for f in tmp_path.glob("cells/*/seed*/eval.json")}
    assert len(stamps) == 2
    grown = _config(seeds=[0], cells=["base", "probe_sft_1", "classifier_sft"])
    with pytest.raises(StudyFolderError, match="fewer cells; pass --resume"):
        _study(grown, tmp_path)
    study = _study(grown, tmp_path, resume=True)
    with caplog.at_level(logging.INFO, logger="probe_lens"):
        study.run()
    # log lines (shown by the CLI under --no-progress) say which cells were kept and which ran
    said = caplog.text
    assert "cell 2/3 probe_sft_1 seed 0: finished earlier, kept" in said
    assert "cell 3/3 classifier_sft seed 0: running" in said and "cell 3/3 classifier_sft seed 0: done" in said
    assert {f: f.stat().st_mtime_ns for f in stamps} == stamps, "finished cells were recomputed"
    results = study.results()
    assert sorted(zip(results["cell"], results["seed"])) == sorted(
        (c, 0) for c in ("base", "classifier_sft", "probe_sft_1")
    )
    # the folder now holds the grown study: a change of model settings is refused, naming the keys
    changed = _config(
        seeds=[0], cells=["base", "probe_sft_1", "classifier_sft"], probes={"layer": 1, "noise_floor_resamples": 2}
    )
    with pytest.raises(StudyFolderError, match=r"differs in: probes\.layer\).*another --out.*--overwrite"):
        _study(changed, tmp_path, resume=True)
