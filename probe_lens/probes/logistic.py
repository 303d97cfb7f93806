"""L2-regularised logistic regression probe (the paper's probe)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from probe_lens.probes._solvers import compute_threads, fit_logistic, gram_with_intercept
from probe_lens.probes.base import BaseProbe, auroc, standardization

DEFAULT_CS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


class LogisticProbe(BaseProbe):
    """L2 logistic regression on (optionally) standardised activations.

    Minimises sklearn's objective ``C * sum_i logloss_i + ||w||^2 / 2`` (intercept unpenalised) on
    ``Z = (X - mean_) / scale_``, so with the same C it agrees with
    ``make_pipeline(StandardScaler(), LogisticRegression(C=C))`` fit to convergence. The solver is
    preconditioned L-BFGS (``probe_lens.probes._solvers``), typically ~10 iterations.

    Args:
        C: inverse regularisation strength (float > 0), or ``"cv"`` to choose it from ``Cs`` by
            stratified ``cv``-fold cross-validation (``cv_scoring``: held-out ``"log_loss"``
            (default) or ``"auroc"``), then refit on all data with the best value (``C_``).
        standardize: standardise each activation dimension before fitting (paper: yes).
        tol: L-BFGS gradient tolerance in whitened coordinates. max_iter: iteration cap.
        Cs, cv, cv_scoring, random_state: cross-validation settings (used when ``C="cv"``).
        class_weight: None (every row weighs 1), ``"balanced"`` (each row of class c weighs ``n / (2 * n_c)``)
            or ``{label: weight}`` (labels not named weigh 1), as sklearn's ``LogisticRegression(class_weight=...)``
            (cross-validation folds weigh their own rows so, and score a class-weighted log-loss).
        pos_label, model_name, hook, pooling, label: see ``BaseProbe`` (default positive
            class: the larger label, e.g. 1 or True).

    Fitted: everything in ``BaseProbe`` plus ``C_`` (C used), ``n_iter_``, ``converged_``, and with
    ``C="cv"`` ``cv_Cs_`` (sorted Cs) and ``cv_scores_`` (mean held-out score per C, higher is better).
    """

    _extra_state: tuple[str, ...] = ("C_", "n_iter_", "converged_", "cv_Cs_", "cv_scores_")

    def __init__(
        self,
        C: float | str = 1.0,
        *,
        standardize: bool = True,
        tol: float = 1e-6,
        max_iter: int = 500,
        Cs: Sequence[float] = DEFAULT_CS,
        cv: int = 5,
        cv_scoring: str = "log_loss",
        random_state: int = 0,
        class_weight: str | dict[Any, float] | None = None,
        pos_label: Any = None,
        model_name: str | None = None,
        hook: str | None = None,
        pooling: str | None = None,
        label: str = "positive",
    ) -> None:
        super().__init__(pos_label=pos_label, model_name=model_name, hook=hook, pooling=pooling, label=label)
        self.C = C
        self.standardize = standardize
        self.tol = tol
        self.max_iter = max_iter
        self.Cs = Cs
        self.cv = cv
        self.cv_scoring = cv_scoring
        self.random_state = random_state
        self.class_weight = class_weight

    def _check_params(self) -> None:
        cw = self.class_weight
        if not (cw is None or cw == "balanced" or isinstance(cw, dict)):
            raise ValueError(f"class_weight must be None, 'balanced' or a {{label: weight}} dict, got {cw!r}")
        if isinstance(self.C, str):
            if self.C != "cv":
                raise ValueError(f"C must be a positive float or 'cv', got {self.C!r}")
            if len(self.Cs) == 0 or any(float(c) <= 0 for c in self.Cs):
                raise ValueError(f"Cs must be a non-empty list of positive floats, got {self.Cs!r}")
            if int(self.cv) < 2:
                raise ValueError(f"cv must be >= 2 folds, got {self.cv!r}")
            if self.cv_scoring not in ("log_loss", "auroc"):
                raise ValueError(f"cv_scoring must be 'log_loss' or 'auroc', got {self.cv_scoring!r}")
        elif not (isinstance(self.C, (int, float)) and float(self.C) > 0):
            raise ValueError(f"C must be a positive float or 'cv', got {self.C!r}")
        if not float(self.tol) > 0 or int(self.max_iter) < 1:
            raise ValueError(f"tol must be > 0 and max_iter >= 1, got {self.tol!r}, {self.max_iter!r}")

    def _fit_raw(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        self._check_params()
        with compute_threads(X.shape[0] * X.shape[1]):
            return self._fit_standardized(X, y)

    def _fit_standardized(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        self.cv_Cs_, self.cv_scores_ = None, None
        if self.C == "cv":
            self.cv_Cs_ = np.array(sorted(float(c) for c in self.Cs))
            self.cv_scores_ = self._cross_validate(X, y)
            C = float(self.cv_Cs_[int(np.argmax(self.cv_scores_))])
        else:
            C = float(self.C)
        self.mean_, self.scale_ = standardization(X, self.standardize)
        Z = torch.from_numpy((X - self.mean_) / self.scale_)
        yt = torch.from_numpy(y.astype(np.float64))
        sol = fit_logistic(Z, yt, C, tol=self.tol, max_iter=self.max_iter, sample_weight=self._weights(y))
        if not sol.converged:
            warnings.warn(
                f"LogisticProbe did not converge in {self.max_iter} iterations (C={C:g}); the "
                "data may be separable with weak regularisation. Lower C or raise max_iter.",
                RuntimeWarning,
                stacklevel=3,
            )
        self.C_ = C
        self.n_iter_ = sol.n_iter
        self.converged_ = sol.converged
        coef = sol.w / self.scale_
        return coef, sol.b - float(self.mean_ @ coef)

    def _weights(self, y: np.ndarray) -> torch.Tensor | None:
        """Row weights ``[n]`` of labels ``y`` (0/1) under ``class_weight`` (None: unweighted)."""
        cw = self.class_weight
        if cw is None:
            return None
        if isinstance(cw, dict):
            per_class = np.array([float(cw.get(c, 1.0)) for c in self.classes_])
        else:
            per_class = len(y) / (2.0 * np.bincount(y, minlength=2).astype(np.float64))
        return torch.from_numpy(per_class[y])

    def _cross_validate(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Mean held-out score for each C in sorted(Cs) (warm-started from small to large C)."""
        Cs = sorted(float(c) for c in self.Cs)
        n_splits = int(self.cv)
        if np.bincount(y, minlength=2).min() < n_splits:
            raise ValueError(
                f"C='cv' with cv={n_splits} folds needs at least {n_splits} examples of each "
                f"class; got {np.bincount(y, minlength=2).tolist()}. Use a fixed C or fewer folds."
            )
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        scores = np.zeros((n_splits, len(Cs)))
        for f, (tr, te) in enumerate(folds.split(X, y)):
            mean, scale = standardization(X[tr], self.standardize)
            Ztr = torch.from_numpy((X[tr] - mean) / scale)
            Zte = (X[te] - mean) / scale
            ytr = torch.from_numpy(y[tr].astype(np.float64))
            gram = gram_with_intercept(Ztr, seed=self.random_state)
            w0, b0 = None, 0.0
            for j, C in enumerate(Cs):
                sw = self._weights(y[tr])
                sol = fit_logistic(
                    Ztr, ytr, C, gram=gram, w0=w0, b0=b0, tol=self.tol, max_iter=self.max_iter, sample_weight=sw
                )
                w0, b0 = sol.w, sol.b
                z = Zte @ sol.w + sol.b
                if self.cv_scoring == "auroc":
                    scores[f, j] = auroc(y[te], z)
                else:  # negative mean log-loss (class-weighted with class_weight), computed stably from logits
                    wt = self._weights(y[te])
                    wte = np.ones(len(te)) if wt is None else wt.numpy()
                    scores[f, j] = -float(np.average(np.logaddexp(0.0, z) - y[te] * z, weights=wte))
        return scores.mean(axis=0)
