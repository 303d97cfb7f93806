"""The report's later sections: training curves per cell, the curated yardsticks (lexical baselines beside
the probes, from ``yardsticks.json``), the instruments (causal role and evasion geometry of each measured
probe's direction, from the results' ``causal/*`` and ``evasion/*`` columns) and the probe-score attribution
of each probe cell against its control (from ``attribution.csv``).

Each figure is a plain function of a study's tables (re-exported by :mod:`probe_lens.plots`); each section
builder returns ``(id, title, body html, note)`` or None when the study has nothing for it, and
:func:`~probe_lens.experiments.report.write_report` places it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from probe_lens.experiments.score_attribution import ATTRIBUTION_CSV
from probe_lens.interventions.figures import attribution_grid
from probe_lens.training.metric_keys import CAUSAL, EVASION, MetricKey, tracked_auroc

__all__ = [
    "TRAINING_CURVES",
    "attribution_section",
    "fig_attribution_contrast",
    "fig_instruments",
    "fig_training_curves",
    "fig_yardsticks",
    "instruments_section",
    "training_section",
    "yardsticks_section",
]

Section = tuple[str, str, str, str]
"""(section id, title, body html, note)."""

TRAINING_CURVES: dict[str, str] = {
    "train/loss": "total loss",
    "train/lm_loss": "LM loss",
    "train/probe_prob": "probe term (mean P(positive))",
    "train/kl": "KL to the reference model",
    "rewards/margins": "DPO reward margin",
    "rewards/accuracies": "DPO reward accuracy",
}
"""Training-row metrics drawn per cell, in this order (any other ``train/*`` term follows)."""
_NOT_CURVES = {"train/lr", "train/grad_norm", "train/step_seconds"}
_BASELINES = {"classifier": "output classifier", "lexicon": "lexicon hits", "bow": "bag of words", "length": "length"}
_YARDSTICK_SETS = ("curated", "curated_hard")
_INSTRUMENT_STATS = {
    CAUSAL: ("steer_slope", "ablation_effect"),
    EVASION: ("share_on_probe", "off_probe", "n_components", "angle_deg"),
}


def _cell_colors(cells: Sequence[str]) -> dict[str, str]:
    return {c: qualitative.Plotly[i % len(qualitative.Plotly)] for i, c in enumerate(cells)}


def _style(fig: go.Figure, title: str, **layout: Any) -> go.Figure:
    fig.update_layout(template="plotly_white", title=title, **layout)
    fig.update_annotations(font_size=11)
    return fig


def _div(fig: go.Figure, sec_id: str) -> str:
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"plot-{sec_id}",
        config={"responsive": True, "displaylogo": False},
    )


def _table(df: pd.DataFrame) -> str:
    return f'<div class="scroll">{df.to_html(index=False, classes="results", border=0, escape=True, na_rep="–")}</div>'


# ---- training curves ---------------------------------------------------------------------------
def _curve_columns(metrics: pd.DataFrame) -> list[str]:
    def holds(c: str) -> bool:
        return c in metrics.columns and pd.to_numeric(metrics[c], errors="coerce").notna().any()

    named = [c for c in TRAINING_CURVES if holds(c)]
    others = sorted(c for c in metrics.columns if c.startswith("train/") and c not in TRAINING_CURVES and holds(c))
    return named + [c for c in others if c not in _NOT_CURVES]


def fig_training_curves(metrics: pd.DataFrame) -> go.Figure:
    """One panel per training metric (loss, LM loss, probe term, KL, DPO rewards), one line per cell: the
    mean over seeds at each step, with the seeds' range shaded when there are several.

    ``metrics``: a study's rows (``Study.metrics()``: ``cell``, ``seed``, ``step`` and the logged keys).
    Raises ValueError when no training row holds a value (a study of ``base`` only).
    """
    if not isinstance(metrics, pd.DataFrame) or not {"cell", "seed", "step"} <= set(metrics.columns):
        raise ValueError("metrics must be a DataFrame with cell, seed and step columns (Study.metrics())")
    cols = _curve_columns(metrics)
    if not cols:
        raise ValueError("no training row holds a loss: the study trained no cell")
    ncols = min(3, len(cols))
    nrows = -(-len(cols) // ncols)
    titles = [TRAINING_CURVES.get(c, c) for c in cols]
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, vertical_spacing=0.16)
    cells = [c for c in dict.fromkeys(metrics["cell"].astype(str)) if c != "base"]
    colors = _cell_colors(cells)
    legend: set[str] = set()  # one legend entry per cell
    for i, col in enumerate(cols):
        r, c = divmod(i, ncols)
        rows = metrics[["cell", "seed", "step", col]].dropna(subset=[col])
        for cell in cells:
            d = rows[rows["cell"].astype(str) == cell]
            if d.empty:
                continue
            per_step = d.groupby("step")[col].agg(["mean", "min", "max", "count"]).reset_index()
            if d["seed"].nunique() > 1:
                fig.add_trace(
                    go.Scatter(
                        x=np.r_[per_step["step"], per_step["step"][::-1]],
                        y=np.r_[per_step["max"], per_step["min"][::-1]],
                        fill="toself",
                        fillcolor=colors[cell],
                        opacity=0.15,
                        line={"width": 0},
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=cell,
                    ),
                    row=r + 1,
                    col=c + 1,
                )
            fig.add_trace(
                go.Scatter(
                    x=per_step["step"],
                    y=per_step["mean"],
                    mode="lines+markers",
                    name=cell,
                    legendgroup=cell,
                    showlegend=cell not in legend,
                    line={"color": colors[cell]},
                    customdata=per_step["count"],
                    hovertemplate=f"{cell}<br>step %{{x}}<br>{col} %{{y:.4g}} (mean of %{{customdata}} seeds)<extra></extra>",
                ),
                row=r + 1,
                col=c + 1,
            )
            legend.add(cell)
        fig.update_xaxes(title_text="step", tickformat="d", row=r + 1, col=c + 1)
    return _style(fig, "Training curves per cell (mean over seeds; band: the seeds' range)", height=320 * nrows + 80)


def training_section(metrics: pd.DataFrame, pngs: dict[str, go.Figure]) -> Section | None:
    """The training-curves section (``fig-training``), or None when no cell trained."""
    try:
        fig = fig_training_curves(metrics)
    except ValueError:
        return None
    pngs["training_curves"] = fig
    note = "Each training row logged by the trainer: the objective's terms per optimiser step, one line per cell."
    return "fig-training", "Training curves", _div(fig, "fig-training"), note


# ---- yardsticks --------------------------------------------------------------------------------
def _probe_aurocs(results: pd.DataFrame, probes: Sequence[str], which: str) -> pd.DataFrame:
    """Long rows (cell, probe, mean, low, high) of each probe's AUROC on ``which``: mean and range over seeds."""
    rows = []
    for p in probes:
        col = str(tracked_auroc(which, p))
        if col not in results.columns:
            continue
        g = results.groupby("cell", sort=False)[col].agg(["mean", "min", "max"])
        rows += [{"cell": c, "probe": p, "mean": v["mean"], "low": v["min"], "high": v["max"]} for c, v in g.iterrows()]
    return pd.DataFrame(rows, columns=["cell", "probe", "mean", "low", "high"]).dropna(subset=["mean"])


def fig_yardsticks(records: Mapping[str, Mapping[str, Any]], results: pd.DataFrame, probes: Sequence[str]) -> go.Figure:
    """Per curated set, the lexical baselines' AUROC (grey diamonds) beside each probe's AUROC in each cell
    (mean over seeds, bar: the seeds' range), on the same rows.

    ``records``: ``yardsticks.json`` (``{set: {"rows", "positive", "baselines": {name: auroc}}}``);
    ``results``: a study's results (one row per cell and seed); ``probes``: the probes to show.
    """
    sets = [s for s in _YARDSTICK_SETS if s in records] + [s for s in records if s not in _YARDSTICK_SETS]
    if not sets:
        raise ValueError("no curated set in the yardsticks record")
    fig = make_subplots(
        rows=1,
        cols=len(sets),
        shared_yaxes=True,
        subplot_titles=[f"{s.replace('_', '-')} ({records[s].get('rows', '?')} rows)" for s in sets],
    )
    cells = list(dict.fromkeys(results["cell"].astype(str))) if "cell" in results else []
    colors = _cell_colors(cells)
    for k, which in enumerate(sets, start=1):
        base = records[which].get("baselines", {})
        names = [f"baseline: {_BASELINES.get(b, b)}" for b in base]
        fig.add_trace(
            go.Scatter(
                x=list(base.values()),
                y=names,
                mode="markers",
                marker={"symbol": "diamond", "size": 11, "color": "#777"},
                name="lexical baseline",
                legendgroup="baseline",
                showlegend=k == 1,
            ),
            row=1,
            col=k,
        )
        aurocs = _probe_aurocs(results, probes, which)
        for cell in cells:
            d = aurocs[aurocs["cell"] == cell]
            if d.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=d["mean"],
                    y=[f"probe: {p}" for p in d["probe"]],
                    error_x={
                        "type": "data",
                        "symmetric": False,
                        "array": d["high"] - d["mean"],
                        "arrayminus": d["mean"] - d["low"],
                    },
                    mode="markers",
                    marker={"size": 9, "color": colors[cell]},
                    name=cell,
                    legendgroup=cell,
                    showlegend=k == 1,
                ),
                row=1,
                col=k,
            )
        fig.add_vline(x=0.5, line={"color": "#bbb", "dash": "dot"}, row=1, col=k)
        fig.update_xaxes(title_text="AUROC", range=[0, 1.02], row=1, col=k)
    n_rows = len({*(f"baseline: {b}" for b in _BASELINES.values()), *(f"probe: {p}" for p in probes)})
    return _style(
        fig,
        "Curated yardsticks: lexical baselines beside the probes, on the same rows",
        height=max(380, 34 * n_rows + 160),
    )


def _baselines_table(records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for which, rec in records.items():
        b = rec.get("baselines", {})
        row = {
            "set": which.replace("_", "-"),
            "rows (positive)": f"{rec.get('rows', '?')} ({rec.get('positive', '?')})",
        }
        row.update({h: f"{b[k]:.3f}" if k in b else "–" for k, h in _BASELINES.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def yardsticks_section(
    run_dir: Path, results: pd.DataFrame, probes: Sequence[str], pngs: dict[str, go.Figure]
) -> Section | None:
    """The yardsticks section (``fig-yardsticks``) from ``run_dir/yardsticks.json``; None without the file."""
    from probe_lens.experiments.run_folder import read_derived_json
    from probe_lens.experiments.yardsticks import YARDSTICKS_JSON

    records = read_derived_json(run_dir / YARDSTICKS_JSON)
    if not records:
        return None
    body = _table(_baselines_table(records))
    try:
        fig = fig_yardsticks(records, results, probes)
    except ValueError:
        fig = None
    if fig is not None:
        pngs["yardsticks"] = fig
        body += _div(fig, "fig-yardsticks")
    note = (
        "AUROC of four lexical baselines on each curated set (the output classifier, a count of the behaviour's "
        "word list, a bag-of-words logistic regression fit on the set leaving one topic out, text length) beside "
        "the probes' AUROC on the same rows. A probe below a baseline reads that set no better than the "
        "baseline's words; curated-hard holds only rows a word-counter gets wrong or cannot see."
    )
    return "fig-yardsticks", "Yardsticks: what a word-counter scores on the same rows", body, html.escape(note)


# ---- instruments -------------------------------------------------------------------------------
def _instrument_long(results: pd.DataFrame) -> pd.DataFrame:
    """Long rows (family, stat, probe, on_base, cell, value) of the ``causal/*`` and ``evasion/*`` columns,
    mean over seeds."""
    rows = []
    for col in results.columns:
        if not isinstance(col, str) or not col.startswith((f"{CAUSAL}/", f"{EVASION}/")):
            continue
        key = MetricKey.parse(col)
        if key.interval is not None:
            continue
        base = key.family == CAUSAL and key.on_base
        stat = key.name.removesuffix("_base") if base else key.name
        if stat not in _INSTRUMENT_STATS.get(key.family, ()):
            continue
        for cell, v in results.groupby("cell", sort=False)[col].mean().items():
            rows.append(
                {"family": key.family, "stat": stat, "probe": key.subject, "on_base": base, "cell": cell, "value": v}
            )
    return pd.DataFrame(rows, columns=["family", "stat", "probe", "on_base", "cell", "value"]).dropna(subset=["value"])


def fig_instruments(results: pd.DataFrame) -> go.Figure:
    """One panel per instrument statistic (steering slope, ablation effect, share of the class signal on the
    probe's direction, its size off the direction, principal components, angle to a re-fit probe), bars per
    cell and measured probe (mean over seeds); causal panels mark the base model's value with a black tick.

    ``results``: a study's results with ``causal/<stat>[_base]/<probe>`` and ``evasion/<stat>/<probe>`` columns.
    """
    long = _instrument_long(results)
    if long.empty:
        raise ValueError("the results hold no causal/* or evasion/* column: no instrument was measured")
    stats = [
        (f, s) for f, ss in _INSTRUMENT_STATS.items() for s in ss if ((long["family"] == f) & (long["stat"] == s)).any()
    ]
    ncols = min(3, len(stats))
    nrows = -(-len(stats) // ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=[s for _, s in stats], vertical_spacing=0.22)
    cells = list(dict.fromkeys(long["cell"].astype(str)))
    colors = _cell_colors(cells)
    for i, (family, stat) in enumerate(stats):
        r, c = divmod(i, ncols)
        d = long[(long["family"] == family) & (long["stat"] == stat)]
        own, base = d[~d["on_base"]], d[d["on_base"]]
        for cell in cells:
            e = own[own["cell"] == cell]
            fig.add_trace(
                go.Bar(
                    x=e["probe"],
                    y=e["value"],
                    name=cell,
                    legendgroup=cell,
                    showlegend=i == 0,
                    marker_color=colors[cell],
                ),
                row=r + 1,
                col=c + 1,
            )
        if not base.empty:
            b = base.groupby("probe", sort=False)["value"].mean()
            fig.add_trace(
                go.Scatter(
                    x=list(b.index),
                    y=list(b.values),
                    mode="markers",
                    marker={"symbol": "line-ew-open", "size": 40, "color": "black", "line": {"width": 3}},
                    name="base model",
                    legendgroup="base model",
                    showlegend=not any(t.name == "base model" for t in fig.data),
                ),
                row=r + 1,
                col=c + 1,
            )
    fig.update_layout(barmode="group")
    return _style(
        fig,
        "Instruments per cell: the probe direction's causal role and the geometry of evasion",
        height=330 * nrows + 90,
    )


def instruments_section(results: pd.DataFrame, pngs: dict[str, go.Figure]) -> Section | None:
    """The instruments section (``fig-instruments``), or None when the study measured none."""
    try:
        fig = fig_instruments(results)
    except ValueError:
        return None
    pngs["instruments"] = fig
    note = (
        "steer_slope: the behaviour rate per unit step along the probe's direction; ablation_effect: the rate with "
        "the direction projected out minus without (bars: the cell's model; black tick: the base model, same "
        "prompts and sampling seed). share_on_probe: share of the class-mean difference along the probe's direction; "
        "off_probe: its size orthogonal to it; n_components: principal components holding 90% of the "
        "between-class variance; angle_deg: to a probe re-fit on the cell's model. Means over seeds."
    )
    return (
        "fig-instruments",
        "Instruments: does the model still use the probe's direction?",
        _div(fig, "fig-instruments"),
        html.escape(note),
    )


# ---- probe-score attribution -------------------------------------------------------------------
_ATTRIBUTION_PANELS = ("base", "cell_gap", "control_gap", "difference")


def fig_attribution_contrast(contrasts: pd.DataFrame, cell: str, control: str | None = None) -> go.Figure:
    """Layer x component heatmaps of each component's share of a probe's positive-minus-negative logit gap, one
    row per measured probe: the base model, ``cell`` and ``control`` (means over seeds), and the paired
    difference ``cell`` − ``control`` (mean over seeds of each seed's difference; its own colour scale).

    ``contrasts``: a study's ``attribution.csv``
    (:func:`~probe_lens.experiments.score_attribution.attribution_contrasts`); ``control``: default the
    first one paired with ``cell``.
    """
    d = contrasts[contrasts["cell"] == cell]
    control = control if control is not None else (str(d["control"].iloc[0]) if len(d) else None)
    d = d[d["control"] == control]
    if d.empty:
        raise ValueError(f"no attribution of cell {cell!r} against control {control!r}")
    probes = list(dict.fromkeys(d["probe"]))
    titles = ("base model", cell, control, f"{cell} − {control}")
    fig = make_subplots(
        rows=len(probes),
        cols=4,
        subplot_titles=[f"{p}: {t}" for p in probes for t in titles],
        horizontal_spacing=0.04,
        vertical_spacing=0.3 / len(probes),
    )
    for r, probe in enumerate(probes, start=1):
        g = d[d["probe"] == probe]
        for c, column in enumerate(_ATTRIBUTION_PANELS, start=1):
            grid, rows, cols = attribution_grid(g, column)
            axis = "coloraxis2" if column == "difference" else "coloraxis"
            fig.add_trace(go.Heatmap(z=grid, x=cols, y=rows, coloraxis=axis, name=f"{probe}: {titles[c - 1]}"), r, c)
    level = float(np.nanmax(np.abs(d[list(_ATTRIBUTION_PANELS[:3])].to_numpy(float)))) or 1.0
    diff = float(np.nanmax(np.abs(d["difference"].to_numpy(float)))) or 1.0
    fig.update_layout(
        coloraxis={"colorscale": "RdBu_r", "cmin": -level, "cmax": level,
                   "colorbar": {"title": "gap", "x": 1.02, "y": 0.78, "len": 0.45}},
        coloraxis2={"colorscale": "PuOr_r", "cmin": -diff, "cmax": diff,
                    "colorbar": {"title": "cell − control", "x": 1.02, "y": 0.22, "len": 0.45}},
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    return _style(
        fig,
        f"Probe-score attribution: {cell} vs {control} (positive-minus-negative logit gap per component, mean over seeds)",
        height=320 * len(probes) + 110,
    )


def attribution_section(run_dir: Path, pngs: dict[str, go.Figure]) -> Section | None:
    """The attribution section (``fig-attribution``): one figure per probe cell and control in
    ``run_dir/attribution.csv``, or None when the study attributed nothing."""
    path = Path(run_dir) / ATTRIBUTION_CSV
    if not path.exists():
        return None
    contrasts = pd.read_csv(path)
    pairs = list(dict.fromkeys(zip(contrasts["cell"], contrasts["control"], strict=True)))
    if not pairs:
        return None
    body = ""
    for cell, control in pairs:
        fig = fig_attribution_contrast(contrasts, cell, control)
        pngs[f"attribution_{cell}_vs_{control}"] = fig
        body += _div(fig, f"fig-attribution-{cell}-{control}")
    note = (
        "Each component's direct contribution (embedding; every attention head, H0..; the attention output bias, "
        "b_O; the MLP, out) to the probe's logit, mean on positive minus mean on negative curated rows (the same "
        "rows in every cell and seed). Left to right: the base model, the probe cell, its control, and their "
        "difference paired by seed (mean over seeds; its own colour scale). Direct effects only: what a head "
        "writes and a later MLP reads is credited to the MLP. instruments.md lists the components that moved most "
        "with how many seeds agree in sign."
    )
    return (
        "fig-attribution",
        "Attribution: which components moved the probe's score gap?",
        body,
        html.escape(note),
    )
