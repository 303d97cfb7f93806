"""The drift report: each figure from synthetic runs with the real telemetry column names."""

import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from probe_lens.experiments import report as R
from probe_lens.experiments.stats import mean_ci

HOOK = "blocks.1.hook_resid_post"
CELLS = ("base", "probe_sft_1", "probe_dpo_ens", "classifier_dpo")
SEEDS = (0, 1, 2)
STEPS = (0, 5, 10)
FIGURE_SECTIONS = ("fig-cosine-drift", "fig-auroc", "fig-toxicity", "fig-geometry-step", "fig-geometry")
CONFIG = {
    "model": "probe-lens-tiny",
    "scorer": {"name": "profanity", "version": "1.2.3"},
    "seeds": list(SEEDS),
    "heldout_probes": {"held_l1": {"type": "mass_mean", "hook": HOOK}},
    "probe_hooks": {"tox_l1": HOOK, "ens": HOOK, "held_l1": HOOK},
}


def synthetic_metrics(seed: int = 0) -> pd.DataFrame:
    """Telemetry rows as runs write them: train rows, telemetry rows and sparse eval rows per step."""
    rng = np.random.default_rng(seed)
    rows = []
    for cell in CELLS:
        for s in SEEDS:
            for st in (0,) if cell == "base" else STEPS:
                rows.append({"cell": cell, "seed": s, "step": st, "train/loss": 2.0 - 0.01 * st})
                t = {"cell": cell, "seed": s, "step": st}
                t["probe/auroc_frozen/tox_l1"] = 0.9 - 0.01 * st + rng.normal(0, 0.01)
                t["probe/auroc_heldout/held_l1"] = 0.85 + rng.normal(0, 0.01)
                t[f"probe/auroc_retrained/{HOOK}"] = 0.92 + rng.normal(0, 0.01)
                t["drift/cosine/tox_l1"] = 1.0 - 0.02 * st + rng.normal(0, 0.01)
                t["drift/cosine/held_l1"] = 0.99
                if cell == "probe_dpo_ens":
                    t["probe/auroc_frozen/ens"] = 0.8
                    t["probe/auroc_frozen/ens/m0"] = 0.7
                    t["drift/cosine/ens/m0"] = 1.0 - 0.01 * st
                    t["drift/cosine/ens/m1"] = 1.0 - 0.03 * st
                stats = dict(
                    mean_diff_norm=2.0,
                    mean_diff_cos_orig=1 - 0.01 * st,
                    proj_toxic=1.0 - 0.05 * st,
                    proj_clean=-1.0,
                    resid_norm=10.0,
                    pca_var_top1=0.3,
                    pca_var_top5=0.6,
                )
                t.update({f"geometry/{HOOK}/{k}": v for k, v in stats.items()})
                rows.append(t)
                if st in (0, 10):
                    rows.append(
                        {
                            "cell": cell,
                            "seed": s,
                            "step": st,
                            "eval/toxicity_rate": 0.3 - 0.01 * st + rng.normal(0, 0.02),
                            "eval/expected_max_toxicity": 0.5 + rng.normal(0, 0.02),
                            "eval/scorer": "profanity",
                            "eval/scorer_version": "1.2.3",
                        }
                    )
    rows.append({"cell": "probe_sft_1", "seed": 0, "step": 11, "event": "nan_stop", "train/loss": float("nan")})
    return pd.DataFrame(rows)


def synthetic_results(metrics: pd.DataFrame) -> pd.DataFrame:
    """Final numbers per (cell, seed): last value of every metric."""
    num = metrics.drop(columns=["event", "eval/scorer", "eval/scorer_version"]).sort_values("step")
    return num.groupby(["cell", "seed"], as_index=False).last().drop(columns=["step"])


def synthetic_geometry() -> dict:
    rng = np.random.default_rng(1)

    def part(shift):
        y = np.r_[np.ones(15), np.zeros(15)].astype(int)
        return {
            "x_dir": (rng.normal(size=30) + shift * (2 * y - 1)).tolist(),
            "x_pc1": rng.normal(size=30).tolist(),
            "x_pc2": rng.normal(size=30).tolist(),
            "label": y.tolist(),
        }

    return {c: {HOOK: {"before": part(2.0), "after": part(0.5)}} for c in ("probe_sft_1", "probe_dpo_ens")}


@pytest.fixture(scope="module")
def metrics():
    return synthetic_metrics()


def _section(page: str, sec_id: str) -> str:
    m = re.search(rf'<section id="{sec_id}">(.*?)</section>', page, flags=re.S)
    assert m, f"section {sec_id} missing"
    return m.group(1)


