"""The one estimator API every probe shares (``BaseProbe``) and the metadata it carries.

A fitted probe is an affine score on *raw* activations::

    decision_function(x) = x @ coef_raw_ + bias_          x: [d_model] activation at ``hook``
    predict_proba(x)[:, 1] = sigmoid(decision_function(x)) = forward(x)

whatever the probe type or the standardisation it used while fitting. The raw-space form is what
the trainers backpropagate through (``forward``), what drift telemetry compares (``direction_``),
and what is saved (``probe_lens.probes.io``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from jaxtyping import Float, Int
from sklearn.base import BaseEstimator
from sklearn.metrics import accuracy_score, roc_auc_score

ArrayLike = Union[np.ndarray, torch.Tensor]

POOLINGS = ("mean", "last", "max")


def library_version() -> str:
    """probe_lens's version string (recorded in every probe's metadata)."""
    try:
        from importlib.metadata import version

        return version("probe_lens")
    except Exception:  # noqa: BLE001 - not installed (e.g. run from a source tree)
        import probe_lens

        return getattr(probe_lens, "__version__", "unknown")


@dataclass
class ProbeMetadata:
    """Where a probe reads from and what it was fit on (saved next to its tensors as JSON).

    Args:
        model_name: name of the model whose activations the probe reads (``model.cfg.model_name``).
        hook: TransformerLens hook point, e.g. ``"blocks.12.hook_resid_post"``.
        pooling: how token activations were pooled into one vector (``"mean"``, ``"last"``,
            ``"max"``) or None if unknown.
        d_model: width of the activations (filled in by ``fit``).
        label: what y=1 means (default ``"toxic"``).
        n_fit: number of examples the probe was fit on (filled in by ``fit``).
        n_positive: how many of those had y=1 (filled in by ``fit``).
        library_version: probe_lens version that fit the probe (filled in by ``fit``).
        probe_type: class name of the probe (filled in by ``fit``).
    """

    model_name: str | None = None
    hook: str | None = None
    pooling: str | None = None
    d_model: int | None = None
    label: str = "toxic"
    n_fit: int | None = None
    n_positive: int | None = None
    library_version: str | None = None
    probe_type: str | None = None

    def __post_init__(self) -> None:
        for name in ("model_name", "hook", "pooling", "library_version", "probe_type"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"ProbeMetadata.{name} must be a string or None, got {value!r}")
        if not isinstance(self.label, str) or not self.label:
            raise TypeError(f"ProbeMetadata.label must be a non-empty string, got {self.label!r}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(
                f"ProbeMetadata.pooling must be one of {POOLINGS} or None, got {self.pooling!r}"
            )
        for name in ("d_model", "n_fit", "n_positive"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0
            ):
                raise ValueError(
                    f"ProbeMetadata.{name} must be a non-negative int or None, got {value!r}"
                )
            if value is not None:
                setattr(self, name, int(value))

    @property
    def layer(self) -> int | None:
        """Layer index parsed from ``hook`` (``"blocks.{L}...."``), or None."""
        return layer_of_hook(self.hook)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_LAYER_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_of_hook(hook: str | None) -> int | None:
    """``"blocks.7.hook_resid_post"`` -> 7; None for hooks outside a block (e.g. ``"hook_embed"``)."""
    if hook is None:
        return None
    match = _LAYER_RE.search(hook if hook.startswith(".") else "." + hook)
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------------------------
# Input validation (shared by every probe)
# ----------------------------------------------------------------------------------------------


def as_numpy_2d(X: ArrayLike, *, name: str = "X") -> np.ndarray:
    """X (numpy or torch, any float dtype) -> float64 numpy [n, d], with clear errors."""
    if isinstance(X, torch.Tensor):
        X = X.detach().to("cpu", torch.float64).numpy()
    elif not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(
                f"{name} must be a numpy array or torch tensor of shape (n, d_model); "
                f"got {type(X).__name__}"
            ) from exc
    if X.dtype == object or not (
        np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)
    ):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_examples, d_model), got shape {tuple(X.shape)}. "
            "Pool token activations first (probe_lens.activations.pool) or reshape."
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(X.shape)})")
    X = np.asarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        bad = ~np.isfinite(X)
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN/inf values (in {len(rows)} rows, first rows "
            f"{rows[:5].tolist()}). Drop or fix those examples before fitting/predicting; "
            "activations overflowing in low precision are a common cause."
        )
    return X


def as_binary_labels(y: ArrayLike, n: int, *, require_both: bool = True) -> np.ndarray:
    """y (numpy/torch/list of 0/1 or bool) -> int64 numpy [n], with clear errors."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim == 2 and 1 in y.shape:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n_examples,), got shape {y.shape}")
    if len(y) != n:
        raise ValueError(
            f"X and y have different lengths: X has {n} rows but y has {len(y)} labels. "
            "Each row of X needs exactly one label."
        )
    if y.dtype == object or not (
        np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.bool_)
    ):
        raise TypeError(f"y must be binary 0/1 labels (1 = positive), got dtype {y.dtype}")
    values = np.unique(y)
    if not np.isin(values, [0, 1]).all():
        raise ValueError(
            f"y must be binary 0/1 (1 = positive class, e.g. toxic); found values "
            f"{values[:10].tolist()}. Threshold scores into labels first."
        )
    y = y.astype(np.int64)
    if require_both and len(values) < 2:
        only = int(values[0]) if len(values) else None
        raise ValueError(
            f"y contains a single class (all {only}): a probe needs examples of both classes "
            "(0 and 1). Collect or label examples of the missing class."
        )
    return y


