"""Confidence intervals for a study: means over seeds, AUROCs over examples, and paired contrasts.

The CI of a mean over ``n`` seeds is ``mean ± t_{(1+c)/2, n-1} * s / sqrt(n)`` with ``s`` the sample
standard deviation (ddof=1). NaN values (a metric not measured for that seed) are skipped; with one
value the interval is undefined (NaN), with none the mean is NaN too.

AUROC intervals (:func:`auroc_ci`, :func:`paired_auroc_diff`) quantify example-level noise of one
model's probe scores: DeLong's variance (Sun & Xu 2014 midrank algorithm, O(n log n)) or a stratified
bootstrap; with ``clusters`` (several continuations of one prompt) the clustered DeLong variance
(Obuchowski 1997) or a bootstrap over whole clusters. :func:`paired_contrasts` compares cells seed by seed (the seed-level noise).

Over seeds, :func:`random_effects` combines per-seed estimates and their within-seed variances
(DerSimonian-Laird tau^2, Hartung-Knapp-Sidik-Jonkman interval, I^2), :func:`sign_flip_p` is the exact
sign-flip permutation test and :func:`holm` the family-wise correction of many contrasts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats as _st

__all__ = [
    "auroc_ci",
    "describe_contrasts",
    "format_cells",
    "format_table",
    "mean_ci",
    "holm",
    "paired_auroc_diff",
    "paired_auroc_var",
    "paired_contrasts",
    "RandomEffects",
    "random_effects",
    "sign_flip_p",
    "summarize",
]


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
        dup = (
            df.duplicated(subset=group_cols + ["seed"], keep=False) if group_cols else df["seed"].duplicated(keep=False)
        )
        if dup.any():
            raise ValueError(
                "a seed appears more than once within a group; add the missing grouping column (e.g. 'step') "
                f"to group_cols {group_cols}"
            )
    values = df[value_cols].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    if np.isinf(values.to_numpy()).any():
        raise ValueError("value columns contain inf; a confidence interval of an infinite mean is meaningless")
    keys = (
        df[group_cols] if group_cols else pd.DataFrame({"__all__": np.zeros(len(df), dtype=np.int64)}, index=df.index)
    )
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


# ---- AUROC intervals over examples -------------------------------------------------------------

_AUROC_METHODS = ("delong", "bootstrap")
_TRANSFORMS = ("logit", "identity")
_BOOT_CHUNK = 2_000_000  # resampled scores held in memory at once


def _binary_labels(y: ArrayLike) -> NDArray[np.bool_]:
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"y must be an array of 0/1 labels, got {type(y).__name__}") from exc
    if arr.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per example), got shape {arr.shape}")
    if arr.dtype == np.bool_:
        labels = arr
    else:
        try:
            num = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"y must hold 0/1 labels, got dtype {arr.dtype}") from exc
        bad = ~np.isin(num, (0.0, 1.0))
        if bad.any():
            raise ValueError(f"y must hold only 0/1 (or bool) labels; found {np.unique(arr[bad])[:5].tolist()}")
        labels = num == 1.0
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        only = "positive (1)" if n_pos else "negative (0)"
        raise ValueError(
            f"y has only {only} labels ({labels.size} examples); AUROC needs both classes, so add examples "
            "of the other class"
        )
    return labels


def _score_matrix(labels: NDArray[np.bool_], *scores: ArrayLike) -> NDArray[np.float64]:
    """``(k, n)`` float scores, validated against the labels."""
    rows = []
    for i, s in enumerate(scores):
        name = "scores" if len(scores) == 1 else f"scores_{'ab'[i]}"
        try:
            arr = np.asarray(s, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an array of numbers, got {type(s).__name__}") from exc
        if arr.shape != labels.shape:
            raise ValueError(f"{name} has shape {arr.shape} but y has shape {labels.shape}; pass one score per label")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or inf; drop those examples first")
        rows.append(arr)
    return np.stack(rows)


def _check_interval_args(confidence: Any, method: Any, n_boot: Any, seed: Any) -> float:
    confidence = _confidence(confidence)
    if method not in _AUROC_METHODS:
        raise ValueError(f"method must be one of {_AUROC_METHODS}, got {method!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int (e.g. 2000), got {n_boot!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return confidence


def _delong(labels: NDArray[np.bool_], scores: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """AUROCs ``(k,)`` and their DeLong covariance ``(k, k)`` (Sun & Xu 2014, midranks)."""
    pos, neg = scores[:, labels], scores[:, ~labels]
    m, n = pos.shape[1], neg.shape[1]
    tx = _st.rankdata(pos, axis=1)  # midranks within positives
    ty = _st.rankdata(neg, axis=1)
    tz = _st.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (tz[:, :m] - tx) / n  # per positive: share of negatives it outranks (ties count 1/2)
    v01 = 1.0 - (tz[:, m:] - ty) / m  # per negative: share of positives that outrank it
    auc = v10.mean(axis=1)
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(scores), len(scores)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(scores), len(scores)))
    return auc, s10 / m + s01 / n


def _boot_aurocs(labels: NDArray[np.bool_], scores: NDArray[np.float64], n_boot: int, seed: int) -> NDArray[np.float64]:
    """``(n_boot, k)`` AUROCs of stratified resamples (positives and negatives resampled separately)."""
    pos, neg = scores[:, labels], scores[:, ~labels]
    m, n = pos.shape[1], neg.shape[1]
    rng = np.random.default_rng(int(seed))
    idx_pos = rng.integers(0, m, size=(n_boot, m))
    idx_neg = rng.integers(0, n, size=(n_boot, n))
    out = np.empty((n_boot, len(scores)))
    chunk = max(1, _BOOT_CHUNK // (m + n))
    for start in range(0, n_boot, chunk):
        sl = slice(start, start + chunk)
        for k in range(len(scores)):
            both = np.concatenate([pos[k][idx_pos[sl]], neg[k][idx_neg[sl]]], axis=1)
            ranks = _st.rankdata(both, axis=1)
            out[sl, k] = (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    return out


def _cluster_ids(clusters: ArrayLike | None, n: int) -> NDArray[np.int64] | None:
    """``clusters`` (one id per row) as integer codes ``(n,)`` numbered in order of first appearance (one row
    per cluster: ``arange(n)``); None stays None."""
    if clusters is None:
        return None
    arr = np.asarray(clusters)
    if arr.ndim != 1 or arr.size != n:
        raise ValueError(f"clusters must hold one id per example ({n}), got shape {arr.shape}")
    _, first, inverse = np.unique(arr, return_index=True, return_inverse=True)
    order = np.empty(len(first), dtype=np.int64)
    order[np.argsort(first, kind="stable")] = np.arange(len(first))
    return order[inverse.reshape(-1)]


def _clustered_delong(
    labels: NDArray[np.bool_], scores: NDArray[np.float64], codes: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """AUROCs ``(k,)`` and their clustered DeLong covariance ``(k, k)`` (Obuchowski 1997): DeLong's structural
    components summed within each cluster, their covariance taken over clusters. With one row per cluster
    it is DeLong's covariance."""
    pos, neg = scores[:, labels], scores[:, ~labels]
    m, n = pos.shape[1], neg.shape[1]
    tx, ty = _st.rankdata(pos, axis=1), _st.rankdata(neg, axis=1)
    tz = _st.rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10, v01 = (tz[:, :m] - tx) / n, 1.0 - (tz[:, m:] - ty) / m
    auc = v10.mean(axis=1)
    n_clusters = int(codes.max()) + 1
    cp, cn = codes[labels], codes[~labels]
    x = np.stack([np.bincount(cp, v, n_clusters) for v in v10])  # (k, I): components summed per cluster
    yv = np.stack([np.bincount(cn, v, n_clusters) for v in v01])
    mi, ni = np.bincount(cp, minlength=n_clusters), np.bincount(cn, minlength=n_clusters)
    dx, dy = x - auc[:, None] * mi, yv - auc[:, None] * ni
    i10, i01, i_all = int((mi > 0).sum()), int((ni > 0).sum()), int(((mi + ni) > 0).sum())
    k = len(scores)
    s10 = i10 / ((i10 - 1) * m) * (dx @ dx.T) if i10 > 1 else np.zeros((k, k))
    s01 = i01 / ((i01 - 1) * n) * (dy @ dy.T) if i01 > 1 else np.zeros((k, k))
    s11 = i_all / (i_all - 1) * (dx @ dy.T) if i_all > 1 else np.zeros((k, k))
    return auc, s10 / m + s01 / n + (s11 + s11.T) / (m * n)