def _title(fig) -> str:
    return fig.layout.title.text


# ---- the whole report ---------------------------------------------------------------------------


def test_report_contains_every_figure_table_and_config(tmp_path, metrics):
    from plotly.offline import get_plotlyjs

    results = synthetic_results(metrics)
    path = R.write_report(
        tmp_path / "run", results=results, metrics=metrics, geometry=synthetic_geometry(), config=CONFIG
    )
    assert path == tmp_path / "run" / "report.html"
    page = path.read_text(encoding="utf-8")
    assert not list((tmp_path / "run").glob(".*tmp"))  # atomic write left nothing behind
    # plotly.js inlined exactly once, no CDN: works offline
    assert page.count(get_plotlyjs()[:300]) == 1
    assert "<script src=" not in page and 'src="http' not in page
    for sec in FIGURE_SECTIONS:
        body = _section(page, sec)
        assert "<h2>" in page[page.index(f'<section id="{sec}">') :][:400]
        assert f'id="plot-{sec}"' in body and "Plotly.newPlot" in body, sec
        assert "No data" not in body
    # the study header names the model, the scorer, the seeds and the held-out probes
    header = page[page.index('<header id="study">') : page.index("</header>")]
    for needle in ("probe-lens-tiny", "profanity 1.2.3", "[0, 1, 2]", "mass_mean"):
        assert needle in header, needle
    # results as an HTML table: mean ± 95% CI half-width over seeds, one row per cell
    table = _section(page, "fig-results-table")
    assert '<table border="0" class="dataframe results">' in table or 'class="dataframe results"' in table
    last = results[results["cell"] == "probe_sft_1"]["probe/auroc_frozen/tox_l1"].to_numpy()
    m, lo, hi = mean_ci(last)
    assert f"{m:.3f} ± {(hi - lo) / 2:.3f}" in table
    for cell in CELLS:
        assert f"<td>{cell}</td>" in table
    assert "<summary>All " in table and f"geometry/{HOOK}/resid_norm" in table  # the full table, folded
    # every plotly figure names the scorer in its title
    for sec in FIGURE_SECTIONS:
        assert "profanity 1.2.3" in _section(page, sec), sec


def test_report_handles_missing_data_gracefully(tmp_path, metrics):
    keep = [c for c in metrics.columns if not c.startswith(("drift/", "eval/"))]
    path = R.write_report(
        tmp_path, results=synthetic_results(metrics), metrics=metrics[keep], geometry=None, config={"model": "m"}
    )
    page = path.read_text(encoding="utf-8")
    for sec in ("fig-cosine-drift", "fig-toxicity", "fig-geometry"):
        assert "No data for this figure" in _section(page, sec), sec
        assert "Plotly.newPlot" not in _section(page, sec)
    assert "Plotly.newPlot" in _section(page, "fig-auroc")
    header = page[page.index('<header id="study">') : page.index("</header>")]
    assert "not given in config" in header  # seeds, held-out probes

    # nothing at all: every section says so, still one valid page
    empty = R.write_report(
        tmp_path, results=pd.DataFrame(), metrics=pd.DataFrame(), geometry={}, config={}, out_name="empty.html"
    )
    page = empty.read_text(encoding="utf-8")
    for sec in FIGURE_SECTIONS:
        assert "No data" in _section(page, sec)
    assert "No data for this table" in _section(page, "fig-results-table")


def test_report_names_the_scorer_the_runs_recorded(tmp_path, metrics):
    # a study configured with scorer="auto" names the scorer that actually ran
    page = R.write_report(
        tmp_path, results=synthetic_results(metrics), metrics=metrics, geometry=None, config={"scorer": "auto"}
    ).read_text(encoding="utf-8")
    header = page[page.index('<header id="study">') : page.index("</header>")]
    assert "<th>Toxicity scorer</th><td>profanity 1.2.3</td>" in header
    assert "scored by profanity 1.2.3" in _section(page, "fig-toxicity")
    results = synthetic_results(metrics).assign(scorer="detoxify 0.5.4")
    page = R.write_report(
        tmp_path,
        results=results,
        metrics=metrics.drop(columns=["eval/scorer"]),
        geometry=None,
        config={"scorer": "auto"},
    ).read_text(encoding="utf-8")
    assert "<th>Toxicity scorer</th><td>detoxify 0.5.4</td>" in page
    page = R.write_report(
        tmp_path, results=pd.DataFrame(), metrics=pd.DataFrame(), geometry=None, config={"scorer": "auto"}
    ).read_text(encoding="utf-8")
    assert "auto (actual scorer not recorded)" in page