def auroc(y: np.ndarray, scores: np.ndarray) -> float:
    """AUROC with a clear error when only one class is present."""
    if len(np.unique(y)) < 2:
        raise ValueError(
            "AUROC is undefined when y holds a single class; evaluate on data with both classes."
        )
    return float(roc_auc_score(y, scores))


# ----------------------------------------------------------------------------------------------
# The probe base class
# ----------------------------------------------------------------------------------------------


class ProbeModule(torch.nn.Module):
    """A fitted linear probe as a torch module: ``sigmoid(acts @ weight + bias)``.

    Parameters are frozen (``requires_grad=False``) unless built with ``trainable=True``;
    gradients still flow to ``acts``. Computes in float32 (float64 for float64 input) and returns
    the input's dtype.
    """

    def __init__(self, weight: np.ndarray, bias: float, *, trainable: bool = False) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(
            torch.as_tensor(np.asarray(weight, dtype=np.float64)), requires_grad=trainable
        )
        self.bias = torch.nn.Parameter(
            torch.tensor(float(bias), dtype=torch.float64), requires_grad=trainable
        )

    def logits(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "..."]:
        _check_acts(acts, self.weight.shape[0])
        compute = torch.float64 if acts.dtype == torch.float64 else torch.float32
        w = self.weight.to(device=acts.device, dtype=compute)
        b = self.bias.to(device=acts.device, dtype=compute)
        return acts.to(compute) @ w + b

    def forward(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "..."]:
        return torch.sigmoid(self.logits(acts)).to(acts.dtype)


def _check_acts(acts: torch.Tensor, d_model: int) -> None:
    if not isinstance(acts, torch.Tensor):
        raise TypeError(
            f"forward expects a torch.Tensor [..., d_model]; got {type(acts).__name__}. "
            "Use predict_proba for numpy arrays."
        )
    if not torch.is_floating_point(acts):
        raise TypeError(f"forward expects floating-point activations, got dtype {acts.dtype}")
    if acts.ndim == 0 or acts.shape[-1] != d_model:
        raise ValueError(
            f"activations have last dimension {tuple(acts.shape)[-1:] or '()'} but the probe was "
            f"fit on d_model={d_model}; check the model and hook."
        )


