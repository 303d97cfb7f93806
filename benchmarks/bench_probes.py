"""Fit time of each probe type vs scikit-learn on the same data, measured side by side.

Synthetic residual-stream-like activations (correlated, anisotropic, a few large-magnitude
dimensions), labels from a noisy linear rule; n=10k train, 5k held-out test, d=1152 (Gemma-3-1B
width). Prints a markdown table: probe, our fit seconds, sklearn seconds, ratio (ours / sklearn),
held-out AUROC of both, and the cosine between the two directions.

    python benchmarks/bench_probes.py              # full size (a few minutes on 2 cores)
    python benchmarks/bench_probes.py --n 2000 --d 256   # quick
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probe_lens.probes import DiverseProbeEnsemble, LogisticProbe, MassMeanProbe


def make_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    scales = rng.lognormal(0.0, 0.7, size=d)
    scales[rng.choice(d, 4, replace=False)] *= 30.0  # massive-activation dimensions
    X = (rng.normal(size=(n, d)) @ mix) * scales + rng.normal(size=d) * 2.0
    w = np.random.default_rng(123).normal(size=d)
    s = (X / scales) @ w
    y = ((s - s.mean()) / s.std() * 1.5 + rng.logistic(size=n) > 0).astype(np.int64)
    return X, y


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def sklearn_nullspace(X, y, k: int, C: float) -> list[tuple[np.ndarray, float]]:
    """The nullspace ensemble written with sklearn's StandardScaler + LogisticRegression."""
    Q = np.zeros((X.shape[1], 0))
    out = []
    for _ in range(k):
        Xp = X - (X @ Q) @ Q.T
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(Xp, y)
        w = pipe[-1].coef_[0] / pipe[0].scale_
        b = pipe[-1].intercept_[0] - pipe[0].mean_ @ w
        w = w - Q @ (Q.T @ w)
        out.append((w, b))
        Q = np.column_stack([Q, w / np.linalg.norm(w)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--d", type=int, default=1152)
    ap.add_argument("--n-test", type=int, default=5_000)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per fit")
    ap.add_argument("--members", type=int, default=10)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    X_all, y_all = make_data(args.n + args.n_test, args.d)
    X, y, Xt, yt = X_all[: args.n], y_all[: args.n], X_all[args.n :], y_all[args.n :]
    rows = []

    def add(name, ours_fn, sk_fn, ours_scores, sk_scores, ours_dir, sk_dir, repeats=args.repeats):
        t_ours, ours = timed(ours_fn, repeats)
        if sk_fn is None:
            t_sk, sk = float("nan"), None
        else:
            t_sk, sk = timed(sk_fn, repeats)
        auc_o = roc_auc_score(yt, ours_scores(ours))
        auc_s = roc_auc_score(yt, sk_scores(sk)) if sk is not None else float("nan")
        c = cos(ours_dir(ours), sk_dir(sk)) if sk is not None else float("nan")
        rows.append((name, t_ours, t_sk, t_ours / t_sk, auc_o, auc_s, c))
        print(f"  done: {name} ({t_ours:.2f}s vs {t_sk:.2f}s)", flush=True)

    def sk_pipe(C):
        return lambda: make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000)).fit(X, y)

    def sk_raw_dir(p):
        return p[-1].coef_[0] / p[0].scale_

    for C in (1.0, 0.01):
        add(
            f"LogisticProbe(C={C:g}) vs StandardScaler+LogisticRegression(lbfgs)",
            lambda C=C: LogisticProbe(C=C).fit(X, y),
            sk_pipe(C),
            lambda p: p.decision_function(Xt),
            lambda p: p.decision_function(Xt),
            lambda p: p.direction_,
            sk_raw_dir,
        )
    Cs = (1e-3, 1e-2, 1e-1, 1.0)
    add(
        "LogisticProbe(C='cv', 4 Cs, 3 folds) vs LogisticRegressionCV",
        lambda: LogisticProbe(C="cv", Cs=Cs, cv=3).fit(X, y),
        lambda: make_pipeline(
            StandardScaler(), LogisticRegressionCV(Cs=list(Cs), cv=3, scoring="neg_log_loss", max_iter=1000)
        ).fit(X, y),
        lambda p: p.decision_function(Xt),
        lambda p: p.decision_function(Xt),
        lambda p: p.direction_,
        sk_raw_dir,
        repeats=1,
    )
    add(
        "MassMeanProbe('none') vs NearestCentroid",
        lambda: MassMeanProbe().fit(X, y),
        lambda: NearestCentroid().fit(X, y),
        lambda p: p.decision_function(Xt),
        lambda p: Xt @ (p.centroids_[1] - p.centroids_[0]),
        lambda p: p.direction_,
        lambda p: p.centroids_[1] - p.centroids_[0],
    )
    add(
        "MassMeanProbe('tied', Ledoit-Wolf) vs LDA(lsqr, shrinkage='auto')",
        lambda: MassMeanProbe("tied").fit(X, y),
        lambda: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(X, y),
        lambda p: p.decision_function(Xt),
        lambda p: p.decision_function(Xt),
        lambda p: p.direction_,
        lambda p: p.coef_[0],
    )
    k = args.members
    add(
        f"DiverseProbeEnsemble({k}, 'nullspace') vs same loop with sklearn",
        lambda: DiverseProbeEnsemble(k, "nullspace", progress=False).fit(X, y),
        lambda: sklearn_nullspace(X, y, k, 1.0),
        lambda e: e.decision_function(Xt),
        lambda ws: np.mean([1 / (1 + np.exp(-(Xt @ w + b))) for w, b in ws], axis=0),
        lambda e: e.directions_[-1],
        lambda ws: ws[-1][0],
        repeats=1,
    )
    add(
        f"DiverseProbeEnsemble({k}, 'penalty') (no sklearn equivalent)",
        lambda: DiverseProbeEnsemble(k, "penalty", progress=False).fit(X, y),
        None,
        lambda e: e.decision_function(Xt),
        None,
        lambda e: e.directions_[0],
        None,
        repeats=1,
    )

    print()
    print(
        f"n_train={args.n}, n_test={args.n_test}, d={args.d}; {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), torch threads {torch.get_num_threads()}; "
        f"best of {args.repeats} (CV and ensembles: 1 run)"
    )
    print()
    print("| probe | ours (s) | sklearn (s) | ratio | AUROC ours | AUROC sklearn | cos(dir ours, sklearn) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, t_o, t_s, r, a_o, a_s, c in rows:
        fmt = lambda v, spec: "n/a" if v != v else format(v, spec)  # noqa: E731 - NaN -> n/a
        print(
            f"| {name} | {t_o:.2f} | {fmt(t_s, '.2f')} | {fmt(r, '.2f')} | {a_o:.4f} | "
            f"{fmt(a_s, '.4f')} | {fmt(c, '.4f')} |"
        )


if __name__ == "__main__":
    main()
