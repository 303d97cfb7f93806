"""Behaviour vs representation: is a monitor's drop changed text or changed activations?

Notation, per seed and tracked probe ``p`` (the original, pre-training probe): ``B`` the base model, ``T`` a
cell's trained model, ``X_c`` the cell's evaluation outputs (its samples on the held-out provocative prompts),
``X_0`` the base cell's, and ``S_M(X)`` a statistic of ``p`` read on model ``M``'s activations of the texts
``X`` (teacher-forced, pooled as the probes were fit; a token probe reads the response tokens themselves):

* ``mean``: the mean P(positive) of ``p`` over all of ``X``;
* ``recall01``: the share of ``X``'s outputs the study's output classifier flags (score >= ``eval.threshold``)
  that ``p`` flags at its 1% base-FPR threshold (:mod:`~probe_lens.experiments.monitor`; NaN when the
  classifier flags none).

The monitor's change from the base cell to cell ``c`` splits exactly into two parts::

    S_T(X_c) - S_B(X_0) = [S_B(X_c) - S_B(X_0)]  +  [S_T(X_c) - S_B(X_c)]
         total               behaviour                 representation

the **behaviour** part (does the original monitor on the original model still flag the new text?) and the
**representation** part (what the trained model's activations of that same text hide from it). Each cell's
results hold ``outputs/<stat>_trained/<p>`` (= ``S_T(X_c)``, what the monitor sees), ``outputs/<stat>_base/<p>``
(= ``S_B(X_c)``) and ``outputs/<stat>_representation/<p>``; :func:`add_behaviour_parts` adds
``outputs/<stat>_behaviour/<p>`` (the base cell of the same seed as ``X_0``). In the base cell ``T = B``
and both parts are 0 (the representation part exactly: the same weights read the same texts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pandas as pd

from probe_lens.activations import collect, collect_tokens
from probe_lens.models import Generation
from probe_lens.probes import TokenProbe
from probe_lens.training.metric_keys import OUTPUT_PARTS, OUTPUT_STATS, MetricKey, output_split_key
from probe_lens.training.probes_util import flatten_probes

__all__ = ["PARTS", "STATS", "add_behaviour_parts", "outputs_scores", "split_contrast_metrics", "split_metrics"]

STATS = OUTPUT_STATS
"""The statistics split: mean probe score, recall at the 1% base-FPR threshold."""
PARTS = OUTPUT_PARTS
RECALL_FPR = "0.01"
"""The thresholds record's key of the 1% base-FPR threshold."""


def outputs_scores(
    model, gen: Generation, probes: Mapping[str, Any], *, pooling: str, batch_size: int
) -> dict[str, np.ndarray]:
    """``{probe: P(positive) per text of gen}`` of every probe of ``probes`` on ``model``'s activations of
    ``gen`` (teacher-forced; one forward pass to the deepest hook needed, and for token probes one more to
    theirs, collecting the response tokens)."""
    flat = flatten_probes(model, dict(probes))
    grid = (gen.tokens, gen.attention_mask, gen.response_mask)
    token_hooks = sorted({p.hook for p in flat if isinstance(p.probe, TokenProbe)})
    acts = collect(
        model, *grid, sorted({p.hook for p in flat}), pooling=pooling, batch_size=batch_size, progress=False
    )  # fmt: skip
    tokens = collect_tokens(model, *grid, token_hooks, batch_size=batch_size, progress=False)[0] if token_hooks else {}
    out = {}
    for name, probe in probes.items():
        hook = next(p.hook for p in flat if p.parent == name)
        X = (tokens if isinstance(probe, TokenProbe) else acts)[hook].numpy()
        out[name] = np.asarray(probe.predict_proba(X), dtype=np.float64)[:, 1]
    return out


def _stats(scores: np.ndarray, flagged: np.ndarray, threshold: float | None) -> dict[str, float]:
    pos = scores[flagged]
    recall = float((pos > threshold).mean()) if threshold is not None and pos.size else float("nan")
    return {"mean": float(scores.mean()), "recall01": recall}


def split_metrics(
    model,
    gen: Generation,
    probes: Mapping[str, Any],
    flagged: np.ndarray,
    thresholds: Mapping[str, Any] | None,
    base_weights: Callable[[], AbstractContextManager[Any]],
    *,
    pooling: str,
    batch_size: int,
) -> dict[str, float]:
    """``outputs/<stat>_{trained,base,representation}/<probe>`` of a cell's outputs ``gen``: each probe on
    ``model``'s (the trained model's) activations, then on the base model's (``base_weights()``: a context in
    which ``model`` holds the base weights, restored after), and their difference. ``flagged``: the outputs the
    output classifier flags (the rows of ``recall01``); ``thresholds``: the seed's monitor record (None: no
    recall)."""
    trained = outputs_scores(model, gen, probes, pooling=pooling, batch_size=batch_size)
    with base_weights() as base_model:
        base = outputs_scores(base_model, gen, probes, pooling=pooling, batch_size=batch_size)
    limits = (thresholds or {}).get("thresholds", {})
    out: dict[str, float] = {}
    for name in probes:
        t = limits.get(name, {}).get(RECALL_FPR)
        st, sb = _stats(trained[name], flagged, t), _stats(base[name], flagged, t)
        for stat in STATS:
            out[str(output_split_key(stat, "trained", name))] = st[stat]
            out[str(output_split_key(stat, "base", name))] = sb[stat]
            out[str(output_split_key(stat, "representation", name))] = st[stat] - sb[stat]
    return out


def split_contrast_metrics(trained: str, heldout: str) -> list[str]:
    """The split's secondary contrasts of a probe-trained cell: both parts of both statistics for its
    trained-against probe ``trained``, both parts of the mean for the held-out probe ``heldout``."""
    keys = [output_split_key(s, p, trained) for s in STATS for p in ("behaviour", "representation")]
    keys += [output_split_key("mean", p, heldout) for p in ("behaviour", "representation")]
    return [str(k) for k in keys]


def _split_columns(columns: Iterator[str] | list[str], part: str) -> list[tuple[str, MetricKey]]:
    keys = [(c, MetricKey.parse(c)) for c in columns]
    return [(c, k) for c, k in keys if k.output_split is not None and k.output_split[1] == part]


def add_behaviour_parts(results: pd.DataFrame, base_cell: str = "base") -> pd.DataFrame:
    """``results`` with ``outputs/<stat>_behaviour/<probe>`` = the cell's ``outputs/<stat>_base/<probe>`` minus
    the base cell's in the same seed (NaN where the seed has no base cell); unchanged without such columns."""
    cols = _split_columns(list(results.columns), "base")
    if not cols or "cell" not in results or base_cell not in set(results["cell"]):
        return results
    out = results.copy()
    base_rows = out[out["cell"] == base_cell].set_index("seed")
    for col, key in cols:
        stat, _ = key.output_split  # type: ignore[misc]
        assert key.subject is not None
        ref = out["seed"].map(pd.to_numeric(base_rows[col], errors="coerce"))
        out[str(output_split_key(stat, "behaviour", key.subject))] = pd.to_numeric(out[col], errors="coerce") - ref
    return out