class ProbeMetadataMixin:
    """``set_metadata`` / ``metadata`` for estimators with model_name, hook, pooling, label params."""

    # ---- metadata -------------------------------------------------------------------------

    def _validate_metadata_params(self) -> None:
        ProbeMetadata(
            model_name=self.model_name, hook=self.hook, pooling=self.pooling, label=self.label
        )

    def set_metadata(self, **kwargs: Any) -> Any:
        """Set ``model_name``, ``hook``, ``pooling`` and/or ``label``; returns self."""
        allowed = {"model_name", "hook", "pooling", "label"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise TypeError(
                f"set_metadata got unknown field(s) {sorted(unknown)}; settable: {sorted(allowed)} "
                "(d_model, n_fit and library_version come from fit)."
            )
        merged = {k: getattr(self, k) for k in allowed} | kwargs
        ProbeMetadata(**merged)  # validate before mutating
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    @property
    def metadata(self) -> ProbeMetadata:
        return ProbeMetadata(
            model_name=self.model_name,
            hook=self.hook,
            pooling=self.pooling,
            label=self.label,
            d_model=getattr(self, "n_features_in_", None),
            n_fit=getattr(self, "n_fit_", None),
            n_positive=getattr(self, "n_positive_", None),
            library_version=getattr(self, "library_version_", None) or library_version(),
            probe_type=type(self).__name__,
        )


class BaseProbe(ProbeMetadataMixin, BaseEstimator):
    """Common API of every single-direction probe (sklearn conventions).

    Subclasses implement ``_fit_raw(X, y) -> (coef_raw, bias)`` on validated float64 numpy data
    and set ``mean_``/``scale_`` (the standardisation they used; zeros/ones if none).

    Learned state after ``fit``:
        coef_raw_ (float64 [d_model]): raw-space weight; ``decision_function = X @ coef_raw_ + bias_``.
        bias_ (float): raw-space intercept.
        direction_ (float32 [d_model]): ``coef_raw_ / ||coef_raw_||``, unit vector in activation space.
        mean_, scale_ (float64 [d_model]): standardisation used while fitting (0 / 1 if off).
        coef_, intercept_: sklearn-style aliases of ``coef_raw_`` / ``bias_`` (apply to raw X).
        n_features_in_ (int), classes_ (array [0, 1]).

    Metadata (``model_name``, ``hook``, ``pooling``, ``label``) are constructor parameters or set
    later with ``set_metadata``; ``metadata`` returns them with fit facts as a ``ProbeMetadata``.
    """

    # Names of extra fitted attributes (arrays or JSON scalars) that io saves and restores.
    _extra_state: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        model_name: str | None = None,
        hook: str | None = None,
        pooling: str | None = None,
        label: str = "toxic",
    ) -> None:
        self.model_name = model_name
        self.hook = hook
        self.pooling = pooling
        self.label = label

    # ---- fitting --------------------------------------------------------------------------

    def fit(self, X: Float[ArrayLike, "n d_model"], y: Int[ArrayLike, " n"]) -> BaseProbe:
        """Fit on activations X [n, d_model] and binary labels y [n] (1 = positive). Returns self."""
        self._validate_metadata_params()
        X = as_numpy_2d(X)
        y = as_binary_labels(y, X.shape[0])
        coef, bias = self._fit_raw(X, y)
        self._set_fitted(coef, bias, n_fit=len(y), n_positive=int(y.sum()))
        self.library_version_ = library_version()
        return self

    def _fit_raw(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def _set_fitted(
        self, coef: np.ndarray, bias: float, *, n_fit: int | None, n_positive: int | None
    ) -> None:
        coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(coef))
        if not np.isfinite(coef).all() or not np.isfinite(bias):
            raise FloatingPointError(
                f"{type(self).__name__} produced non-finite weights; the data may be degenerate."
            )
        if norm == 0.0:
            raise ValueError(
                f"{type(self).__name__} found no direction (zero weight vector): the classes are "
                "indistinguishable along every direction the probe may use. Use a weaker "
                "regularisation (larger C) or more informative activations."
            )
        self.coef_raw_ = coef
        self.bias_ = float(bias)
        self.direction_ = (coef / norm).astype(np.float32)
        self.n_features_in_ = int(coef.shape[0])
        self.classes_ = np.array([0, 1])
        self.n_fit_ = n_fit
        self.n_positive_ = n_positive
        if not hasattr(self, "mean_") or self.mean_ is None or len(self.mean_) != len(coef):
            self.mean_ = np.zeros_like(coef)
            self.scale_ = np.ones_like(coef)
        self._modules_by_device: dict[str, ProbeModule] = {}

    # sklearn-style aliases
    @property
    def coef_(self) -> np.ndarray:
        self._check_fitted()
        return self.coef_raw_

    @property
    def intercept_(self) -> float:
        self._check_fitted()
        return self.bias_

    @property
    def d_model(self) -> int | None:
        return getattr(self, "n_features_in_", None)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_raw_"):
            raise RuntimeError(
                f"This {type(self).__name__} is not fitted yet: call fit(X, y) or load_probe(path)."
            )

    # ---- inference (numpy) ----------------------------------------------------------------

    def _check_predict_X(self, X: ArrayLike) -> np.ndarray:
        self._check_fitted()
        X = as_numpy_2d(X)
        if X.shape[1] != self.n_features_in_:
            where = f" at hook {self.hook!r}" if self.hook else ""
            raise ValueError(
                f"X has {X.shape[1]} features but this {type(self).__name__} was fit on "
                f"d_model={self.n_features_in_}{where}. Pass activations from the same model and hook."
            )
        return X

    def decision_function(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        """Logit of P(y=1): ``X @ coef_raw_ + bias_`` (float64 [n])."""
        X = self._check_predict_X(X)
        return X @ self.coef_raw_ + self.bias_

    def proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        """P(y=1) per example, float64 [n] (== ``predict_proba(X)[:, 1]`` == ``forward``)."""
        return _sigmoid(self.decision_function(X))

    def predict_proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, "n 2"]:
        """sklearn layout: column 0 = P(y=0), column 1 = P(y=1). float64 [n, 2]."""
        p = self.proba(X)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X: Float[ArrayLike, "n d_model"]) -> Int[np.ndarray, " n"]:
        """Hard labels (1 where P(y=1) > 0.5)."""
        return (self.decision_function(X) > 0).astype(np.int64)

    def score(self, X: Float[ArrayLike, "n d_model"], y: Int[ArrayLike, " n"]) -> float:
        """AUROC of ``decision_function`` on (X, y) (not accuracy, unlike sklearn's default)."""
        X = self._check_predict_X(X)
        y = as_binary_labels(y, X.shape[0])
        return auroc(y, self.decision_function(X))

    def accuracy(self, X: Float[ArrayLike, "n d_model"], y: Int[ArrayLike, " n"]) -> float:
        X = self._check_predict_X(X)
        y = as_binary_labels(y, X.shape[0], require_both=False)
        return float(accuracy_score(y, self.predict(X)))

    # ---- inference (torch, differentiable w.r.t. activations) -----------------------------

    def as_module(self, *, trainable: bool = False) -> ProbeModule:
        """A fresh ``ProbeModule`` with this probe's raw-space weights (frozen by default)."""
        self._check_fitted()
        return ProbeModule(self.coef_raw_, self.bias_, trainable=trainable)

    def _module_on(self, device: torch.device) -> ProbeModule:
        cache = self.__dict__.setdefault("_modules_by_device", {})
        key = str(device)
        if key not in cache:
            cache[key] = self.as_module().to(device)
        return cache[key]

    def logits(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "..."]:
        """Torch ``decision_function`` on activations of any leading shape."""
        self._check_fitted()
        return self._module_on(acts.device if isinstance(acts, torch.Tensor) else "cpu").logits(
            acts
        )

    def forward(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, "..."]:
        """P(y=1) for activations [..., d_model] on any device/dtype; returns the input's dtype.

        Differentiable w.r.t. ``acts``; the probe's own weights are frozen constants. No NaN check
        here (it would force a device sync in training loops); ``predict_proba`` does check.
        """
        self._check_fitted()
        return torch.sigmoid(self.logits(acts)).to(acts.dtype)

    __call__ = forward

    # ---- state for io ---------------------------------------------------------------------

    def _state_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        out = {
            "coef_raw": self.coef_raw_,
            "bias": np.array([self.bias_], dtype=np.float64),
            "direction": self.direction_,
            "mean": self.mean_,
            "scale": self.scale_,
        }
        for name in self._extra_state:
            value = getattr(self, name, None)
            if isinstance(value, np.ndarray):
                out[name] = value
        return out

    def _state_scalars(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_fit": self.n_fit_, "n_positive": self.n_positive_}
        for name in self._extra_state:
            value = getattr(self, name, None)
            if value is None or isinstance(value, np.ndarray):
                continue
            out[name] = value.item() if isinstance(value, np.generic) else value
        return out

    def _restore(
        self,
        arrays: Mapping[str, np.ndarray],
        scalars: Mapping[str, Any],
        library_version_: str | None,
    ) -> None:
        self.mean_ = np.asarray(arrays["mean"], dtype=np.float64)
        self.scale_ = np.asarray(arrays["scale"], dtype=np.float64)
        self._set_fitted(
            arrays["coef_raw"],
            float(arrays["bias"][0]),
            n_fit=scalars.get("n_fit"),
            n_positive=scalars.get("n_positive"),
        )
        self.direction_ = np.asarray(arrays["direction"], dtype=np.float32)
        for name in self._extra_state:
            if name in arrays:
                setattr(self, name, np.asarray(arrays[name]))
            else:
                setattr(self, name, scalars.get(name))
        self.library_version_ = library_version_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "coef_raw_")


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def standardization(X: np.ndarray, enabled: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) like sklearn's StandardScaler (ddof=0, zero-variance columns keep scale 1)."""
    d = X.shape[1]
    if not enabled:
        return np.zeros(d), np.ones(d)
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    tiny = scale < 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    scale[tiny] = 1.0
    return mean, scale
