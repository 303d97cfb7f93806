"""The report's training-curve, yardstick and instrument sections (issues 23/24/25), and readable geometry
subplot titles: each figure checked against numbers computed by hand from synthetic study tables."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from probe_lens.experiments import report as R, report_sections as S

CELLS = ("base", "probe_sft_1", "classifier_sft")
SEEDS = (0, 1)
STEPS = (1, 2, 3)
PROBES = ("logistic_L2", "massmean_L2")
RECORDS = {
    "curated": {
        "rows": 16,
        "positive": 8,
        "baselines": {"classifier": 0.9, "lexicon": 0.95, "bow": 0.8, "length": 0.6},
    },
    "curated_hard": {"rows": 12, "positive": 6, "baselines": {"lexicon": 0.3, "bow": 0.7, "length": 0.55}},
}


def training_metrics() -> pd.DataFrame:
    rows = [{"cell": "base", "seed": s, "step": 0} for s in SEEDS]
    for cell in CELLS[1:]:
        for s in SEEDS:
            for st in STEPS:
                row = {"cell": cell, "seed": s, "step": st, "train/loss": 3.0 - 0.1 * st + s, "train/lr": 1e-3}
                if cell == "probe_sft_1":
                    row["train/probe_prob"] = 0.5 - 0.1 * st + 0.01 * s
                rows.append(row)
                rows.append({"cell": cell, "seed": s, "step": st, "drift/cosine/logistic_L2": 0.99})  # telemetry
    return pd.DataFrame(rows)


def study_results() -> pd.DataFrame:
    rows = []
    for i, cell in enumerate(CELLS):
        for s in SEEDS:
            row = {"cell": cell, "seed": s}
            for k, p in enumerate(PROBES):
                row[f"probe/curated_auroc/{p}"] = 0.9 - 0.1 * i + 0.01 * s + 0.02 * k
                row[f"probe/curated_hard_auroc/{p}"] = 0.7 - 0.1 * i + 0.01 * s
                row[f"causal/steer_slope/{p}"] = 1.0 - 0.5 * i + 0.1 * s
                row[f"causal/steer_slope_base/{p}"] = 1.0 + 0.1 * s
                row[f"causal/ablation_effect/{p}"] = -0.1 * i
                row[f"causal/ablation_effect_base/{p}"] = -0.2
                row[f"causal/kl_max_steer/{p}"] = 0.01  # measured, not drawn
                row[f"evasion/share_on_probe/{p}"] = 0.5 - 0.2 * i + 0.02 * s
                row[f"evasion/n_components/{p}"] = 3.0 + s
            rows.append(row)
    return pd.DataFrame(rows)


def _trace(fig, name, **where):
    found = [t for t in fig.data if t.name == name and all(getattr(t, k) == v for k, v in where.items())]
    assert found, f"no trace {name!r} {where}"
    return found[0]


def test_training_curves_are_per_cell_seed_means():
    m = training_metrics()
    fig = S.fig_training_curves(m)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [S.TRAINING_CURVES["train/loss"], S.TRAINING_CURVES["train/probe_prob"]]  # no lr panel
    assert not any(t.name == "base" for t in fig.data), "base does not train: no curve"
    loss = _trace(fig, "probe_sft_1", xaxis="x", mode="lines+markers")
    by_hand = [np.mean([3.0 - 0.1 * st + s for s in SEEDS]) for st in STEPS]
    np.testing.assert_allclose(loss.y, by_hand)
    probe = _trace(fig, "probe_sft_1", xaxis="x2", mode="lines+markers")
    np.testing.assert_allclose(probe.y, [0.5 - 0.1 * st + 0.005 for st in STEPS])
    assert [t.name for t in fig.data if t.showlegend is not False] == ["probe_sft_1", "classifier_sft"]


def test_training_curves_need_a_trained_cell():
    with pytest.raises(ValueError, match="trained no cell"):
        S.fig_training_curves(training_metrics().query("cell == 'base'"))
    assert S.training_section(training_metrics().query("cell == 'base'"), {}) is None


def test_yardsticks_figure_puts_baselines_beside_probe_means():
    r = study_results()
    fig = S.fig_yardsticks(RECORDS, r, PROBES)
    assert [a.text for a in fig.layout.annotations] == ["curated (16 rows)", "curated-hard (12 rows)"]
    base = _trace(fig, "lexical baseline", xaxis="x2")
    assert list(base.x) == [0.3, 0.7, 0.55] and list(base.y) == [
        "baseline: lexicon hits",
        "baseline: bag of words",
        "baseline: length",
    ]
    cell = _trace(fig, "probe_sft_1", xaxis="x")
    want = r[r["cell"] == "probe_sft_1"][[f"probe/curated_auroc/{p}" for p in PROBES]].mean()
    np.testing.assert_allclose(cell.x, want.to_numpy())
    np.testing.assert_allclose(np.asarray(cell.x) + np.asarray(cell.error_x.array), [0.81, 0.83])  # seeds' max


def test_instruments_figure_bars_are_seed_means_with_the_base_model_marked():
    r = study_results()
    fig = S.fig_instruments(r)
    assert [a.text for a in fig.layout.annotations] == [
        "steer_slope",
        "ablation_effect",
        "share_on_probe",
        "n_components",
    ]
    bars = _trace(fig, "classifier_sft", xaxis="x")
    assert list(bars.x) == list(PROBES)
    np.testing.assert_allclose(bars.y, [1.0 - 0.5 * 2 + 0.05] * 2)
    base = _trace(fig, "base model", xaxis="x")
    np.testing.assert_allclose(base.y, [1.05, 1.05])
    with pytest.raises(ValueError, match="no instrument"):
        S.fig_instruments(r[["cell", "seed"]])


def _minimal_report(tmp_path, *, results, metrics, yardsticks=None):
    if yardsticks is not None:
        (tmp_path / "yardsticks.json").write_text(json.dumps(yardsticks))
    config = {"model": "tiny", "scorer": {"name": "s"}, "seeds": list(SEEDS), "headline_probes": list(PROBES)}
    path = R.write_report(tmp_path, results=results, metrics=metrics, geometry=None, config=config)
    return path.read_text()


def test_report_has_the_new_sections_when_the_study_has_their_data(tmp_path):
    r = study_results().assign(**{"eval/toxicity_rate": 0.1})
    page = _minimal_report(tmp_path, results=r, metrics=training_metrics(), yardsticks=RECORDS)
    for sec in ("fig-training", "fig-yardsticks", "fig-instruments"):
        assert f'<section id="{sec}">' in page, sec
    yard = page.split('<section id="fig-yardsticks">')[1].split("</section>")[0]
    assert "bag of words" in yard and "0.950" in yard and "curated-hard" in yard


def test_report_leaves_out_sections_without_data(tmp_path):
    r = pd.DataFrame({"cell": ["base"], "seed": [0], "eval/toxicity_rate": [0.1]})
    page = _minimal_report(tmp_path, results=r, metrics=training_metrics().query("cell == 'base'"))
    for sec in ("fig-training", "fig-yardsticks", "fig-instruments"):
        assert f'<section id="{sec}">' not in page, sec


def _title_lines(fig):
    return [line for a in fig.layout.annotations for line in re.split(r"<br>", a.text)]


def test_geometry_subplot_titles_fit_their_columns():
    hooks = [f"blocks.{i}.hook_resid_post" for i in (4, 6, 9)]
    rows = [
        {
            "cell": "probe_sft_1",
            "seed": 0,
            "step": st,
            **{f"geometry/{h}/{k}": 0.5 for h in hooks for k in ("proj_toxic", "proj_clean", "mean_diff_cos_orig")},
        }
        for st in (0, 1)
    ]
    fig = R.fig_geometry_vs_step(pd.DataFrame(rows))
    assert max(len(t) for t in _title_lines(fig)) <= 40, _title_lines(fig)
    part = {"x_dir": [0.0, 1.0], "x_pc1": [1.0, 0.0], "x_pc2": [0.5, 0.5], "label": [0, 1]}
    geo = {"probe_sft_1": {hooks[1]: {"before": part, "after": part}}}
    fig = R.fig_geometry(geo)
    assert max(len(t) for t in _title_lines(fig)) <= 26, _title_lines(fig)
