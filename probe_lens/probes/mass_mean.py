"""Mass-mean probe: direction = difference of class means (optionally covariance-adjusted, LDA)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.linalg
from sklearn.covariance import empirical_covariance, ledoit_wolf, shrunk_covariance

from probe_lens.probes._solvers import platt_scale
from probe_lens.probes.base import BaseProbe


class MassMeanProbe(BaseProbe):
    """Difference-of-means probe, Platt-calibrated so ``predict_proba`` is meaningful.

    ``covariance="none"``: direction ∝ mu_1 - mu_0 (raw activation space).
    ``covariance="tied"``: direction ∝ Sigma^-1 (mu_1 - mu_0), Sigma the prior-weighted within-class
    covariance (linear discriminant analysis; same estimator as sklearn's
    ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage=...)``). ``shrinkage``: ``"auto"``
    (Ledoit-Wolf on standardised features, recommended when n is not >> d_model), a float in
    [0, 1] (``(1-a) Sigma + a tr(Sigma)/d I``), or None (empirical covariance).

    The score ``s = x @ direction`` is then calibrated by 1-D logistic regression
    (``P(y=1) = sigmoid(a s + c)``, ``calibration_ = [a, c]``), so
    ``coef_raw_ = a * direction``. Fitted extras: ``class_means_`` (float64 [2, d_model]: negative,
    positive class). pos_label, model_name, hook, pooling, label: see ``BaseProbe``.
    """

    _extra_state = ("class_means_", "calibration_")

    def __init__(
        self,
        covariance: str = "none",
        *,
        shrinkage: str | float | None = "auto",
        pos_label: Any = None,
        model_name: str | None = None,
        hook: str | None = None,
        pooling: str | None = None,
        label: str = "positive",
    ) -> None:
        super().__init__(pos_label=pos_label, model_name=model_name, hook=hook, pooling=pooling, label=label)
        self.covariance = covariance
        self.shrinkage = shrinkage

    def _check_params(self) -> None:
        if self.covariance not in ("none", "tied"):
            raise ValueError(f"covariance must be 'none' or 'tied', got {self.covariance!r}")
        s = self.shrinkage
        if not (
            s is None or s == "auto" or (isinstance(s, (int, float)) and not isinstance(s, bool) and 0.0 <= s <= 1.0)
        ):
            raise ValueError(f"shrinkage must be 'auto', a float in [0, 1] or None, got {s!r}")

    def _class_cov(self, Xk: np.ndarray) -> np.ndarray:
        if self.shrinkage == "auto":
            std = Xk.std(axis=0)
            std[std == 0] = 1.0
            centred = (Xk - Xk.mean(axis=0)) / std
            return std[:, None] * ledoit_wolf(centred, assume_centered=True)[0] * std[None, :]
        cov = empirical_covariance(Xk)
        if self.shrinkage is None:
            return cov
        return shrunk_covariance(cov, float(self.shrinkage))

    def _fit_raw(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        self._check_params()
        self.mean_, self.scale_ = np.zeros(X.shape[1]), np.ones(X.shape[1])
        mu0, mu1 = X[y == 0].mean(axis=0), X[y == 1].mean(axis=0)
        self.class_means_ = np.stack([mu0, mu1])
        diff = mu1 - mu0
        spread = float(np.abs(X - X.mean(axis=0)).max()) or 1.0
        if float(np.abs(diff).max()) <= 1e-12 * spread:
            raise ValueError(
                "MassMeanProbe: the two class means are identical, so there is no mass-mean "
                "direction. (In a nullspace ensemble use covariance='tied' or a LogisticProbe: "
                "after projecting out the first mass-mean direction the means coincide.)"
            )
        if self.covariance == "none":
            w = diff
        else:
            priors = np.bincount(y, minlength=2) / len(y)
            sigma = priors[0] * self._class_cov(X[y == 0]) + priors[1] * self._class_cov(X[y == 1])
            try:
                w = scipy.linalg.solve(sigma, diff, assume_a="pos")
            except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
                w = np.linalg.lstsq(sigma, diff, rcond=None)[0]
        unit = w / np.linalg.norm(w)
        a, c = platt_scale(X @ unit, y)
        if a <= 0:
            warnings.warn(
                "MassMeanProbe: the calibrated slope is not positive (the class-mean direction "
                "does not separate the classes on the fit data); the probe is unreliable.",
                RuntimeWarning,
                stacklevel=3,
            )
        self.calibration_ = np.array([a, c])
        return a * unit, c
