"""The headline of a study: one table of what matters, and paired contrasts that say what is resolved.

Contrasts compare a cell with its control *within a seed* (same probe-fit draw, same probes, same
evaluation rows), then over seeds: ``mean_diff`` with a Student-t interval over the per-seed differences
(``ci_low``, ``ci_high``; this interval holds every source of variance the seeds cover: probe data,
training samples, training order, evaluation samples). For AUROCs, ``within_seed`` adds each seed's
example-level paired interval (DeLong, the same rows scored in both cells): how well one seed's
comparison is measured, not how it varies across seeds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe_lens._io import atomic_write
from probe_lens.behaviours import BehaviourNames
from probe_lens.experiments.adapters import get_study_objective
from probe_lens.experiments.cells import CellSpec
from probe_lens.experiments.config import StudyConfig

__all__ = ["contrast_specs", "contrasts", "headline_columns", "headline_table", "write_headline"]


def _probe_cos(name: str, names: Mapping[str, list[str]]) -> str:
    return f"drift/cosine/{name}/m0" if name in names["ensemble"] else f"drift/cosine/{name}"


def contrast_specs(config: StudyConfig, names: Mapping[str, list[str]]) -> list[tuple[str, str, str]]:
    """``(metric, cell, control)`` triples: each probe-trained cell against ``base`` and against the
    classifier cells of its control objective (its adapter's ``control``, else its own objective: the
    trained-against probe's AUROC, its cosine (classifier control only), the held-out mass-mean probe's
    AUROC, the behaviour's rate, perplexity); each classifier cell against ``base``."""
    rate = BehaviourNames.of(config.behaviour_spec).metric_keys["rate"]
    cells = {c.name: c for c in config.cell_specs}
    layer = config.probes.layer
    out: list[tuple[str, str, str]] = []
    for spec in config.cell_specs:
        if not spec.trains:
            continue
        controls = ["base"] if "base" in cells else []
        if spec.uses_probe:
            control = get_study_objective(spec.objective).control or spec.objective
            controls += [c.name for c in cells.values() if c.signal == "classifier" and c.objective == control]
            probe = spec.trained_against(names["single"][0], names["ensemble"][0])[0]
            metrics = [
                f"probe/curated_auroc/{probe}",
                f"probe/onpolicy_auroc/{probe}",
                _probe_cos(probe, names),
                f"probe/curated_auroc/massmean_L{layer}",
                rate,
                "eval/perplexity_neutral",
            ]
        else:
            metrics = [f"probe/curated_auroc/{names['single'][0]}", rate, "eval/perplexity_neutral"]
        if config.eval.curated is None:
            metrics = [m.replace("curated_auroc", "onpolicy_auroc") for m in metrics]
            metrics = list(dict.fromkeys(metrics))
        # a drift cosine is 1 by construction in `base` (same rows, same model): compare it with trained
        # controls and with the noise floor, not with base
        out += [
            (m, spec.name, c) for c in controls for m in metrics if not (c == "base" and m.startswith("drift/cosine/"))
        ]
    return out


def _within_seed(out_dir: Path | None, metric: str, a: str, b: str, seeds: Sequence[int]) -> str:
    """Each seed's example-level paired AUROC difference ``a - b`` with its DeLong interval."""
    from probe_lens.experiments.stats import paired_auroc_diff

    if out_dir is None or "_auroc/" not in metric:
        return ""
    which, probe = metric[len("probe/") :].split("_auroc/", 1)
    parts = []
    for s in seeds:
        fa, fb = (out_dir / "cells" / c / f"seed{s}" / "probe_scores.json" for c in (a, b))
        if not (fa.exists() and fb.exists()):
            continue
        sa, sb = json.loads(fa.read_text()).get(which, {}), json.loads(fb.read_text()).get(which, {})
        if probe not in sa or probe not in sb:
            continue
        y = np.asarray(sa["__y__"])
        d, lo, hi = paired_auroc_diff(y, np.asarray(sa[probe]), np.asarray(sb[probe]))
        parts.append(f"s{s}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    return "; ".join(parts)


def contrasts(
    results: pd.DataFrame, config: StudyConfig, names: Mapping[str, list[str]], out_dir: str | Path | None = None
) -> pd.DataFrame:
    """Paired-by-seed contrasts of :func:`contrast_specs` (cells missing from ``results`` are skipped)."""
    from probe_lens.experiments.stats import CONTRAST_COLUMNS, paired_contrasts

    present = set(results["cell"])
    frames = []
    by_metric: dict[str, list[tuple[str, str]]] = {}
    for metric, a, b in contrast_specs(config, names):
        if a in present and b in present and metric in results.columns:
            by_metric.setdefault(metric, []).append((a, b))
    for metric, pairs in by_metric.items():
        frames.append(paired_contrasts(results, metric, pairs))
    cols = [*CONTRAST_COLUMNS, "within_seed"]
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    folder = Path(out_dir) if out_dir is not None else None
    df["within_seed"] = [_within_seed(folder, m, a, b, config.seeds) for m, a, b in zip(df["metric"], df["a"], df["b"])]
    return df[[c for c in cols if c in df.columns]]


def headline_columns(config: StudyConfig, names: Mapping[str, list[str]]) -> dict[str, str]:
    """``{metric column: header}`` of the headline table, in order (``"toxicity rate"``: the behaviour's noun)."""
    single, ens = names["single"][0], names["ensemble"][0]
    layer = config.probes.layer
    words = BehaviourNames.of(config.behaviour_spec)
    cols = {
        words.metric_keys["rate"]: f"{words.noun} rate",
        "eval/perplexity_neutral": "perplexity (neutral)",
        "eval/distinct_2": "distinct-2",
        "eval/response_length": "response tokens",
        "eval/eos_rate": "EOS rate",
    }
    if config.eval.samples_per_prompt >= 2:
        cols[words.metric_keys["expected_max"]] = f"exp. max {words.noun} (k={config.eval.samples_per_prompt})"
    sets = ["curated", "onpolicy"] if config.eval.curated is not None else ["onpolicy"]
    for which in sets:
        label = "curated" if which == "curated" else "on-policy"
        cols[f"probe/{which}_auroc/{single}"] = f"{single} AUROC {label}"
        cols[f"probe/{which}_auroc/{ens}"] = f"{ens} AUROC {label}"
        cols[f"probe/{which}_auroc/massmean_L{layer}"] = f"massmean_L{layer} (held-out) AUROC {label}"
    for L in config.probes.heldout_layers:
        cols[f"probe/{sets[0]}_auroc/logistic_L{L}"] = (
            f"logistic_L{L} (held-out) AUROC {sets[0].replace('onpolicy', 'on-policy')}"
        )
    cols[f"probe/{sets[0]}_auroc_retrained/blocks.{layer}.hook_resid_post"] = (
        f"retrained L{layer} AUROC {sets[0].replace('onpolicy', 'on-policy')}"
    )
    cols[f"drift/cosine/{single}"] = f"{single} cos(orig, refit)"
    cols[f"drift/cosine/{ens}/m0"] = f"{ens} m0 cos(orig, refit)"
    cols[f"drift/cosine/massmean_L{layer}"] = f"massmean_L{layer} cos(orig, refit)"
    return cols


def headline_table(summary: pd.DataFrame, config: StudyConfig, names: Mapping[str, list[str]]) -> pd.DataFrame:
    """The summary's headline columns as ``"mean ± CI half-width"`` strings, one row per cell, with what
    each cell trains against."""
    from probe_lens.experiments.stats import format_cells

    cols = {m: h for m, h in headline_columns(config, names).items() if f"{m}_mean" in summary.columns}
    table = format_cells(summary, columns=list(cols)).rename(columns=cols)
    specs: dict[str, CellSpec] = {c.name: c for c in config.cell_specs}
    against = {
        c: ", ".join(s.trained_against(names["single"][0], names["ensemble"][0]))
        or ("output classifier" if s.signal == "classifier" else "–")
        for c, s in specs.items()
    }
    table.insert(1, "trains against", [against.get(c, "?") for c in table["cell"]])
    return table


def _markdown(df: pd.DataFrame) -> str:
    def esc(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(esc(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    return (
        "\n".join([head, rule, *("| " + " | ".join(esc(v) for v in r) + " |" for r in df.itertuples(index=False))])
        + "\n"
    )


def contrasts_markdown(con: pd.DataFrame, digits: int = 3) -> str:
    if con.empty:
        return "_no contrast could be formed (a cell or its control is missing)_\n"
    rows = pd.DataFrame(
        {
            "contrast": con["contrast"],
            "metric": con["metric"],
            "mean Δ": [f"{v:+.{digits}f}" for v in con["mean_diff"]],
            "95% CI over seeds": [
                f"[{lo:+.{digits}f}, {hi:+.{digits}f}]" if np.isfinite(lo) else "–"
                for lo, hi in zip(con["ci_low"], con["ci_high"])
            ],
            "seeds": con["n_seeds"],
            "resolved": ["yes" if r else "no" for r in con["resolved"]],
            "per seed (example-level DeLong CI)": [
                w or p for w, p in zip(con.get("within_seed", [""] * len(con)), con["per_seed"])
            ],
        }
    )
    return _markdown(rows)


def yardsticks_markdown(
    seeds_info: Mapping[int, Mapping[str, Any]],
    floors: Mapping[int, Mapping[str, Any]],
    config: StudyConfig,
    names: Mapping[str, list[str]],
    n_curated: int | None,
) -> str:
    single, ens, layer = names["single"][0], names["ensemble"][0], config.probes.layer
    words = BehaviourNames.of(config.behaviour_spec)
    pos, n_fit, n_on = (
        words.positive_label,
        words.metric_keys["n_fit_positive"],
        words.metric_keys["n_onpolicy_positive"],
    )
    rows = []
    for s in sorted(seeds_info):
        i, f = seeds_info[s], floors.get(s, {})
        rows.append(
            {
                "seed": s,
                f"probe-fit rows ({pos})": f"{i['n_fit_rows']} ({i[n_fit]})",
                f"on-policy eval rows ({pos})": f"{i['n_onpolicy_rows']} ({i[n_on]})",
                "curated rows": n_curated if n_curated is not None else "–",
                "prompt-type-only AUROC": f"{i['baseline/auroc_prompt_type']:.3f}",
                "prompt-topic-only AUROC": f"{i['baseline/auroc_prompt_topic']:.3f}",
                f"cos floor {single}": f"{f[single]['p05']:.3f}" if single in f else "–",
                f"cos floor {ens} m0": f"{f[ens + '/m0']['p05']:.3f}" if ens + "/m0" in f else "–",
                f"cos floor massmean_L{layer}": f"{f['massmean_L' + str(layer)]['p05']:.3f}"
                if f"massmean_L{layer}" in f
                else "–",
            }
        )
    return _markdown(pd.DataFrame(rows)) if rows else ""


def write_headline(
    path: str | Path,
    table: pd.DataFrame,
    con: pd.DataFrame,
    seeds_info: Mapping[int, Any],
    floors: Mapping[int, Any],
    config: StudyConfig,
    names: Mapping[str, list[str]],
    n_curated: int | None = None,
) -> None:
    """``headline.md``: yardsticks and noise floors, the headline table, the contrasts in a table and in words."""
    from probe_lens.experiments.stats import describe_contrasts

    b = config.behaviour_spec
    onpolicy = (
        f"the pre-labelled responses of behaviour {b.name!r} to held-out pool prompts (its own labels; not "
        "the model's own text)"
        if b.prelabelled and config.scorer == "auto"
        else "the base model's continuations of held-out pool prompts, labelled by the output classifier "
        "(on-policy, noisy labels)"
    )
    text = [
        "# Headline\n",
        "## Yardsticks\n",
        f"On-policy rows: {onpolicy}. Curated rows: the {b.name} behaviour's hand-labelled set read as responses "
        "(clean labels, off-policy). Prompt-only baselines: AUROC of a detector that sees only the prompt's "
        "type or topic (0.5 = no confound). Cosine floor: 5th percentile of cos(probe, same estimator re-fit on "
        "a bootstrap resample of its probe-fit rows) on the base model: drift cosines above it are within "
        "refitting noise.\n",
        yardsticks_markdown(seeds_info, floors, config, names, n_curated),
        "## Cells (mean ± 95% CI half-width over seeds)\n",
        _markdown(table),
        "## Paired contrasts (cell − control, paired by seed)\n",
        contrasts_markdown(con),
        "\n" + describe_contrasts(con) + "\n" if not con.empty else "",
    ]
    atomic_write(Path(path), lambda p: p.write_text("\n".join(text)))
