"""A study's curated yardsticks: the four lexical baselines of each curated set it scores (computed once,
cached in the run folder as ``yardsticks.json``), every tracked probe's AUROC per row kind, and the section
of ``headline.md`` (also ``yardsticks.md``) that prints the baselines beside the probes' AUROCs on
curated-all and curated-hard, with the paired contrasts on curated-hard (``contrasts_curated_hard.csv``).

Why: a probe's curated AUROC means little where a word-counter scores the same rows as well (the v1
toxicity set is lexically separable). The hard set (``curated_hard``: rows a word-counter gets wrong or
cannot see) is scored like any curated set, at every telemetry step, under ``probe/curated_hard_auroc/<probe>``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe_lens._io import atomic_write
from probe_lens.data.curated import CuratedText
from probe_lens.data.lexical import LEXICONS, auroc_by_kind, curated_baselines
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.run_folder import read_derived_json, write_json
from probe_lens.experiments.study_data import CURATED, CURATED_HARD
from probe_lens.training.metric_keys import LABELS, MetricKey, kind_auroc, member_index, retrained_hook, tracked_auroc

__all__ = ["BASELINES", "kind_aurocs", "lexical_baselines", "write_yardsticks"]

log = logging.getLogger(__name__)

YARDSTICKS_JSON, YARDSTICKS_MD = "yardsticks.json", "yardsticks.md"
HARD_CONTRASTS_CSV = "contrasts_curated_hard.csv"
BASELINES: dict[str, str] = {
    "classifier": "output classifier",
    "lexicon": "lexicon hits",
    "bow": "bag of words (leave one topic out)",
    "length": "length",
}
"""The lexical baselines (:func:`probe_lens.data.lexical.lexical_baselines`) and their headers."""
_FULL_HARD_BOW = {"toxicity": 0.969}
"""The bag of words' AUROC on a shipped set's whole v2 hard subset (``benchmarks/RESULTS.md``)."""


# ---- the baselines, once per set ---------------------------------------------------------------
def set_record(rows: Sequence[CuratedText], scorer: Any, lexicon: Any) -> dict[str, Any]:
    """A curated set's size, kinds and lexical baselines (``{}`` with a ``note`` where they cannot be fit)."""
    rec: dict[str, Any] = {
        "rows": len(rows),
        "positive": int(sum(r.label for r in rows)),
        "kinds": dict(Counter(r.kind for r in rows)),
        "ids": [r.id for r in rows],
    }
    try:
        rec["baselines"] = curated_baselines(rows, scorer, lexicon=lexicon)
    except ValueError as e:  # e.g. one topic only: the bag of words is cross-validated by topic
        log.warning("no lexical baselines for a curated set of %d rows: %s", len(rows), e)
        rec["baselines"], rec["note"] = {}, str(e)
    return rec


def lexical_baselines(
    root: Path, sets: Mapping[str, Sequence[CuratedText]], scorer: Any, behaviour: str
) -> dict[str, dict[str, Any]]:
    """``{set: record}`` (:func:`set_record`) of every curated set in ``sets``, read from ``yardsticks.json``
    in ``root`` where it holds the same rows, else computed and saved (``scorer``: the output classifier,
    None for a pre-labelled behaviour: no ``classifier`` baseline)."""
    path = root / YARDSTICKS_JSON
    saved = read_derived_json(path) or {}
    out = {}
    for which, rows in sets.items():
        rec = saved.get(which)
        if rec is None or rec.get("ids") != [r.id for r in rows]:
            rec = set_record(rows, scorer, LEXICONS.get(behaviour))
        out[which] = rec
    if out != saved:
        write_json(path, out)
    return out


# ---- per kind ----------------------------------------------------------------------------------
def kind_aurocs(scores: Mapping[str, Mapping[str, np.ndarray]], kinds: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Every tracked probe's (not ensemble members') AUROC per row kind (``probe/<set>_auroc_kind_<kind>/<probe>``) on each set of
    ``kinds`` (``{set: kind per row}``) whose rows carry more kinds than labels; ``scores``:
    :meth:`~probe_lens.training.DriftTelemetry.scores`."""
    out: dict[str, float] = {}
    for which, row_kinds in kinds.items():
        s = scores.get(which)
        if s is None or len(set(row_kinds)) <= len(np.unique(s[LABELS])):
            continue
        for name, vals in s.items():
            if name == LABELS or retrained_hook(name) is not None or member_index(name) is not None:
                continue
            for kind, v in auroc_by_kind(vals, s[LABELS], row_kinds).items():
                out[str(kind_auroc(which, kind, name))] = v
    return out


# ---- the headline section ----------------------------------------------------------------------
def _baselines_table(records: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    rows = []
    for which, rec in records.items():
        b = rec.get("baselines", {})
        row = {"set": which, "rows (positive)": f"{rec['rows']} ({rec['positive']})"}
        row.update({h: f"{b[k]:.3f}" if k in b else "–" for k, h in BASELINES.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _probe_columns(names: Mapping[str, list[str]], layer: int, sets: Sequence[str]) -> dict[str, str]:
    probes = [names["single"][0], names["ensemble"][0], f"massmean_L{layer}"]
    return {str(tracked_auroc(w, p)): f"{p} {w.replace('_', '-')}" for p in probes for w in sets}


def _probes_table(summary: pd.DataFrame, cols: Mapping[str, str]) -> pd.DataFrame | None:
    from probe_lens.experiments.stats import format_cells

    present = {m: h for m, h in cols.items() if f"{m}_mean" in summary.columns}
    return format_cells(summary, columns=list(present)).rename(columns=present) if present else None


def _kinds_table(summary: pd.DataFrame, probe: str) -> pd.DataFrame | None:
    """``probe``'s AUROC per kind of every curated set, one row per cell."""
    cols = {}
    for c in summary.columns:
        if c.endswith("_mean"):
            key = MetricKey.parse(c[: -len("_mean")])
            if key.curated_kind is not None and key.subject == probe:
                cols[str(key)] = "{}: {}".format(*key.curated_kind)
    return _probes_table(summary, cols)


