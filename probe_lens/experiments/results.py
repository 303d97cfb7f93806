"""A study's results: one row per finished (cell, seed) from the cells' ``eval.json`` files, every telemetry
row, and the files made of them (``results.csv``/``.parquet``, ``summary.csv``/``.md``, ``contrasts.csv``,
``headline.md``, ``metrics.parquet``) with the headline call."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from probe_lens._io import atomic_write
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.monitor_split import add_behaviour_parts
from probe_lens.experiments.prompt_plan import ONPOLICY, SeedSplit
from probe_lens.experiments.run_folder import RunFolder, read_derived_json, read_json, write_json
from probe_lens.experiments.study_telemetry import CURATED
from probe_lens.training import read_metrics
from probe_lens.training.metric_keys import (
    DRIFT,
    INTERVALS,
    MetricKey,
    cosine,
    eval_key,
    member_name,
    study_summary,
    tracked_auroc,
)

_LABELS = ("cell", "seed", "scorer", "trained_against", "behaviour")


def results_table(folder: RunFolder, config: StudyConfig, behaviour: str, names: dict[str, list[str]]) -> pd.DataFrame:
    """One row per finished (cell, seed), in the study's cell order: every number of its ``eval.json``,
    its intervals as ``<metric>/ci_low|ci_high``, and the summary columns of :func:`headline_probe_metrics`."""
    rows = [_result_row(read_json(f), behaviour, names) for _, _, f in folder.cell_files("eval.json")]
    if not rows:
        raise FileNotFoundError(f"no finished cells under {folder.root / 'cells'}; run the study first")
    df = add_behaviour_parts(pd.DataFrame(rows))  # needs every cell of a seed: added over the table
    order = {c.name: i for i, c in enumerate(config.cell_specs)}
    return df.sort_values(["cell", "seed"], key=lambda s: s.map(order) if s.name == "cell" else s).reset_index(
        drop=True
    )


def _result_row(r: dict[str, Any], behaviour: str, names: dict[str, list[str]]) -> dict[str, Any]:
    info = r.pop("info", None) or {}
    intervals = r.pop("intervals", None) or {}
    for metric, bounds in intervals.items():
        key = MetricKey.parse(metric)
        for bound, v in zip(INTERVALS, bounds):
            r[str(key.with_interval(bound))] = v
    r.setdefault("behaviour", behaviour)  # a run evaluated before behaviours: its study's
    r["trained_against"] = ",".join(info.get("trained_against") or []) or "none"
    r["train_positive_share"] = info.get("train_positive_share", float("nan"))  # NaN: a cell that does not train
    r.update(headline_probe_metrics(r, info.get("trained_against") or [], names))
    scorer = r.pop(str(eval_key("scorer")), None)
    if isinstance(scorer, dict):
        r["scorer"] = f"{scorer.get('name')} {scorer.get('version')}"
    elif scorer is not None:
        r["scorer"] = scorer
    return r


def headline_probe_metrics(row: dict[str, Any], trained: list[str], names: dict[str, list[str]]) -> dict[str, float]:
    """Summary columns comparable across cells.

    ``probe/<set>_auroc_trained_against``: the AUROC of the (first) probe this cell trains against (NaN
    for cells that train against none; the same probe's AUROC in control cells is its own column);
    ``probe/<set>_auroc_heldout_avg``: mean AUROC of the held-out probes *excluding* later orthogonal
    ensemble members (refitting noise at small n); ``drift/cosine_trained_against``: cosine between the
    trained-against probe's original direction and one re-fit on the trained model (an ensemble: its
    first member).
    """
    nan = float("nan")
    out: dict[str, float] = {}
    heldout = [n for n in names["heldout"] if n not in names["heldout_members"]]
    for which in (ONPOLICY, CURATED):
        against = row.get(str(tracked_auroc(which, trained[0])), nan) if trained else nan
        out[str(study_summary(which, "trained_against"))] = against
        vals = [row.get(str(tracked_auroc(which, n))) for n in heldout]
        finite = [v for v in vals if v is not None and np.isfinite(v)]
        out[str(study_summary(which, "heldout_avg"))] = float(np.mean(finite)) if finite else nan
    first = row.get(str(cosine(trained[0])), row.get(str(cosine(member_name(trained[0], 0))), nan)) if trained else nan
    out[str(MetricKey(DRIFT, "cosine_trained_against"))] = first
    return out


def metrics_table(folder: RunFolder) -> pd.DataFrame:
    """Every telemetry row of every cell and seed (``cell`` and ``seed`` columns added)."""
    frames = []
    for cell, seed, f in folder.cell_files("train/metrics.jsonl"):
        df = read_metrics(f)
        df["cell"] = cell
        df["seed"] = seed
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def geometry_table(folder: RunFolder, seeds: list[int]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{cell: {hook: {"before", "after"}}}``: each cell's geometry points of its first seed."""
    geometry: dict[str, dict[str, dict[str, Any]]] = {}
    for cell, seed, f in folder.cell_files("geometry.json"):
        if seed == min(seeds) or cell not in geometry:
            g = json.loads(f.read_text())
            geometry[cell] = {h: {"before": g["before"][h], "after": g["after"][h]} for h in g["before"]}
    return geometry


