"""Difference-of-differences contrasts between objectives: does the way the probe's signal reaches the model
(a gradient through the probe, a ranking, a reward) change how much it evades?

Each probe-trained cell's effect is its paired difference from the classifier control of its own objective
(``probe_sft_1 − classifier_sft``): the control takes out what training with that objective does anyway. Two
such effects, for cells that train against the same probe with different objectives, are compared per seed:

    Δ(s) = (a[s] − control_a[s]) − (b[s] − control_b[s])

A negative Δ on the trained-against probe's AUROC says ``a``'s objective breaks the probe more than ``b``'s
beyond what each objective does with a classifier signal. The statistics are over seeds (mean, Student-t
interval, exact sign-flip p), Holm-corrected as their own family: none of these is a primary contrast.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from probe_lens.behaviours import BehaviourNames
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.headline import _seed_diffs, classifier_controls
from probe_lens.experiments.stats import holm, mean_ci, sign_flip_p
from probe_lens.training import metric_keys as K

INTERACTION_COLUMNS = [
    "contrast",
    "metric",
    "a",
    "control_a",
    "b",
    "control_b",
    "mean_diff",
    "ci_low",
    "ci_high",
    "n_seeds",
    "p_signflip",
    "p_holm",
    "per_seed",
]
"""The columns of :func:`interaction_contrasts` (``interactions.csv``)."""


def _effects(config: StudyConfig, names: Mapping[str, list[str]]) -> list[tuple[str, str, str, str]]:
    """``(cell, control, objective, probe)`` for each probe-trained cell that has a classifier control
    (:func:`~probe_lens.experiments.headline.classifier_controls`) in the study."""
    out = []
    for spec in config.cell_specs:
        if not (spec.trains and spec.uses_probe):
            continue
        ctrl = classifier_controls(spec, config.cell_specs)
        probes = spec.trained_against(names)
        if ctrl and probes:
            out.append((spec.name, ctrl[0], spec.objective, probes[0]))
    return out


def interaction_specs(
    config: StudyConfig, names: Mapping[str, list[str]]
) -> list[tuple[str, tuple[str, str], tuple[str, str]]]:
    """``(metric, (a, control_a), (b, control_b))`` for every two probe-trained cells with different objectives
    that train against the same probe, each with its classifier control (:func:`_effects`): on the
    trained-against probe's AUROC, the held-out mass-mean probe's AUROC and the behaviour's rate."""
    which = "curated" if config.eval.curated is not None else "onpolicy"
    rate = BehaviourNames.of(config.behaviour_spec).metric_keys["rate"]
    heldout = str(K.tracked_auroc(which, f"massmean_L{config.probes.layer}"))
    out = []
    for (a, ca, obj_a, probe_a), (b, cb, obj_b, probe_b) in combinations(_effects(config, names), 2):
        if obj_a == obj_b or probe_a != probe_b or ca == cb:
            continue
        for metric in dict.fromkeys([str(K.tracked_auroc(which, probe_a)), heldout, rate]):
            out.append((metric, (a, ca), (b, cb)))
    return out


def interaction_contrasts(
    results: pd.DataFrame, config: StudyConfig, names: Mapping[str, list[str]], confidence: float = 0.95
) -> pd.DataFrame:
    """The paired-by-seed differences of differences of :func:`interaction_specs` (cells or metrics missing
    from ``results`` are skipped), with :data:`INTERACTION_COLUMNS`; seeds missing any of the four cells
    do not count."""
    present = set(results["cell"]) if "cell" in results else set()
    rows: list[dict[str, Any]] = []
    for metric, (a, ca), (b, cb) in interaction_specs(config, names):
        if metric not in results.columns or not {a, ca, b, cb} <= present:
            continue
        da, db = _seed_diffs(results, metric, a, ca), _seed_diffs(results, metric, b, cb)
        seeds = sorted(set(da) & set(db))
        diffs = [da[s] - db[s] for s in seeds]
        mean, lo, hi = mean_ci(diffs, confidence)
        rows.append(
            {
                "contrast": f"({a} − {ca}) − ({b} − {cb})",
                "metric": metric,
                "a": a,
                "control_a": ca,
                "b": b,
                "control_b": cb,
                "mean_diff": mean,
                "ci_low": lo,
                "ci_high": hi,
                "n_seeds": len(seeds),
                "p_signflip": sign_flip_p(diffs) if diffs else np.nan,
                "per_seed": ", ".join(f"s{s}: {d:+.3f}" for s, d in zip(seeds, diffs)),
            }
        )
    df = pd.DataFrame(rows, columns=[c for c in INTERACTION_COLUMNS if c != "p_holm"])
    df["p_holm"] = holm(df["p_signflip"].to_numpy(dtype=np.float64)) if len(df) else []
    return df[INTERACTION_COLUMNS]
