"""Ensembles of linear probes with mutually orthogonal directions (the paper's mitigation #1)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from jaxtyping import Float
from sklearn.base import clone
from tqdm.auto import tqdm

from probe_lens.probes._solvers import compute_threads, gram_with_intercept, preconditioner
from probe_lens.probes.base import (
    ArrayLike,
    BaseProbe,
    Probe,
    autocast_off,
    check_acts,
    classes_from_state,
    compute_dtype,
    encode_params,
    json_value,
    library_version,
    standardization,
)
from probe_lens.probes.logistic import LogisticProbe
from probe_lens.probes.mass_mean import MassMeanProbe
from probe_lens.probes.metrics import auroc

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
        f"base must be a probe instance (e.g. LogisticProbe(C=0.1)) or one of {sorted(names)}, got {base!r}"
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

    def member_proba(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... k"]:
        """Per-member P(positive) in float32 (float64 for float64 input), autocast disabled."""
        check_acts(acts, self.weight.shape[0])
        compute = compute_dtype(acts)
        with autocast_off(acts.device):
            w = self.weight.to(device=acts.device, dtype=compute)
            b = self.bias.to(device=acts.device, dtype=compute)
            return torch.sigmoid(acts.to(compute) @ w + b)

    def forward(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, ...]:
        p = self.member_proba(acts)
        out = p.mean(dim=-1) if self.aggregate == "mean" else p.amax(dim=-1)
        return out.to(acts.dtype)


class DiverseProbeEnsemble(Probe):
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
        pos_label: the positive class (default: the larger label, e.g. 1 or True); members are
            fit on the same labels and share the ensemble's ``classes_``.
        model_name, hook, pooling, label: metadata, copied to every member.

    Fitted: ``members_`` (list of fitted probes, each usable alone), ``directions_`` (float32
    [k, d_model]), ``coef_raw_`` (float64 [k, d_model]), ``bias_`` (float64 [k]),
    ``member_train_auroc_`` (float64 [k]), ``n_features_in_``, ``classes_`` ([negative, positive],
    shared by the members); penalty: ``orthogonality_`` (final penalty weight), ``n_iter_``.
    Like every ``Probe``: ``member_probes()`` returns the members, ``is_ensemble`` is True.
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
        pos_label: Any = None,
        model_name: str | None = None,
        hook: str | None = None,
        pooling: str | None = None,
        label: str = "positive",
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
        self.pos_label = pos_label
        self.model_name = model_name
        self.hook = hook
        self.pooling = pooling
        self.label = label

    is_ensemble: ClassVar[bool] = True
    _fitted_attr = "members_"

    @classmethod
    def _test_instances(cls) -> list[DiverseProbeEnsemble]:
        return [cls(n_probes=2, progress=False), cls(n_probes=2, method="penalty", progress=False)]

    def _expected_failed_checks(self) -> dict[str, str]:
        if self.method != "nullspace" or self.n_probes < 2:
            return {}
        return {
            "check_classifier_data_not_an_array": (
                "its 12 points are symmetric about the first member's direction, so the "
                "orthogonal complement has identical class means and the second nullspace member "
                "has no direction: fit raises a ValueError by design (method='penalty' passes)"
            )
        }

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
                f"orthogonality must be > 0 and max_cosine in (0, 1); got {self.orthogonality!r}, {self.max_cosine!r}"
            )

    def fit(self, X: Float[ArrayLike, "n d_model"], y: ArrayLike) -> DiverseProbeEnsemble:
        """Fit all members on X [n, d_model] and two-class labels y [n]. Returns self."""
        self._check_params()
        return super().fit(X, y)

    def _fit_encoded(self, X: np.ndarray, y: np.ndarray) -> None:
        if self.n_probes > X.shape[1]:
            raise ValueError(
                f"n_probes={self.n_probes} orthogonal directions do not fit in {X.shape[1]} "
                f"feature(s) (d_model={X.shape[1]}); use n_probes <= d_model."
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
            if "pos_label" in m.get_params(deep=False):
                m.set_params(pos_label=self.pos_label)
            m.classes_ = self.classes_.copy()  # members were fit on 0/1; they predict our labels
            m.library_version_ = library_version()
        self._set_members(members, n_fit=len(y), n_positive=int(y.sum()), classes=self.classes_)
        self.member_train_auroc_ = np.array([auroc(y, m.decision_function(X)) for m in members])

    def _member_template(self) -> BaseProbe:
        """A fresh base probe that takes the 0/1 labels the ensemble encoded."""
        probe = make_base_probe(self.base)
        if "pos_label" in probe.get_params(deep=False):
            probe.set_params(pos_label=None)
        return probe

    def _fit_nullspace(self, X: np.ndarray, y: np.ndarray) -> list[BaseProbe]:
        d = X.shape[1]
        Q = np.zeros((d, 0))
        members: list[BaseProbe] = []
        for i in tqdm(range(self.n_probes), desc="nullspace probes", disable=not self.progress):
            Xp = X - (X @ Q) @ Q.T
            try:
                probe = self._member_template().fit(Xp, y)
            except ValueError as exc:
                if i == 0:
                    raise
                raise ValueError(
                    f"nullspace member {i} found no direction orthogonal to the previous {i}: "
                    f"{exc} The complement of their directions carries no class signal; use "
                    f"n_probes={i} or method='penalty'."
                ) from exc
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
        base = self._member_template()
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
        w_rows = base._weights(y)  # the base's class_weight, as each member fit alone would use it
        sw = (torch.ones(n, dtype=torch.float64) if w_rows is None else w_rows)[:, None]
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
            data = (sw * (F.softplus(logits) - yt * logits)).sum() / n
            R = sw * (torch.sigmoid(logits) - yt) / n
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
        self,
        members: Sequence[BaseProbe],
        *,
        n_fit: int | None,
        n_positive: int | None,
        classes: np.ndarray | None = None,
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
        self.classes_ = np.array([0, 1]) if classes is None else np.asarray(classes).copy()
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
            classes=self.classes_,
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

    def member_probes(self) -> list[BaseProbe]:
        """The fitted members (the same objects as ``members_``)."""
        self._check_fitted()
        return list(self.members_)

    # ---- inference --------------------------------------------------------------------------

    def member_decision_function(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, "n k"]:
        """Each member's logit of P(positive), float64 [n, k]."""
        X = self._check_predict_X(X)
        return X @ self.coef_raw_.T + self.bias_

    def member_proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, "n k"]:
        """P(positive) per example and member, float64 [n, k]."""
        z = self.member_decision_function(X)
        return 0.5 * (1.0 + np.tanh(0.5 * z))

    def member_scores(self, X: Float[ArrayLike, "n d_model"], y: ArrayLike) -> Float[np.ndarray, " k"]:
        """AUROC of each member on (X, y), float64 [k]."""
        z = self.member_decision_function(X)
        y01 = self._encode_y(y, z.shape[0])
        return np.array([auroc(y01, z[:, i]) for i in range(z.shape[1])])

    def proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        """Aggregated P(positive), float64 [n] (== ``predict_proba(X)[:, 1]`` == ``forward``)."""
        p = self.member_proba(X)
        return p.mean(axis=1) if self.aggregate == "mean" else p.max(axis=1)

    def decision_function(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        """Logit of the aggregated probability, float64 [n]."""
        p = self.proba(X)
        return np.log(np.clip(p, 1e-300, 1.0)) - np.log(np.clip(1.0 - p, 1e-300, 1.0))

    def _positive(self, X: ArrayLike) -> np.ndarray:
        return self.proba(X) > 0.5

    def score(self, X: Float[ArrayLike, "n d_model"], y: ArrayLike) -> float:
        """AUROC of the aggregated probability."""
        p = self.proba(X)
        return auroc(self._encode_y(y, len(p)), p)

    def as_module(self) -> EnsembleModule:
        """An ``EnsembleModule`` with the members' frozen raw-space weights."""
        self._check_fitted()
        return EnsembleModule(self.coef_raw_.T.copy(), self.bias_, self.aggregate)

    def _module_key(self) -> str:
        return self.aggregate

    def member_forward(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "... k"]:
        """Per-member P(positive) in torch, [..., k] (float32, float64 for float64 input)."""
        self._check_fitted()
        check_acts(acts, self.n_features_in_)
        return cast(EnsembleModule, self._module_on(acts.device)).member_proba(acts)

    # ---- io ---------------------------------------------------------------------------------

    def _to_record(self, prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        self._check_fitted()
        record: dict[str, Any] = {
            "class": type(self).__name__,
            "params": encode_params(self),
            "state": json_value(
                {
                    "n_fit": self.n_fit_,
                    "n_positive": self.n_positive_,
                    "classes": self._classes_state(),
                    "orthogonality_": getattr(self, "orthogonality_", None),
                    "n_iter_": getattr(self, "n_iter_", None),
                },
                "state",
            ),
            "library_version": getattr(self, "library_version_", None),
            "members": [m._to_record(f"{prefix}members.{i}.", tensors) for i, m in enumerate(self.members_)],
        }
        tensors[prefix + "member_train_auroc"] = np.asarray(self.member_train_auroc_, dtype=np.float64)
        return record

    @classmethod
    def _from_record(
        cls,
        record: Mapping[str, Any],
        tensors: Mapping[str, np.ndarray],
        prefix: str,
        *,
        resolve: Callable[[str], type[Probe]],
        decode_params: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> DiverseProbeEnsemble:
        ens = cls(**decode_params(record["params"]))
        members = [
            resolve(rec["class"])._from_record(
                rec, tensors, f"{prefix}members.{i}.", resolve=resolve, decode_params=decode_params
            )
            for i, rec in enumerate(record["members"])
        ]
        state = record["state"]
        ens._set_members(
            members,
            n_fit=state.get("n_fit"),
            n_positive=state.get("n_positive"),
            classes=classes_from_state(state.get("classes")),
        )
        ens.member_train_auroc_ = tensors[prefix + "member_train_auroc"]
        for key in ("orthogonality_", "n_iter_"):
            if state.get(key) is not None:
                setattr(ens, key, state[key])
        ens.library_version_ = record.get("library_version")
        return ens


def _cosines(directions: np.ndarray) -> np.ndarray:
    """Cosine-similarity matrix of the rows of ``directions`` [k, d] (float64)."""
    D = np.asarray(directions, dtype=np.float64)
    D = D / np.linalg.norm(D, axis=1, keepdims=True)
    return D @ D.T
