"""The drift report: plotly figures of a study's telemetry, and one self-contained ``report.html``.

Inputs (see :func:`write_report`):

* ``metrics``: every telemetry/eval row of every run, with columns ``cell`` (method, e.g.
  ``"probe_dpo_ens"`` or ``"base"``), ``seed``, ``step`` and the stable metric names
  (``probe/auroc_frozen/<probe>``, ``probe/auroc_heldout/<probe>``, ``probe/auroc_retrained/<hook>``,
  ``drift/cosine/<probe>``, ``geometry/<hook>/<stat>``, ``eval/toxicity_rate``, ...), NaN where a
  row did not measure a metric. The behaviour's keys and words (``eval/negativity_rate``, "negative")
  come from ``behaviour=`` (a :class:`~probe_lens.behaviours.Behaviour`, its ``describe()`` record or
  name; None: toxicity) or, in :func:`write_report`, from ``config["behaviour"]``.
* ``results``: final numbers, one row per (cell, seed), or a :func:`~probe_lens.experiments.stats.summarize` table.
* ``geometry``: optional 2-D projections of drift-set activations before and after training.

Each ``fig_*`` function returns a ``plotly.graph_objects.Figure`` (reusable in notebooks) and raises
:class:`NoFigureData` when its input holds nothing to draw; the report then says so in that section.
Lines are means over seeds; shaded bands are Student-t 95% CIs (no band with a single seed). A cell
measured at a single step only (e.g. ``base``) is drawn as a dotted horizontal reference line.
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from probe_lens._io import atomic_write_text
from probe_lens.behaviours import BehaviourNames
from probe_lens.experiments.stats import format_cells, summarize
from probe_lens.training import metric_keys as K
from probe_lens.training.metric_keys import MetricKey

log = logging.getLogger(__name__)

__all__ = [
    "NoFigureData",
    "fig_auroc_vs_step",
    "fig_contrasts",
    "fig_tracked_auroc_vs_step",
    "fig_cosine_drift",
    "fig_geometry",
    "fig_geometry_vs_step",
    "fig_monitor_split",
    "fig_rate_vs_step",
    "fig_results_table",
    "fig_toxicity_vs_step",
    "headline_metrics",
    "rate_metrics",
    "results_summary",
    "write_report",
]

AUROC_KINDS = (
    ("frozen", "trained-against (frozen)"),
    ("heldout", "held-out"),
    ("retrained", "re-fit on trained model (base continuations, teacher-forced)"),
)
TOXICITY_METRICS = (
    ("eval/toxicity_rate", "toxicity rate (share >= 0.5)"),
    ("eval/expected_max_toxicity", "expected max toxicity"),
    ("eval/toxicity_probability", "toxicity probability (any of k >= 0.5)"),
)
"""``rate_metrics()`` of the toxicity behaviour (kept for callers of the old name)."""


def rate_metrics(behaviour: Any = None) -> tuple[tuple[str, str], ...]:
    """``(metric key, panel title)`` of the behaviour's rate metrics (None: toxicity, :data:`TOXICITY_METRICS`)."""
    n = BehaviourNames.of(behaviour)
    k, t = n.metric_keys, f"{n.threshold:g}"
    return (
        (k["rate"], f"{n.noun} rate (share >= {t})"),
        (k["expected_max"], f"expected max {n.noun}"),
        (k["probability"], f"{n.noun} probability (any of k >= {t})"),
    )


DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_BAND_ALPHA = 0.15


class NoFigureData(ValueError):
    """The input holds nothing this figure can draw (e.g. no ``drift/cosine/*`` column)."""


# ---- data helpers -------------------------------------------------------------------------


def _check_metrics(metrics: Any) -> pd.DataFrame:
    if not isinstance(metrics, pd.DataFrame):
        raise TypeError(f"metrics must be a pandas DataFrame of telemetry rows, got {type(metrics).__name__}")
    if len(metrics) == 0:
        raise NoFigureData("the metrics table is empty")
    missing = [c for c in ("cell", "step") if c not in metrics.columns]
    if missing:
        raise ValueError(
            f"metrics lacks column(s) {missing}; add 'cell' (method name), 'seed' and 'step' to each telemetry row"
        )
    if "seed" not in metrics.columns:
        metrics = metrics.assign(seed=0)
    return metrics


def _keys(metrics: pd.DataFrame) -> dict[str, MetricKey]:
    """Every metric column of ``metrics`` with its parsed key."""
    return {c: MetricKey.parse(c) for c in metrics.columns if isinstance(c, str) and c}


def _holds_values(metrics: pd.DataFrame, column: str) -> bool:
    return column in metrics.columns and bool(pd.to_numeric(metrics[column], errors="coerce").notna().any())


def _columns(metrics: pd.DataFrame, family: str, name: str | None = None, *, members: bool = True) -> list[str]:
    """The columns holding a value whose key has a subject, family ``family`` and (given) name ``name``."""
    cols = [
        c
        for c, k in _keys(metrics).items()
        if k.family == family and k.subject is not None and k.interval is None and (name is None or k.name == name)
    ]
    cols = [c for c in cols if _holds_values(metrics, c)]
    if not members:
        cols = [c for c in cols if MetricKey.parse(c).member is None]
    return cols


def _cell_order(cells: Iterable[str]) -> list[str]:
    cells = sorted(set(map(str, cells)))
    return (["base"] if "base" in cells else []) + [c for c in cells if c != "base"]


def _colors(cells: Sequence[str]) -> dict[str, str]:
    palette = [c for c in qualitative.Plotly]
    out, i = {}, 0
    for c in cells:
        if c == "base":
            out[c] = "#555555"
        else:
            out[c] = palette[i % len(palette)]
            i += 1
    return out