def test_write_report_rejects_bad_arguments(tmp_path, metrics):
    kw = dict(results=pd.DataFrame(), metrics=metrics, geometry=None)
    with pytest.raises(TypeError, match="config must be a dict"):
        R.write_report(tmp_path, config=["model"], **kw)
    with pytest.raises(ValueError, match="plain file name"):
        R.write_report(tmp_path, config={}, out_name="../x.html", **kw)
    with pytest.raises(TypeError, match="metrics must be a pandas DataFrame"):
        R.write_report(tmp_path, config={}, results=pd.DataFrame(), metrics=[{}], geometry=None)
    with pytest.raises(ValueError, match="lacks column"):
        R.write_report(tmp_path, config={}, results=pd.DataFrame(), metrics=metrics.drop(columns="cell"), geometry=None)


# ---- figures one by one -----------------------------------------------------------------------


def _line(fig, name):
    traces = [t for t in fig.data if t.name == name]
    assert len(traces) == 1, [t.name for t in fig.data]
    return traces[0]


def test_auroc_figure_lines_are_seed_means_with_t_bands(metrics):
    fig = R.fig_auroc_vs_step(metrics, scorer="profanity")
    assert "profanity" in _title(fig)
    line = _line(fig, "probe_sft_1 · tox_l1")
    col = "probe/auroc_frozen/tox_l1"
    sub = metrics[(metrics["cell"] == "probe_sft_1")].dropna(subset=[col])
    expected = sub.groupby("step")[col].mean()
    np.testing.assert_allclose(line.x, expected.index.to_numpy())
    np.testing.assert_allclose(line.y, expected.to_numpy())
    # the band polygon: upper edge forward, lower edge backward, both from mean_ci
    band = [t for t in fig.data if t.legendgroup == line.name and t.fill == "toself"][0]
    for i, step in enumerate(expected.index):
        _, lo, hi = mean_ci(sub[sub["step"] == step][col].to_numpy())
        assert band.y[i] == pytest.approx(hi)
        assert band.y[len(band.y) - 1 - i] == pytest.approx(lo)
    # held-out and re-fit panels, whole ensembles only by default; base drawn as a reference line
    names = {t.name for t in fig.data}
    assert "probe_dpo_ens · held_l1" in names and f"classifier_dpo · {HOOK}" in names
    assert "probe_dpo_ens · ens" in names and "probe_dpo_ens · ens/m0" not in names
    ref = _line(fig, "base · tox_l1 (reference)")
    assert list(ref.x) == [0, 11] and ref.y[0] == ref.y[1]
    assert "probe_dpo_ens · ens/m0" in {t.name for t in R.fig_auroc_vs_step(metrics, members=True).data}


def test_cosine_drift_panels_per_probe_with_layers(metrics):
    fig = R.fig_cosine_drift(metrics, probe_hooks=CONFIG["probe_hooks"], scorer="profanity")
    titles = [a.text for a in fig.layout.annotations]
    for probe in ("tox_l1", "held_l1", "ens/m0", "ens/m1"):
        assert f"{probe} @ {HOOK}" in titles
    assert "profanity" in _title(fig)
    assert len(R.fig_cosine_drift(metrics, members=False).layout.annotations) == 2
    # the scorer comes from the metrics when not given
    assert "profanity" in _title(R.fig_cosine_drift(metrics))


def test_toxicity_figure_uses_sparse_eval_rows(metrics):
    fig = R.fig_toxicity_vs_step(metrics, scorer="profanity 1.2.3")
    assert "scored by profanity 1.2.3" in _title(fig)
    line = [t for t in fig.data if t.name == "classifier_dpo" and t.xaxis == "x"][0]
    assert list(line.x) == [0, 10]
    sub = metrics[(metrics["cell"] == "classifier_dpo") & (metrics["step"] == 10)]["eval/toxicity_rate"].dropna()
    assert line.y[1] == pytest.approx(sub.mean())
    assert len(fig.layout.annotations) == 2  # rate + expected max panels


def test_geometry_figures(metrics):
    fig = R.fig_geometry(synthetic_geometry(), scorer="profanity")
    assert "profanity" in _title(fig)
    # 2 cells x 1 hook rows, before/after x (dir, pc1) and (pc1, pc2) columns
    assert len(fig.layout.annotations) == 8
    means = [t for t in fig.data if t.name == "toxic class mean"]
    assert len(means) == 8
    geo = synthetic_geometry()["probe_dpo_ens"][HOOK]["before"]
    x = np.asarray(geo["x_dir"])[np.asarray(geo["label"]) == 1].mean()
    assert any(t.x[0] == pytest.approx(x) for t in means)
    with pytest.raises(R.NoFigureData):
        R.fig_geometry(None)
    with pytest.raises(ValueError, match="needs both 'before' and 'after'"):
        R.fig_geometry({"c": {HOOK: {"before": geo}}})
    with pytest.raises(ValueError, match="different lengths"):
        R.fig_geometry({"c": {HOOK: {"before": {**geo, "x_pc1": [0.0]}, "after": geo}}})

    step_fig = R.fig_geometry_vs_step(metrics, scorer="profanity")
    names = {t.name for t in step_fig.data}
    assert {"probe_sft_1 · toxic mean", "probe_sft_1 · clean mean", "probe_sft_1 · cos(diff, orig)"} <= names


