"""The one estimator family every probe belongs to (``Probe``), single probes (``BaseProbe``), metadata.

A fitted single probe is an affine score on *raw* activations::

    decision_function(x) = x @ coef_raw_ + bias_          x: [d_model] activation at ``hook``
    predict_proba(x)[:, 1] = sigmoid(decision_function(x)) = forward(x)

whatever the probe type or the standardisation it used while fitting. The raw-space form is what
the trainers backpropagate through (``forward``), what drift telemetry compares (``direction_``),
and what is saved (``probe_lens.probes.io``). Ensembles (``DiverseProbeEnsemble``) are ``Probe``\\ s
too: code that needs "a probe" takes a ``Probe`` and never branches on the concrete class.

Labels: any two labels (0/1, bools, strings, {1, 2}, ...). ``classes_`` is ``[negative, positive]``;
the positive class is ``pos_label``, by default the larger label (1, True, the later string in sorted
order). Column 1 of ``predict_proba``, ``decision_function > 0``, ``forward`` and ``direction_`` all
refer to the positive class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np
import scipy.sparse
import torch
from jaxtyping import Float, Int
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d, validate_data

from probe_lens._common import POOLINGS, hook_layer, library_version
from probe_lens.probes.metrics import auroc

ArrayLike = np.ndarray | torch.Tensor

__all__ = [
    "POOLINGS",
    "ArrayLike",
    "BaseProbe",
    "Probe",
    "ProbeMetadata",
    "ProbeModule",
    "ProbeNotFittedError",
    "as_binary_labels",
    "as_numpy_2d",
    "auroc",
    "layer_of_hook",
    "library_version",
    "standardization",
]


class ProbeNotFittedError(NotFittedError, RuntimeError):
    """A probe used before ``fit`` / ``load_probe``: sklearn's NotFittedError (also a RuntimeError)."""


@dataclass
class ProbeMetadata:
    """Where a probe reads from and what it was fit on (saved next to its tensors as JSON).

    Args:
        model_name: name of the model whose activations the probe reads (``model.cfg.model_name``).
        hook: TransformerLens hook point, e.g. ``"blocks.12.hook_resid_post"``.
        pooling: how token activations were pooled into one vector (``"mean"``, ``"last"``,
            ``"max"``) or None if unknown.
        d_model: width of the activations (filled in by ``fit``).
        label: what the positive class means, supplied by the behaviour (``"toxic"``); default ``"positive"``.
        n_fit: number of examples the probe was fit on (filled in by ``fit``).
        n_positive: how many of those were positive (filled in by ``fit``).
        library_version: probe_lens version that fit the probe (filled in by ``fit``).
        probe_type: class name of the probe (filled in by ``fit``).
    """

    model_name: str | None = None
    hook: str | None = None
    pooling: str | None = None
    d_model: int | None = None
    label: str = "positive"
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
            raise ValueError(f"ProbeMetadata.pooling must be one of {POOLINGS} or None, got {self.pooling!r}")
        for name in ("d_model", "n_fit", "n_positive"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0):
                raise ValueError(f"ProbeMetadata.{name} must be a non-negative int or None, got {value!r}")
            if value is not None:
                setattr(self, name, int(value))

    @property
    def layer(self) -> int | None:
        """Layer index parsed from ``hook`` (``"blocks.{L}...."``), or None."""
        return layer_of_hook(self.hook)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


layer_of_hook = hook_layer  # the project's one hook-name parser (probe_lens._common.hook_layer)


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


def _check_finite(X: np.ndarray, name: str) -> None:
    if not np.isfinite(X).all():
        bad = ~np.isfinite(X)
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN/inf values (in {len(rows)} rows, first rows "
            f"{rows[:5].tolist()}). Drop or fix those examples before fitting/predicting; "
            "activations overflowing in low precision are a common cause."
        )


def _check_2d(X: Any, name: str) -> None:
    ndim = getattr(X, "ndim", None)
    if isinstance(ndim, int) and ndim != 2 and not scipy.sparse.issparse(X):
        raise ValueError(
            f"{name} must be 2-D (n_examples, d_model), got shape {tuple(X.shape)}. Reshape your "
            "data (X.reshape(1, -1) for a single example) or pool token activations first "
            "(probe_lens.activations.pool)."
        )


