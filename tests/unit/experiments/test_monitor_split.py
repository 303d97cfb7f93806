"""Behaviour vs representation on each cell's outputs, probes re-fit on fresh samples of the trained model,
and prompt-clustered on-policy intervals, in a tiny study (real tiny model, real scorer)."""

import contextlib
import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from probe_lens.experiments import Study
from probe_lens.experiments.fresh_refit import fresh_refit_metrics
from probe_lens.experiments.monitor_split import outputs_scores, split_metrics
from probe_lens.experiments.stats import auroc_ci
from probe_lens.models import generate
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config
from probe_lens.training.metric_keys import GROUPS, MetricKey, output_split_key, refit_fresh_auroc

CELLS = ["probe_sft_1", "base", "classifier_sft"]  # base is not first


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("split")
    cfg = tiny_study_config(seeds=[0], cells=CELLS)
    s = Study(cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False)
    s.run()
    return s


def _eval(study, cell, seed=0):
    return json.loads((study.cell_dir(cell, seed) / "eval.json").read_text())


def test_representation_part_is_exactly_zero_when_the_trained_model_is_the_base_model(study):
    """The base cell's model is the base model: the same weights read the same texts, through the real
    weight swap (``Study.base_weights``)."""
    r = _eval(study, "base")
    for probe in study.tracked_probes():
        for stat in ("mean", "recall01"):
            trained, base = (r[str(output_split_key(stat, p, probe))] for p in ("trained", "base"))
            rep = r[str(output_split_key(stat, "representation", probe))]
            if stat == "mean" or np.isfinite(trained):
                assert trained == base and rep == 0.0, (probe, stat)
    results = pd.read_csv(study.out / "results.csv").set_index("cell")
    single = study.probe_names()["single"][0]
    assert results.loc["base", str(output_split_key("mean", "behaviour", single))] == 0.0


def test_the_split_adds_up_in_a_trained_cell(study):
    """total = behaviour + representation: S_T(X_c) - S_B(X_0) = [S_B(X_c) - S_B(X_0)] + [S_T(X_c) - S_B(X_c)]."""
    single = study.probe_names()["single"][0]
    r, r0 = _eval(study, "probe_sft_1"), _eval(study, "base")
    key = lambda part, rr=r: rr[str(output_split_key("mean", part, single))]  # noqa: E731
    assert key("trained") != key("base")  # training moved the weights: the swap read another model
    assert key("representation") == pytest.approx(key("trained") - key("base"))
    results = pd.read_csv(study.out / "results.csv").set_index("cell")
    behaviour = results.loc["probe_sft_1", str(output_split_key("mean", "behaviour", single))]
    assert behaviour == pytest.approx(key("base") - key("base", r0))
    total = key("trained") - key("trained", r0)
    assert behaviour + key("representation") == pytest.approx(total)
    con = pd.read_csv(study.out / "contrasts.csv")
    assert str(output_split_key("mean", "representation", single)) in set(con["metric"])
    assert "## Behaviour vs representation" in (study.out / "headline.md").read_text()


def test_base_weights_swaps_and_restores(study):
    model = study.model
    own = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        next(iter(model.parameters())).add_(1.0)
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    with study.base_weights() as m:
        assert all(torch.equal(v, study._base_state[k]) for k, v in m.state_dict().items())
    assert all(torch.equal(v, moved[k]) for k, v in model.state_dict().items())
    model.load_state_dict(own)


def test_split_on_a_different_base_model_is_the_difference_of_its_scores(study):
    """``split_metrics`` against an oracle: the two models' probe scores computed separately."""
    study.reset_model()
    model, probes = study.model, study.fit_probes(0)
    gen = generate(model, ["hello there", "what is"], max_new_tokens=5, seed=1, progress=False)
    other = tiny_model(n_layers=4)
    other.load_state_dict({k: v + 0.01 for k, v in model.state_dict().items()})

    @contextlib.contextmanager
    def base():
        yield other

    flagged = np.array([True, True])
    kw = dict(pooling="mean", batch_size=4)
    out = split_metrics(model, gen, probes, flagged, None, base, **kw)
    st, sb = outputs_scores(model, gen, probes, **kw), outputs_scores(other, gen, probes, **kw)
    for name in probes:
        assert out[str(output_split_key("mean", "representation", name))] == pytest.approx(
            st[name].mean() - sb[name].mean()
        )
        assert np.isnan(out[str(output_split_key("recall01", "base", name))])  # no thresholds: no recall


