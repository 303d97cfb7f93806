"""Probe-score attribution in a study (``eval.attribution``): which components carry a probe's score gap?

Per cell and seed (``cells/<cell>/seed<s>/attribution.json``) and once per seed on the base model
(``seeds/<s>/attribution_base.json``), for each measured probe (:func:`~probe_lens.experiments.instruments.
instrument_probes`: the trained-against probes and the held-out mass-mean probe), each component's mean
direct contribution (:func:`~probe_lens.interventions.probe_attributions`: embedding, every head, every
attention bias and MLP up to the probe's hook) to the probe's logit on positive rows minus on negative rows.

Rows: a fixed draw of ``eval.attribution_rows`` curated rows per class, the same texts in every cell and
seed, so a component's gap is comparable across cells and a probe cell can be paired with its control seed
by seed (the on-policy rows are each seed's own base-model samples). Each file records the check that the
components sum to the probe's logit gap read from the telemetry's own forward pass (fails loudly beyond
``TOLERANCE``) and the seconds it took.

:func:`attribution_contrasts` pairs every probe cell with its control seed by seed;
:func:`attribution_markdown` lists the components that moved most (a diagnostic, not a test).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe_lens.activations import resolve_hook
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.run_folder import RunFolder, read_derived_json, write_json
from probe_lens.interventions import component_gap, probe_attributions
from probe_lens.training import DriftSet

__all__ = [
    "ATTRIBUTION_BASE_JSON",
    "ATTRIBUTION_CSV",
    "ATTRIBUTION_JSON",
    "BASE_MODEL",
    "attribution_contrasts",
    "attribution_markdown",
    "control_pairs",
    "attribution_rows",
    "attribution_table",
    "cached_attribution",
    "measure_attribution",
]

ATTRIBUTION_JSON = "attribution.json"
ATTRIBUTION_BASE_JSON = "attribution_base.json"
ATTRIBUTION_CSV = "attribution.csv"
BASE_MODEL = "base model"
"""The ``source`` of the seed's base-model attribution in :func:`attribution_table`."""
TOLERANCE = 1e-4
"""Largest allowed |sum of component gaps - logit gap| (fp32 forward passes)."""
_KEYS = ["component", "layer", "head", "label"]


def attribution_rows(labels: np.ndarray, n_per_class: int) -> np.ndarray:
    """Sorted indices of up to ``n_per_class`` rows of each label (0 and 1), a fixed seeded draw."""
    y = np.asarray(labels).astype(int)
    rng = np.random.default_rng(0)
    picked = [rng.permutation(np.flatnonzero(y == c))[:n_per_class] for c in (0, 1)]
    if min(len(p) for p in picked) < 1:
        raise ValueError("attribution needs rows of both classes in the curated set")
    return np.sort(np.concatenate(picked))


def measure_attribution(
    model,
    probes: Mapping[str, Any],
    rows_set: DriftSet,
    acts: Mapping[str, np.ndarray],
    *,
    n_per_class: int,
    pooling: str,
    batch_size: int = 8,
) -> dict[str, Any]:
    """The attribution record of ``model`` for each of ``probes`` on a fixed draw of ``rows_set``'s rows.

    ``acts``: ``{hook: pooled activations [n, d_model]}`` of ``model`` on all of ``rows_set`` from an
    independent forward pass (the telemetry's); each probe's ``decision_function`` there gives the logit gap
    the components must sum to. Raises RuntimeError when they differ by more than ``TOLERANCE``.
    """
    t0 = time.perf_counter()
    rows = attribution_rows(rows_set.labels, n_per_class)
    y = rows_set.labels[rows]
    out: dict[str, Any] = {"rows": rows.tolist(), "n_positive": int(y.sum()), "n_negative": int((y == 0).sum())}
    out["probes"] = {}
    tables = probe_attributions(
        model,
        probes,
        rows_set.tokens[rows],
        rows_set.attention_mask[rows],
        rows_set.pool_mask[rows],
        pooling=pooling,
        batch_size=batch_size,
    )  # one forward pass per batch for the probes at one hook
    for name, probe in probes.items():
        hook = resolve_hook(model, probe.hook)
        att = tables[name]
        gap = component_gap(att, y)
        logit = probe.decision_function(np.asarray(acts[hook])[rows])
        logit_gap = float(logit[y == 1].mean() - logit[y == 0].mean())
        total = float(gap["gap"].sum())
        if not abs(total - logit_gap) <= TOLERANCE:
            raise RuntimeError(
                f"attribution of {name} at {hook}: the components sum to a gap of {total:.6g} but the probe's logit "
                f"gap is {logit_gap:.6g} (|difference| > {TOLERANCE}); the decomposition does not match this model"
            )
        records = gap.astype(object).where(gap.notna(), None).to_dict("records")
        out["probes"][name] = {"hook": hook, "logit_gap": logit_gap, "components_sum": total, "components": records}
    out["seconds"] = time.perf_counter() - t0
    return out