def _torch_to_numpy(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu")
        return a.to(torch.float64).numpy() if torch.is_floating_point(a) else a.numpy()
    return a


def as_numpy_2d(X: ArrayLike, *, name: str = "X") -> Float[np.ndarray, "n d"]:
    """X (numpy or torch, any float dtype) -> float64 numpy [n, d], with clear errors."""
    if isinstance(X, torch.Tensor):
        X = X.detach().to("cpu", torch.float64).numpy()
    elif not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:  # noqa: BLE001
            raise TypeError(
                f"{name} must be a numpy array or torch tensor of shape (n, d_model); got {type(X).__name__}"
            ) from exc
    if X.dtype == object or not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    _check_2d(X, name)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(X.shape)})")
    X = np.asarray(X, dtype=np.float64)
    _check_finite(X, name)
    return X


def as_binary_labels(y: ArrayLike, n: int, *, require_both: bool = True) -> Int[np.ndarray, " n"]:
    """y (numpy/torch/list of 0/1 or bool) -> int64 numpy [n], with clear errors.

    For helpers that take 0/1 labels (analysis, metrics). Probes themselves accept any two labels.
    """
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
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.bool_)):
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


# ----------------------------------------------------------------------------------------------
# Torch modules (fp32 even under autocast)
# ----------------------------------------------------------------------------------------------


