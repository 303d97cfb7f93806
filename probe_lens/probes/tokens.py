"""Probes that read every response token instead of one pooled vector (``TokenProbe``).

Token-level data, numpy or torch::

    X: float [n, pos, d_model]    one row per sequence (e.g. the response tokens of one sample);
                                  a padding position is an all-NaN row X[i, t, :]
                                  (what ``probe_lens.activations.collect_tokens`` returns)
    X: float [n, d_model]         one token per sequence: the probe reduces to a linear probe, so
                                  pooled data and scikit-learn's estimator checks work unchanged

``fit``, ``decision_function``, ``predict_proba``, ``predict``, ``score`` and ``accuracy`` accept
both. A token probe's raw-space readout ``coef_raw_`` / ``bias_`` scores one token like a linear
probe (``direction_`` = its unit vector); the subclass decides how tokens combine into one score
per sequence. The torch ``forward(acts, mask)`` takes live activations [batch, pos, d_model] and an
explicit mask [batch, pos] (live padding positions are not NaN) and is differentiable in ``acts``.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import numpy as np
import torch
from jaxtyping import Bool, Float
from sklearn.utils.validation import column_or_1d

from probe_lens.probes.base import ArrayLike, BaseProbe, ProbeModule, check_acts, library_version

__all__ = ["TokenModule", "TokenProbe", "as_token_batch", "token_mask"]


def as_token_batch(X: Any, *, name: str = "X") -> tuple[Float[np.ndarray, "n pos d"], Bool[np.ndarray, "n pos"]]:
    """NaN-padded token activations [n, pos, d] -> (float64 values with padding 0, mask of real tokens)."""
    if isinstance(X, torch.Tensor):
        X = X.detach().to("cpu", torch.float64).numpy()
    if not isinstance(X, np.ndarray) or X.ndim != 3:
        raise ValueError(f"{name} must be [n, pos, d_model] token activations, got shape {np.shape(X)}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
    if 0 in X.shape:
        raise ValueError(f"{name} is empty (shape {X.shape})")
    X = np.asarray(X, dtype=np.float64)
    pad = np.isnan(X).all(axis=2)
    real = ~pad
    bad = real & ~np.isfinite(X).all(axis=2)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise ValueError(
            f"{name} has {int(bad.sum())} token(s) with NaN/inf values (rows {rows[:5].tolist()}); a padding "
            "position must be NaN in every feature, a real token finite in every feature."
        )
    empty = np.flatnonzero(~real.any(axis=1))
    if len(empty):
        raise ValueError(
            f"{name} rows {empty[:10].tolist()} have no tokens (every position is NaN padding): "
            "a sequence needs at least one response token; drop empty responses first."
        )
    return np.where(real[..., None], X, 0.0), real


def token_mask(acts: torch.Tensor, mask: torch.Tensor | None) -> Bool[torch.Tensor, "batch pos"]:
    """Check a [batch, pos] mask for ``acts`` [batch, pos, d] (None: every position); bool on acts' device."""
    if acts.ndim != 3:
        raise ValueError(
            f"token activations must be [batch, pos, d_model], got shape {tuple(acts.shape)} "
            "([batch, d_model] means one token per row and takes no mask)"
        )
    if mask is None:
        return torch.ones(acts.shape[:2], dtype=torch.bool, device=acts.device)
    if tuple(mask.shape) != tuple(acts.shape[:2]):
        raise ValueError(f"mask must be [batch, pos] = {tuple(acts.shape[:2])}, got {tuple(mask.shape)}")
    m = mask.to(device=acts.device).bool()
    empty = torch.nonzero(~m.any(dim=1)).flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty[:10]} have no masked positions to read (empty response?)")
    return m