def _cluster_boot_aurocs(
    labels: NDArray[np.bool_], scores: NDArray[np.float64], codes: NDArray[np.int64], n_boot: int, seed: int
) -> NDArray[np.float64]:
    """``(n_boot, k)`` AUROCs of cluster resamples: whole clusters drawn with replacement, all their rows
    kept, stratified by kind (clusters of positives only, of negatives only, mixed ones; drawn in that
    order). With one row per cluster this draws exactly :func:`_boot_aurocs`' resamples (same seed)."""
    n_clusters = int(codes.max()) + 1
    npos = np.bincount(codes, labels.astype(np.int64), n_clusters)
    size = np.bincount(codes, minlength=n_clusters)
    present = size > 0
    strata = [
        np.flatnonzero(present & (npos == size)),
        np.flatnonzero(present & (npos == 0)),
        np.flatnonzero(present & (npos > 0) & (npos < size)),
    ]
    members = [np.flatnonzero(codes == c) for c in range(n_clusters)]
    rng = np.random.default_rng(int(seed))
    draws = [s[rng.integers(0, len(s), size=(n_boot, len(s)))] for s in strata if len(s)]
    out = np.full((n_boot, len(scores)), np.nan)
    for b in range(n_boot):
        rows = np.concatenate([members[c] for d in draws for c in d[b]])
        y = labels[rows]
        m, n = int(y.sum()), int((~y).sum())
        if m == 0 or n == 0:
            continue  # a resample of one class has no AUROC (possible only with mixed clusters)
        for k in range(len(scores)):
            both = np.concatenate([scores[k][rows[y]], scores[k][rows[~y]]])
            ranks = _st.rankdata(both)
            out[b, k] = (ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    return out[~np.isnan(out).any(axis=1)]


def _percentile(values: NDArray[np.float64], confidence: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return float(lo), float(hi)


def auroc_ci(
    y: ArrayLike,
    scores: ArrayLike,
    *,
    confidence: float = 0.95,
    method: str = "delong",
    n_boot: int = 2000,
    seed: int = 0,
    transform: str = "logit",
    clusters: ArrayLike | None = None,
) -> tuple[float, float, float]:
    """``(auroc, low, high)``: the AUROC of ``scores`` for labels ``y`` with a confidence interval.

    The interval covers example-level noise only (which examples were drawn), not seed-to-seed noise.

    Args:
        y: ``(n,)`` 0/1 or bool labels; both classes must occur.
        scores: ``(n,)`` finite scores, higher = more positive. Ties count 1/2 (as in sklearn).
        confidence: coverage of the interval, in (0, 1).
        method: ``"delong"``: DeLong's variance (Sun & Xu 2014 fast midrank algorithm) and a normal
            interval; ``"bootstrap"``: percentile interval of ``n_boot`` stratified resamples
            (positives and negatives resampled separately, so each resample keeps the class sizes).
        n_boot, seed: bootstrap resamples and their seed (``"bootstrap"`` only).
        transform: for ``"delong"``: ``"logit"`` (default) builds the normal interval on
            ``logit(AUROC)`` (delta method, ``se / (A (1 - A))``) and maps it back, so it stays inside
            (0, 1) and is asymmetric near 1, where the plain interval undercovers; ``"identity"`` is the
            textbook ``A ± z se`` clipped to [0, 1]. An AUROC of exactly 0 or 1 has DeLong variance 0
            and gets the point interval ``(A, A, A)`` with either transform.
        clusters: ``(n,)`` cluster ids (e.g. the prompt of each continuation; None: every row its own). Rows
            of one cluster are not independent, so the interval resamples whole clusters (``"bootstrap"``,
            stratified by cluster kind) or uses the clustered DeLong variance (Obuchowski 1997). With one
            row per cluster either equals the unclustered interval.
    """
    confidence = _check_interval_args(confidence, method, n_boot, seed)
    if transform not in _TRANSFORMS:
        raise ValueError(f"transform must be one of {_TRANSFORMS}, got {transform!r}")
    labels = _binary_labels(y)
    mat = _score_matrix(labels, scores)
    codes = _cluster_ids(clusters, labels.size)
    auc_arr, cov = _delong(labels, mat) if codes is None else _clustered_delong(labels, mat, codes)
    auc = float(auc_arr[0])
    if method == "bootstrap":
        boots = (
            _boot_aurocs(labels, mat, int(n_boot), int(seed))
            if codes is None
            else _cluster_boot_aurocs(labels, mat, codes, int(n_boot), int(seed))
        )
        lo, hi = _percentile(boots[:, 0], confidence)
        return (auc, lo, hi)
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    z = float(_st.norm.ppf((1.0 + confidence) / 2.0))
    if se == 0.0 or auc in (0.0, 1.0):
        return (auc, auc, auc)
    if transform == "logit":
        centre, half = math.log(auc / (1.0 - auc)), z * se / (auc * (1.0 - auc))
        return (auc, float(_st.logistic.cdf(centre - half)), float(_st.logistic.cdf(centre + half)))
    return (auc, max(0.0, auc - z * se), min(1.0, auc + z * se))


def paired_auroc_diff(
    y: ArrayLike,
    scores_a: ArrayLike,
    scores_b: ArrayLike,
    *,
    confidence: float = 0.95,
    method: str = "delong",
    n_boot: int = 2000,
    seed: int = 0,
    clusters: ArrayLike | None = None,
) -> tuple[float, float, float]:
    """``(diff, low, high)`` with ``diff = AUROC(scores_a) - AUROC(scores_b)`` on the same examples.

    ``"delong"``: normal interval with ``Var(A_a) + Var(A_b) - 2 Cov(A_a, A_b)`` from DeLong's
    structural components (the two AUROCs are correlated because they share examples), clipped to
    [-1, 1]; ``"bootstrap"``: percentile interval of the difference over ``n_boot`` paired stratified
    resamples (the same examples for both). Identical score vectors give ``(0, 0, 0)``. ``clusters``: as in
    :func:`auroc_ci` (whole clusters resampled, or the clustered DeLong covariance).
    """
    confidence = _check_interval_args(confidence, method, n_boot, seed)
    labels = _binary_labels(y)
    mat = _score_matrix(labels, scores_a, scores_b)
    codes = _cluster_ids(clusters, labels.size)
    diff, var = _paired_delong(labels, mat, codes)
    if method == "bootstrap":
        boots = (
            _boot_aurocs(labels, mat, int(n_boot), int(seed))
            if codes is None
            else _cluster_boot_aurocs(labels, mat, codes, int(n_boot), int(seed))
        )
        lo, hi = _percentile(boots[:, 0] - boots[:, 1], confidence)
        return (diff, lo, hi)
    half = float(_st.norm.ppf((1.0 + confidence) / 2.0)) * math.sqrt(max(var, 0.0))
    return (diff, max(-1.0, diff - half), min(1.0, diff + half))


def _paired_delong(
    labels: NDArray[np.bool_], mat: NDArray[np.float64], codes: NDArray[np.int64] | None = None
) -> tuple[float, float]:
    auc, cov = _delong(labels, mat) if codes is None else _clustered_delong(labels, mat, codes)
    return float(auc[0] - auc[1]), float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])


