"""The field's monitor metrics: each tracked probe read as a monitor at a fixed threshold.

A probe's thresholds are fixed once per seed on the **base** model's benign rows (the on-policy clean rows
and the curated clean rows, pooled), one per target false-positive rate (1% and 5%), and saved in the
run folder (``seeds/<s>/monitor_thresholds.json``); every cell of the seed, a resumed one included, reads
them back unchanged. A cell then reports, per evaluation set, the recall (TPR) on its positive rows and
the false-positive rate on its benign rows at those thresholds, and the FPR over all benign rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from probe_lens.experiments.prompt_plan import ONPOLICY
from probe_lens.experiments.run_folder import read_derived_json, write_json
from probe_lens.training.metric_keys import DRIFT_SET, GROUPS, LABELS, monitor_key, retrained_hook

__all__ = ["FPR_TARGETS", "base_thresholds", "fixed_fpr_threshold", "monitor_metrics", "thresholds_for"]

FPR_TARGETS = (0.01, 0.05)
"""Target false-positive rates on the base model's benign rows."""
BENIGN = "benign"
"""The name of every benign row of a cell, pooled over its evaluation sets."""
RULE = (
    "flagged when score > threshold; threshold = the lowest value with at most floor(fpr * n) of the base "
    "model's n benign rows (on-policy clean + curated clean) above it"
)

Scores = Mapping[str, Mapping[str, np.ndarray]]
"""``DriftTelemetry.scores``: ``{set: {probe name: P(positive) per row, "__y__": labels}}``."""


def fixed_fpr_threshold(benign: ArrayLike, fpr: float) -> float:
    """The lowest threshold at which at most ``floor(fpr * n)`` of the ``n`` benign scores lie strictly above
    it: the ``(floor(fpr * n) + 1)``-th largest benign score."""
    b = np.sort(np.asarray(benign, dtype=np.float64).reshape(-1))[::-1]
    if b.size == 0:
        raise ValueError("no benign rows to fix a threshold on")
    if not 0.0 < float(fpr) < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr!r}")
    return float(b[int(np.floor(float(fpr) * b.size))])


def _monitored(scores: Scores) -> list[str]:
    """The tracked probes (and ensemble members) of a score table; re-fit probes change per cell, so none."""
    names: dict[str, None] = {}
    for s in scores.values():
        names.update((n, None) for n in s if n not in (LABELS, GROUPS) and retrained_hook(n) is None)
    return list(names)


THRESHOLD_SETS = (DRIFT_SET, ONPOLICY, "curated")
"""The sets whose benign rows fix the thresholds and make up ``benign``: on-policy (``drift`` in telemetry's table,
``onpolicy`` in a saved one) clean + curated clean. Other
sets (the lexically hard ``curated_hard``) are read at those thresholds, never used to set them."""


def _benign(scores: Scores, name: str) -> np.ndarray:
    rows = [
        np.asarray(s[name])[np.asarray(s[LABELS]) == 0] for w, s in scores.items() if w in THRESHOLD_SETS and name in s
    ]
    return np.concatenate(rows) if rows else np.empty(0)


def base_thresholds(scores: Scores, targets: tuple[float, ...] = FPR_TARGETS) -> dict[str, Any]:
    """The thresholds record of the base model's score table ``scores`` (every set's benign rows pooled)."""
    names = _monitored(scores)
    return {
        "rule": RULE,
        "fpr_targets": list(targets),
        "n_benign": {n: int(_benign(scores, n).size) for n in names},
        "thresholds": {n: {f"{t:g}": fixed_fpr_threshold(_benign(scores, n), t) for t in targets} for n in names},
    }


def thresholds_for(path: Path, base_scores: Callable[[], Scores]) -> dict[str, Any]:
    """The thresholds saved at ``path``; if none (or corrupt), those of ``base_scores()`` (the base model's
    score table), written there first."""
    saved = read_derived_json(path)
    if saved is not None:
        return saved
    record = base_thresholds(base_scores())
    write_json(path, record)
    return record


def monitor_metrics(scores: Scores, record: Mapping[str, Any]) -> dict[str, float]:
    """Recall and false-positive rate of every probe of ``record`` at its fixed thresholds, per set of
    ``scores`` (the drift set named on-policy) and over all benign rows."""
    out: dict[str, float] = {}
    for name, by_target in record["thresholds"].items():
        for target, t in by_target.items():
            fpr = float(target)
            for which, s in scores.items():
                if name not in s:
                    continue
                y, v = np.asarray(s[LABELS]), np.asarray(s[name])
                label = ONPOLICY if which == DRIFT_SET else which
                out[str(monitor_key(label, "recall", fpr, name))] = _share_above(v[y == 1], t)
                out[str(monitor_key(label, "fpr", fpr, name))] = _share_above(v[y == 0], t)
            out[str(monitor_key(BENIGN, "fpr", fpr, name))] = _share_above(_benign(scores, name), t)
    return out


def _share_above(values: np.ndarray, threshold: float) -> float:
    return float((values > threshold).mean()) if values.size else float("nan")
