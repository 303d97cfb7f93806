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


@pytest.fixture(scope="module")
def kl_study(tmp_path_factory):
    """Two seeds of base + probe-SFT with a KL term (issue 25's first trap)."""
    cfg = tiny_study_config(cells=["base", "probe_sft_1"], seeds=[0, 1], probe_sft={"kl_weight": 0.1})
    study = _run(cfg, tmp_path_factory.mktemp("kl"))
    return study


def _final_step(study, cell, seed=0):
    return json.loads((study.cell_dir(cell, seed) / "eval.json").read_text())["info"]["final_step"]


def test_probe_sft_with_a_kl_term_trains_against_a_frozen_reference(kl_study):
    """probe_sft.kl_weight > 0 gets a frozen copy of the cell's starting model instead of failing after the
    data and probes were built."""
    assert _final_step(kl_study, "probe_sft_1") == 2
    kl = kl_study.metrics("training").query("cell == 'probe_sft_1'")["train/kl"]
    # 2 steps x 2 seeds: at step 1 the policy is the reference (KL 0: the copy is the starting model), then not
    assert kl.iloc[0::2].tolist() == pytest.approx([0.0, 0.0], abs=1e-6) and (kl.iloc[1::2] > 0).all()


def test_dpo_without_precomputed_reference_runs_in_a_study(tmp_path):
    study = _run(tiny_study_config(cells=["base", "probe_dpo_1"], dpo={"precompute_reference": False}), tmp_path)
    assert _final_step(study, "probe_dpo_1") == 2


# ---------------------------------------------------------------- a config derived for a model fits it
def test_a_preset_for_another_model_moves_its_layers_to_that_depth():
    from probe_lens.experiments import make_config
    from probe_lens.experiments.presets import fit_layers

    embedded = make_config("quick")
    assert (embedded.data.hooks, embedded.probes.layer, embedded.probes.heldout_layers) == ([4, 6, 9], 6, [4, 9])
    four = make_config("quick", model="probe-lens-tiny:4")
    assert (four.data.hooks, four.probes.layer, four.probes.heldout_layers) == ([0, 1, 2], 1, [0, 2])
    two = make_config("quick", model="probe-lens-tiny")  # 2 blocks: one held-out layer is left
    assert (two.data.hooks, two.probes.layer, two.probes.heldout_layers) == ([0, 1], 1, [0])
    # an explicit --set wins over the move; the paper preset's layers keep their relative depth on 18 blocks
    assert make_config("quick", model="probe-lens-tiny:4", overrides=["probes.layer=2"]).probes.layer == 2
    assert fit_layers([20, 14, 24, 10], 26, 18) == {20: 14, 14: 10, 24: 17, 10: 7}


def test_the_tiny_model_on_the_command_line(capsys, tmp_path):
    import yaml

    from probe_lens.cli import main

    assert main(["reproduce", "--model", "probe-lens-tiny", "--dry-run"]) == 0
    assert "model probe-lens-tiny" in capsys.readouterr().out
    assert main(["config", "--model", "probe-lens-tiny:4"]) == 0
    written = yaml.safe_load(capsys.readouterr().out)
    assert written["data"]["hooks"] == [0, 1, 2] and written["probes"]["layer"] == 1


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["probes.layer=5", "data.hooks=[0,1,5]"], "probes.layer has [5]"),
        (["data.hooks=[0,1,7]"], "data.hooks has [7]"),
    ],
)
def test_layers_the_model_lacks_are_refused_before_anything_is_written(capsys, tmp_path, overrides, named):
    from probe_lens.cli import main

    out = tmp_path / "run"
    sets = [a for o in overrides for a in ("--set", o)]
    for argv in (["config"], ["reproduce", "--dry-run"], ["reproduce", "--out", str(out)]):
        assert main([*argv, "--model", "probe-lens-tiny", *sets]) == 2
        err = capsys.readouterr().err
        assert named in err and "has 2 layers" in err, err
    assert not out.exists()
    # the library refuses it too, before the folder is made
    cfg = tiny_study_config(data={"hooks": [1, 2, 3, 5]}, probes={"layer": 5})
    with pytest.raises(ValueError, match=r"probes.layer has \[5\]"):
        Study(cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False)
    assert not out.exists()