def paired_auroc_var(
    y: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, *, clusters: ArrayLike | None = None
) -> tuple[float, float]:
    """``(diff, variance)``: ``AUROC(scores_a) - AUROC(scores_b)`` on the same examples and its DeLong
    variance ``Var(A_a) + Var(A_b) - 2 Cov(A_a, A_b)`` (a seed's within-seed variance of a contrast;
    ``clusters``: the clustered DeLong covariance, as in :func:`auroc_ci`)."""
    labels = _binary_labels(y)
    mat = _score_matrix(labels, scores_a, scores_b)
    return _paired_delong(labels, mat, _cluster_ids(clusters, labels.size))


# ---- paired contrasts between cells over seeds ----------------------------------------------------

CONTRAST_COLUMNS = [
    "contrast",
    "a",
    "b",
    "metric",
    "mean_diff",
    "ci_low",
    "ci_high",
    "n_seeds",
    "resolved",
    "per_seed",
]
"""The columns of :func:`paired_contrasts`' table."""


def _seed_label(seed: Any) -> str:
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return f"s{int(seed)}"
    if isinstance(seed, (float, np.floating)) and float(seed).is_integer():
        return f"s{int(seed)}"
    return str(seed)


def paired_contrasts(
    results: pd.DataFrame,
    metric: str,
    pairs: Sequence[tuple[str, str]],
    *,
    cell_col: str = "cell",
    seed_col: str = "seed",
    confidence: float = 0.95,
    digits: int = 3,
) -> pd.DataFrame:
    """Seed-paired differences ``metric[a, s] - metric[b, s]`` for each ``(a, b)`` in ``pairs``.

    Only seeds where both cells have a (non-NaN) value count. Returns one row per pair with columns
    ``contrast`` (``"a − b"``), ``a``, ``b``, ``metric``, ``mean_diff``, ``ci_low``, ``ci_high`` (Student-t
    interval over seeds, :func:`mean_ci`), ``n_seeds``, ``resolved`` (the interval excludes 0; False
    with fewer than 2 seeds) and ``per_seed`` (``"s0: -0.081, s1: -0.060"``, ``digits`` decimals).
    The confidence is kept in ``out.attrs["confidence"]`` for :func:`describe_contrasts`.
    """
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame (one row per cell and seed), got {type(results).__name__}")
    confidence = _confidence(confidence)
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a column name (str), got {metric!r}")
    missing = [c for c in (cell_col, seed_col, metric) if c not in results.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in results; it has {list(results.columns)}")
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
        raise TypeError("pairs must be a list of (a, b) cell-name tuples, e.g. [('probe_sft_1', 'base')]")
    pairs = list(pairs)
    cells = set(results[cell_col].tolist())
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise TypeError(f"each pair must be an (a, b) tuple of cell names, got {pair!r}")
        unknown = [c for c in pair if c not in cells]
        if unknown:
            raise ValueError(
                f"cell(s) {unknown} of pair {tuple(pair)} are not in results[{cell_col!r}]; "
                f"known cells: {sorted(map(str, cells))}"
            )
        if pair[0] == pair[1]:
            raise ValueError(f"pair {tuple(pair)} compares a cell with itself; name two different cells")
    if results.duplicated(subset=[cell_col, seed_col]).any():
        raise ValueError(
            f"a ({cell_col}, {seed_col}) combination appears more than once; filter results to one row per "
            "cell and seed (e.g. the final step) first"
        )
    values = pd.to_numeric(results[metric], errors="coerce").astype(np.float64)
    if np.isinf(values.to_numpy()).any():
        raise ValueError(f"column {metric!r} contains inf; a difference of infinite values is meaningless")
    table = pd.Series(values.to_numpy(), index=pd.MultiIndex.from_frame(results[[cell_col, seed_col]]))
    rows = []
    for a, b in pairs:
        va, vb = table.xs(a, level=0).dropna(), table.xs(b, level=0).dropna()
        seeds = sorted(set(va.index) & set(vb.index))
        diffs = np.array([va[s] - vb[s] for s in seeds], dtype=np.float64)
        mean, low, high = mean_ci(diffs, confidence)
        resolved = bool(len(seeds) >= 2 and (low > 0.0 or high < 0.0))
        rows.append(
            {
                "contrast": f"{a} − {b}",
                "a": a,
                "b": b,
                "metric": metric,
                "mean_diff": mean,
                "ci_low": low,
                "ci_high": high,
                "n_seeds": len(seeds),
                "resolved": resolved,
                "per_seed": ", ".join(f"{_seed_label(s)}: {d:.{digits}f}" for s, d in zip(seeds, diffs)),
            }
        )
    out = pd.DataFrame(rows, columns=CONTRAST_COLUMNS)
    out["n_seeds"] = out["n_seeds"].astype(np.int64)
    out["resolved"] = out["resolved"].astype(bool)
    out.attrs["confidence"] = confidence
    return out


def describe_contrasts(
    df: pd.DataFrame,
    *,
    digits: int = 3,
    labels: Mapping[str, str] | None = None,
    confidence: float | None = None,
) -> str:
    """One plain-English sentence per row of :func:`paired_contrasts`, joined by newlines.

    E.g. ``"probe_sft_1 − classifier_sft in auroc: -0.081 (95% CI -0.150 to -0.010, 3 seeds): resolved
    (the interval excludes 0)."``. ``labels`` maps metric column names to readable names
    (``{"probe/auroc/logistic_L6": "curated AUROC of logistic_L6"}``); ``confidence`` defaults to the
    one ``paired_contrasts`` used.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be the DataFrame from paired_contrasts(), got {type(df).__name__}")
    missing = [c for c in CONTRAST_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} are missing; build df with paired_contrasts()")
    if isinstance(digits, bool) or not isinstance(digits, (int, np.integer)) or digits < 0:
        raise ValueError(f"digits must be a non-negative int, got {digits!r}")
    conf = _confidence(df.attrs.get("confidence", 0.95) if confidence is None else confidence)
    pct = f"{100 * conf:g}%"
    labels = dict(labels or {})
    sentences = []
    for row in df.itertuples(index=False):
        head = f"{row.contrast} in {labels.get(row.metric, row.metric)}"
        n = int(row.n_seeds)
        if n == 0:
            sentences.append(f"{head}: no seed has values for both cells, so it cannot be resolved.")
        elif n == 1:
            sentences.append(f"{head}: {row.mean_diff:.{digits}f} (1 seed): cannot be resolved with 1 seed.")
        else:
            verdict = "resolved (the interval excludes 0)" if row.resolved else "not resolved (the interval includes 0)"
            sentences.append(
                f"{head}: {row.mean_diff:.{digits}f} ({pct} CI {row.ci_low:.{digits}f} to "
                f"{row.ci_high:.{digits}f}, {n} seeds): {verdict}."
            )
    return "\n".join(sentences)


# ---- over seeds: random effects, sign-flip test, multiplicity ---------------------------------

MAX_SIGN_FLIP_SEEDS = 22
"""The most seeds :func:`sign_flip_p` enumerates (2^22 sign patterns)."""


@dataclasses.dataclass(frozen=True)
class RandomEffects:
    """A random-effects estimate over seeds (see :func:`random_effects`)."""

    estimate: float
    ci_low: float
    ci_high: float
    se: float
    """The Hartung-Knapp-Sidik-Jonkman standard error of ``estimate``."""
    tau2: float
    """DerSimonian-Laird between-seed variance (truncated at 0); NaN without within-seed variances."""
    i2: float
    """Share of the total variance that is between seeds, ``max(0, (Q - (k - 1)) / Q)``; NaN without
    within-seed variances."""
    q: float
    """Cochran's Q of the fixed-effect fit."""
    k: int
    method: str
    """``"DL+HKSJ"``, or ``"t over seeds"`` when within-seed variances are missing (equal weights)."""


def _finite_1d(name: str, values: Any) -> NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be numbers, got {type(values).__name__}") from exc
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; pass only the seeds measured")
    return arr


def random_effects(estimates: Any, variances: Any = None, *, confidence: float = 0.95) -> RandomEffects:
    """Combine per-seed estimates ``y_i`` with within-seed variances ``v_i`` under a random-effects model.

    ``tau^2`` is DerSimonian-Laird's moment estimator (``max(0, (Q - (k - 1)) / (S1 - S2 / S1))``, ``S1 =
    sum w``, ``S2 = sum w^2``, ``w = 1 / v``); the estimate weighs each seed by ``1 / (v_i + tau^2)``; its
    interval is Hartung-Knapp-Sidik-Jonkman's: ``mu ± t_{k-1} sqrt(sum w*(y - mu)^2 / ((k - 1) sum w*))``
    (not truncated below by the fixed-effect variance, as statsmodels' ``combine_effects`` WLS rows).
    ``variances`` None, or any not finite and > 0: equal weights, which makes the HKSJ interval the
    Student-t interval over seeds (:func:`mean_ci`); ``tau2`` and ``i2`` are then NaN.
    """
    confidence = _confidence(confidence)
    y = _finite_1d("estimates", estimates)
    k, nan = y.size, math.nan
    v = None if variances is None else np.asarray(variances, dtype=np.float64).reshape(-1)
    if v is not None and v.shape != y.shape:
        raise ValueError(f"{v.size} variances for {k} estimates; pass one per seed")
    known = v is not None and bool(np.isfinite(v).all() and (v > 0).all())
    if k == 0:
        return RandomEffects(nan, nan, nan, nan, nan, nan, nan, 0, "none")
    if known:
        assert v is not None
        w = 1.0 / v
        mu_fe = float(w @ y / w.sum())
        q = float(w @ (y - mu_fe) ** 2)
        c = float(w.sum() - (w**2).sum() / w.sum())
        tau2 = max(0.0, (q - (k - 1)) / c) if k > 1 else 0.0
        i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
        w_re, method = 1.0 / (v + tau2), "DL+HKSJ"
    else:
        w_re, q, tau2, i2, method = np.ones(k), nan, nan, nan, "t over seeds"
    mu = float(w_re @ y / w_re.sum())
    if k < 2:
        return RandomEffects(mu, nan, nan, nan, tau2, i2, q, k, method)
    se = math.sqrt(float(w_re @ (y - mu) ** 2) / ((k - 1) * float(w_re.sum())))
    half = float(_st.t.ppf((1.0 + confidence) / 2.0, k - 1)) * se
    return RandomEffects(mu, mu - half, mu + half, se, tau2, i2, q, k, method)


def sign_flip_p(diffs: Any) -> float:
    """Exact two-sided sign-flip permutation p-value of ``mean(diffs) = 0`` over seeds.

    Every one of the ``2^k`` sign patterns is enumerated; ``p`` is the share whose ``|mean|`` reaches the
    observed one (the observed pattern included), so with ``k`` seeds ``p >= 2 / 2^k`` (0.25 with 3).
    NaN with no seed; at most :data:`MAX_SIGN_FLIP_SEEDS` seeds.
    """
    d = _finite_1d("diffs", diffs)
    k = d.size
    if k == 0:
        return math.nan
    if k > MAX_SIGN_FLIP_SEEDS:
        raise ValueError(f"sign_flip_p enumerates 2^k patterns; {k} seeds is more than {MAX_SIGN_FLIP_SEEDS}")
    observed = abs(float(d.sum()))
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))
    hits = 0
    chunk = 1 << 16
    for start in range(0, 1 << k, chunk):
        codes = np.arange(start, min(start + chunk, 1 << k), dtype=np.int64)
        signs = 1.0 - 2.0 * ((codes[:, None] >> np.arange(k)) & 1)
        hits += int((np.abs(signs @ d) >= observed - tol).sum())
    return hits / float(1 << k)


def holm(p_values: Any) -> NDArray[np.float64]:
    """Holm's step-down adjusted p-values (family-wise error) of ``p_values``; NaN entries stay NaN and do
    not count in the family."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    if idx.size == 0:
        return out
    if ((p[idx] < 0) | (p[idx] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = idx[np.argsort(p[idx], kind="stable")]
    m = idx.size
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(1.0, adjusted)
    return out