def test_fresh_sample_probes_exist_in_every_trained_cell(study):
    hooks = {MetricKey.parse(k).subject for k in _eval(study, "base") if "_auroc_retrained/" in k}
    assert hooks
    for cell in CELLS:
        r = _eval(study, cell)
        assert r["eval/refit_fresh_n"] > 0
        for which in ("onpolicy", "curated", "curated_hard"):
            for h in hooks:
                v = r[str(refit_fresh_auroc(which, h))]
                one_class = r["eval/refit_fresh_positive_share"] in (0.0, 1.0)
                assert np.isnan(v) if one_class else 0.0 <= v <= 1.0, (cell, which, h)
        assert any(np.isfinite(r[str(refit_fresh_auroc("onpolicy", h))]) for h in hooks), cell


def test_fresh_samples_of_one_class_give_nan_and_say_why(study, caplog):
    class Zero:
        def score(self, texts):
            return np.zeros(len(texts))

    study.reset_model()
    tele = study.telemetry(0, [])
    prompts = study.prompt_plan.pool[:3]
    with caplog.at_level(logging.WARNING):
        out = fresh_refit_metrics(study.model, tele, prompts, Zero(), study.config, 0)
    aurocs = [v for k, v in out.items() if "refit_fresh/" in k]
    assert aurocs and all(np.isnan(v) for v in aurocs)
    assert "one class only" in caplog.text
    off = study.config.__class__.from_dict(
        {**study.config.to_dict(), "eval": {**study.config.to_dict()["eval"], "fresh_refit": False}}
    )
    assert fresh_refit_metrics(study.model, tele, prompts, Zero(), off, 0) == {}
    two = off.__class__.from_dict({**off.to_dict(), "eval": {**off.to_dict()["eval"], "fresh_refit": True,
                                                               "fresh_refit_prompts": 2}})  # fmt: skip
    assert fresh_refit_metrics(study.model, tele, prompts, Zero(), two, 0)["eval/refit_fresh_n"] == 2.0


@pytest.mark.parametrize(
    "bad",
    [{"fresh_refit_samples": 0}, {"fresh_refit_prompts": 1}, {"fresh_refit": "yes"}, {"fresh_refit_samples": True}],
)
def test_fresh_refit_settings_are_validated(bad):
    with pytest.raises(ValueError, match="eval.fresh_refit"):
        tiny_study_config(eval=bad)


def test_onpolicy_intervals_are_clustered_by_prompt(study):
    saved = json.loads((study.cell_dir("probe_sft_1", 0) / "probe_scores.json").read_text())["onpolicy"]
    prompts = np.asarray(saved[GROUPS])
    assert len(set(prompts)) < len(prompts)  # several continuations per prompt
    single = study.probe_names()["single"][0]
    y, s = np.asarray(saved["__y__"]), np.asarray(saved[single])
    lo, hi = _eval(study, "probe_sft_1")["intervals"][f"probe/onpolicy_auroc/{single}"]
    assert (lo, hi) == pytest.approx(auroc_ci(y, s, clusters=prompts)[1:])
    assert (lo, hi) != pytest.approx(auroc_ci(y, s)[1:])


def test_report_figure_shows_both_parts_per_cell(study):
    from probe_lens.experiments.report import NoFigureData, fig_monitor_split

    results = pd.read_csv(study.out / "results.csv")
    single = study.probe_names()["single"][0]
    fig = fig_monitor_split(results, probes=[single])
    bars = {(t.name.split(" ")[0], t.yaxis): t for t in fig.data}
    rep = bars[("representation", "y")]
    want = results.groupby("cell")[str(output_split_key("mean", "representation", single))].mean()
    assert dict(zip(rep.x, rep.y)) == pytest.approx(want.to_dict())
    assert 'id="fig-monitor-split"' in (study.out / "report.html").read_text()
    with pytest.raises(NoFigureData):
        fig_monitor_split(results.drop(columns=[c for c in results if c.startswith("outputs/")]))
