"""Score texts or generations with a linear probe on the model's own activations.

Puts probes and output classifiers on equal terms: both map a continuation to P(toxic).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from probe_lens._common import POOLINGS
from probe_lens.scorers.base import Scorer, check_scores


def _as_2d_numpy(acts: Any) -> np.ndarray:
    if isinstance(acts, torch.Tensor):
        acts = acts.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(acts, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"activations must be pooled, shape (n, d_model); got shape {arr.shape}. "
            "Pool token activations first (probe_lens.activations.pool)."
        )
    return arr


class ProbeScorer(Scorer):
    """P(toxic) = ``probe.predict_proba(pooled activations at hook)[:, 1]``.

    Args:
        model: the HookedTransformer whose activations the probe reads.
        probe: any fitted object with ``predict_proba(X [n, d_model]) -> [n, 2]`` (a probe_lens
            probe, or an sklearn classifier).
        hook: hook name or layer index (layer L -> ``blocks.L.hook_resid_post``); None takes the
            probe's own ``hook`` metadata.
        pooling: ``"mean"``, ``"last"`` or ``"max"`` over the scored tokens.
        batch_size: sequences per forward pass.
    """

    name = "probe"

    def __init__(
        self, model: Any, probe: Any, hook: str | int | None = None, pooling: str = "mean", *, batch_size: int = 16
    ) -> None:
        super().__init__()
        from probe_lens.activations import resolve_hook

        if not callable(getattr(probe, "predict_proba", None)):
            raise TypeError(f"probe must have a predict_proba(X) method, got {type(probe).__name__}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        if hook is None:
            hook = getattr(probe, "hook", None)
            if hook is None:
                raise ValueError("pass hook= (the probe has no hook metadata saying where it reads)")
        self.model = model
        self.probe = probe
        self.hook = resolve_hook(model, hook)
        probe_hook = getattr(probe, "hook", None)
        if isinstance(probe_hook, str) and probe_hook != self.hook:
            raise ValueError(f"the probe was fit at {probe_hook!r} but hook={self.hook!r} was given")
        self.pooling = pooling
        self.batch_size = batch_size
        from probe_lens.probes.base import library_version

        self.version = library_version()

    def score_activations(self, acts: Float[Any, "n d_model"]) -> Float[np.ndarray, " n"]:
        """P(toxic) for pooled activations ``acts`` [n, d_model] (numpy or torch)."""
        arr = _as_2d_numpy(acts)
        if arr.shape[0] == 0:
            return np.zeros(0, dtype=np.float64)
        proba = np.asarray(self.probe.predict_proba(arr), dtype=np.float64)
        if proba.ndim != 2 or proba.shape[1] != 2:
            raise ValueError(f"probe.predict_proba must return shape (n, 2), got {proba.shape}")
        return check_scores(proba[:, 1], arr.shape[0], f"probe {type(self.probe).__name__}")

    def _collect(self, tokens: torch.Tensor, attention_mask: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        from probe_lens.activations import collect

        acts = collect(
            self.model,
            tokens,
            attention_mask,
            pool_mask,
            [self.hook],
            pooling=self.pooling,
            batch_size=self.batch_size,
            progress=False,
        )
        return acts[self.hook]

    def score_generation(self, generation: Any) -> Float[np.ndarray, " n"]:
        """P(toxic) per row of a ``Generation``, pooling over its response tokens only (as in the paper)."""
        if len(generation) == 0:
            return np.zeros(0, dtype=np.float64)
        empty = (generation.response_mask.sum(dim=1) == 0).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"generation rows {empty[:10]} have no response tokens to score")
        acts = self._collect(generation.tokens, generation.attention_mask, generation.response_mask)
        return self.score_activations(acts)

    def _score(self, texts: list[str]) -> np.ndarray:
        """Tokenise each text (with BOS), left-pad, and pool over the text's tokens (BOS excluded)."""
        ids = [self.model.to_tokens(t, prepend_bos=True, truncate=False)[0].tolist() for t in texts]
        too_short = [i for i, t in enumerate(ids) if len(t) < 2]
        if too_short:
            raise ValueError(f"texts {too_short[:10]} have no tokens besides BOS (empty?); nothing to pool")
        width = max(len(t) for t in ids)
        pad = self.model.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        tokens = torch.full((len(ids), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, t in enumerate(ids):
            tokens[i, width - len(t) :] = torch.tensor(t)
            attention_mask[i, width - len(t) :] = 1
        pool_mask = attention_mask.clone()
        pool_mask[torch.arange(len(ids)), width - torch.tensor([len(t) for t in ids])] = 0  # drop BOS
        return self.score_activations(self._collect(tokens, attention_mask, pool_mask))

    def details(self) -> dict[str, Any]:
        meta: Any = getattr(self.probe, "metadata", None)
        return {
            "hook": self.hook,
            "pooling": self.pooling,
            "probe_type": type(self.probe).__name__,
            "model_name": getattr(getattr(self.model, "cfg", None), "model_name", None),
            "probe_metadata": meta.to_dict() if hasattr(meta, "to_dict") else None,
        }