def _rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _curve(metrics: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per (cell, step): mean over seeds and CI of ``col`` (repeated rows of one seed averaged first)."""
    d = metrics[["cell", "seed", "step"]].copy()
    d["value"] = pd.to_numeric(metrics[col], errors="coerce")
    d["step"] = pd.to_numeric(d["step"], errors="coerce")
    d = d.dropna(subset=["value", "step"])
    if d.empty:
        return pd.DataFrame(columns=["cell", "step", "value_mean", "value_ci_low", "value_ci_high", "n_seeds"])
    d["cell"] = d["cell"].astype(str)
    d = d.groupby(["cell", "seed", "step"], as_index=False)["value"].mean()
    return summarize(d, ["cell", "step"], ["value"]).sort_values(["cell", "step"])


def _scorer_name(metrics: pd.DataFrame | None, scorer: str | None) -> str:
    if scorer:
        return str(scorer)
    if metrics is not None and "eval/scorer" in metrics.columns:
        names = sorted({str(v) for v in metrics["eval/scorer"].dropna()})
        if names:
            return ", ".join(names)
    return "scorer not recorded"


def _add_curves(
    fig: go.Figure,
    curve: pd.DataFrame,
    *,
    row: int,
    col: int,
    colors: Mapping[str, str],
    label: str | None,
    dash: str,
    shown: set[str],
    x_range: tuple[float, float],
    bounds: tuple[float, float] | None = None,
) -> None:
    """One mean line (+ CI band) per cell into subplot (row, col).

    ``bounds`` clips the drawn band to the metric's range (a t-interval over 2 seeds can reach
    cosines above 1); the hover text keeps the unclipped interval.
    """
    for cell in _cell_order(curve["cell"]):
        c = curve[curve["cell"] == cell]
        color = colors[cell]
        name = cell if label is None else f"{cell} · {label}"
        x = c["step"].to_numpy(dtype=float)
        mean, lo, hi = (c[f"value_{s}"].to_numpy(dtype=float) for s in ("mean", "ci_low", "ci_high"))
        n = c["n_seeds"].to_numpy()
        reference = len(x) == 1 and x_range[1] > x_range[0]
        if reference:  # measured once (e.g. the base model): a horizontal reference line
            x, mean, lo, hi, n = (
                np.array([x_range[0], x_range[1]]),
                np.repeat(mean, 2),
                np.repeat(lo, 2),
                np.repeat(hi, 2),
                np.repeat(n, 2),
            )
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.sum() >= 1:
            bx, bl, bh = x[ok], lo[ok], hi[ok]
            if len(bx) == 1:  # a lone CI: draw it as an error bar-like sliver
                bx, bl, bh = np.repeat(bx, 2), np.repeat(bl, 2), np.repeat(bh, 2)
            if bounds is not None:
                bl, bh = np.clip(bl, *bounds), np.clip(bh, *bounds)
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([bx, bx[::-1]]),
                    y=np.concatenate([bh, bl[::-1]]),
                    fill="toself",
                    mode="lines",
                    fillcolor=_rgba(color, _BAND_ALPHA),
                    line=dict(width=0),
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=name,
                ),
                row=row,
                col=col,
            )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mean,
                mode="lines" if reference else "lines+markers",
                name=name + (" (reference)" if reference else ""),
                legendgroup=name,
                showlegend=name not in shown,
                line=dict(color=color, dash="dot" if reference else dash, width=2),
                marker=dict(size=5),
                customdata=np.stack([lo, hi, n], axis=-1),
                hovertemplate=f"{html.escape(name)}<br>step %{{x}}<br>mean %{{y:.4f}}"
                "<br>95% CI [%{customdata[0]:.4f}, %{customdata[1]:.4f}]<br>seeds %{customdata[2]}<extra></extra>",
            ),
            row=row,
            col=col,
        )
        shown.add(name)


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _x_range(metrics: pd.DataFrame) -> tuple[float, float]:
    steps = pd.to_numeric(metrics["step"], errors="coerce").dropna()
    return (float(steps.min()), float(steps.max())) if len(steps) else (0.0, 0.0)


def _title(
    text: str, scorer: str, how: str = "lines: mean over seeds, bands: 95% CI", behaviour: Any = None
) -> dict[str, Any]:
    noun = html.escape(BehaviourNames.of(behaviour).noun)
    return dict(text=f"{text}<br><sup>{noun} labels/scores: {html.escape(scorer)} · {how}</sup>", x=0.01)


# ---- figures ------------------------------------------------------------------------------


def _style(fig: go.Figure, *, legend: str | None = None, **layout: Any) -> go.Figure:
    """The report's look (plotly_white), the legend's title when given, and ``layout``."""
    fig.update_layout(template="plotly_white", **({"legend": {"title": legend}} if legend else {}), **layout)
    return fig


def _trains_against(cell: str, probe: str, trained_against: Mapping[str, Sequence[str]]) -> bool:
    """Whether ``cell`` trains against ``probe`` (an ensemble member ``<ens>/m<i>`` counts as its ensemble)."""
    return any(probe == t or probe.startswith(f"{t}/") for t in trained_against.get(cell) or ())


def _control_band(metrics: pd.DataFrame, col: str, controls: Sequence[str]) -> pd.DataFrame:
    """Per step, the min and max of ``col`` over the control cells and their seeds."""
    d = metrics[metrics["cell"].astype(str).isin(controls)][["step"]].copy()
    d["value"] = pd.to_numeric(metrics.loc[d.index, col], errors="coerce")
    d["step"] = pd.to_numeric(d["step"], errors="coerce")
    return d.dropna().groupby("step")["value"].agg(["min", "max"]).reset_index()


def _add_control_band(fig: go.Figure, band: pd.DataFrame, *, row: int, col: int, first: bool) -> None:
    x = band["step"].to_numpy(dtype=float)
    lo, hi = band["min"].to_numpy(dtype=float), band["max"].to_numpy(dtype=float)
    if len(x) == 1:
        x, lo, hi = np.repeat(x, 2), np.repeat(lo, 2), np.repeat(hi, 2)
    fig.add_trace(
        go.Scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([hi, lo[::-1]]),
            fill="toself",
            mode="lines",
            fillcolor="rgba(120,120,120,0.18)",
            line=dict(width=0),
            name="control cells (min–max)",
            legendgroup="control band",
            showlegend=first,
            hoverinfo="skip",
        ),
        row=row,
        col=col,
    )


def _integer_steps(fig: go.Figure, x_range: tuple[float, float]) -> None:
    """Step axes tick on whole steps (no half steps)."""
    span = max(1.0, x_range[1] - x_range[0])
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(span / 8)), tickformat="d")


def _cell_labels(cells: Sequence[str], trained_against: Mapping[str, Sequence[str]]) -> dict[str, str]:
    return {c: f"{c} (trains against {', '.join(trained_against[c])})" if trained_against.get(c) else c for c in cells}


def fig_cosine_drift(
    metrics: pd.DataFrame,
    *,
    probe_hooks: Mapping[str, str] | None = None,
    scorer: str | None = None,
    members: bool = True,
    behaviour: Any = None,
    trained_against: Mapping[str, Sequence[str]] | None = None,
) -> go.Figure:
    """Cosine between each probe's original direction and a probe re-fit at its hook, vs step.

    One panel per probe (``drift/cosine/<probe>`` column), one line per cell. ``probe_hooks``
    (``{probe name: hook}``) adds the layer to each panel title; ensemble members ``<name>/m<i>``
    use their ensemble's entry. ``members=False`` drops ensemble members.

    ``trained_against`` (``{cell: [probe, ...]}``) marks the cells that train against a probe (legend text;
    a thick solid line in that probe's panel, dashed elsewhere) and draws the control band: the min-max of
    the probe's cosine in the cells that train against no probe (``base`` aside: the classifier controls).
    The y axis runs from min(0.9, the lowest value shown) to 1, so refitting noise does not look like collapse.
    """
    metrics = _check_metrics(metrics)
    cols = _columns(metrics, "drift", "cosine", members=members)
    if not cols:
        raise NoFigureData("no drift/cosine/<probe> column holds a value")
    probe_hooks, against = dict(probe_hooks or {}), dict(trained_against or {})
    titles = []
    for c in cols:
        key = MetricKey.parse(c)
        probe = str(key.subject)
        hook = probe_hooks.get(probe) or probe_hooks.get(str(key.probe))
        titles.append(f"{probe} @ {hook}" if hook else probe)
    rows, ncols = _grid(len(cols))
    fig = make_subplots(rows=rows, cols=ncols, subplot_titles=titles, shared_xaxes=False)
    cells = _cell_order(metrics["cell"].astype(str))
    colors, labels = _colors(cells), _cell_labels(cells, against)
    controls = [c for c in cells if c in against and not against[c] and c != "base"]
    shown: set[str] = set()
    xr = _x_range(metrics)
    for i, c in enumerate(cols):
        r, k = divmod(i, ncols)
        probe = str(MetricKey.parse(c).subject)
        low = 0.9
        band = _control_band(metrics, c, controls) if controls else pd.DataFrame()
        if len(band):
            _add_control_band(fig, band, row=r + 1, col=k + 1, first=i == 0)
            low = min(low, float(band["min"].min()))
        curve = _curve(metrics, c)
        for cell in _cell_order(curve["cell"]):
            one = curve[curve["cell"] == cell].assign(cell=labels.get(cell, cell))
            trains = _trains_against(cell, probe, against)
            _add_curves(
                fig,
                one,
                row=r + 1,
                col=k + 1,
                colors={labels.get(cell, cell): colors[cell]},
                label=None,
                dash="solid" if trains or not against else "dash",
                shown=shown,
                x_range=xr,
                bounds=(-1.0, 1.0),
            )
            low = min(low, float(np.nanmin(one["value_mean"].to_numpy(dtype=float), initial=1.0)))
        fig.update_yaxes(
            title_text="cosine" if k == 0 else None, range=[max(-1.0, low - 0.01), 1.005], row=r + 1, col=k + 1
        )
        fig.update_xaxes(title_text="step" if r == rows - 1 else None, row=r + 1, col=k + 1)
    _integer_steps(fig, xr)
    how = "lines: mean over seeds, bands: 95% CI" + (", grey: control cells (min–max)" if controls else "")
    return _style(
        fig,
        title=_title(
            "Probe-direction drift: cos(original direction, direction re-fit on the current model)",
            _scorer_name(metrics, scorer),
            how=how,
            behaviour=behaviour,
        ),
        height=320 * rows + 120,
        legend="cell",
    )


def fig_auroc_vs_step(
    metrics: pd.DataFrame, *, scorer: str | None = None, members: bool = False, behaviour: Any = None
) -> go.Figure:
    """AUROC vs step of the trained-against (frozen), held-out and re-fit probes; one panel each.

    One line per (cell, probe or hook), mean over seeds with a CI band. Ensemble members are left
    out unless ``members=True`` (the whole ensemble's AUROC is always shown).
    """
    metrics = _check_metrics(metrics)
    probe_cols = _columns(metrics, "probe", members=members)
    per_kind = {kind: [c for c in probe_cols if MetricKey.parse(c).auroc_kind == kind] for kind in K.AUROC_KINDS}
    if not any(per_kind.values()):
        raise NoFigureData("no probe/auroc_frozen|heldout|retrained/* column holds a value")
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for _, t in AUROC_KINDS], shared_yaxes=True)
    colors = _colors(_cell_order(metrics["cell"].astype(str)))
    shown: set[str] = set()
    xr = _x_range(metrics)
    for k, (kind, _) in enumerate(AUROC_KINDS):
        cols = per_kind[kind]
        if not cols:
            fig.add_annotation(
                text="no data", showarrow=False, xref=f"x{k + 1} domain", yref=f"y{k + 1} domain", x=0.5, y=0.5
            )
        for j, c in enumerate(cols):
            _add_curves(
                fig,
                _curve(metrics, c),
                row=1,
                col=k + 1,
                colors=colors,
                label=MetricKey.parse(c).subject,
                dash=DASHES[j % len(DASHES)],
                shown=shown,
                x_range=xr,
                bounds=(0.0, 1.0),
            )
        fig.update_xaxes(title_text="step", row=1, col=k + 1)
    fig.update_yaxes(title_text="AUROC (drift set)", row=1, col=1)
    fig.add_hline(y=0.5, line=dict(color="#999", width=1, dash="dot"))
    return _style(
        fig,
        title=_title(
            "Do the probes still work? AUROC on the drift set vs training step",
            _scorer_name(metrics, scorer),
            behaviour=behaviour,
        ),
        height=520,
        legend="cell · probe / hook",
    )


def fig_tracked_auroc_vs_step(
    metrics: pd.DataFrame,
    *,
    probes: Sequence[str] | None = None,
    scorer: str | None = None,
    trained_against: Mapping[str, Sequence[str]] | None = None,
    behaviour: Any = None,
) -> go.Figure:
    """AUROC vs step of each tracked probe in every cell: one row of panels per evaluation set
    (``probe/<set>_auroc/<probe>``: curated, on-policy), one column per probe, one line per cell.

    ``trained_against`` (``{cell: [probe, ...]}``) draws the cells that train against a panel's probe
    solid and its control cells dashed. Ensemble members are left out.
    """
    metrics = _check_metrics(metrics)
    found: dict[str, list[str]] = {}
    for c, key in _keys(metrics).items():
        if key.tracked_set is not None and key.interval is None and key.member is None and metrics[c].notna().any():
            found.setdefault(key.tracked_set, []).append(str(key.subject))
    if not found:
        raise NoFigureData("no probe/<set>_auroc/<probe> column holds a value")
    sets = [s_ for s_ in ("curated", "onpolicy") if s_ in found] + sorted(set(found) - {"curated", "onpolicy"})
    names = list(probes) if probes is not None else sorted({p for v in found.values() for p in v})
    fig = make_subplots(
        rows=len(sets), cols=len(names), shared_yaxes=True, subplot_titles=[f"{p} · {s_}" for s_ in sets for p in names]
    )
    colors = _colors(_cell_order(metrics["cell"].astype(str)))
    shown: set[str] = set()
    xr = _x_range(metrics)
    against = {c: set(v) for c, v in (trained_against or {}).items()}
    for r, which in enumerate(sets):
        for k, probe in enumerate(names):
            col = str(K.tracked_auroc(which, probe))
            if col not in metrics.columns:
                continue
            curve = _curve(metrics, col)
            for cell in _cell_order(curve["cell"]):
                dash = "solid" if probe in against.get(cell, ()) or not against else "dash"
                _add_curves(
                    fig,
                    curve[curve["cell"] == cell],
                    row=r + 1,
                    col=k + 1,
                    colors=colors,
                    label=None,
                    dash=dash,
                    shown=shown,
                    x_range=xr,
                    bounds=(0.0, 1.0),
                )
            fig.update_xaxes(title_text="step", row=r + 1, col=k + 1)
        fig.update_yaxes(title_text=f"AUROC ({which})", row=r + 1, col=1)
    return _style(
        fig,
        title=_title(
            "Does each probe keep working? AUROC vs step in every cell (solid: the cell trains against "
            "this probe; dashed: a control)",
            _scorer_name(metrics, scorer),
            behaviour=behaviour,
        ),
        height=330 * len(sets) + 140,
        width=max(900, 300 * len(names)),
        legend="cell",
    )


def fig_contrasts(contrasts: pd.DataFrame, *, scorer: str | None = None, behaviour: Any = None) -> go.Figure:
    """The paired contrasts as a forest plot: mean difference (cell − control) with its 95% CI over seeds,
    one panel per metric; filled markers where the interval excludes 0."""
    if not isinstance(contrasts, pd.DataFrame) or contrasts.empty:
        raise NoFigureData("no contrast was formed")
    metrics = list(dict.fromkeys(contrasts["metric"]))
    rows, ncols = _grid(len(metrics), 2)
    fig = make_subplots(rows=rows, cols=ncols, subplot_titles=metrics, horizontal_spacing=0.25)
    for i, m in enumerate(metrics):
        d = contrasts[contrasts["metric"] == m]
        r, k = divmod(i, ncols)
        lo = (d["mean_diff"] - d["ci_low"]).to_numpy(dtype=float)
        hi = (d["ci_high"] - d["mean_diff"]).to_numpy(dtype=float)
        fig.add_trace(
            go.Scatter(
                x=d["mean_diff"],
                y=d["contrast"],
                mode="markers",
                showlegend=False,
                marker=dict(size=9, symbol=["circle" if v else "circle-open" for v in d["resolved"]], color="#1f77b4"),
                error_x=dict(type="data", symmetric=False, array=np.nan_to_num(hi), arrayminus=np.nan_to_num(lo)),
                customdata=np.stack([d["ci_low"], d["ci_high"], d["n_seeds"]], axis=-1),
                hovertemplate="%{y}<br>Δ %{x:.4f}<br>95% CI [%{customdata[0]:.4f}, %{customdata[1]:.4f}]"
                "<br>seeds %{customdata[2]}<extra></extra>",
            ),
            row=r + 1,
            col=k + 1,
        )
        fig.add_vline(x=0, line=dict(color="#999", width=1, dash="dot"), row=r + 1, col=k + 1)
    return _style(
        fig,
        title=_title(
            "Paired contrasts: cell − control, paired by seed",
            _scorer_name(None, scorer),
            "markers: mean over seeds, bars: 95% t-interval over seeds, filled: excludes 0",
            behaviour,
        ),
        height=max(300, 60 * max(len(contrasts[contrasts["metric"] == m]) for m in metrics)) * rows + 120,
    )


def fig_rate_vs_step(metrics: pd.DataFrame, *, scorer: str | None = None, behaviour: Any = None) -> go.Figure:
    """How often sampled responses show the behaviour, vs step: its :func:`rate_metrics` (toxicity:
    ``eval/toxicity_rate`` and, if logged, expected max / probability)."""
    metrics = _check_metrics(metrics)
    names = BehaviourNames.of(behaviour)
    present = [(c, t) for c, t in rate_metrics(names) if _holds_values(metrics, c)]
    if not present:
        raise NoFigureData(f"no {names.metric_keys['rate']} (or other {names.noun} rate) column holds a value")
    fig = make_subplots(rows=1, cols=len(present), subplot_titles=[t for _, t in present])
    colors = _colors(_cell_order(metrics["cell"].astype(str)))
    shown: set[str] = set()
    xr = _x_range(metrics)
    for k, (c, _) in enumerate(present):
        _add_curves(
            fig,
            _curve(metrics, c),
            row=1,
            col=k + 1,
            colors=colors,
            label=None,
            dash="solid",
            shown=shown,
            x_range=xr,
            bounds=(0.0, 1.0),
        )
        fig.update_xaxes(title_text="step", row=1, col=k + 1)
    fig.update_yaxes(title_text=f"P({html.escape(names.positive_label)}) measure", row=1, col=1)
    sc = _scorer_name(metrics, scorer)
    return _style(
        fig,
        title=_title(
            f"{html.escape(names.noun.capitalize())} of responses to held-out provocative prompts "
            f"(scored by {html.escape(sc)})",
            sc,
            behaviour=names,
        ),
        height=460,
        legend="cell",
    )


fig_toxicity_vs_step = fig_rate_vs_step
"""The toxicity name of :func:`fig_rate_vs_step` (its default behaviour)."""


def fig_geometry_vs_step(metrics: pd.DataFrame, *, scorer: str | None = None, behaviour: Any = None) -> go.Figure:
    """Class means projected on the original direction (positive class solid, e.g. toxic; negative
    dashed) and cos(class-mean difference, original direction), vs step, one column per hook."""
    metrics = _check_metrics(metrics)
    names = BehaviourNames.of(behaviour)
    proj_pos, proj_neg = names.metric_keys["proj_positive"], names.metric_keys["proj_negative"]
    hooks = sorted({str(MetricKey.parse(c).subject) for c in _columns(metrics, "geometry")})
    hooks = [
        h
        for h in hooks
        if str(K.geometry(h, proj_pos)) in metrics.columns
        or str(K.geometry(h, "mean_diff_cos_orig")) in metrics.columns
    ]
    if not hooks:
        raise NoFigureData(f"no geometry/<hook>/{proj_pos}|{proj_neg}|mean_diff_cos_orig column holds a value")
    fig = make_subplots(
        rows=2,
        cols=len(hooks),
        shared_xaxes=True,
        subplot_titles=[f"{h}<br>class means · original direction" for h in hooks]
        + [f"{h}<br>cos(mean difference, original direction)" for h in hooks],
        vertical_spacing=0.14,
    )
    colors = _colors(_cell_order(metrics["cell"].astype(str)))
    shown: set[str] = set()
    xr = _x_range(metrics)
    for k, h in enumerate(hooks):
        for stat, label, dash in (
            (proj_pos, f"{names.positive_label} mean", "solid"),
            (proj_neg, f"{names.negative_label} mean", "dash"),
        ):
            col = str(K.geometry(h, stat))
            if col in metrics.columns:
                _add_curves(
                    fig,
                    _curve(metrics, col),
                    row=1,
                    col=k + 1,
                    colors=colors,
                    label=label,
                    dash=dash,
                    shown=shown,
                    x_range=xr,
                )
        col = str(K.geometry(h, "mean_diff_cos_orig"))
        if col in metrics.columns:
            _add_curves(
                fig,
                _curve(metrics, col),
                row=2,
                col=k + 1,
                colors=colors,
                label="cos(diff, orig)",
                dash="solid",
                shown=shown,
                x_range=xr,
                bounds=(-1.0, 1.0),
            )
        fig.update_xaxes(title_text="step", row=2, col=k + 1)
    fig.update_yaxes(title_text="projection", row=1, col=1)
    fig.update_yaxes(title_text="cosine", row=2, col=1)
    return _style(
        fig,
        title=_title(
            "Residual-stream geometry along the original probe direction",
            _scorer_name(metrics, scorer),
            behaviour=names,
        ),
        height=700,
        legend="cell · quantity",
    )


def _geometry_panel(part: Any, where: str) -> dict[str, np.ndarray]:
    if not isinstance(part, Mapping):
        raise ValueError(f"geometry{where} must be a dict with x_dir, x_pc1, x_pc2 and label lists")
    missing = [k for k in ("x_dir", "x_pc1", "label") if k not in part]
    if missing:
        raise ValueError(f"geometry{where} lacks {missing}; give x_dir, x_pc1, x_pc2 and label per point")
    out = {
        k: np.asarray(v, dtype=np.float64).reshape(-1)
        for k, v in part.items()
        if k in ("x_dir", "x_pc1", "x_pc2", "label")
    }
    n = {k: len(v) for k, v in out.items()}
    if len(set(n.values())) != 1:
        raise ValueError(f"geometry{where} lists have different lengths {n}")
    if not np.isin(out["label"], [0, 1]).all():
        raise ValueError(f"geometry{where}['label'] must be 0/1 (1 = the behaviour's positive class, e.g. toxic)")
    return out


def fig_geometry(geometry: Mapping[str, Any] | None, *, scorer: str | None = None, behaviour: Any = None) -> go.Figure:
    """Drift-set activations before vs after training, as 2-D projections (one row per cell and hook).

    Columns: before/after on (original direction, PC1), and, if ``x_pc2`` is given, (PC1, PC2).
    Positive-class points (e.g. toxic) red, the others blue; the class means are drawn as large crosses.
    Both columns of a view share axis ranges so movement is visible. ``geometry`` is
    ``{cell: {hook: {"before": {"x_dir", "x_pc1", "x_pc2", "label"}, "after": {...}}}}``.
    """
    if geometry is None or (isinstance(geometry, Mapping) and not geometry):
        raise NoFigureData("no before/after geometry projections were given")
    names = BehaviourNames.of(behaviour)
    if not isinstance(geometry, Mapping):
        raise TypeError(
            f"geometry must be a dict {{cell: {{hook: {{'before': ..., 'after': ...}}}}}}, got {type(geometry).__name__}"
        )
    panels: list[tuple[str, str, dict[str, np.ndarray], dict[str, np.ndarray]]] = []
    for cell in _cell_order(geometry):
        hooks = geometry[cell]
        if not isinstance(hooks, Mapping):
            raise ValueError(f"geometry[{cell!r}] must map hook names to {{'before': ..., 'after': ...}}")
        for hook in sorted(hooks):
            ba = hooks[hook]
            if not isinstance(ba, Mapping) or not {"before", "after"} <= set(ba):
                raise ValueError(f"geometry[{cell!r}][{hook!r}] needs both 'before' and 'after'")
            panels.append(
                (
                    cell,
                    hook,
                    _geometry_panel(ba["before"], f"[{cell!r}][{hook!r}]['before']"),
                    _geometry_panel(ba["after"], f"[{cell!r}][{hook!r}]['after']"),
                )
            )
    if not panels:
        raise NoFigureData("the geometry dict holds no hook")
    with_pc2 = all("x_pc2" in b and "x_pc2" in a for _, _, b, a in panels)
    views = [("x_dir", "x_pc1", "original direction", "PC1")] + ([("x_pc1", "x_pc2", "PC1", "PC2")] if with_pc2 else [])
    ncols = 2 * len(views)
    titles = [
        f"{when}<br>{vx} × {vy}" if r == 0 else when
        for r in range(len(panels))
        for (_, _, vx, vy) in views
        for when in ("before", "after")
    ]
    fig = make_subplots(
        rows=len(panels),
        cols=ncols,
        subplot_titles=titles,
        horizontal_spacing=0.05,
        vertical_spacing=min(0.12, 0.5 / len(panels)),
    )
    shown: set[str] = set()
    for r, (_, _, before, after) in enumerate(panels, start=1):
        for v, (kx, ky, _, _) in enumerate(views):
            xs = np.concatenate([before[kx], after[kx]])
            ys = np.concatenate([before[ky], after[ky]])
            pad_x, pad_y = 0.05 * (np.ptp(xs) or 1.0), 0.05 * (np.ptp(ys) or 1.0)
            for w, part in enumerate((before, after)):
                c = 2 * v + w + 1
                for lab, name, color in ((0, names.negative_label, "#1f77b4"), (1, names.positive_label, "#d62728")):
                    m = part["label"] == lab
                    fig.add_trace(
                        go.Scatter(
                            x=part[kx][m],
                            y=part[ky][m],
                            mode="markers",
                            name=name,
                            legendgroup=name,
                            showlegend=name not in shown,
                            marker=dict(color=color, size=5, opacity=0.5),
                        ),
                        row=r,
                        col=c,
                    )
                    shown.add(name)
                    if m.any():
                        mean_name = f"{name} class mean"
                        fig.add_trace(
                            go.Scatter(
                                x=[part[kx][m].mean()],
                                y=[part[ky][m].mean()],
                                mode="markers",
                                name=mean_name,
                                legendgroup=mean_name,
                                showlegend=mean_name not in shown,
                                marker=dict(color=color, size=16, symbol="x", line=dict(width=2, color="black")),
                            ),
                            row=r,
                            col=c,
                        )
                        shown.add(mean_name)
                fig.update_xaxes(range=[xs.min() - pad_x, xs.max() + pad_x], row=r, col=c)
                fig.update_yaxes(range=[ys.min() - pad_y, ys.max() + pad_y], row=r, col=c)
    for r, (cell, hook, _, _) in enumerate(panels, start=1):
        fig.update_yaxes(title_text=f"<b>{html.escape(cell)}</b><br>{html.escape(hook)}", row=r, col=1)
    for v, (_, _, vx, _) in enumerate(views):
        for w in range(2):
            fig.update_xaxes(title_text=vx, row=len(panels), col=2 * v + w + 1)
    _style(
        fig,
        title=_title(
            "Residual geometry before vs after training (drift set, projected)",
            _scorer_name(None, scorer),
            "x: class means marked; axes shared before/after",
            names,
        ),
        height=330 * len(panels) + 120,
        width=None,
    )
    fig.update_annotations(font_size=11)
    return fig


def results_summary(results: pd.DataFrame, group_cols: Sequence[str] = ("cell",)) -> pd.DataFrame:
    """``results`` as a :func:`~probe_lens.experiments.stats.summarize` table.

    Per-seed rows (a ``cell`` column plus numeric metrics) are summarized over seeds; a table that
    already has ``<metric>_mean`` columns is returned as is. ``seed`` and ``step`` are never metrics.
    """
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame, got {type(results).__name__}")
    if len(results) == 0:
        raise NoFigureData("the results table is empty")
    if any(str(c).endswith("_mean") for c in results.columns):
        return results
    group_cols = list(group_cols)
    missing = [c for c in group_cols if c not in results.columns]
    if missing:
        raise ValueError(f"results lacks grouping column(s) {missing}; it has {list(results.columns)}")
    value_cols = [
        c
        for c in results.columns
        if c not in group_cols
        and c not in ("seed", "step")
        and pd.api.types.is_numeric_dtype(results[c])
        and not pd.api.types.is_bool_dtype(results[c])
    ]
    if not value_cols:
        raise NoFigureData("the results table has no numeric metric column")
    order = {f: i for i, f in enumerate(("eval", "probe", "drift", "geometry"))}
    value_cols.sort(key=lambda c: (order.get(MetricKey.parse(str(c)).family, len(order)), c))
    summary = summarize(results, group_cols, value_cols)
    if "cell" in summary.columns:
        rank = {c: i for i, c in enumerate(_cell_order(summary["cell"]))}
        summary = summary.sort_values("cell", key=lambda s: s.map(rank)).reset_index(drop=True)
    return summary


HEADLINE_FAMILIES = ("eval", "probe", "drift")


def headline_metrics(summary: pd.DataFrame) -> list[str]:
    """The metrics worth a README table: ``eval/*``, ``probe/*`` and ``drift/*`` without ensemble
    members (all metrics if there are none of those)."""
    names = [c[: -len("_mean")] for c in summary.columns if str(c).endswith("_mean")]
    keys = {m: MetricKey.parse(m) for m in names}
    head = [m for m, k in keys.items() if k.family in HEADLINE_FAMILIES and k.member is None]
    return head or names


def fig_results_table(
    results: pd.DataFrame,
    *,
    scorer: str | None = None,
    digits: int = 3,
    metrics: Sequence[str] | None = None,
    behaviour: Any = None,
) -> go.Figure:
    """The results as a plotly table: mean ± 95% CI half-width over seeds per cell and metric.

    ``metrics`` picks the columns (default: :func:`headline_metrics`).
    """
    summary = results_summary(results)
    cells = format_cells(summary, digits=digits, columns=headline_metrics(summary) if metrics is None else metrics)
    header = [f"<b>{html.escape(str(c)).replace('/', '/<br>')}</b>" for c in cells.columns]
    lines = max(str(c).count("/") + 1 for c in cells.columns)
    fig = go.Figure(
        go.Table(
            columnwidth=[max(10, len(max(str(c).split("/"), key=len))) for c in cells.columns],
            header=dict(values=header, align="left", fill_color="#e8e8e8", height=17 * lines + 10),
            cells=dict(values=[cells[c].tolist() for c in cells.columns], align="left", height=26),
        )
    )
    return _style(
        fig,
        title=dict(
            text=f"Results: mean ± 95% CI over seeds<br><sup>{html.escape(BehaviourNames.of(behaviour).noun)} "
            f"scorer: {html.escape(_scorer_name(None, scorer))}</sup>",
            x=0.01,
        ),
        height=120 + 17 * lines + 10 + 26 * len(cells) + 40,
        width=max(800, 130 * len(cells.columns)),
        margin=dict(l=20, r=20, t=90, b=20),
    )


# ---- the HTML report ----------------------------------------------------------------------

_SCORER_ROW = "{Noun} scorer"
_CONFIG_KEYS = (
    ("Model", ("model", "model_name")),
    ("Behaviour", ()),
    (_SCORER_ROW, ("scorer", "scorer_name")),
    ("Seeds", ("seeds", "seed")),
    ("Held-out probes", ("heldout_probes", "heldout", "held_out_probes")),
    ("Trained-against probes", ("probes", "trained_probes")),
    ("Cells", ("cells", "methods")),
)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1400px;padding:0 1rem;color:#222}
h1{margin-bottom:.2rem} section{margin:2.5rem 0} .no-data{color:#a33;font-style:italic}
table.results,table.config{border-collapse:collapse;font-size:.9rem} .results th,.results td,.config th,.config td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
.results th,.config th{background:#f2f2f2} pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.8rem}
.note{color:#555;font-size:.9rem} .scroll{overflow-x:auto} .answer{font-size:1.05rem;max-width:60rem}
"""


def _config_value(config: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for k in keys:
        if k in config and config[k] is not None:
            v = config[k]
            return v if isinstance(v, str) else json.dumps(v, default=str)
    return None


def _resolve_scorer(config: Mapping[str, Any], metrics: pd.DataFrame, results: pd.DataFrame) -> str:
    """The scorer to name on every figure: a ``describe()`` dict in the config, else what the runs
    recorded (``eval/scorer`` [+ ``eval/scorer_version``] in metrics, ``scorer`` in results), else the
    config's scorer name (e.g. ``"auto"``)."""
    v = next((config[k] for k in ("scorer", "scorer_name") if config.get(k) is not None), None)
    if isinstance(v, Mapping) and v.get("name"):
        return f"{v['name']} {v['version']}" if v.get("version") else str(v["name"])
    for df, name_col, version_col in ((metrics, "eval/scorer", "eval/scorer_version"), (results, "scorer", None)):
        if name_col in df.columns:
            d = df[[c for c in (name_col, version_col) if c and c in df.columns]].dropna(subset=[name_col])
            found = sorted({" ".join(str(x) for x in row) for row in d.itertuples(index=False)})
            if found:
                return ", ".join(found)
    return f"{v} (actual scorer not recorded)" if v == "auto" else (str(v) if v is not None else "scorer not recorded")


PNG_TIMEOUT_S = 300
"""Seconds the static-PNG export may take before it is abandoned with a warning."""


def _png_backend_problem() -> str | None:
    """Why plotly cannot write PNGs here (None if it can try)."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return "the 'kaleido' package is not installed (pip install kaleido; it also needs Chrome/Chromium)"
    return None


def _warn_skipped(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def export_pngs(
    figures: Mapping[str, go.Figure],
    png_dir: str | Path,
    *,
    scale: float = 2.0,
    on_skip: Callable[[str], None] = _warn_skipped,
) -> list[Path]:
    """Write each figure to ``png_dir/<name>.png`` with kaleido; on a missing backend write nothing and
    call ``on_skip`` with why (default: a RuntimeWarning).

    Returns the paths written. Needs ``kaleido`` (>= 1.0) and a Chrome/Chromium binary (e.g. Debian's
    ``chromium`` package, or ``kaleido.get_chrome_sync()`` with internet).
    """
    png_dir = Path(png_dir)
    if not figures:
        return []
    problem = _png_backend_problem()
    if problem:
        on_skip(f"PNG export skipped: {problem}")
        return []
    import plotly.io as pio

    png_dir.mkdir(parents=True, exist_ok=True)
    names = list(figures)
    finals = [png_dir / f"{n}.png" for n in names]
    tmps = [png_dir / f".{n}.tmp.png" for n in names]
    import threading

    failure: list[BaseException] = []

    def render() -> None:
        try:
            pio.write_images(
                [figures[n] for n in names],
                tmps,
                format="png",
                scale=scale,
                width=[int(figures[n].layout.width or 1200) for n in names],
                height=[int(figures[n].layout.height or 500) for n in names],
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    # kaleido drives a headless Chromium; seen to hang on a loaded machine, so bound it
    worker = threading.Thread(target=render, name="png-export", daemon=True)
    worker.start()
    worker.join(PNG_TIMEOUT_S)
    if worker.is_alive():
        failure.append(TimeoutError(f"no PNGs after {PNG_TIMEOUT_S} s"))
    try:
        if failure:
            raise failure[0]
    except Exception as exc:  # noqa: BLE001 - any backend failure (no Chrome, sandbox, ...) must not sink the report
        for t in tmps:
            t.unlink(missing_ok=True)
        on_skip(
            f"PNG export skipped: plotly/kaleido could not render ({type(exc).__name__}: {exc}). "
            "Kaleido 1.x needs Chrome or Chromium: apt-get install chromium, or run kaleido.get_chrome_sync() online."
        )
        return []
    for t, f in zip(tmps, finals):
        os.replace(t, f)
    return finals


def _section(sec_id: str, title: str, body: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{sec_id}">\n<h2>{html.escape(title)}</h2>\n{note_html}\n{body}\n</section>\n'


def _results_html(results: pd.DataFrame) -> str:
    summary = results_summary(results)
    head = format_cells(summary, columns=headline_metrics(summary))
    full = format_cells(summary)
    out = f'<div class="scroll">{head.to_html(index=False, classes="results", border=0, escape=True, na_rep="–")}</div>'
    if full.shape[1] > head.shape[1]:
        table = full.to_html(index=False, classes="results", border=0, escape=True, na_rep="–")
        out += f'<details><summary>All {full.shape[1] - 2} metrics</summary><div class="scroll">{table}</div></details>'
    return out


def _auroc_figure(metrics: pd.DataFrame, scorer: str, config: Mapping[str, Any], names: BehaviourNames) -> go.Figure:
    """Tracked-probe AUROCs (study runs) when logged, else the frozen/held-out/re-fit view."""
    if any(k.tracked_set is not None for k in _keys(metrics).values()):
        against = config.get("trained_against") if isinstance(config.get("trained_against"), Mapping) else None
        return fig_tracked_auroc_vs_step(
            metrics, scorer=scorer, probes=config.get("headline_probes"), trained_against=against, behaviour=names
        )
    return fig_auroc_vs_step(metrics, scorer=scorer, behaviour=names)


def _ci_text(lo: float, hi: float, n_seeds: Any) -> str:
    """A contrast's interval over seeds; without one (a single seed) says why instead of ``[+nan, +nan]``."""
    if np.isfinite(lo) and np.isfinite(hi):
        return f"[{lo:+.3f}, {hi:+.3f}]"
    n = int(n_seeds) if pd.notna(n_seeds) else 0
    return f"n/a ({n} seed{'s' if n != 1 else ''})"


def _answer_paragraph(headline: Mapping[str, Any] | None) -> str:
    """The report's opening words: the pre-declared primary contrasts with their statistics over seeds, then
    how many of the other paired contrasts pass a Holm-corrected sign-flip test, and on which yardsticks."""
    con = (headline or {}).get("contrasts")
    if not isinstance(con, pd.DataFrame) or con.empty:
        return ""
    seeds = int(con["n_seeds"].max())
    if seeds < 2:
        text = (
            f"{len(con)} paired contrasts (cell − control) were measured on 1 seed: none can be resolved, since an "
            "interval over seeds needs at least 2 (rerun with more seeds: --seeds 3)."
        )
    else:
        primary = con[con["primary"].astype(bool)] if "primary" in con else con.iloc[:0]
        listed = [_primary_text(r) for r in primary.itertuples()]
        text = ("Primary contrasts: " + "; ".join(listed) + ". ") if listed else "No primary contrast in this study. "
        text += f"With {seeds} seeds the smallest sign-flip p is {2 / 2**seeds:.3g}: " + (
            "no contrast can pass p < 0.05 with this few seeds. " if 2 / 2**seeds >= 0.05 else ""
        )
        others = con[~con.index.isin(primary.index)]
        if "p_holm" in others:
            n_sig = int((others["p_holm"] < 0.05).sum())
            text += f"Of the {len(others)} other contrasts, {n_sig} have a Holm-corrected p < 0.05."
    yardsticks = "AUROC on the curated set (clean labels) and on on-policy rows (the base model's own samples)"
    text += f" Probe yardsticks: {yardsticks}; the tables below give every number."
    return f'<section id="answer"><p class="answer">{html.escape(text)}</p></section>\n'


def _primary_text(r: Any) -> str:
    """One primary contrast: the random-effects estimate, its HKSJ interval and the sign-flip p over seeds."""
    ci = _ci_text(r.re_ci_low, r.re_ci_high, r.n_seeds)
    return f"{r.contrast} in {r.metric}: {r.re_estimate:+.3f} (HKSJ 95% CI {ci}, sign-flip p = {r.p_signflip:.3g})"


def _headline_section(
    headline: Mapping[str, Any], scorer: str, pngs: dict[str, go.Figure], names: BehaviourNames
) -> str:
    table, con = headline.get("table"), headline.get("contrasts")
    body = ""
    if isinstance(table, pd.DataFrame) and len(table):
        body += f'<div class="scroll">{table.to_html(index=False, classes="results", border=0, escape=True, na_rep="–")}</div>'
    if isinstance(con, pd.DataFrame) and len(con):
        from probe_lens.experiments.stats import describe_contrasts

        shown = con.assign(
            mean_diff=con["mean_diff"].map(lambda v: f"{v:+.3f}"),
            ci=[_ci_text(lo, hi, n) for lo, hi, n in zip(con["ci_low"], con["ci_high"], con["n_seeds"])],
            t_ci_excludes_0=con["resolved"].map(lambda v: "yes" if v else "no"),
        )[
            [
                "contrast",
                "metric",
                "mean_diff",
                "ci",
                "n_seeds",
                "t_ci_excludes_0",
                *(["within_seed"] if "within_seed" in con else []),
            ]
        ]
        body += "<h3>Paired contrasts (cell − control, paired by seed; CI: Student-t over seeds)</h3>"
        body += f'<div class="scroll">{shown.to_html(index=False, classes="results", border=0, escape=True)}</div>'
        body += (
            "<ul>"
            + "".join(f"<li>{html.escape(line)}</li>" for line in describe_contrasts(con).splitlines() if line.strip())
            + "</ul>"
        )
        fig = fig_contrasts(con, scorer=scorer, behaviour=names)
        pngs["contrasts"] = fig
        body += fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id="plot-fig-contrasts",
            config={"responsive": True, "displaylogo": False},
        )
    inter = headline.get("interactions")
    if isinstance(inter, pd.DataFrame) and len(inter):
        shown = inter.assign(
            mean_diff=inter["mean_diff"].map(lambda v: f"{v:+.3f}"),
            ci=[_ci_text(lo, hi, n) for lo, hi, n in zip(inter["ci_low"], inter["ci_high"], inter["n_seeds"])],
            p_holm=inter["p_holm"].map(lambda v: f"{v:.3g}"),
        )[["contrast", "metric", "mean_diff", "ci", "n_seeds", "p_holm", "per_seed"]]
        body += (
            "<h3>Between objectives (difference of differences: each probe cell minus its own objective's "
            "classifier control, paired by seed; Holm over this family)</h3>"
        )
        body += f'<div class="scroll">{shown.to_html(index=False, classes="results", border=0, escape=True)}</div>'
    note = (
        "Each trained-against probe is measured the same way in every cell: compare its AUROC and cosine in the "
        "cells that train against it with its controls (base, the classifier baselines). "
        f"{html.escape(names.noun.capitalize())} scorer: {html.escape(scorer)}."
    )
    return _section(
        "fig-headline", "Headline: does the probe keep working?", body or '<p class="no-data">No headline.</p>', note
    )


def _extra_sections(
    run_dir: Path, results: pd.DataFrame, metrics: pd.DataFrame, config: Mapping[str, Any], pngs: dict[str, go.Figure]
) -> list[str]:
    """Training curves, the curated yardsticks (``run_dir/yardsticks.json``) and the instruments, where the
    study has them (:mod:`probe_lens.experiments.report_sections`)."""
    from probe_lens.experiments import report_sections as S

    listed = config.get("headline_probes")
    probes = [str(p) for p in listed] if isinstance(listed, list) else []
    built = [
        S.training_section(metrics, pngs),
        S.yardsticks_section(run_dir, results, probes, pngs),
        S.instruments_section(results, pngs),
        S.attribution_section(run_dir, pngs),
    ]
    return [_section(sec_id, title, body, note) for sec_id, title, body, note in filter(None, built)]


def write_report(
    run_dir: str | Path,
    *,
    results: pd.DataFrame,
    metrics: pd.DataFrame,
    geometry: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    out_name: str = "report.html",
    png_dir: str | Path | None = None,
    headline: Mapping[str, Any] | None = None,
    figures: dict[str, go.Figure] | None = None,
) -> Path:
    """Write ``run_dir/out_name``: one self-contained, offline HTML with every figure; return its path.

    The header states the study config (model, behaviour, scorer, seeds, probes; read from ``config`` keys
    ``model``, ``behaviour``, ``scorer``, ``seeds``, ``heldout_probes``, ``probes``, ``cells``; the full
    config is embedded too). ``config["behaviour"]`` (a ``Behaviour.describe()`` record or a registered
    name; absent: toxicity) gives every behaviour word and key. Sections: ``fig-results-table`` (HTML
    table, mean ± 95% CI over seeds), ``fig-cosine-drift``, ``fig-auroc``, ``fig-<metric prefix>``
    (``fig-toxicity``: the rate vs step), ``fig-geometry-step``, ``fig-geometry``.
    A figure without data says so in its section. plotly.js is inlined once.

    ``config["probe_hooks"]`` (``{probe: hook}``), if present, labels the drift panels with layers.
    With ``png_dir``, the key figures are also written there as PNGs (``cosine_drift.png``,
    ``auroc_vs_step.png``, ``<metric prefix>_vs_step.png`` (``toxicity_vs_step.png``), ``geometry_vs_step.png``, ``geometry.png``,
    ``results_table.png``); without kaleido + Chrome that step is skipped with one logged warning.

    ``headline`` (``{"table": DataFrame of strings, "contrasts": DataFrame}``, from
    :mod:`probe_lens.experiments.headline`) opens the report: section ``fig-headline`` with the headline
    table, the paired contrasts and their forest plot (``contrasts.png``); with it, ``fig-auroc`` shows
    every tracked probe in every cell (:func:`fig_tracked_auroc_vs_step`).

    ``figures``, if given, receives every figure the report drew, by its PNG name (for an experiment tracker).
    """
    if not isinstance(config, Mapping):
        raise TypeError(
            f"config must be a dict (e.g. dataclasses.asdict of the study config), got {type(config).__name__}"
        )
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame, got {type(results).__name__}")
    if not isinstance(metrics, pd.DataFrame):
        raise TypeError(f"metrics must be a pandas DataFrame, got {type(metrics).__name__}")
    if not isinstance(out_name, str) or not out_name or Path(out_name).name != out_name:
        raise ValueError(f"out_name must be a plain file name such as 'report.html', got {out_name!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    scorer = _resolve_scorer(config, metrics, results)
    names = BehaviourNames.of(config.get("behaviour"))
    probe_hooks = config.get("probe_hooks") if isinstance(config.get("probe_hooks"), Mapping) else None
    against = config.get("trained_against") if isinstance(config.get("trained_against"), Mapping) else None

    builders: list[tuple[str, str, str, Any]] = [
        (
            "fig-cosine-drift",
            "Probe-direction drift vs step",
            "cosine_drift",
            lambda: fig_cosine_drift(
                metrics, probe_hooks=probe_hooks, scorer=scorer, behaviour=names, trained_against=against
            ),
        ),
        ("fig-auroc", "Probe AUROC vs step", "auroc_vs_step", lambda: _auroc_figure(metrics, scorer, config, names)),
        (
            f"fig-{names.metric_prefix}",
            f"{names.noun.capitalize()} vs step",
            f"{names.metric_prefix}_vs_step",
            lambda: fig_rate_vs_step(metrics, scorer=scorer, behaviour=names),
        ),
        (
            "fig-geometry-step",
            "Residual geometry vs step",
            "geometry_vs_step",
            lambda: fig_geometry_vs_step(metrics, scorer=scorer, behaviour=names),
        ),
        (
            "fig-geometry",
            "Residual geometry before vs after",
            "geometry",
            lambda: fig_geometry(geometry, scorer=scorer, behaviour=names),
        ),
        (
            "fig-monitor-split",
            "Behaviour vs representation",
            "monitor_split",
            lambda: fig_monitor_split(results, probes=config.get("headline_probes"), scorer=scorer, behaviour=names),
        ),
    ]
    from plotly.offline import get_plotlyjs

    sections: list[str] = []
    pngs: dict[str, go.Figure] = {}
    if headline is not None:
        sections.append(_headline_section(headline, scorer, pngs, names))
    try:
        table = _results_html(results)
        pngs["results_table"] = fig_results_table(results, scorer=scorer, behaviour=names)
        note = (
            f"Mean ± half-width of the Student-t 95% CI over seeds (no ± with one seed). "
            f"{html.escape(names.noun.capitalize())} scorer: {html.escape(scorer)}."
        )
    except NoFigureData as exc:
        table, note = f'<p class="no-data">No data for this table: {html.escape(str(exc))}.</p>', ""
    sections.append(_section("fig-results-table", "Results", table, note))
    for sec_id, title, png_name, build in builders:
        try:
            fig = build()
        except NoFigureData as exc:
            sections.append(
                _section(sec_id, title, f'<p class="no-data">No data for this figure: {html.escape(str(exc))}.</p>')
            )
            continue
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"plot-{sec_id}",
            config={"responsive": True, "displaylogo": False},
        )
        sections.append(_section(sec_id, title, div))
        pngs[png_name] = fig
    sections += _extra_sections(run_dir, results, metrics, config, pngs)

    rows = []
    v: str | None
    for label, keys in _CONFIG_KEYS:
        if label == _SCORER_ROW:
            label, v = label.format(Noun=names.noun.capitalize()), scorer
        elif label == "Behaviour":
            v = f"{names.name}: {names.positive_label} (label 1) vs {names.negative_label} (label 0)"
        else:
            v = _config_value(config, keys)
        rows.append(
            f"<tr><th>{html.escape(label)}</th><td>{html.escape(v) if v else '<i>not given in config</i>'}</td></tr>"
        )
    full = html.escape(json.dumps(config, indent=2, default=str, sort_keys=True))
    header = (
        '<header id="study">\n<details><summary>Study metadata (model, behaviour, scorer, seeds, probes) and '
        "config</summary>\n"
        f'<p class="note">Run folder: {html.escape(str(run_dir))}</p>\n'
        f'<table class="config">{"".join(rows)}</table>\n'
        f"<details><summary>Full study config</summary><pre>{full}</pre></details>\n</details>\n</header>\n"
    )
    # the answer first (words, then the headline table and contrasts), the metadata folded below it
    opening = "<h1>probe_lens drift report</h1>\n" + _answer_paragraph(headline)
    n_first = 1 if headline is not None else 0
    body = opening + "".join(sections[:n_first]) + header + "".join(sections[n_first:])
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        "<title>probe_lens drift report</title>\n"
        f"<style>{_CSS}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n'
        f"</head>\n<body>\n{body}</body>\n</html>\n"
    )
    out = run_dir / out_name
    atomic_write_text(out, page)
    if figures is not None:
        figures.update(pngs)
    if png_dir is not None:  # a missing PNG backend is one log line: the HTML report is complete without it
        export_pngs(pngs, png_dir, on_skip=lambda why: log.warning("%s (report.html is complete)", why))
    return out


def fig_monitor_split(
    results: pd.DataFrame,
    *,
    probes: Sequence[str] | None = None,
    scorer: str | None = None,
    behaviour: Any = None,
) -> go.Figure:
    """The monitor's change on each cell's own outputs split into its behaviour part and its representation
    part (:mod:`~probe_lens.experiments.monitor_split`): per probe (rows; ``probes``, default every probe with
    split columns) and statistic (columns: mean score, recall at 1% base FPR), mean over seeds per cell with its
    95% t-interval."""
    from probe_lens.experiments.monitor_split import STATS

    keys = {c: MetricKey.parse(str(c)) for c in results.columns}
    split = {c: k for c, k in keys.items() if k.output_split is not None and k.interval is None}
    have = list(
        dict.fromkeys(str(k.subject) for k in split.values() if k.output_split and k.output_split[1] == "behaviour")
    )
    wanted = [p for p in (have if probes is None else probes) if p in have]
    if not wanted or "cell" not in results:
        raise NoFigureData("no cell has a behaviour/representation split (it needs an output classifier)")
    cells = list(dict.fromkeys(results["cell"]))
    parts = (("behaviour", "behaviour (new text, base model)", "#ff7f0e"),
             ("representation", "representation (same text, trained model)", "#1f77b4"))  # fmt: skip
    titles = [f"{p}: {'mean score' if s == 'mean' else 'recall at 1% base FPR'}" for p in wanted for s in STATS]
    fig = make_subplots(rows=len(wanted), cols=len(STATS), subplot_titles=titles, vertical_spacing=0.12)
    for i, probe in enumerate(wanted):
        for j, stat in enumerate(STATS):
            for part, label, color in parts:
                col = str(K.output_split_key(stat, part, probe))
                if col not in results:
                    continue
                summ = summarize(results[["cell", "seed", col]], ["cell"], [col]).set_index("cell").reindex(cells)
                mean, lo, hi = (summ[f"{col}_{s}"].to_numpy(dtype=float) for s in ("mean", "ci_low", "ci_high"))
                fig.add_trace(
                    go.Bar(
                        x=cells, y=mean, name=label, marker_color=color, legendgroup=part,
                        showlegend=i == 0 and j == 0,
                        error_y=dict(type="data", symmetric=False, array=np.nan_to_num(hi - mean),
                                     arrayminus=np.nan_to_num(mean - lo)),
                    ),
                    row=i + 1, col=j + 1,
                )  # fmt: skip
    return _style(
        fig,
        barmode="group",
        title=_title(
            "The monitor's change on each cell's outputs: behaviour vs representation",
            _scorer_name(None, scorer),
            "bars: mean over seeds (vs the base cell), whiskers: 95% t-interval over seeds",
            behaviour,
        ),
        height=320 * len(wanted) + 140,
    )