class TokenModule(ProbeModule):
    """A fitted token probe in torch: per-token readout ``acts @ weight + bias`` plus a pooling rule.

    ``logits(acts)``: [batch, d] -> [batch] (one token per row, a linear probe);
    ``logits(acts, mask)``: [batch, pos, d] with mask [batch, pos] (None: all) -> [batch].
    Subclasses implement ``pool_logits``.
    """

    def pool_logits(self, acts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def token_logits(self, acts: Float[torch.Tensor, "... d_model"]) -> Float[torch.Tensor, ...]:
        """The per-token readout ``acts @ weight + bias`` (``ProbeModule.logits``)."""
        return super().logits(acts)

    def logits(self, acts: Float[torch.Tensor, "batch *pos d_model"], mask: torch.Tensor | None = None) -> Any:
        check_acts(acts, self.weight.shape[0])
        if acts.ndim == 2 and mask is None:
            return super().logits(acts)
        return self.pool_logits(acts, token_mask(acts, mask))

    def forward(self, acts: Float[torch.Tensor, "batch *pos d_model"], mask: torch.Tensor | None = None) -> Any:
        return torch.sigmoid(self.logits(acts, mask)).to(acts.dtype)


def _ndim(X: Any) -> int | None:
    ndim = getattr(X, "ndim", None)
    return ndim if isinstance(ndim, int) else None


class TokenProbe(BaseProbe):
    """A single probe on token-level activations (see the module docstring for the data layout).

    Subclasses implement ``_fit_tokens(acts, mask, y01) -> (coef_raw, bias)`` on float64 numpy
    [n, pos, d] (padding zeroed), bool mask [n, pos] and 0/1 labels, and ``as_module`` returning a
    ``TokenModule``. Fitted state beyond ``BaseProbe``: ``n_tokens_fit_`` (real tokens seen by fit).
    """

    reads_tokens: ClassVar[bool] = True

    def fit(self, X: Float[ArrayLike, "n *pos d_model"], y: ArrayLike) -> TokenProbe:
        """Fit on token activations [n, pos, d_model] (NaN padding) or [n, d_model]; returns self."""
        if _ndim(X) != 3:
            return cast(TokenProbe, super().fit(X, y))
        self._validate_metadata_params()
        acts, mask = as_token_batch(X)
        y_np = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y
        self.classes_ = self._classes_from(column_or_1d(np.asarray(y_np), warn=True))
        y01 = self._encode_y(y, acts.shape[0])
        self._fit_token_data(acts, mask, y01)
        self.library_version_ = library_version()
        return self

    def _fit_raw(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        # [n, d_model] from BaseProbe.fit: one token per sequence
        self.n_tokens_fit_ = len(y)
        return self._fit_tokens(X[:, None, :], np.ones((len(y), 1), dtype=bool), y)

    def _fit_token_data(self, acts: np.ndarray, mask: np.ndarray, y: np.ndarray) -> None:
        self.n_tokens_fit_ = int(mask.sum())
        coef, bias = self._fit_tokens(acts, mask, y)
        self._set_fitted(coef, bias, n_fit=len(y), n_positive=int(y.sum()))

    def _fit_tokens(self, acts: np.ndarray, mask: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        raise NotImplementedError(f"{type(self).__name__} must implement _fit_tokens(acts, mask, y01)")

    def _token_data(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validated (values, mask) of NaN-padded token activations for this fitted probe."""
        self._check_fitted()
        acts, mask = as_token_batch(X)
        if acts.shape[2] != self.n_features_in_:
            raise ValueError(
                f"X has {acts.shape[2]} features per token, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} (fit on d_model={self.n_features_in_}); pass activations from the same hook."
            )
        return acts, mask

    def decision_function(self, X: Float[ArrayLike, "n *pos d_model"]) -> Float[np.ndarray, " n"]:
        """Logit of P(positive) per sequence, float64 [n] ([n, d_model]: the linear readout)."""
        if _ndim(X) != 3:
            return super().decision_function(X)
        acts, mask = self._token_data(X)
        module = cast(TokenModule, self._module_on("cpu"))
        with torch.no_grad():
            return module.logits(torch.from_numpy(acts), torch.from_numpy(mask)).numpy()

    def token_decision_function(self, X: Float[ArrayLike, "n pos d_model"]) -> Float[np.ndarray, "n pos"]:
        """The readout of every token, ``X @ coef_raw_ + bias_`` (float64 [n, pos]; NaN at padding)."""
        acts, mask = self._token_data(X)
        return np.where(mask, acts @ self.coef_raw_ + self.bias_, np.nan)

    def as_module(self, *, trainable: bool = False) -> TokenModule:
        raise NotImplementedError

    def logits(self, acts: Float[torch.Tensor, "batch *pos d_model"], mask: torch.Tensor | None = None) -> Any:
        """Torch ``decision_function``: [batch, pos, d_model] + mask [batch, pos] (or [batch, d_model]) -> [batch]."""
        self._check_fitted()
        check_acts(acts, self.n_features_in_)
        return cast(TokenModule, self._module_on(acts.device)).logits(acts, mask)

    def forward(self, acts: Float[torch.Tensor, "batch *pos d_model"], mask: torch.Tensor | None = None) -> Any:
        """P(positive) per sequence, differentiable in ``acts``; mask [batch, pos] marks the tokens read.

        Frozen weights, float32 compute (float64 for float64 input) with autocast off, input dtype out.
        ``[batch, d_model]`` input (no mask) reads one token per row.
        """
        self._check_fitted()
        check_acts(acts, self.n_features_in_)
        return self._module_on(acts.device)(acts, mask)

    def __call__(self, acts: Float[torch.Tensor, "batch *pos d_model"], mask: torch.Tensor | None = None) -> Any:
        return self.forward(acts, mask)
