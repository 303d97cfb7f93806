"""Means with Student-t 95% confidence intervals over seeds, and tables of them.

The CI of a mean over ``n`` seeds is ``mean ± t_{(1+c)/2, n-1} * s / sqrt(n)`` with ``s`` the sample
standard deviation (ddof=1). NaN values (a metric not measured for that seed) are skipped; with one
value the interval is undefined (NaN), with none the mean is NaN too.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _st

__all__ = ["format_cells", "format_table", "mean_ci", "summarize"]


def _confidence(confidence: Any) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
        raise TypeError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return float(confidence)


def _halfwidth(std: np.ndarray, n: np.ndarray, confidence: float) -> np.ndarray:
    """t-interval half-widths; NaN where n < 2."""
    std, n = np.asarray(std, dtype=np.float64), np.asarray(n, dtype=np.float64)
    out = np.full(std.shape, np.nan)
    ok = n >= 2
    out[ok] = _st.t.ppf((1.0 + confidence) / 2.0, n[ok] - 1) * std[ok] / np.sqrt(n[ok])
    return out


def mean_ci(values: Any, confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``values`` with a Student-t confidence interval.

    NaNs are skipped. One finite value gives ``(value, nan, nan)``; none gives ``(nan, nan, nan)``.
    """
    confidence = _confidence(confidence)
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"values must be numbers, got {type(values).__name__}") from exc
    arr = arr[~np.isnan(arr)]
    if np.isinf(arr).any():
        raise ValueError("values contain inf; a confidence interval of an infinite mean is meaningless")
    if arr.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(arr.mean())
    if arr.size == 1:
        return (mean, math.nan, math.nan)
    h = float(_halfwidth(np.array([arr.std(ddof=1)]), np.array([arr.size]), confidence)[0])
    return (mean, mean - h, mean + h)


def summarize(
    df: pd.DataFrame,
    group_cols: Sequence[str],
    value_cols: Sequence[str],
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean and CI of each value column within each group (one row per seed in ``df``).

    Returns one row per group: the ``group_cols``, then ``<metric>_mean``, ``<metric>_ci_low``,
    ``<metric>_ci_high`` per metric, and ``n_seeds`` (rows in the group). If ``df`` has a ``seed``
    column, a seed appearing twice in one group is an error (a grouping column is missing, e.g. ``step``).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    confidence = _confidence(confidence)
    group_cols, value_cols = list(group_cols), list(value_cols)
    if isinstance(group_cols, str) or isinstance(value_cols, str):
        raise TypeError("group_cols and value_cols must be lists of column names")
    if not value_cols:
        raise ValueError("value_cols is empty; name at least one metric column to summarize")
    missing = [c for c in group_cols + value_cols if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the DataFrame; it has {list(df.columns)}")
    if "seed" in df.columns and "seed" not in group_cols and len(df):
        dup = df.duplicated(subset=group_cols + ["seed"], keep=False) if group_cols else df["seed"].duplicated(keep=False)
        if dup.any():
            raise ValueError(
                "a seed appears more than once within a group; add the missing grouping column (e.g. 'step') "
                f"to group_cols {group_cols}"
            )
    values = df[value_cols].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    if np.isinf(values.to_numpy()).any():
        raise ValueError("value columns contain inf; a confidence interval of an infinite mean is meaningless")
    keys = df[group_cols] if group_cols else pd.DataFrame({"__all__": np.zeros(len(df), dtype=np.int64)}, index=df.index)
    by = list(keys.columns)
    grouped = pd.concat([keys, values], axis=1).groupby(by, dropna=False, sort=True)
    agg = grouped[value_cols].agg(["mean", "std", "count"])
    sizes = grouped.size()
    out = agg.index.to_frame(index=False)[group_cols] if group_cols else pd.DataFrame(index=range(len(agg)))
    cols: dict[str, np.ndarray] = {}
    for c in value_cols:
        mean = agg[(c, "mean")].to_numpy(dtype=np.float64)
        h = _halfwidth(agg[(c, "std")].to_numpy(), agg[(c, "count")].to_numpy(), confidence)
        cols[f"{c}_mean"], cols[f"{c}_ci_low"], cols[f"{c}_ci_high"] = mean, mean - h, mean + h
    out = pd.concat([out, pd.DataFrame(cols)], axis=1)
    out["n_seeds"] = sizes.to_numpy(dtype=np.int64)
    return out


def _metric_names(summary: pd.DataFrame) -> list[str]:
    return [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]


def _fmt(mean: float, low: float, high: float, digits: int) -> str:
    if not np.isfinite(mean):
        return "–"
    if np.isfinite(low) and np.isfinite(high):
        return f"{mean:.{digits}f} ± {(high - low) / 2:.{digits}f}"
    return f"{mean:.{digits}f}"


def format_cells(summary: pd.DataFrame, *, digits: int = 3, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The summary as strings: group columns, one ``"0.812 ± 0.034"`` column per metric, ``n_seeds``.

    ``±`` is the CI half-width; a metric with one seed shows the mean alone, one never measured ``–``.
    ``columns`` picks and orders the metrics (default: all).
    """
    if not isinstance(summary, pd.DataFrame):
        raise TypeError(f"summary must be a DataFrame from summarize(), got {type(summary).__name__}")
    names = _metric_names(summary) if columns is None else list(columns)
    if not names:
        raise ValueError("the summary has no '<metric>_mean' columns; build it with summarize()")
    for m in names:
        for suffix in ("_mean", "_ci_low", "_ci_high"):
            if f"{m}{suffix}" not in summary.columns:
                raise ValueError(f"column {m}{suffix!s} is missing; build the summary with summarize()")
    stat_cols = {f"{m}{s}" for m in names for s in ("_mean", "_ci_low", "_ci_high")}
    all_stats = {f"{m}{s}" for m in _metric_names(summary) for s in ("_mean", "_ci_low", "_ci_high")}
    group_cols = [c for c in summary.columns if c not in all_stats | stat_cols and c != "n_seeds"]
    out = summary[group_cols].astype(str).copy()
    for m in names:
        out[m] = [
            _fmt(a, b, c, digits)
            for a, b, c in zip(summary[f"{m}_mean"], summary[f"{m}_ci_low"], summary[f"{m}_ci_high"])
        ]
    if "n_seeds" in summary.columns:
        out["n_seeds"] = summary["n_seeds"].astype(str)
    return out


def format_table(summary: pd.DataFrame, *, digits: int = 3, columns: Sequence[str] | None = None) -> str:
    """A GitHub-markdown table of :func:`summarize` output, values as ``"0.812 ± 0.034"`` (CI half-width).

    ``columns`` picks and orders the metrics shown (default: all); group columns and ``n_seeds`` always show.
    """
    cells = format_cells(summary, digits=digits, columns=columns)

    def esc(s: Any) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(esc(c) for c in cells.columns) + " |"
    rule = "|" + "|".join("---" for _ in cells.columns) + "|"
    rows = ["| " + " | ".join(esc(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"
