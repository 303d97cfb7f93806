"""Ensembles of linear probes with mutually orthogonal directions (the paper's mitigation #1)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from sklearn.base import BaseEstimator, clone
from tqdm.auto import tqdm

from probe_lens.probes._solvers import compute_threads, gram_with_intercept, preconditioner
from probe_lens.probes.base import (
    ArrayLike,
    BaseProbe,
    ProbeMetadataMixin,
    _check_acts,
    as_binary_labels,
    as_numpy_2d,
    auroc,
    library_version,
    standardization,
)
from probe_lens.probes.logistic import LogisticProbe
from probe_lens.probes.mass_mean import MassMeanProbe

METHODS = ("nullspace", "penalty")
AGGREGATES = ("mean", "max")


def make_base_probe(base: BaseProbe | str) -> BaseProbe:
    """``"logistic"`` -> LogisticProbe(), ``"mass_mean"`` / ``"lda"`` -> MassMeanProbe, or a clone."""
    if isinstance(base, BaseProbe):
        return clone(base)
    names = {
        "logistic": lambda: LogisticProbe(),
        "mass_mean": lambda: MassMeanProbe("none"),
        "lda": lambda: MassMeanProbe("tied"),
    }
    if isinstance(base, str) and base in names:
        return names[base]()
    raise ValueError(
        f"base must be a probe instance (e.g. LogisticProbe(C=0.1)) or one of {sorted(names)}, "
        f"got {base!r}"
    )


class EnsembleModule(torch.nn.Module):
    """k frozen linear probes in one matmul, member probabilities aggregated by mean or max."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, aggregate: str = "mean") -> None:
        super().__init__()
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.aggregate = aggregate
        # weight: [d_model, k]
        self.weight = torch.nn.Parameter(torch.as_tensor(weight).double(), requires_grad=False)
        self.bias = torch.nn.Parameter(torch.as_tensor(bias).double(), requires_grad=False)

    def member_proba(
        self, acts: Float[torch.Tensor, "... d_model"]
    ) -> Float[torch.Tensor, "... k"]:
        _check_acts(acts, self.weight.shape[0])
        compute = torch.float64 if acts.dtype == torch.float64 else torch.float32
        w = self.weight.to(device=acts.device, dtype=compute)
        b = self.bias.to(device=acts.device, dtype=compute)
        return torch.sigmoid(acts.to(compute) @ w + b)

    def forward(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "..."]:
        p = self.member_proba(acts)
        out = p.mean(dim=-1) if self.aggregate == "mean" else p.amax(dim=-1)
        return out.to(acts.dtype)


