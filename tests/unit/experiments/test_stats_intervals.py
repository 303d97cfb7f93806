"""AUROC intervals (DeLong, stratified bootstrap), paired AUROC differences and seed-paired contrasts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from probe_lens.experiments.stats import auroc_ci, describe_contrasts, paired_auroc_diff, paired_contrasts

T_975_DF2 = 4.302652729911275  # scipy.stats.t.ppf(0.975, 2)
Z_975 = 1.959963984540054


def _example(m=40, n=60, d=1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(m, dtype=int), np.zeros(n, dtype=int)]
    return y, np.r_[rng.normal(d, 1.0, m), rng.normal(0.0, 1.0, n)]


def _delong_bruteforce(y, score_rows):
    """DeLong structural components by the O(m n) definition: AUROCs and their covariance."""
    y = np.asarray(y).astype(bool)
    v10s, v01s = [], []
    for s in score_rows:
        x, w = s[y], s[~y]
        psi = (x[:, None] > w[None, :]) + 0.5 * (x[:, None] == w[None, :])
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
    v10, v01 = np.array(v10s), np.array(v01s)
    m, n = v10.shape[1], v01.shape[1]
    aucs = v10.mean(axis=1)
    k = len(score_rows)
    s10 = np.array([[np.sum((v10[i] - aucs[i]) * (v10[j] - aucs[j])) / (m - 1) for j in range(k)] for i in range(k)])
    s01 = np.array([[np.sum((v01[i] - aucs[i]) * (v01[j] - aucs[j])) / (n - 1) for j in range(k)] for i in range(k)])
    return aucs, s10 / m + s01 / n


# ---- AUROC value and variance ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["delong", "bootstrap"])
def test_auroc_equals_sklearn_including_ties(method):
    y, s = _example(m=30, n=50, seed=3)
    s = np.round(s, 1)  # many ties
    auc, lo, hi = auroc_ci(y, s, method=method, n_boot=200)
    assert auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert 0.0 <= lo < auc < hi <= 1.0
    auc_b, _, _ = auroc_ci(y.astype(bool), s, method=method, n_boot=200)
    assert auc_b == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    diff, _, _ = paired_auroc_diff(y, s, -(s**2), method=method, n_boot=200)
    assert diff == pytest.approx(roc_auc_score(y, s) - roc_auc_score(y, -(s**2)), abs=1e-12)


def test_delong_variance_equals_bruteforce():
    rng = np.random.default_rng(7)
    y = rng.permutation(np.r_[np.ones(9, dtype=int), np.zeros(13, dtype=int)])
    a = np.round(rng.normal(size=22) + 0.8 * y, 1)
    b = np.round(0.6 * a + rng.normal(size=22), 1)
    aucs, cov = _delong_bruteforce(y, [a, b])
    auc, lo, hi = auroc_ci(y, a, transform="identity")
    assert auc == pytest.approx(aucs[0], abs=1e-12)
    se = math.sqrt(cov[0, 0])
    assert (lo, hi) == pytest.approx((aucs[0] - Z_975 * se, aucs[0] + Z_975 * se), abs=1e-12)
    # logit interval: delta method on log(A / (1 - A))
    _, lo, hi = auroc_ci(y, a)
    c, h = math.log(aucs[0] / (1 - aucs[0])), Z_975 * se / (aucs[0] * (1 - aucs[0]))
    assert (lo, hi) == pytest.approx((1 / (1 + math.exp(-(c - h))), 1 / (1 + math.exp(-(c + h)))), abs=1e-12)
    # 90% interval is narrower by z ratio
    _, lo90, hi90 = auroc_ci(y, a, transform="identity", confidence=0.9)
    assert hi90 - lo90 == pytest.approx(2 * 1.6448536269514722 * se, abs=1e-12)
    diff, dlo, dhi = paired_auroc_diff(y, a, b)
    sd = math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert diff == pytest.approx(aucs[0] - aucs[1], abs=1e-12)
    assert (dlo, dhi) == pytest.approx((diff - Z_975 * sd, diff + Z_975 * sd), abs=1e-12)


def test_perfect_separation_gives_point_interval():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auroc_ci(y, s) == (1.0, 1.0, 1.0)
    assert auroc_ci(y, -s, transform="identity") == (0.0, 0.0, 0.0)


def test_bootstrap_is_seeded_and_stratified():
    y, s = _example(m=10, n=90, seed=1)
    r1 = auroc_ci(y, s, method="bootstrap", n_boot=300, seed=5)
    assert r1 == auroc_ci(y, s, method="bootstrap", n_boot=300, seed=5)
    assert r1 != auroc_ci(y, s, method="bootstrap", n_boot=300, seed=6)
    # with 10 positives an unstratified resample would sometimes hold none; stratified never fails
    assert auroc_ci(y, s, method="bootstrap", n_boot=2000, seed=0)[1] < r1[0]


# ---- coverage on binormal scores with a known AUROC ------------------------------------------------------


def _coverage(true_auc, draws, ci_fn, m=40, n=60, seed=11):
    d = math.sqrt(2.0) * norm.ppf(true_auc)  # negatives N(0, 1), positives N(d, 1): AUROC = Φ(d / √2)
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(m, dtype=int), np.zeros(n, dtype=int)]
    hits = 0
    for i in range(draws):
        s = np.r_[rng.normal(d, 1.0, m), rng.normal(0.0, 1.0, n)]
        _, lo, hi = ci_fn(y, s, i)
        hits += lo <= true_auc <= hi
    return hits / draws


@pytest.mark.parametrize("true_auc", [0.8, 0.95])
def test_delong_coverage(true_auc):
    cov = _coverage(true_auc, 200, lambda y, s, i: auroc_ci(y, s))
    assert 0.90 <= cov <= 0.99, cov


def test_bootstrap_coverage():
    cov = _coverage(0.8, 200, lambda y, s, i: auroc_ci(y, s, method="bootstrap", n_boot=300, seed=i))
    assert 0.90 <= cov <= 0.99, cov


@pytest.mark.parametrize("method", ["delong", "bootstrap"])
def test_paired_diff_identical_and_coverage(method):
    y, s = _example(seed=2)
    assert paired_auroc_diff(y, s, s, method=method, n_boot=200) == (0.0, 0.0, 0.0)
    # correlated scores: shared noise; a = y d_a + e_a, b = y d_b + e_b, each e ~ N(0, 1)
    d_a, d_b = math.sqrt(2) * norm.ppf(0.85), math.sqrt(2) * norm.ppf(0.75)
    true = 0.85 - 0.75
    rng = np.random.default_rng(4)
    y = np.r_[np.ones(40, dtype=int), np.zeros(60, dtype=int)]
    hits, draws = 0, 200 if method == "delong" else 100
    for i in range(draws):
        shared = rng.normal(size=100)
        e_a = math.sqrt(0.6) * shared + math.sqrt(0.4) * rng.normal(size=100)
        e_b = math.sqrt(0.6) * shared + math.sqrt(0.4) * rng.normal(size=100)
        _, lo, hi = paired_auroc_diff(y, d_a * y + e_a, d_b * y + e_b, method=method, n_boot=300, seed=i)
        hits += lo <= true <= hi
    assert 0.88 <= hits / draws <= 1.0, hits / draws


def test_interval_errors():
    y, s = _example(m=5, n=5)
    with pytest.raises(ValueError, match="only positive"):
        auroc_ci(np.ones(4), np.arange(4.0))
    with pytest.raises(ValueError, match="only negative"):
        paired_auroc_diff(np.zeros(4), np.arange(4.0), np.arange(4.0))
    with pytest.raises(ValueError, match="only 0/1"):
        auroc_ci(np.array([0, 1, 2]), np.arange(3.0))
    with pytest.raises(ValueError, match="one score per label"):
        auroc_ci(y, s[:-1])
    with pytest.raises(ValueError, match="scores_b has shape"):
        paired_auroc_diff(y, s, s[:-1])
    with pytest.raises(ValueError, match="NaN"):
        auroc_ci(y, np.r_[s[:-1], np.nan])
    with pytest.raises(ValueError, match="method must be one of"):
        auroc_ci(y, s, method="hanley")
    with pytest.raises(ValueError, match="transform"):
        auroc_ci(y, s, transform="probit")
    with pytest.raises(ValueError, match="strictly between"):
        auroc_ci(y, s, confidence=95)
    with pytest.raises(ValueError, match="n_boot"):
        auroc_ci(y, s, method="bootstrap", n_boot=0)


# ---- seed-paired contrasts between cells ----------------------------------------------------------------


def _results():
    rows = [
        ("probe", 0, 0.70),
        ("probe", 1, 0.72),
        ("probe", 2, 0.74),
        ("base", 0, 0.80),
        ("base", 1, 0.81),
        ("base", 2, 0.85),
        ("clf", 0, 0.69),
        ("clf", 1, np.nan),  # seed 1 not measured, seed 2 missing
        ("noisy", 0, 0.50),
        ("noisy", 1, 0.90),
        ("noisy", 2, 0.75),
    ]
    return pd.DataFrame(rows, columns=["cell", "seed", "auroc"]).assign(other=1.0)


def test_paired_contrasts_by_hand():
    out = paired_contrasts(_results(), "auroc", [("probe", "base"), ("probe", "clf"), ("probe", "noisy")])
    assert list(out.columns) == [
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
    first = out.iloc[0]
    # diffs -0.10, -0.09, -0.11: mean -0.10, sd 0.01
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert first["contrast"] == "probe − base" and first["a"] == "probe" and first["metric"] == "auroc"
    assert first["mean_diff"] == pytest.approx(-0.10, abs=1e-12)
    assert (first["ci_low"], first["ci_high"]) == pytest.approx((-0.10 - half, -0.10 + half), abs=1e-12)
    assert first["n_seeds"] == 3 and bool(first["resolved"])
    assert first["per_seed"] == "s0: -0.100, s1: -0.090, s2: -0.110"
    second = out.iloc[1]  # only seed 0 has both values
    assert second["n_seeds"] == 1 and not second["resolved"]
    assert second["mean_diff"] == pytest.approx(0.01) and math.isnan(second["ci_low"])
    assert second["per_seed"] == "s0: 0.010"
    third = out.iloc[2]  # diffs 0.20, -0.18, -0.01
    diffs = np.array([0.20, -0.18, -0.01])
    mean = 0.01 / 3
    sd = math.sqrt(((diffs - mean) ** 2).sum() / 2)
    assert third["mean_diff"] == pytest.approx(mean, abs=1e-12)
    assert third["ci_high"] - third["mean_diff"] == pytest.approx(T_975_DF2 * sd / math.sqrt(3), abs=1e-9)
    assert third["ci_low"] < 0 < third["ci_high"] and not third["resolved"]
    assert out["resolved"].tolist() == [True, False, False]


def test_paired_contrasts_errors():
    df = _results()
    with pytest.raises(ValueError, match=r"\['dpo'\].*known cells: \['base', 'clf', 'noisy', 'probe'\]"):
        paired_contrasts(df, "auroc", [("probe", "dpo")])
    with pytest.raises(ValueError, match=r"\['nope'\] are not in results"):
        paired_contrasts(df, "nope", [("probe", "base")])
    with pytest.raises(ValueError, match="more than once"):
        paired_contrasts(pd.concat([df, df.iloc[:1]]), "auroc", [("probe", "base")])
    with pytest.raises(ValueError, match="with itself"):
        paired_contrasts(df, "auroc", [("probe", "probe")])
    with pytest.raises(TypeError, match=r"\(a, b\)"):
        paired_contrasts(df, "auroc", [("probe", "base", "clf")])
    empty = paired_contrasts(df, "auroc", [])
    assert len(empty) == 0 and "resolved" in empty.columns


def test_describe_contrasts_wording():
    df = _results().assign(ghost=np.nan)
    out = paired_contrasts(df, "auroc", [("probe", "base"), ("probe", "clf"), ("probe", "noisy")])
    text = describe_contrasts(out, labels={"auroc": "curated AUROC of logistic_L6"})
    lines = text.splitlines()
    half = T_975_DF2 * 0.01 / math.sqrt(3)
    assert lines[0] == (
        f"probe − base in curated AUROC of logistic_L6: -0.100 (95% CI {-0.10 - half:.3f} to {-0.10 + half:.3f}, "
        "3 seeds): resolved (the interval excludes 0)."
    )
    assert lines[1] == "probe − clf in curated AUROC of logistic_L6: 0.010 (1 seed): cannot be resolved with 1 seed."
    assert lines[2].endswith("3 seeds): not resolved (the interval includes 0).")
    out90 = paired_contrasts(df, "auroc", [("probe", "base")], confidence=0.9)
    assert "(90% CI " in describe_contrasts(out90, digits=2)
    assert ": -0.10 (" in describe_contrasts(out90, digits=2)
    none = paired_contrasts(df, "ghost", [("probe", "base")])
    assert (
        describe_contrasts(none)
        == "probe − base in ghost: no seed has values for both cells, so it cannot be resolved."
    )
    with pytest.raises(ValueError, match="paired_contrasts"):
        describe_contrasts(pd.DataFrame({"a": [1]}))