def hard_contrasts(results: pd.DataFrame, config: StudyConfig, names: Mapping[str, list[str]]) -> pd.DataFrame:
    """The headline's curated contrasts (:func:`~probe_lens.experiments.headline.contrast_specs`) on curated-hard,
    with the same statistics over seeds (none of them primary)."""
    from probe_lens.experiments.headline import contrast_specs, contrasts

    specs = []
    for metric, a, b in contrast_specs(config, names):
        key = MetricKey.parse(metric)
        if key.tracked_set == CURATED and key.subject is not None:
            specs.append((str(tracked_auroc(CURATED_HARD, key.subject)), a, b))
    return contrasts(results, config, names, specs=specs)


def _explain(records: Mapping[str, Mapping[str, Any]], config: StudyConfig) -> str:
    b = config.behaviour_spec
    text = (
        f"Each curated set's lexical baselines (AUROC): the output classifier, a count of the words of the "
        f"{b.name} word list (`probe_lens.data.lexical`), a bag-of-words logistic regression fit on the set "
        "itself leaving one topic out, and text length. A probe's curated AUROC below these means it reads "
        "the words no better than a word-counter. `curated` is the behaviour's set (version "
        f"{config.eval.curated_version})"
    )
    if CURATED_HARD in records:
        bow = records[CURATED_HARD].get("baselines", {}).get("bow")
        here = f"{bow:.3f} on these rows" if bow is not None else "not computed here"
        if b.name in _FULL_HARD_BOW:
            here += f"; {_FULL_HARD_BOW[b.name]} on the whole shipped v2 hard subset"
        text += (
            "; `curated-hard` holds only the rows a word-counter gets wrong or cannot see (kinds "
            f"{', '.join(sorted(records[CURATED_HARD]['kinds']))}), scored for every probe at every telemetry "
            f"step. **A bag of words still separates the hard rows** ({here}): it reads each kind's style, "
            "not only its words. A probe's "
            "curated-hard AUROC means *more than the words* when it beats the lexicon and the output "
            "classifier, and *more than this set's n-grams* only when it beats the bag of words"
        )
    return text + ".\n"


def yardsticks_markdown(
    records: Mapping[str, Mapping[str, Any]],
    results: pd.DataFrame,
    summary: pd.DataFrame,
    config: StudyConfig,
    names: Mapping[str, list[str]],
) -> tuple[str, pd.DataFrame]:
    """The section's markdown and the curated-hard contrasts."""
    from probe_lens.experiments.headline import _markdown, contrasts_markdown

    text = ["## Curated yardsticks: lexical baselines beside the probes\n", _explain(records, config)]
    text.append(_markdown(_baselines_table(records)))
    probes = _probes_table(summary, _probe_columns(names, config.probes.layer, list(records)))
    if probes is not None:
        text += ["\nProbes on each curated set (mean ± 95% CI half-width over seeds):\n", _markdown(probes)]
    kinds = _kinds_table(summary, names["single"][0])
    if kinds is not None:
        text += [f"\n{names['single'][0]} per row kind (a kind of one label against every row of the other):\n"]
        text.append(_markdown(kinds))
    con = hard_contrasts(results, config, names)
    if not con.empty:
        text += ["\nPaired contrasts on curated-hard (cell − control, paired by seed):\n", contrasts_markdown(con)]
    return "\n".join(text), con


def write_yardsticks(
    root: Path,
    results: pd.DataFrame,
    summary: pd.DataFrame,
    config: StudyConfig,
    names: Mapping[str, list[str]],
) -> None:
    """Write ``yardsticks.md`` and ``contrasts_curated_hard.csv`` from ``yardsticks.json`` (when the study
    scored a curated set) and append the section to ``headline.md`` in ``root``; then the instruments'."""
    from probe_lens.experiments.instruments import write_instruments

    records = read_derived_json(root / YARDSTICKS_JSON)
    if records:
        text, con = yardsticks_markdown(records, results, summary, config, names)
        atomic_write(root / YARDSTICKS_MD, lambda p: p.write_text(text))
        atomic_write(root / HARD_CONTRASTS_CSV, lambda p: con.to_csv(p, index=False))
        _append(root / "headline.md", text)
    section = write_instruments(root, summary, config, results)
    if section:
        _append(root / "headline.md", section)


def _append(path: Path, text: str) -> None:
    before = path.read_text() if path.exists() else ""
    atomic_write(path, lambda p: p.write_text(before + "\n" + text))