def cached_attribution(path: Path, probes: Iterable[str], compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The record saved at ``path`` when it holds every one of ``probes``; else ``compute()``, saved (atomic)."""
    saved = read_derived_json(path)
    if isinstance(saved, dict) and set(probes) <= set(saved.get("probes", {})):
        return saved
    record = compute()
    write_json(path, record)
    return record


def attribution_table(folder: RunFolder, seeds: Iterable[int]) -> pd.DataFrame:
    """Long rows (source, seed, probe, component, layer, head, label, gap) of every saved attribution;
    ``source`` is the cell, or :data:`BASE_MODEL` for the seed's base model."""
    files = [(c, s, p) for c, s, p in folder.cell_files(ATTRIBUTION_JSON)]
    files += [(BASE_MODEL, s, folder.seed_dir(s) / ATTRIBUTION_BASE_JSON) for s in seeds]
    frames = []
    for source, seed, path in files:
        record = read_derived_json(path)
        for probe, rec in (record or {}).get("probes", {}).items():
            frames.append(pd.DataFrame(rec["components"]).assign(source=source, seed=seed, probe=probe))
    cols = ["source", "seed", "probe", *_KEYS, "gap"]
    if not frames:
        return pd.DataFrame(columns=cols)
    table = pd.concat(frames, ignore_index=True)[cols]
    return table.astype({"layer": "Int64", "head": "Int64", "gap": float})


def control_pairs(config: StudyConfig) -> list[tuple[str, str]]:
    """``(probe cell, control)``: each cell that trains against a probe with each classifier cell of its
    control objective (as the headline's contrasts), else with ``base``."""
    from probe_lens.experiments.adapters import get_study_objective

    cells = {c.name: c for c in config.cell_specs}
    out = []
    for spec in config.cell_specs:
        if not (spec.trains and spec.uses_probe):
            continue
        control = get_study_objective(spec.objective).control or spec.objective
        controls = [c.name for c in cells.values() if c.signal == "classifier" and c.objective == control]
        out += [(spec.name, c) for c in controls or (["base"] if "base" in cells else [])]
    return out


def attribution_contrasts(table: pd.DataFrame, pairs: Iterable[tuple[str, str]]) -> pd.DataFrame:
    """Per pair, probe and component, over the seeds both cells finished: the mean gap on the base model,
    the cell and the control, and the paired difference cell minus control (``difference``: mean over seeds,
    ``difference_sd``: between-seed SD, NaN with one seed; ``n_seeds``; ``n_agree``: seeds whose difference
    has the mean's sign)."""
    keyed = table.astype({"layer": float, "head": float}).fillna({"layer": -1, "head": -1})  # no NA in group keys
    wide = keyed.pivot_table(index=["seed", "probe", *_KEYS], columns="source", values="gap").reset_index()
    out = []
    for cell, control in pairs:
        if cell not in wide or control not in wide or BASE_MODEL not in wide:
            continue
        d = wide.dropna(subset=[cell, control])
        d = d.assign(diff=d[cell] - d[control])
        for keys, g in d.groupby(["probe", *_KEYS], sort=False):
            mean = float(g["diff"].mean())
            out.append(
                dict(zip(["probe", *_KEYS], keys, strict=True))
                | {
                    "cell": cell,
                    "control": control,
                    "base": float(g[BASE_MODEL].mean()),
                    "cell_gap": float(g[cell].mean()),
                    "control_gap": float(g[control].mean()),
                    "difference": mean,
                    "difference_sd": float(g["diff"].std(ddof=1)) if len(g) > 1 else float("nan"),
                    "n_seeds": len(g),
                    "n_agree": int((np.sign(g["diff"]) == np.sign(mean)).sum()) if mean != 0 else 0,
                }
            )
    cols = ["cell", "control", "probe", *_KEYS, "base", "cell_gap", "control_gap", "difference", "difference_sd"]
    frame = pd.DataFrame(out, columns=[*cols, "n_seeds", "n_agree"])
    return frame.replace({"layer": {-1: np.nan}, "head": {-1: np.nan}}).astype({"layer": "Int64", "head": "Int64"})


def attribution_markdown(contrasts: pd.DataFrame, *, top: int = 8) -> str:
    """The ``instruments.md`` section: per probe cell, control and probe, the ``top`` components whose
    paired difference (cell minus control) is largest in size; "" when nothing was attributed."""
    if contrasts.empty:
        return ""
    text = [
        "## Attribution: which components moved the probe's positive-minus-negative gap?\n",
        "Each component's direct contribution to the probe's logit, mean on positive minus mean on negative "
        "curated rows (the same rows in every cell and seed). `cell − control`: the paired difference, mean over "
        "seeds ± between-seed SD; `agree`: seeds whose difference has that sign. Read it as a diagnostic of where "
        "the gap moved, not as a test. The `total` row is the probe's whole logit gap.\n",
    ]
    for (cell, control, probe), g in contrasts.groupby(["cell", "control", "probe"], sort=False):
        moved = g.reindex(g["difference"].abs().sort_values(ascending=False).index).head(top)
        total = g[["base", "cell_gap", "control_gap", "difference"]].sum()
        lines = [
            f"### {probe}: {cell} − {control}\n",
            f"| component | base model | {cell} | {control} | {cell} − {control} | agree |",
            "|---|---|---|---|---|---|",
        ]
        for r in moved.itertuples(index=False):
            sd = "" if np.isnan(r.difference_sd) else f" ± {r.difference_sd:.3f}"
            lines.append(
                f"| {r.label} | {r.base:+.3f} | {r.cell_gap:+.3f} | {r.control_gap:+.3f} | {r.difference:+.3f}{sd} "
                f"| {r.n_agree}/{r.n_seeds} |"
            )
        lines.append(
            f"| total | {total['base']:+.3f} | {total['cell_gap']:+.3f} | {total['control_gap']:+.3f} "
            f"| {total['difference']:+.3f} | |"
        )
        text.append("\n".join(lines) + "\n")
    return "\n".join(text)