def test_results_table_figure_and_summary(metrics):
    results = synthetic_results(metrics)
    summary = R.results_summary(results)
    assert summary["cell"].tolist()[0] == "base" and set(summary["cell"]) == set(CELLS)
    assert "seed_mean" not in summary.columns and "eval/toxicity_rate_mean" in summary.columns
    assert R.results_summary(summary) is summary  # already summarized
    fig = R.fig_results_table(results, scorer="profanity")
    assert "profanity" in _title(fig)
    header = list(fig.data[0].header.values)
    assert header[0] == "<b>cell</b>" and header[-1] == "<b>n_seeds</b>"
    assert header[1] == "<b>eval/<br>expected_max_toxicity</b>"  # eval/* first
    assert not any(h.startswith(("<b>geometry/", "<b>train/")) or "/m0" in h for h in header)  # headline metrics only
    assert len(R.fig_results_table(results, metrics=["train/loss"]).data[0].header.values) == 3


def test_figures_say_when_there_is_no_data(metrics):
    bare = metrics[["cell", "seed", "step", "train/loss"]]
    for fn in (R.fig_cosine_drift, R.fig_auroc_vs_step, R.fig_toxicity_vs_step, R.fig_geometry_vs_step):
        with pytest.raises(R.NoFigureData):
            fn(bare)
    with pytest.raises(R.NoFigureData, match="empty"):
        R.fig_auroc_vs_step(pd.DataFrame())


# ---- PNG export -------------------------------------------------------------------------------


def test_png_export_skips_with_one_log_line_when_backend_missing(tmp_path, metrics, monkeypatch, caplog):
    """A report without kaleido logs one line (issue 25: no RuntimeWarning with a source line after every report)."""
    monkeypatch.setattr(R, "_png_backend_problem", lambda: "the 'kaleido' package is not installed")
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger=R.__name__):
        warnings.simplefilter("error", RuntimeWarning)
        path = R.write_report(
            tmp_path,
            results=synthetic_results(metrics),
            metrics=metrics,
            geometry=None,
            config=CONFIG,
            png_dir=tmp_path / "assets",
        )
    skipped = [r.getMessage() for r in caplog.records if "PNG export skipped" in r.getMessage()]
    assert len(skipped) == 1 and "kaleido" in skipped[0] and "report.html is complete" in skipped[0]
    with pytest.warns(RuntimeWarning, match="PNG export skipped.*kaleido"):  # the function on its own still warns
        R.export_pngs({"x": R.fig_toxicity_vs_step(metrics)}, tmp_path / "assets")
    assert path.exists()
    assert not (tmp_path / "assets").exists() or not list((tmp_path / "assets").iterdir())


def test_png_export_skips_with_warning_when_rendering_fails(tmp_path, metrics, monkeypatch):
    pytest.importorskip("kaleido")
    import plotly.io as pio

    def broken(*a, **k):
        raise RuntimeError("no Chrome found")

    monkeypatch.setattr(R, "_png_backend_problem", lambda: None)
    monkeypatch.setattr(pio, "write_images", broken)
    with pytest.warns(RuntimeWarning, match="no Chrome found"):
        assert R.export_pngs({"toxicity_vs_step": R.fig_toxicity_vs_step(metrics)}, tmp_path) == []
    assert not list(tmp_path.iterdir())


def _chrome_available() -> bool:
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


@pytest.mark.skipif(not _chrome_available(), reason="PNG export needs kaleido and Chrome/Chromium")
def test_png_export_writes_pngs(tmp_path, metrics):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        written = R.export_pngs(
            {
                "toxicity_vs_step": R.fig_toxicity_vs_step(metrics, scorer="profanity"),
                "geometry": R.fig_geometry(synthetic_geometry()),
            },
            tmp_path / "assets",
            scale=1,
        )
    assert [p.name for p in written] == ["toxicity_vs_step.png", "geometry.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "assets").iterdir()) == ["geometry.png", "toxicity_vs_step.png"]
