"""Figures for the instruments (plotly), re-exported by :mod:`probe_lens.plots`.

========================== ==================================================================
function                   draws
========================== ==================================================================
fig_steering_curves        rate and neutral-text KL vs alpha per series; ablation as a dotted level
fig_attribution_heatmap    layer x component gap heatmaps: base, trained and their difference
fig_signal_decomposition   the class signal on and off the probe's direction, per model
========================== ==================================================================

Each raises ``ValueError`` when its input holds nothing to draw.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

__all__ = ["attribution_grid", "fig_attribution_heatmap", "fig_signal_decomposition", "fig_steering_curves"]


def _style(fig: go.Figure, **layout: Any) -> go.Figure:
    fig.update_layout(template="plotly_white", **layout)
    return fig


def fig_steering_curves(curves: pd.DataFrame, *, series: str | None = None) -> go.Figure:
    """Positive rate (left) and neutral-text KL (right) vs alpha.

    ``curves``: rows of :func:`~probe_lens.interventions.steering_curve`, several curves stacked with a
    ``series`` column (default: ``"series"`` if present, e.g. ``"base / logistic_L6"``). Each
    series' ablation row is drawn as a dotted horizontal line of its colour.
    """
    if curves.empty or not {"intervention", "alpha", "rate", "kl"} <= set(curves.columns):
        raise ValueError("no steering curve to draw (need intervention, alpha, rate and kl columns)")
    key = series or ("series" if "series" in curves.columns else None)
    groups = curves.groupby(key, sort=False) if key else [("", curves)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("positive rate", "KL to unsteered (nats/token)"))
    for i, (name, df) in enumerate(groups):
        color = qualitative.Plotly[i % len(qualitative.Plotly)]
        line = df[df["intervention"] != "ablate"].sort_values("alpha")
        ablated = df[df["intervention"] == "ablate"]
        xs = [float(line["alpha"].min()), float(line["alpha"].max())]
        for col, metric in ((1, "rate"), (2, "kl")):
            fig.add_trace(
                go.Scatter(
                    x=line["alpha"],
                    y=line[metric],
                    mode="lines+markers",
                    name=str(name) or "steer",
                    legendgroup=str(name),
                    showlegend=col == 1,
                    line={"color": color},
                ),
                row=1,
                col=col,
            )
            if not ablated.empty:
                fig.add_trace(
                    go.Scatter(
                        x=xs,
                        y=[float(ablated[metric].iloc[0])] * 2,
                        mode="lines",
                        name=f"{name} ablated".strip(),
                        legendgroup=str(name),
                        showlegend=col == 1,
                        line={"color": color, "dash": "dot"},
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="alpha")
    return _style(fig, title="Steering along the probe direction")


def attribution_grid(gap: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str], list[str]]:
    """``(grid, rows, cols)``: ``column`` of a per-component table (component, layer, head) as a
    [rows, cols] array; rows embed, L0, L1..; columns H0.., b_O, out (the MLP; on the embed row, the
    embedding)."""
    layers = sorted(int(v) for v in gap["layer"].dropna().unique())
    n_heads = int(gap["head"].max()) + 1 if gap["head"].notna().any() else 0
    cols = [f"H{h}" for h in range(n_heads)] + ["b_O", "out"]
    rows = ["embed"] + [f"L{layer}" for layer in layers]
    grid = np.full((len(rows), len(cols)), np.nan)
    for rec in gap.itertuples(index=False):
        value = float(getattr(rec, column))
        if rec.component in ("embed", "pos_embed"):
            grid[0, -1] = np.nansum([grid[0, -1], value])
        elif rec.component in ("head", "attn_bias", "mlp"):
            r = 1 + layers.index(int(rec.layer))
            c = int(rec.head) if rec.component == "head" else (-2 if rec.component == "attn_bias" else -1)
            grid[r, c] = value
    return grid, rows, cols


def fig_attribution_heatmap(gap: pd.DataFrame) -> go.Figure:
    """Positive-minus-negative gap of each component's contribution: base, trained, difference.

    ``gap``: :func:`~probe_lens.interventions.attribution_gap`'s table (columns base, trained,
    difference), or one model's :func:`~probe_lens.interventions.component_gap` (column gap). Rows are
    layers (plus the embedding); columns the heads, the attention output bias and ``out`` (the MLP,
    or the embedding on the embed row). The colour scale is shared and centred on 0.
    """
    panels = [c for c in ("base", "trained", "difference", "gap") if c in gap.columns]
    if gap.empty or not panels:
        raise ValueError("no attribution gap to draw (need base/trained/difference or gap columns)")
    grids = [attribution_grid(gap, c) for c in panels]
    bound = max(float(np.nanmax(np.abs(g[0]))) for g in grids) or 1.0
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, shared_yaxes=True)
    for i, (grid, rows, cols) in enumerate(grids, start=1):
        fig.add_trace(
            go.Heatmap(
                z=grid,
                x=cols,
                y=rows,
                zmin=-bound,
                zmax=bound,
                colorscale="RdBu_r",
                showscale=i == len(grids),
                colorbar={"title": "logit gap"},
            ),
            row=1,
            col=i,
        )
    return _style(fig, title="Direct contributions to the probe's positive-minus-negative logit gap")


def fig_signal_decomposition(geometry: Mapping[str, Mapping[str, float]]) -> go.Figure:
    """Bars per model: the class signal on the probe's direction and orthogonal to it.

    ``geometry``: ``{model name: signal_decomposition(...)}``; the hover text adds the number of
    principal components holding the between-class variance and, when present, the angle to a
    re-fit probe.
    """
    if not geometry:
        raise ValueError("no geometry to draw")
    names = list(geometry)
    fig = go.Figure()
    for key, title in (("on_probe", "on the probe direction"), ("off_probe", "orthogonal to it")):
        fig.add_trace(go.Bar(x=names, y=[geometry[n][key] for n in names], name=title))
    hover = [
        f"components: {geometry[n].get('n_components', float('nan')):.0f}"
        + (f"; angle to re-fit: {geometry[n]['angle_deg']:.1f}°" if "angle_deg" in geometry[n] else "")
        for n in names
    ]
    fig.update_traces(hovertext=hover)
    return _style(
        fig,
        barmode="group",
        title="Class-mean difference: on vs off the probe direction",
        yaxis_title="activation units",
    )