class DiverseProbeEnsemble(ProbeMetadataMixin, BaseEstimator):
    """``n_probes`` linear probes whose directions are mutually orthogonal.

    method="nullspace": fit ``base``; project the data onto the orthogonal complement of all
        directions found so far; fit again; ... Directions are orthogonal to float precision, and
        later members are weaker when the signal lives in few directions.
    method="penalty": fit all k L2-logistic probes jointly (objective = sum of the members'
        LogisticProbe objectives + ``orthogonality * sum_{i<j} cos(w_i, w_j)^2`` on raw-space
        directions), from random starts. If the largest |cos| exceeds ``max_cosine`` the penalty
        is multiplied by 10 and the fit resumed (at most ``max_rounds`` times). Members are then
        sorted by training AUROC, strongest first. Requires a LogisticProbe base with a float C.

    Args:
        n_probes: k >= 1. base: template probe (cloned per member) or "logistic" | "mass_mean" |
            "lda". aggregate: "mean" | "max" of member probabilities for ``predict_proba`` and
            ``forward``. random_state: seed of the penalty method's random starts.
        model_name, hook, pooling, label: metadata, copied to every member.

    Fitted: ``members_`` (list of fitted probes, each usable alone), ``directions_`` (float32
    [k, d_model]), ``coef_raw_`` (float64 [k, d_model]), ``bias_`` (float64 [k]),
    ``member_train_auroc_`` (float64 [k]), ``n_features_in_``; penalty: ``orthogonality_``
    (final penalty weight), ``n_iter_``.
    """

    def __init__(
        self,
        n_probes: int = 10,
        method: str = "nullspace",
        *,
        base: BaseProbe | str = "logistic",
        aggregate: str = "mean",
        orthogonality: float = 1.0,
        max_cosine: float = 0.01,
        max_rounds: int = 6,
        random_state: int = 0,
        progress: bool = True,
        model_name: str | None = None,
        hook: str | None = None,
        pooling: str | None = None,
        label: str = "toxic",
    ) -> None:
        self.n_probes = n_probes
        self.method = method
        self.base = base
        self.aggregate = aggregate
        self.orthogonality = orthogonality
        self.max_cosine = max_cosine
        self.max_rounds = max_rounds
        self.random_state = random_state
        self.progress = progress
        self.model_name = model_name
        self.hook = hook
        self.pooling = pooling
        self.label = label

    # ---- fitting --------------------------------------------------------------------------

    def _check_params(self) -> None:
        if isinstance(self.n_probes, bool) or not isinstance(self.n_probes, (int, np.integer)):
            raise TypeError(f"n_probes must be an int, got {self.n_probes!r}")
        if self.n_probes < 1:
            raise ValueError(f"n_probes must be >= 1, got {self.n_probes}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {self.aggregate!r}")
        if not self.orthogonality > 0 or not 0 < self.max_cosine < 1:
            raise ValueError(
                f"orthogonality must be > 0 and max_cosine in (0, 1); got {self.orthogonality!r}, "
                f"{self.max_cosine!r}"
            )

    def fit(self, X: Float[ArrayLike, "n d_model"], y: Int[ArrayLike, " n"]) -> DiverseProbeEnsemble:
        """Fit all members on X [n, d_model], y [n] (0/1). Returns self."""
        self._check_params()
        self._validate_metadata_params()
        X = as_numpy_2d(X)
        y = as_binary_labels(y, X.shape[0])
        if self.n_probes > X.shape[1]:
            raise ValueError(
                f"n_probes={self.n_probes} orthogonal directions do not fit in d_model={X.shape[1]}"
            )
        if self.method == "nullspace":
            members = self._fit_nullspace(X, y)
        else:
            # one thread: its skinny [n, d] x [d, k] products ran ~3x faster that way (2 cores)
            with compute_threads(0):
                members = self._fit_penalty(X, y)
        meta = {k: getattr(self, k) for k in ("model_name", "hook", "pooling", "label")}
        for m in members:
            m.set_metadata(**meta)
            m.library_version_ = library_version()
        self._set_members(members, n_fit=len(y), n_positive=int(y.sum()))
        self.member_train_auroc_ = np.array([auroc(y, m.decision_function(X)) for m in members])
        self.library_version_ = library_version()
        return self

    def _fit_nullspace(self, X: np.ndarray, y: np.ndarray) -> list[BaseProbe]:
        d = X.shape[1]
        Q = np.zeros((d, 0))
        members: list[BaseProbe] = []
        for i in tqdm(range(self.n_probes), desc="nullspace probes", disable=not self.progress):
            Xp = X - (X @ Q) @ Q.T
            probe = make_base_probe(self.base).fit(Xp, y)
            # Xp @ w == X @ (P w): the member's effective raw weight lies in the complement of Q.
            w = probe.coef_raw_
            w_eff = w - Q @ (Q.T @ w)
            if np.linalg.norm(w_eff) <= 1e-8 * np.linalg.norm(w):
                raise ValueError(
                    f"nullspace member {i} found no direction orthogonal to the previous {i}; "
                    "use fewer probes or a different base probe."
                )
            probe._set_fitted(w_eff, probe.bias_, n_fit=probe.n_fit_, n_positive=probe.n_positive_)
            q = w_eff / np.linalg.norm(w_eff)
            q = q - Q @ (Q.T @ q)  # second Gram-Schmidt pass against rounding
            Q = np.column_stack([Q, q / np.linalg.norm(q)])
            members.append(probe)
        return members

    def _fit_penalty(self, X: np.ndarray, y: np.ndarray) -> list[BaseProbe]:
        base = make_base_probe(self.base)
        if not isinstance(base, LogisticProbe) or isinstance(base.C, str):
            raise ValueError(
                "method='penalty' fits L2-logistic members jointly: base must be a LogisticProbe "
                f"with a float C (got {self.base!r}). Use method='nullspace' for other bases."
            )
        k, (n, d) = self.n_probes, X.shape
        C = float(base.C)
        lam = 1.0 / (C * n)
        mean, scale = standardization(X, base.standardize)
        Z = torch.from_numpy((X - mean) / scale)
        yt = torch.from_numpy(y.astype(np.float64))[:, None]
        L = preconditioner(gram_with_intercept(Z, seed=self.random_state), lam)
        LT = L.T.contiguous()
        inv_scale = torch.from_numpy(1.0 / scale)[:, None]
        eye = torch.eye(k, dtype=torch.float64)
        mu = float(self.orthogonality)

        def unpack(v: torch.Tensor) -> torch.Tensor:  # v [(d+1)*k] -> theta [d+1, k]
            return torch.linalg.solve_triangular(LT, v.view(d + 1, k), upper=True)

        def objective(v_np: np.ndarray) -> tuple[float, np.ndarray]:
            # Hand-written gradient: autograd's backward was ~10x slower here (skinny GEMMs).
            theta = unpack(torch.from_numpy(v_np))
            W, b = theta[:d], theta[d]
            logits = torch.addmm(b.expand(n, k), Z, W)
            data = (F.softplus(logits) - yt * logits).sum() / n
            R = (torch.sigmoid(logits) - yt) / n
            raw = W * inv_scale
            norms = raw.norm(dim=0, keepdim=True)
            D = raw / norms
            off = D.T @ D - eye
            pen = 0.5 * mu * (off**2).sum()
            loss = data + 0.5 * lam * (W**2).sum() + pen
            g_D = 2.0 * mu * (D @ off)
            g_raw = (g_D - D * (D * g_D).sum(dim=0, keepdim=True)) / norms
            g_theta = torch.empty(d + 1, k, dtype=torch.float64)
            g_theta[:d] = (R.T @ Z).T + lam * W + g_raw * inv_scale  # (R^T Z)^T: 5x faster than Z^T R
            g_theta[d] = R.sum(dim=0)
            g_v = torch.linalg.solve_triangular(L, g_theta, upper=False)
            return float(loss), g_v.reshape(-1).numpy()

        gen = torch.Generator().manual_seed(int(self.random_state))
        theta0 = torch.zeros(d + 1, k, dtype=torch.float64)
        theta0[:d] = torch.randn(d, k, generator=gen, dtype=torch.float64) / np.sqrt(d)
        v = (LT @ theta0).reshape(-1).numpy()
        self.n_iter_ = 0
        rounds = tqdm(range(self.max_rounds), desc="penalty ensemble", disable=not self.progress)
        for _ in rounds:
            res = scipy.optimize.minimize(
                objective,
                v,
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": base.max_iter, "gtol": base.tol, "ftol": 1e-15, "maxcor": 20},
            )
            v, self.n_iter_ = res.x, self.n_iter_ + int(res.nit)
            raw = (unpack(torch.from_numpy(v))[:d] * inv_scale).numpy()
            cos = _cosines(raw.T)
            worst = float(np.abs(cos - np.eye(k)).max()) if k > 1 else 0.0
            if worst <= self.max_cosine:
                break
            mu *= 10.0
        else:
            warnings.warn(
                f"penalty ensemble: max |cos| between directions is {worst:.3g} > max_cosine="
                f"{self.max_cosine} after {self.max_rounds} rounds; raise orthogonality or "
                "max_rounds, or use method='nullspace'.",
                RuntimeWarning,
                stacklevel=3,
            )
        self.orthogonality_ = mu
        theta = unpack(torch.from_numpy(v)).numpy()
        members: list[BaseProbe] = []
        for i in range(k):
            m = clone(base)
            m.mean_, m.scale_ = mean.copy(), scale.copy()
            coef = theta[:d, i] / scale
            m._set_fitted(coef, float(theta[d, i] - mean @ coef), n_fit=n, n_positive=int(y.sum()))
            m.C_, m.n_iter_, m.converged_ = C, self.n_iter_, bool(res.success)
            m.cv_Cs_, m.cv_scores_ = None, None
            members.append(m)
        order = np.argsort([-auroc(y, m.decision_function(X)) for m in members], kind="stable")
        return [members[i] for i in order]

    def _set_members(
        self, members: Sequence[BaseProbe], *, n_fit: int | None, n_positive: int | None
    ) -> None:
        if len(members) == 0:
            raise ValueError("an ensemble needs at least one member")
        d = members[0].n_features_in_
        if any(m.n_features_in_ != d for m in members):
            raise ValueError("ensemble members have different d_model")
        self.members_ = list(members)
        self.coef_raw_ = np.stack([m.coef_raw_ for m in members])
        self.bias_ = np.array([m.bias_ for m in members], dtype=np.float64)
        self.directions_ = np.stack([m.direction_ for m in members]).astype(np.float32)
        self.n_features_in_ = int(d)
        self.classes_ = np.array([0, 1])
        self.n_fit_, self.n_positive_ = n_fit, n_positive
        self._modules_by_device: dict[str, EnsembleModule] = {}

    # ---- members ----------------------------------------------------------------------------

    def __len__(self) -> int:
        self._check_fitted()
        return len(self.members_)

    def member(self, i: int) -> BaseProbe:
        """The i-th fitted member: a complete probe (predict_proba, forward, save_probe...)."""
        self._check_fitted()
        if not -len(self.members_) <= i < len(self.members_):
            raise IndexError(f"member index {i} out of range for {len(self.members_)} members")
        return self.members_[i]

    def subset(self, indices: Sequence[int]) -> DiverseProbeEnsemble:
        """A new fitted ensemble made of copies of the given members (e.g. train vs held-out)."""
        self._check_fitted()
        indices = [int(i) for i in indices]
        if not indices:
            raise ValueError("subset needs at least one member index")
        for i in indices:
            self.member(i)  # range check
        new = clone(self).set_params(n_probes=len(indices))
        new._set_members(
            [copy.deepcopy(self.members_[i]) for i in indices],
            n_fit=self.n_fit_,
            n_positive=self.n_positive_,
        )
        new.member_train_auroc_ = self.member_train_auroc_[indices]
        new.library_version_ = getattr(self, "library_version_", None)
        if hasattr(self, "orthogonality_"):
            new.orthogonality_ = self.orthogonality_
        return new

    def set_metadata(self, **kwargs: Any) -> DiverseProbeEnsemble:
        """Set metadata on the ensemble and on every member."""
        super().set_metadata(**kwargs)
        for m in getattr(self, "members_", []):
            m.set_metadata(**kwargs)
        return self

    # ---- inference --------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "members_"):
            raise RuntimeError(
                "This DiverseProbeEnsemble is not fitted yet: call fit(X, y) or load_probe(path)."
            )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "members_")

    @property
    def d_model(self) -> int | None:
        return getattr(self, "n_features_in_", None)

    def _check_predict_X(self, X: ArrayLike) -> np.ndarray:
        self._check_fitted()
        X = as_numpy_2d(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features but this ensemble was fit on d_model="
                f"{self.n_features_in_}. Pass activations from the same model and hook."
            )
        return X

    def member_decision_function(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, "n k"]:
        X = self._check_predict_X(X)
        return X @ self.coef_raw_.T + self.bias_

    def member_proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, "n k"]:
        """P(y=1) per example and member, float64 [n, k]."""
        z = self.member_decision_function(X)
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def member_scores(self, X: Float[ArrayLike, "n d_model"], y: Int[ArrayLike, " n"]) -> np.ndarray:
        """AUROC of each member on (X, y), float64 [k]."""
        z = self.member_decision_function(X)
        y = as_binary_labels(y, z.shape[0])
        return np.array([auroc(y, z[:, i]) for i in range(z.shape[1])])

    def proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        """Aggregated P(y=1), float64 [n] (== ``predict_proba(X)[:, 1]`` == ``forward``)."""
        p = self.member_proba(X)
        return p.mean(axis=1) if self.aggregate == "mean" else p.max(axis=1)

    def predict_proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, "n 2"]:
        p = self.proba(X)
        return np.stack([1.0 - p, p], axis=1)

    def decision_function(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        """Logit of the aggregated probability."""
        p = np.clip(self.proba(X), 1e-300, 1.0)
        q = np.clip(1.0 - self.proba(X), 1e-300, 1.0)
        return np.log(p) - np.log(q)

    def predict(self, X: Float[ArrayLike, "n d_model"]) -> Int[np.ndarray, " n"]:
        return (self.proba(X) > 0.5).astype(np.int64)

    def score(self, X: Float[ArrayLike, "n d_model"], y: Int[ArrayLike, " n"]) -> float:
        """AUROC of the aggregated probability."""
        p = self.proba(X)
        return auroc(as_binary_labels(y, len(p)), p)

    def accuracy(self, X: Float[ArrayLike, "n d_model"], y: Int[ArrayLike, " n"]) -> float:
        p = self.predict(X)
        return float(np.mean(p == as_binary_labels(y, len(p), require_both=False)))

    def as_module(self) -> EnsembleModule:
        self._check_fitted()
        return EnsembleModule(self.coef_raw_.T.copy(), self.bias_, self.aggregate)

    def _module_on(self, device: torch.device) -> EnsembleModule:
        cache = self.__dict__.setdefault("_modules_by_device", {})
        key = f"{device}/{self.aggregate}"
        if key not in cache:
            cache[key] = self.as_module().to(device)
        return cache[key]

    def member_forward(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... k"]:
        """Per-member P(y=1) in torch, [..., k] (float32, float64 for float64 input)."""
        self._check_fitted()
        return self._module_on(acts.device).member_proba(acts)

    def forward(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "..."]:
        """Aggregated P(y=1) for activations [..., d_model]; differentiable w.r.t. ``acts``."""
        self._check_fitted()
        if not isinstance(acts, torch.Tensor):
            _check_acts(acts, self.n_features_in_)
        return self._module_on(acts.device)(acts)

    __call__ = forward


def _cosines(directions: np.ndarray) -> np.ndarray:
    """Cosine-similarity matrix of the rows of ``directions`` [k, d] (float64)."""
    D = np.asarray(directions, dtype=np.float64)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    return D @ D.T
