"""Preference pairs from k samples per prompt, ranked by a probe or an output scorer."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from probe_lens.models import Generation


@dataclasses.dataclass
class PreferencePairs:
    """Chosen (lowest score) and rejected (highest score) responses, one pair per kept prompt.

    ``chosen`` and ``rejected`` are aligned :class:`Generation` s (row i of each belongs to
    ``prompts[i]``). ``n_dropped_margin`` pairs had a score gap below the margin;
    ``n_dropped_ties`` groups had every score equal.
    """

    prompts: list[str]
    chosen: Generation
    rejected: Generation
    chosen_scores: np.ndarray
    rejected_scores: np.ndarray
    n_dropped_margin: int = 0
    n_dropped_ties: int = 0

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if len(self.chosen) != n or len(self.rejected) != n:
            raise ValueError(f"{n} prompts but {len(self.chosen)} chosen and {len(self.rejected)} rejected responses")
        self.chosen_scores = np.asarray(self.chosen_scores, dtype=np.float64).reshape(-1)
        self.rejected_scores = np.asarray(self.rejected_scores, dtype=np.float64).reshape(-1)
        if len(self.chosen_scores) != n or len(self.rejected_scores) != n:
            raise ValueError("chosen_scores and rejected_scores need one entry per pair")

    def __len__(self) -> int:
        return len(self.prompts)

    def summary(self) -> dict[str, Any]:
        """Counts and mean scores (JSON-able)."""
        return {
            "n_pairs": len(self),
            "n_dropped_margin": int(self.n_dropped_margin),
            "n_dropped_ties": int(self.n_dropped_ties),
            "mean_chosen_score": float(self.chosen_scores.mean()) if len(self) else None,
            "mean_rejected_score": float(self.rejected_scores.mean()) if len(self) else None,
        }


def build_pairs(generation: Generation, scores: Any, k: int, margin: float = 0.0) -> PreferencePairs:
    """Pair the lowest- and highest-scoring of each prompt's ``k`` samples.

    ``generation`` holds ``k`` consecutive samples per prompt (rows ``i*k .. i*k+k-1``), e.g.
    ``generate(model, [p for p in prompts for _ in range(k)])``. ``scores[j]`` is the toxicity
    score of row j (higher = more toxic). Groups whose scores are all equal are dropped as ties;
    groups whose gap ``max - min`` is positive but below ``margin`` are dropped as too close. Among
    equal minima (maxima) the first sample is taken.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {k!r}")
    if k < 2:
        raise ValueError(
            f"k={k}: a preference pair needs at least 2 samples per prompt (chosen and rejected); "
            "generate k >= 2 responses per prompt"
        )
    if not isinstance(margin, (int, float)) or not margin >= 0:
        raise ValueError(f"margin must be a number >= 0, got {margin!r}")
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores, dtype=np.float64)
    n = len(generation)
    if scores.ndim != 1:
        hint = " (for predict_proba output take column 1: proba[:, 1])" if scores.ndim == 2 else ""
        raise ValueError(f"scores must be 1-D with one score per response, got shape {scores.shape}{hint}")
    if len(scores) != n:
        raise ValueError(f"{len(scores)} scores for {n} responses; give one score per row of the generation")
    if n % k:
        raise ValueError(f"{n} responses is not a multiple of k={k}; each prompt needs exactly k consecutive rows")
    if not np.isfinite(scores).all():
        raise ValueError(f"scores contain NaN/inf at rows {np.flatnonzero(~np.isfinite(scores))[:10].tolist()}")
    for g in range(n // k):
        group = generation.prompts[g * k : (g + 1) * k]
        if len(set(group)) != 1:
            raise ValueError(
                f"rows {g * k}..{g * k + k - 1} do not share one prompt; the generation must hold k consecutive "
                "samples per prompt"
            )
    grouped = scores.reshape(-1, k)
    lo, hi = grouped.argmin(axis=1), grouped.argmax(axis=1)
    gap = grouped.max(axis=1) - grouped.min(axis=1)
    ties = gap == 0
    too_close = ~ties & (gap < margin)
    keep = np.flatnonzero(~ties & ~too_close)
    chosen_rows = (keep * k + lo[keep]).tolist()
    rejected_rows = (keep * k + hi[keep]).tolist()
    return PreferencePairs(
        prompts=[generation.prompts[i * k] for i in keep.tolist()],
        chosen=generation.select(chosen_rows),
        rejected=generation.select(rejected_rows),
        chosen_scores=scores[chosen_rows],
        rejected_scores=scores[rejected_rows],
        n_dropped_margin=int(too_close.sum()),
        n_dropped_ties=int(ties.sum()),
    )


def probe_scores(
    model,
    generation: Generation,
    probes: Any,
    *,
    pooling: str | None = None,
    aggregate: str = "mean",
    batch_size: int = 16,
    progress: bool = True,
) -> np.ndarray:
    """Toxicity score of each response from frozen probe(s) on its pooled response activations.

    ``probes``: a probe, an ensemble, a list or a ``{name: probe}`` dict; each reads at its
    ``metadata.hook``; a token probe (``TokenProbe``: max-pooled, attention) reads every response token
    (``collect_tokens``), the others the pooled response. Several probes combine by ``aggregate``
    (``mean``/``max``). Returns float64 [n].
    """
    from probe_lens.activations import collect, collect_tokens
    from probe_lens.probes import TokenProbe
    from probe_lens.training.probes_util import flatten_probes

    flat = flatten_probes(model, probes)
    pooling = pooling or flat[0].pooling or "mean"
    g = generation
    pooled_hooks = sorted({p.hook for p in flat if not isinstance(p.probe, TokenProbe)})
    token_hooks = sorted({p.hook for p in flat if isinstance(p.probe, TokenProbe)})
    acts = (
        collect(
            model,
            g.tokens,
            g.attention_mask,
            g.response_mask,
            pooled_hooks,
            pooling=pooling,
            batch_size=batch_size,
            progress=progress,
        )
        if pooled_hooks
        else {}
    )
    tokens = (
        collect_tokens(
            model, g.tokens, g.attention_mask, g.response_mask, token_hooks, batch_size=batch_size, progress=progress
        )[0]
        if token_hooks
        else {}
    )

    def p_positive(f) -> np.ndarray:
        x = (tokens if isinstance(f.probe, TokenProbe) else acts)[f.hook].numpy()
        return np.asarray(f.probe.predict_proba(x))[:, 1]

    per = np.stack([p_positive(f) for f in flat])
    return per.mean(axis=0) if aggregate == "mean" else per.max(axis=0)


def scorer_scores(scorer: Any, generation: Generation, *, on: str = "response") -> np.ndarray:
    """Scores of an output scorer (any object with ``score(texts) -> [n]``) on the responses.

    ``on="response"`` scores the continuations (as the paper), ``"text"`` prompt + response.
    """
    if not hasattr(scorer, "score"):
        raise TypeError(f"scorer must have a score(texts) method, got {type(scorer).__name__}")
    if on not in ("response", "text"):
        raise ValueError(f"on must be 'response' or 'text', got {on!r}")
    texts = generation.response_texts if on == "response" else generation.texts
    out = np.asarray(scorer.score(list(texts)), dtype=np.float64).reshape(-1)
    if len(out) != len(texts):
        raise ValueError(f"scorer returned {len(out)} scores for {len(texts)} texts")
    return out