def write_tables(folder: RunFolder, results: pd.DataFrame) -> pd.DataFrame:
    """``results.csv``/``.parquet`` and the summary over seeds per cell (``summary.csv``/``.md``); the summary."""
    from probe_lens.experiments.stats import format_table, summarize

    out = folder.root
    atomic_write(out / "results.csv", lambda p: results.to_csv(p, index=False))
    atomic_write(out / "results.parquet", lambda p: results.to_parquet(p, index=False))
    value_cols = [
        c
        for c in results.columns
        if c not in _LABELS and MetricKey.parse(str(c)).interval is None and pd.api.types.is_numeric_dtype(results[c])
    ]
    summary = summarize(results, ["cell"], value_cols)
    atomic_write(out / "summary.csv", lambda p: summary.to_csv(p, index=False))
    atomic_write(out / "summary.md", lambda p: p.write_text(format_table(summary)))
    return summary


def write_headline(
    folder: RunFolder,
    results: pd.DataFrame,
    summary: pd.DataFrame,
    config: StudyConfig,
    names: dict[str, list[str]],
    seeds: tuple[dict[int, Any], dict[int, Any]],
    n_curated: int | None,
) -> dict[str, Any]:
    """``contrasts.csv``, ``interactions.csv`` (when the study has two objectives to compare) and
    ``headline.md`` (``seeds``: each seed's split record and noise floor);
    ``{"table", "contrasts", "interactions"}`` for the report."""
    from probe_lens.experiments.headline import contrasts, headline_table, write_headline
    from probe_lens.experiments.interactions import interaction_contrasts
    from probe_lens.experiments.yardsticks import write_yardsticks

    con = contrasts(results, config, names, out_dir=folder.root)
    atomic_write(folder.root / "contrasts.csv", lambda p: con.to_csv(p, index=False))
    inter = interaction_contrasts(results, config, names)
    if len(inter):
        atomic_write(folder.root / "interactions.csv", lambda p: inter.to_csv(p, index=False))
    table = headline_table(summary, config, names)
    shares = (
        results.dropna(subset=["train_positive_share"]).groupby("seed")["train_positive_share"].first().to_dict()
        if "train_positive_share" in results
        else {}
    )
    write_headline(
        folder.root / "headline.md",
        table,
        con,
        seeds[0],
        seeds[1],
        config,
        names,
        n_curated,
        train_shares=shares,
        interactions=inter,
    )
    write_yardsticks(folder.root, results, summary, config, names)  # curated yardsticks, instruments
    return {"table": table, "contrasts": con, "interactions": inter}


def report_config(
    config: StudyConfig,
    model_name: str | None,
    scorer: dict,
    behaviour: dict,
    names: dict[str, list[str]],
    *,
    trained_against: dict[str, list[str]],
    timings: dict[str, float],
) -> dict[str, Any]:
    """The study's record the report prints: the resolved config with the model, scorer and behaviour
    described, the held-out and headline probes, each cell's trained-against probes and the timings."""
    record = config.to_dict()
    record["model"] = (
        "embedded Gemma-3-270M (google/gemma-3-270m, Q4_K_M GGUF dequantised)"
        if config.model is None and model_name in (None, "gemma-3-270m")
        else model_name
    )
    record["scorer"] = scorer
    record["behaviour"] = behaviour
    record["heldout_probes"] = names["heldout"]
    record["token_probes"] = names.get("token", [])
    record["trained_against"] = trained_against
    tracked = names["single"] + names["ensemble"] + names["heldout"] + names.get("token", [])
    record["headline_probes"] = [n for n in tracked if n not in names["heldout_members"]]
    record["timings"] = timings
    return record


def timings_record(folder: RunFolder, timings: dict[str, float]) -> dict[str, float]:
    """``timings`` saved as ``timings.json``; a call that timed nothing (a report only) keeps the run's."""
    path = folder.timings_json
    saved = json.loads(path.read_text()) if path.exists() else {}
    if not timings:
        return saved
    write_json(path, dict(timings))
    return dict(timings)


def seed_records(
    folder: RunFolder,
    seeds: list[int],
    seed_split: Callable[[int], SeedSplit],
    noise_floor: Callable[[int], dict[str, Any]],
) -> tuple[dict[int, Any], dict[int, Any]]:
    """Each seed's split record and noise floor, where the run wrote them (a corrupt split is rebuilt
    with ``seed_split``, a corrupt floor by ``noise_floor``)."""
    seeds_info, floors = {}, {}
    for s in seeds:
        split_file, floor_file = folder.split_json(s), folder.noise_floor_json(s)
        if split_file.exists():
            seeds_info[s] = read_derived_json(split_file)
            if seeds_info[s] is None:
                seeds_info[s] = seed_split(s).info
                write_json(split_file, seeds_info[s])
        if floor_file.exists():
            floors[s] = noise_floor(s)
    return seeds_info, floors