# ---------------------------------------------------------------- plug-ins from the command line
_PLUGIN = """
from probe_lens.behaviours import Behaviour, register_behaviour
from probe_lens.data import load_prompts

register_behaviour(
    Behaviour(name="impolite_plugin", positive_label="impolite", negative_label="polite",
              prompt_loader=load_prompts, scorer="profanity", description="rude replies"),
    replace=True,
)
"""


@pytest.mark.parametrize("as_file", [False, True])
def test_a_plugin_registers_before_the_config_is_built(capsys, tmp_path, monkeypatch, registries, as_file):
    import sys

    import yaml

    from probe_lens.cli import main

    (tmp_path / "my_plugin_mod.py").write_text(_PLUGIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_plugin_mod", raising=False)
    plugin = str(tmp_path / "my_plugin_mod.py") if as_file else "my_plugin_mod"
    assert main(["config", "--plugin", plugin, "--behaviour", "impolite_plugin"]) == 0, capsys.readouterr().err
    assert yaml.safe_load(capsys.readouterr().out)["behaviour"] == "impolite_plugin"
    sys.modules.pop("my_plugin_mod", None)


def test_a_missing_or_broken_plugin_is_a_clear_error(capsys, tmp_path, monkeypatch):
    from probe_lens.cli import main

    monkeypatch.chdir(tmp_path)
    for plugin, words in [
        ("no_such_plugin_xyz", "--plugin no_such_plugin_xyz: no module named 'no_such_plugin_xyz'"),
        ("missing.py", "--plugin missing.py: no such file"),
        ("broken_plugin_xyz", "--plugin broken_plugin_xyz failed to import: ZeroDivisionError"),
    ]:
        (tmp_path / "broken_plugin_xyz.py").write_text("1 / 0\n")
        assert main(["config", "--plugin", plugin]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err


# ---------------------------------------------------------------- CLI ergonomics
@pytest.mark.parametrize("section", ["probe_sft", "dpo", "classifier_sft"])
def test_a_section_telemetry_every_is_refused_naming_the_study_field(capsys, section):
    from probe_lens.cli import main

    assert main(["config", "--set", f"{section}.telemetry_every=3"]) == 2
    err = capsys.readouterr().err
    assert f"{section}.telemetry_every (3) is set by the study" in err and "--set telemetry_every=3" in err, err
    with pytest.raises(ValueError, match="study-level telemetry_every"):
        tiny_study_config(**{section: {"telemetry_every": 2}})


def test_train_says_when_a_cell_was_already_finished(capsys, tmp_path, monkeypatch):
    import yaml

    from probe_lens.cli import main

    d = tiny_study_config(cells=["base", "probe_sft_1"]).to_dict()
    d["model"] = "probe-lens-tiny:4"
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(d))
    monkeypatch.setattr(Study, "is_done", lambda self, cell, seed: cell == "base")
    monkeypatch.setattr(Study, "run_cell", lambda self, cell, seed: {"eval/toxicity_rate": 0.25})
    argv = ["train", "--config", str(tmp_path / "study.yaml"), "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "base seed 0: toxicity rate 0.250 (already finished: read back, not trained again)",
        "probe_sft_1 seed 0: toxicity rate 0.250",
    ]


# ---------------------------------------------------------------- the API without traps
def test_results_are_per_seed_and_run_returns_the_summary(kl_study):
    results = kl_study.results()
    assert list(results[["cell", "seed"]].itertuples(index=False, name=None)) == [
        ("base", 0), ("base", 1), ("probe_sft_1", 0), ("probe_sft_1", 1)
    ]  # fmt: skip
    summary = kl_study.report()  # what run() returned: one row per cell, over seeds
    assert list(summary["cell"]) == ["base", "probe_sft_1"] and "seed" not in summary
    said = {"run": "summary over seeds", "report": "summary over seeds", "results": "One row per finished (cell, seed)"}
    for method, what in {**said, "metrics": '``"training"``'}.items():
        assert what in " ".join(getattr(Study, method).__doc__.split()), method


def test_metrics_can_be_only_training_or_only_telemetry_rows(kl_study):
    every = kl_study.metrics()
    training, telemetry = kl_study.metrics("training"), kl_study.metrics("telemetry")
    assert len(training) + len(telemetry) == len(every)  # the default still has both kinds
    assert training.filter(like="train/").notna().any(axis=1).all()
    assert not any(c.startswith(("probe/", "drift/")) for c in training.columns)
    assert not any(c.startswith("train/") for c in telemetry.columns)
    assert telemetry["drift/cosine/logistic_L2"].notna().all()
    with pytest.raises(ValueError, match="rows must be one of"):
        kl_study.metrics("train")


def test_save_probe_refuses_to_overwrite_unless_asked_and_a_study_resumes(kl_study, tmp_path):
    from probe_lens.probes import load_probe, save_probe

    probe = kl_study.fit_probes(0)["logistic_L2"]
    path = save_probe(probe, tmp_path / "p")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_probe(probe, path)
    assert load_probe(save_probe(probe, path, overwrite=True)).hook == probe.hook
    # a study whose probe save was cut short re-fits and saves over the folder it left
    (kl_study.folder.probes(1) / "report.csv").unlink()
    kl_study._probes.clear()
    refit = kl_study.fit_probes(1)
    assert (kl_study.folder.probes(1) / "report.csv").exists() and "logistic_L2" in refit


# ---------------------------------------------------------------- the report opens with the answer
def _drift_metrics():
    import pandas as pd

    rows = []
    for cell, slope in (("base", 0.0), ("probe_sft_1", 0.004), ("classifier_sft", 0.001), ("classifier_dpo", 0.002)):
        for seed in (0, 1):
            for step in (0, 1, 2, 3):
                rows.append({"cell": cell, "seed": seed, "step": step, "drift/cosine/logistic_L2": 1 - slope * step})
    return pd.DataFrame(rows)


def test_drift_plot_shows_the_control_band_marks_trained_cells_and_does_not_zoom_on_noise():
    from probe_lens.experiments import report as R

    against = {"base": [], "probe_sft_1": ["logistic_L2"], "classifier_sft": [], "classifier_dpo": []}
    fig = R.fig_cosine_drift(_drift_metrics(), trained_against=against)
    assert tuple(fig.layout.yaxis.range) == pytest.approx((0.89, 1.005))  # not 0.985-1.0: noise is not collapse
    band = [t for t in fig.data if t.name == "control cells (min–max)"]
    assert len(band) == 1 and min(band[0].y) == pytest.approx(1 - 0.002 * 3) and max(band[0].y) == 1.0
    lines = {t.name: t for t in fig.data if t.mode == "lines+markers"}
    assert lines["probe_sft_1 (trains against logistic_L2)"].line.dash == "solid"
    assert lines["classifier_sft"].line.dash == "dash"
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"  # whole steps


def _contrasts(n_seeds, resolved):
    import numpy as np
    import pandas as pd

    nan = float("nan")
    return pd.DataFrame(
        {
            "contrast": ["probe_sft_1 − classifier_sft", "probe_sft_1 − base"],
            "a": ["probe_sft_1", "probe_sft_1"],
            "b": ["classifier_sft", "base"],
            "metric": ["probe/curated_auroc/logistic_L2", "eval/toxicity_rate"],
            "mean_diff": [-0.2, 0.01],
            "ci_low": [-0.3 if n_seeds > 1 else nan, -0.05 if n_seeds > 1 else nan],
            "ci_high": [-0.1 if n_seeds > 1 else nan, 0.07 if n_seeds > 1 else nan],
            "n_seeds": [n_seeds, n_seeds],
            "resolved": np.array([resolved, False]),
            "per_seed": [{}, {}],
            "primary": [True, False],
            "re_estimate": [-0.21, 0.01],
            "re_ci_low": [-0.32 if n_seeds > 1 else nan, -0.05 if n_seeds > 1 else nan],
            "re_ci_high": [-0.1 if n_seeds > 1 else nan, 0.07 if n_seeds > 1 else nan],
            "p_signflip": [0.25, 1.0],
            "p_holm": [0.25, 1.0],
        }
    )


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_the_report_opens_with_the_answer_and_folds_the_metadata(tmp_path, n_seeds):
    import pandas as pd

    from probe_lens.experiments import report as R

    table = pd.DataFrame({"cell": ["base", "probe_sft_1"], "toxicity rate": ["0.2", "0.1"]})
    headline = {"table": table, "contrasts": _contrasts(n_seeds, n_seeds > 1)}
    metrics = _drift_metrics()
    results = metrics.groupby(["cell", "seed"], as_index=False).last()
    page = R.write_report(
        tmp_path, results=results, metrics=metrics, geometry=None, config={"model": "m"}, headline=headline
    ).read_text()
    body = page[page.index("<body>") :]
    answer, headline_at, meta = body.index('id="answer"'), body.index('id="fig-headline"'), body.index('id="study"')
    assert answer < headline_at < meta < body.index('id="fig-results-table"')
    assert body[meta:].startswith('id="study">\n<details>')  # the metadata and config are folded
    if n_seeds == 1:
        assert "n/a (1 seed)" in body and "+nan" not in body
        assert "measured on 1 seed: none can be resolved" in body
    else:
        assert (
            "Primary contrasts: probe_sft_1 − classifier_sft in probe/curated_auroc/logistic_L2: -0.210 "
            "(HKSJ 95% CI [-0.320, -0.100], sign-flip p = 0.25)" in body
        )
        assert "With 3 seeds the smallest sign-flip p is 0.25: no contrast can pass p &lt; 0.05" in body
        assert "Of the 1 other contrasts, 0 have a Holm-corrected p &lt; 0.05" in body
        assert "resolved" not in body[: body.index('id="fig-headline"')]


def test_the_report_shows_the_differences_of_differences_between_objectives(tmp_path):
    import pandas as pd

    from probe_lens.experiments import report as R
    from probe_lens.experiments.interactions import INTERACTION_COLUMNS

    contrast = "(probe_sft_1 − classifier_sft) − (probe_rloo_1 − classifier_rloo)"
    row = [contrast, "probe/curated_auroc/logistic_L2", "probe_sft_1", "classifier_sft", "probe_rloo_1"]
    row += ["classifier_rloo", -0.123, -0.2, -0.05, 3, 0.25, 0.5, "s0: -0.1, s1: -0.2, s2: -0.07"]
    inter = pd.DataFrame([row], columns=INTERACTION_COLUMNS)
    table = pd.DataFrame({"cell": ["base", "probe_sft_1"], "toxicity rate": ["0.2", "0.1"]})
    metrics = _drift_metrics()
    results = metrics.groupby(["cell", "seed"], as_index=False).last()
    for given, shown in ((inter, True), (inter.iloc[:0], False)):
        headline = {"table": table, "contrasts": _contrasts(3, True), "interactions": given}
        body = R.write_report(
            tmp_path, results=results, metrics=metrics, geometry=None, config={"model": "m"}, headline=headline
        ).read_text()
        assert ("Between objectives" in body) is shown
        assert (contrast in body and "-0.123" in body) is shown


def test_registry_messages_use_the_right_article():
    from probe_lens._registry import Registry

    objectives, scorers = Registry("objective"), Registry("scorer")
    objectives.register("x", 1)
    scorers.register("x", 1)
    with pytest.raises(ValueError, match="^an objective named 'x' is already registered"):
        objectives.register("x", 2)
    with pytest.raises(ValueError, match="^a scorer named 'x' is already registered"):
        scorers.register("x", 2)
