"""Max-pooled logistic probe: a per-token linear probe whose sequence score is its largest token logit."""

from __future__ import annotations

import numpy as np
import torch

from probe_lens.probes.logistic import LogisticProbe
from probe_lens.probes.tokens import TokenModule, TokenProbe


class MaxPoolModule(TokenModule):
    """``max_t (acts[:, t] @ weight + bias)`` over the masked tokens (P = sigmoid of it = max_t P_t)."""

    def pool_logits(self, acts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.token_logits(acts).masked_fill(~mask, float("-inf")).amax(dim=-1)


class MaxPooledLogisticProbe(TokenProbe, LogisticProbe):
    """The field's "max-pooled probe" (RL-Obfuscation; Gupta & Jenner 2025): logits pooled, not activations.

    What is pooled: each response token t gets the logistic readout ``z_t = x_t @ coef_raw_ + bias_``;
    the sequence's logit is ``max_t z_t`` over its real tokens, so ``P(positive) = max_t sigmoid(z_t)``
    ("some token looks positive"). Max-pooling the *activations* then reading them out linearly
    (``pool(acts, mask, "max")`` + ``LogisticProbe``) is a different, weaker detector.

    Training: every real token inherits its sequence's label and one ``LogisticProbe`` objective
    (same C, standardisation and solver) is fit on all tokens pooled together, as the per-token
    probes of those papers are; the max only enters at scoring time. On [n, d_model] data (one token
    per row) the probe is exactly a ``LogisticProbe``.

    Args: those of ``LogisticProbe``; ``C="cv"`` works on [n, d_model] data only (token folds
    would split sequences; use ``GridSearchCV`` over sequences instead).

    Fitted: ``LogisticProbe``'s state (``coef_raw_``, ``bias_``, ``direction_`` of the per-token
    readout, ``C_`` ...), ``n_fit_`` (sequences), ``n_tokens_fit_`` (tokens).
    """

    _extra_state = (*LogisticProbe._extra_state, "n_tokens_fit_")

    def _fit_tokens(self, acts: np.ndarray, mask: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        if self.C == "cv" and acts.shape[1] > 1:
            raise ValueError(
                "MaxPooledLogisticProbe(C='cv') would cross-validate over tokens, splitting sequences "
                "between folds; pass a float C and choose it with sklearn's GridSearchCV on the sequences."
            )
        tokens = acts[mask]
        token_y = np.broadcast_to(y[:, None], mask.shape)[mask]
        return LogisticProbe._fit_raw(self, tokens, np.ascontiguousarray(token_y))

    def as_module(self, *, trainable: bool = False) -> MaxPoolModule:
        """A ``MaxPoolModule`` with this probe's raw-space per-token readout (frozen by default)."""
        self._check_fitted()
        return MaxPoolModule(self.coef_raw_, self.bias_, trainable=trainable)