def autocast_off(device: torch.device) -> Any:
    """Disable autocast on ``device``: a probe's score must not be rounded to bf16/fp16."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


def compute_dtype(acts: torch.Tensor) -> torch.dtype:
    return torch.float64 if acts.dtype == torch.float64 else torch.float32


def check_acts(acts: Any, d_model: int) -> None:
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


class ProbeModule(torch.nn.Module):
    """A fitted linear probe as a torch module: ``sigmoid(acts @ weight + bias)``.

    Parameters are frozen (``requires_grad=False``) unless built with ``trainable=True``;
    gradients still flow to ``acts``. Computes in float32 (float64 for float64 input) with autocast
    disabled, so a bf16 autocast region cannot round the matmul or the bias, and returns the
    input's dtype.
    """

    def __init__(self, weight: np.ndarray, bias: float, *, trainable: bool = False) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.as_tensor(np.asarray(weight, dtype=np.float64)), requires_grad=trainable)
        self.bias = torch.nn.Parameter(torch.tensor(float(bias), dtype=torch.float64), requires_grad=trainable)

    def logits(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, ...]:
        """``acts @ weight + bias`` in float32 (float64 for float64 input)."""
        check_acts(acts, self.weight.shape[0])
        compute = compute_dtype(acts)
        with autocast_off(acts.device):
            w = self.weight.to(device=acts.device, dtype=compute)
            b = self.bias.to(device=acts.device, dtype=compute)
            return acts.to(compute) @ w + b

    def forward(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, ...]:
        with autocast_off(acts.device) if isinstance(acts, torch.Tensor) else nullcontext():
            return torch.sigmoid(self.logits(acts)).to(acts.dtype)


# ----------------------------------------------------------------------------------------------
# The family: Probe
# ----------------------------------------------------------------------------------------------


class ProbeMetadataMixin:
    """``set_metadata`` / ``metadata`` for estimators with model_name, hook, pooling, label params."""

    model_name: str | None
    hook: str | None
    pooling: str | None
    label: str

    def _validate_metadata_params(self) -> None:
        ProbeMetadata(model_name=self.model_name, hook=self.hook, pooling=self.pooling, label=self.label)

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


class Probe(ClassifierMixin, ProbeMetadataMixin, BaseEstimator):
    """What every probe is, single or ensemble: a binary sklearn classifier on activations.

    Subclasses implement ``_fit_encoded(X, y01)`` (validated float64 X [n, d_model], int64 0/1
    labels, 1 = ``classes_[1]``), ``proba``, ``decision_function``, ``as_module``, ``directions_``,
    ``member_probes`` and the io pair ``_to_record`` / ``_from_record``; this class supplies label
    mapping, validation, ``predict``/``predict_proba``/``score``/``accuracy``, the torch ``forward``
    and sklearn's tags (binary only). ``register_probe_class`` accepts any subclass.

    Shared fitted state: ``classes_`` ([negative, positive]), ``n_features_in_``, ``n_fit_``,
    ``n_positive_``, ``library_version_``.
    """

    is_ensemble: ClassVar[bool] = False
    # True for probes that read every token ([n, pos, d_model] + mask; probes.tokens.TokenProbe)
    reads_tokens: ClassVar[bool] = False
    _fitted_attr: ClassVar[str] = "classes_"
    library_version_: str | None

    # ---- sklearn protocol -----------------------------------------------------------------

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # binary only: declared, so sklearn skips multiclass checks
        tags.input_tags.allow_nan = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, self._fitted_attr)

    @classmethod
    def _test_instances(cls) -> list[Probe]:
        """Instances small enough for generic tests (scikit-learn's estimator checks); default ``[cls()]``."""
        return [cls()]

    def _expected_failed_checks(self) -> dict[str, str]:
        """``{sklearn check name: reason}`` this instance fails by design (none by default)."""
        return {}

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise ProbeNotFittedError(
                f"This {type(self).__name__} is not fitted yet: call fit(X, y) or load_probe(path)."
            )

    @property
    def d_model(self) -> int | None:
        return getattr(self, "n_features_in_", None)

    # ---- fitting --------------------------------------------------------------------------

    def fit(self, X: Float[ArrayLike, "n d_model"], y: ArrayLike) -> Probe:
        """Fit on activations X [n, d_model] and two-class labels y [n]. Returns self.

        ``y`` may hold any two labels; ``classes_`` becomes [negative, positive] (see ``pos_label``).
        """
        self._validate_metadata_params()
        X, y01 = self._validate_fit_data(X, y)
        self._fit_encoded(X, y01)
        self.library_version_ = library_version()
        return self

    def _fit_encoded(self, X: np.ndarray, y: np.ndarray) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement _fit_encoded(X, y01)")

    def _validate_fit_data(self, X: Any, y: Any) -> tuple[Float[np.ndarray, "n d_model"], Int[np.ndarray, " n"]]:
        X, y = _torch_to_numpy(X), _torch_to_numpy(y)
        _check_2d(X, "X")
        if isinstance(X, np.ndarray) and isinstance(y, np.ndarray) and y.ndim >= 1 and len(X) != len(y):
            raise ValueError(
                f"X and y have different lengths: X has {len(X)} rows but y has {len(y)} "
                "labels. Each row of X needs exactly one label."
            )
        X, y = validate_data(self, X, y, dtype=np.float64, ensure_all_finite=False)
        _check_finite(X, "X")
        self.classes_ = self._classes_from(y)
        return X, (y == self.classes_[1]).astype(np.int64)

    def _classes_from(self, y: np.ndarray) -> np.ndarray:
        check_classification_targets(y)
        kind = type_of_target(y, input_name="y")
        labels = np.unique(y)
        if kind != "binary":
            raise ValueError(
                f"Only binary classification is supported. The type of the target is {kind} "
                f"({len(labels)} classes: {labels[:10].tolist()}); a probe separates two classes."
            )
        if len(labels) < 2:
            raise ValueError(
                f"y holds only one class ({_item(labels[0])!r} in all {len(y)} examples): a single "
                "class cannot be separated; a probe needs examples of both classes. Collect or "
                "label examples of the missing class."
            )
        pos_label = getattr(self, "pos_label", None)
        if pos_label is None:
            return labels
        if pos_label not in labels.tolist():
            raise ValueError(f"pos_label={pos_label!r} is not one of the labels in y {labels.tolist()}")
        negative = labels[0] if labels[1] == pos_label else labels[1]
        return np.array([negative, pos_label], dtype=labels.dtype)

    def _encode_y(self, y: Any, n: int) -> Int[np.ndarray, " n"]:
        """Labels from ``classes_`` -> int64 0/1 (1 = positive), with clear errors."""
        y = column_or_1d(_torch_to_numpy(y), warn=True)
        if len(y) != n:
            raise ValueError(
                f"X and y have different lengths: X has {n} rows but y has {len(y)} labels. "
                "Each row of X needs exactly one label."
            )
        known = np.isin(y, self.classes_)
        if not known.all():
            raise ValueError(
                f"y holds labels {np.unique(y[~known])[:10].tolist()} this probe was not fit on "
                f"(classes_ = {self.classes_.tolist()})"
            )
        return (y == self.classes_[1]).astype(np.int64)

    # ---- inference (numpy) ----------------------------------------------------------------

    def _check_predict_X(self, X: Any) -> Float[np.ndarray, "n d_model"]:
        self._check_fitted()
        X = _torch_to_numpy(X)
        _check_2d(X, "X")
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 2 and shape[1] != self.n_features_in_:
            where = f" at hook {self.hook!r}" if self.hook else ""
            raise ValueError(
                f"X has {shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (fit on d_model={self.n_features_in_}"
                f"{where}). Pass activations from the same model and hook."
            )
        X = validate_data(self, X, reset=False, dtype=np.float64, ensure_all_finite=False)
        _check_finite(X, "X")
        return X

    def proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        """P(positive class) per example, float64 [n] (== ``predict_proba(X)[:, 1]`` == ``forward``)."""
        raise NotImplementedError

    def decision_function(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        """Logit of P(positive class), float64 [n]; > 0 means ``classes_[1]``."""
        raise NotImplementedError

    def predict_proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, "n 2"]:
        """sklearn layout: column j = P(``classes_[j]``); column 1 = P(positive). float64 [n, 2]."""
        p = self.proba(X)
        return np.stack([1.0 - p, p], axis=1)

    def _positive(self, X: ArrayLike) -> np.ndarray:
        return self.decision_function(X) > 0

    def predict(self, X: Float[ArrayLike, "n d_model"]) -> np.ndarray:
        """Labels from ``classes_`` [n]: the positive class where P(positive) > 0.5."""
        positive = self._positive(X)
        return self.classes_[positive.astype(np.int64)]

    def score(self, X: Float[ArrayLike, "n d_model"], y: ArrayLike) -> float:
        """AUROC of ``decision_function`` on (X, y) (not accuracy, unlike sklearn's default)."""
        z = self.decision_function(X)
        return auroc(self._encode_y(y, len(z)), z)

    def accuracy(self, X: Float[ArrayLike, "n d_model"], y: ArrayLike) -> float:
        """Share of ``predict(X)`` equal to ``y``."""
        pred = self.predict(X)
        y = column_or_1d(_torch_to_numpy(y))
        if len(y) != len(pred):
            raise ValueError(f"X has {len(pred)} rows but y has {len(y)} labels")
        return float(np.mean(pred == y))

    # ---- inference (torch, differentiable w.r.t. activations) -----------------------------

    def as_module(self) -> torch.nn.Module:
        """A torch module computing ``forward`` with this probe's frozen weights."""
        raise NotImplementedError

    def _module_key(self) -> str:
        return ""

    def _module_on(self, device: torch.device | str) -> torch.nn.Module:
        cache = self.__dict__.setdefault("_modules_by_device", {})
        key = f"{device}/{self._module_key()}"
        if key not in cache:
            cache[key] = self.as_module().to(device)
        return cache[key]

    def forward(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, ...]:
        """P(positive) for activations [..., d_model] on any device/dtype; returns the input's dtype.

        Differentiable w.r.t. ``acts``; the probe's weights are frozen constants. Computed in
        float32 (float64 for float64 input) even inside a bf16/fp16 ``torch.autocast`` region. No
        NaN check here (it would force a device sync in training loops); ``predict_proba`` checks.
        """
        self._check_fitted()
        check_acts(acts, self.n_features_in_)
        return self._module_on(acts.device)(acts)

    def __call__(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, ...]:
        return self.forward(acts)

    # ---- the members view (single probe: itself) ------------------------------------------
    # Every probe also has ``directions_``: float32 [k, d_model] unit directions (k = 1 if single).

    def member_probes(self) -> list[BaseProbe]:
        """The single probes this probe is made of: ``[self]``, or an ensemble's members."""
        raise NotImplementedError

    # ---- io ---------------------------------------------------------------------------------

    def _to_record(self, prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        """JSON-able record of this fitted probe; its arrays go into ``tensors`` under ``prefix``."""
        raise NotImplementedError

    @classmethod
    def _from_record(
        cls,
        record: Mapping[str, Any],
        tensors: Mapping[str, np.ndarray],
        prefix: str,
        *,
        resolve: Callable[[str], type[Probe]],
        decode_params: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Probe:
        """Rebuild a probe saved by ``_to_record`` (``resolve`` maps class names to classes)."""
        raise NotImplementedError

    def _classes_state(self) -> list[Any]:
        return np.asarray(self.classes_).tolist()


def _item(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def json_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON (numpy scalars and arrays converted); TypeError if impossible."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_value(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v, where) for k, v in value.items()}
    raise TypeError(f"cannot save {where}={value!r} ({type(value).__name__}) as JSON")


def encode_params(estimator: Any) -> dict[str, Any]:
    """Constructor parameters as JSON; a probe-valued parameter (an ensemble's base) nests."""
    out = {}
    for key, value in estimator.get_params(deep=False).items():
        if isinstance(value, Probe):
            out[key] = {"__probe__": type(value).__name__, "params": encode_params(value)}
        else:
            out[key] = json_value(value, f"{type(estimator).__name__}.{key}")
    return out


def classes_from_state(value: Any) -> np.ndarray:
    """``classes_`` from a saved JSON list (files written before labels were mapped: [0, 1])."""
    return np.array([0, 1]) if value is None else np.asarray(value)


class BaseProbe(Probe):
    """Common API of every single-direction probe (sklearn conventions).

    Subclasses implement ``_fit_raw(X, y) -> (coef_raw, bias)`` on validated float64 numpy data
    with 0/1 labels (1 = positive) and set ``mean_``/``scale_`` (the standardisation they used;
    zeros/ones if none).

    Learned state after ``fit``:
        coef_raw_ (float64 [d_model]): raw-space weight; ``decision_function = X @ coef_raw_ + bias_``.
        bias_ (float): raw-space intercept.
        direction_ (float32 [d_model]): ``coef_raw_ / ||coef_raw_||``, unit vector towards the
            positive class.
        mean_, scale_ (float64 [d_model]): standardisation used while fitting (0 / 1 if off).
        coef_, intercept_: sklearn-style aliases of ``coef_raw_`` / ``bias_`` (apply to raw X).
        n_features_in_ (int), classes_ ([negative, positive]).

    Args (shared by every subclass):
        pos_label: the label of the positive class; None (default): the larger label, i.e. 1 for
            0/1, True for bools, 2 for {1, 2}, the later one in sorted order for strings.
        model_name, hook, pooling, label: metadata, also settable with ``set_metadata``;
            ``metadata`` returns them with fit facts as a ``ProbeMetadata``.
    """

    _fitted_attr = "coef_raw_"
    # Names of extra fitted attributes (arrays or JSON scalars) that io saves and restores.
    _extra_state: tuple[str, ...] = ()
    mean_: np.ndarray
    scale_: np.ndarray

    def __init__(
        self,
        *,
        pos_label: Any = None,
        model_name: str | None = None,
        hook: str | None = None,
        pooling: str | None = None,
        label: str = "positive",
    ) -> None:
        self.pos_label = pos_label
        self.model_name = model_name
        self.hook = hook
        self.pooling = pooling
        self.label = label

    # ---- fitting --------------------------------------------------------------------------

    def _fit_encoded(self, X: np.ndarray, y: np.ndarray) -> None:
        coef, bias = self._fit_raw(X, y)
        self._set_fitted(coef, bias, n_fit=len(y), n_positive=int(y.sum()))

    def _fit_raw(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        raise NotImplementedError(f"{type(self).__name__} must implement _fit_raw(X, y01)")

    def _set_fitted(
        self,
        coef: np.ndarray,
        bias: float,
        *,
        n_fit: int | None,
        n_positive: int | None,
        classes: np.ndarray | None = None,
    ) -> None:
        coef = np.asarray(coef, dtype=np.float64).reshape(-1)
        norm = float(np.linalg.norm(coef))
        if not np.isfinite(coef).all() or not np.isfinite(bias):
            raise FloatingPointError(f"{type(self).__name__} produced non-finite weights; the data may be degenerate.")
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
        if classes is not None:
            self.classes_ = np.asarray(classes)
        elif not hasattr(self, "classes_"):
            self.classes_ = np.array([0, 1])
        self.n_fit_ = n_fit
        self.n_positive_ = n_positive
        if not hasattr(self, "mean_") or self.mean_ is None or len(self.mean_) != len(coef):
            self.mean_ = np.zeros_like(coef)
            self.scale_ = np.ones_like(coef)
        self._modules_by_device: dict[str, torch.nn.Module] = {}

    # sklearn-style aliases
    @property
    def coef_(self) -> Float[np.ndarray, " d_model"]:
        self._check_fitted()
        return self.coef_raw_

    @property
    def intercept_(self) -> float:
        self._check_fitted()
        return self.bias_

    @property
    def directions_(self) -> Float[np.ndarray, "1 d_model"]:
        self._check_fitted()
        return self.direction_[None, :]

    def member_probes(self) -> list[BaseProbe]:
        self._check_fitted()
        return [self]

    # ---- inference ------------------------------------------------------------------------

    def decision_function(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        """Logit of P(positive): ``X @ coef_raw_ + bias_`` (float64 [n])."""
        X = self._check_predict_X(X)
        return X @ self.coef_raw_ + self.bias_

    def proba(self, X: Float[ArrayLike, "n d_model"]) -> Float[np.ndarray, " n"]:
        return _sigmoid(self.decision_function(X))

    def as_module(self, *, trainable: bool = False) -> ProbeModule:
        """A fresh ``ProbeModule`` with this probe's raw-space weights (frozen by default)."""
        self._check_fitted()
        return ProbeModule(self.coef_raw_, self.bias_, trainable=trainable)

    def logits(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, ...]:
        """Torch ``decision_function`` on activations of any leading shape (fp32, autocast off)."""
        self._check_fitted()
        check_acts(acts, self.n_features_in_)
        return cast(ProbeModule, self._module_on(acts.device)).logits(acts)

    # ---- state for io ---------------------------------------------------------------------

    def _state_arrays(self) -> dict[str, np.ndarray]:
        self._check_fitted()
        out: dict[str, np.ndarray] = {
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
        out: dict[str, Any] = {
            "n_fit": self.n_fit_,
            "n_positive": self.n_positive_,
            "classes": self._classes_state(),
        }
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
            classes=classes_from_state(scalars.get("classes")),
        )
        self.direction_ = np.asarray(arrays["direction"], dtype=np.float32)
        for name in self._extra_state:
            if name in arrays:
                setattr(self, name, np.asarray(arrays[name]))
            else:
                setattr(self, name, scalars.get(name))
        self.library_version_ = library_version_

    def _to_record(self, prefix: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
        for key, arr in self._state_arrays().items():
            tensors[prefix + key] = np.ascontiguousarray(arr)
        return {
            "class": type(self).__name__,
            "params": encode_params(self),
            "state": json_value(self._state_scalars(), "state"),
            "library_version": getattr(self, "library_version_", None),
        }

    @classmethod
    def _from_record(
        cls,
        record: Mapping[str, Any],
        tensors: Mapping[str, np.ndarray],
        prefix: str,
        *,
        resolve: Callable[[str], type[Probe]],
        decode_params: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> BaseProbe:
        probe = cls(**decode_params(record["params"]))
        arrays = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = {"coef_raw", "bias", "direction", "mean", "scale"} - set(arrays)
        if missing:
            raise ValueError(f"probe file lacks tensors {sorted(prefix + m for m in missing)}")
        probe._restore(arrays, record.get("state", {}), record.get("library_version"))
        return probe


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
