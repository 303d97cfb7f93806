"""The headline of a study: the pre-declared primary contrasts, the cosine drift against its control, one table of
what matters, and every paired contrast with its statistics over seeds.

Contrasts compare a cell with its control *within a seed* (same probe-fit draw, same probes, same
evaluation rows), then over seeds. Per contrast: ``mean_diff`` with a Student-t interval over the per-seed
differences (``ci_low``, ``ci_high``; ``resolved``: that interval excludes 0); a random-effects estimate
(``re_estimate``) with a Hartung-Knapp-Sidik-Jonkman interval (``re_ci_low``, ``re_ci_high``) from the
per-seed differences and their within-seed (example-level, paired DeLong) variances, DerSimonian-Laird
``tau2`` and ``i2`` (AUROC contrasts; other metrics have no within-seed variance and get equal weights, i.e.
the t interval, ``re_method``); the exact sign-flip permutation p over seeds (``p_signflip``) and Holm's
correction (``p_holm``) within the family of primary contrasts (``primary``, the config's
``primary_contrasts``) and within the family of all the others. ``within_seed`` (each seed's example-level
paired DeLong interval) and ``seed_ci_excludes_0`` (in how many seeds it excludes 0) are diagnostics: they
ignore the between-seed variance and decide nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe_lens._io import atomic_write
from probe_lens.activations import resid_post_hook
from probe_lens.behaviours import BehaviourNames
from probe_lens.experiments.adapters import get_study_objective
from probe_lens.experiments.cells import CellSpec
from probe_lens.experiments.config import TRAINED_AGAINST_METRICS, StudyConfig
from probe_lens.experiments.monitor import BENIGN
from probe_lens.experiments.monitor_split import split_contrast_metrics
from probe_lens.experiments.stats import (
    CONTRAST_COLUMNS,
    format_cells,
    holm,
    paired_auroc_diff,
    paired_auroc_var,
    paired_contrasts,
    random_effects,
    sign_flip_p,
)
from probe_lens.training import metric_keys as K
from probe_lens.training.metric_keys import DRIFT, MetricKey, monitor_key

__all__ = [
    "contrast_specs",
    "contrasts",
    "fixed_across_seeds",
    "headline_columns",
    "headline_table",
    "primary_specs",
    "write_headline",
]

STAT_COLUMNS = [
    "primary",
    "re_estimate",
    "re_ci_low",
    "re_ci_high",
    "re_method",
    "tau2",
    "i2",
    "p_signflip",
    "p_holm",
    "seed_ci_excludes_0",
]
"""The columns :func:`contrasts` adds after ``within_seed``: the statistics over seeds and one diagnostic."""


def _probe_cos(name: str, names: Mapping[str, list[str]]) -> str:
    return str(K.cosine(K.member_name(name, 0) if name in names["ensemble"] else name))


def _is_cosine(metric: str) -> bool:
    key = MetricKey.parse(metric)
    return key.family == DRIFT and key.name == "cosine"


def contrast_specs(config: StudyConfig, names: Mapping[str, list[str]]) -> list[tuple[str, str, str]]:
    """``(metric, cell, control)`` triples: each probe-trained cell against ``base`` and against the
    classifier cells of its control objective (its adapter's ``control``, else its own objective: the
    trained-against probe's AUROC, its cosine (classifier control only), the held-out mass-mean probe's
    AUROC, both probes' recall at the base model's 1%-FPR threshold, the behaviour-vs-representation parts,
    the behaviour's rate, perplexity, and the pooling families it does not train against (:func:`pooling_probes`:
    the mean-pooled logistic probe and the token probes, held out) on the same set); each classifier cell
    against ``base``. All are secondary: Holm-corrected as one family.

    The study questions of issue 27 read off these: gradient-through vs reward-only is probe_sft_1,
    probe_dpo_1, probe_rloo_1 each minus its classifier control (trained-against probe, held-out probes,
    behaviour); pooling robustness is the same rows for cells trained against the mean, max and attention
    probes, each pooling family read as trained-against in its own cell and held out in the others."""
    rate = BehaviourNames.of(config.behaviour_spec).metric_keys["rate"]
    cells = {c.name: c for c in config.cell_specs}
    layer = config.probes.layer
    which = "curated" if config.eval.curated is not None else "onpolicy"
    perplexity = str(K.eval_key("perplexity_neutral"))
    out: list[tuple[str, str, str]] = []
    for spec in config.cell_specs:
        if not spec.trains:
            continue
        controls = ["base"] if "base" in cells else []
        if spec.uses_probe:
            controls += classifier_controls(spec, config.cell_specs)
            probe = spec.trained_against(names)[0]
            metrics = [
                str(K.tracked_auroc(which, probe)),
                str(K.tracked_auroc("onpolicy", probe)),
                _probe_cos(probe, names),
                str(K.tracked_auroc(which, f"massmean_L{layer}")),
                # the field's monitor reading: recall at the threshold fixed on the base model (1% FPR)
                str(K.monitor_key(which, "recall", 0.01, probe)),
                str(K.monitor_key(which, "recall", 0.01, f"massmean_L{layer}")),
                rate,
                perplexity,
            ]
            metrics += split_contrast_metrics(probe, f"massmean_L{layer}")
            metrics += [str(K.tracked_auroc(which, p)) for p in pooling_probes(names) if p != probe]
        else:
            metrics = [str(K.tracked_auroc(which, names["single"][0])), rate, perplexity]
        metrics = list(dict.fromkeys(metrics))
        # a drift cosine is 1 by construction in `base` (same rows, same model): compare it with trained
        # controls and with the noise floor, not with base
        out += [(m, spec.name, c) for c in controls for m in metrics if not (c == "base" and _is_cosine(m))]
    return out


def classifier_controls(spec: CellSpec, cell_specs: Sequence[CellSpec]) -> list[str]:
    """The cells of ``cell_specs`` that train with ``spec``'s control objective (its adapter's ``control``, else
    its own objective) against the output classifier: a probe cell's controls."""
    control = get_study_objective(spec.objective).control or spec.objective
    return [c.name for c in cell_specs if c.signal == "classifier" and c.objective == control]


def pooling_probes(names: Mapping[str, list[str]]) -> list[str]:
    """One probe per pooling at the trained-against layer: the mean-pooled logistic probe and the token probes
    (max-pooled, attention; those ``probes.token_probes`` lists)."""
    return [names["single"][0], *names.get("token", [])]


def primary_specs(
    config: StudyConfig, names: Mapping[str, list[str]], cells: set[str]
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """The config's primary contrasts as ``(metric, a, b)`` triples whose cells are in ``cells``, and a note
    for each one skipped (a cell missing, or a trained-against metric for a cell that trains against none)."""
    specs = {c.name: c for c in config.cell_specs}
    out, notes = [], []
    for c in config.primary_contrasts:
        a, b, metric = c["a"], c["b"], c["metric"]
        missing = [x for x in (a, b) if x not in cells]
        if missing:
            notes.append(f"{a} − {b} ({metric}) skipped: cell(s) {', '.join(missing)} not in this study's results")
            continue
        if metric in TRAINED_AGAINST_METRICS:
            probes = specs[a].trained_against(names) if a in specs else []
            if not probes:
                notes.append(f"{a} − {b} ({metric}) skipped: {a} trains against no probe")
                continue
            which = metric.removesuffix("_auroc") if config.eval.curated is not None else "onpolicy"
            metric = str(K.tracked_auroc(which, probes[0]))
        out.append((metric, a, b))
    return out, notes


def _example_level(
    out_dir: Path | None, metric: str, a: str, b: str, seeds: Sequence[int]
) -> dict[int, tuple[float, float, float, float]]:
    """``{seed: (diff, variance, low, high)}``: each seed's example-level paired AUROC difference ``a - b``,
    its DeLong variance and interval, clustered by prompt where the saved scores carry prompts (on-policy
    rows; seeds whose scores are missing are left out)."""
    key = MetricKey.parse(metric)
    which, probe = key.tracked_set, key.subject
    if out_dir is None or which is None or probe is None:
        return {}
    out = {}
    for s in seeds:
        fa, fb = (out_dir / "cells" / c / f"seed{s}" / "probe_scores.json" for c in (a, b))
        if not (fa.exists() and fb.exists()):
            continue
        sa, sb = json.loads(fa.read_text()).get(which, {}), json.loads(fb.read_text()).get(which, {})
        if probe not in sa or probe not in sb:
            continue
        y, va, vb = np.asarray(sa[K.LABELS]), np.asarray(sa[probe]), np.asarray(sb[probe])
        groups = sa.get(K.GROUPS)
        d, lo, hi = paired_auroc_diff(y, va, vb, clusters=groups)
        out[s] = (d, paired_auroc_var(y, va, vb, clusters=groups)[1], lo, hi)
    return out


def _within_seed(example: Mapping[int, tuple[float, float, float, float]]) -> str:
    """Each seed's example-level paired AUROC difference with its DeLong interval."""
    return "; ".join(f"s{s}: {d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for s, (d, _, lo, hi) in example.items())


def _seed_diffs(results: pd.DataFrame, metric: str, a: str, b: str) -> dict[Any, float]:
    """``{seed: metric[a] - metric[b]}`` over the seeds where both cells have a value."""
    t = results.assign(v=pd.to_numeric(results[metric], errors="coerce")).set_index(["cell", "seed"])["v"]
    va, vb = t.xs(a).dropna(), t.xs(b).dropna()
    return {s: float(va[s] - vb[s]) for s in sorted(set(va.index) & set(vb.index))}


def _seed_statistics(diffs: Mapping[Any, float], example: Mapping[int, tuple[float, float, float, float]]) -> dict:
    """The statistics over seeds of one contrast (:data:`STAT_COLUMNS` but ``primary`` and ``p_holm``)."""
    seeds = list(diffs)
    y = [diffs[s] for s in seeds]
    variances = [example[s][1] if s in example else np.nan for s in seeds]
    re = random_effects(y, variances)
    excl = sum(1 for s in seeds if s in example and (example[s][2] > 0 or example[s][3] < 0))
    return {
        "re_estimate": re.estimate,
        "re_ci_low": re.ci_low,
        "re_ci_high": re.ci_high,
        "re_method": re.method,
        "tau2": re.tau2,
        "i2": re.i2,
        "p_signflip": sign_flip_p(y),
        "seed_ci_excludes_0": f"{excl}/{len(example)}" if example else "",
    }


def contrasts(
    results: pd.DataFrame,
    config: StudyConfig,
    names: Mapping[str, list[str]],
    out_dir: str | Path | None = None,
    specs: Sequence[tuple[str, str, str]] | None = None,
) -> pd.DataFrame:
    """Paired-by-seed contrasts of :func:`contrast_specs` and the primary ones (or of ``specs``, none of them
    primary; cells missing from ``results`` are skipped), with the statistics over seeds of :data:`STAT_COLUMNS`."""
    present = set(results["cell"])
    primary = primary_specs(config, names, present)[0] if specs is None else []
    frames = []
    by_metric: dict[str, list[tuple[str, str]]] = {}
    for metric, a, b in [*(contrast_specs(config, names) if specs is None else specs), *primary]:
        if a in present and b in present and metric in results.columns and (a, b) not in by_metric.get(metric, []):
            by_metric.setdefault(metric, []).append((a, b))
    for metric, pairs in by_metric.items():
        frames.append(paired_contrasts(results, metric, pairs))
    cols = [*CONTRAST_COLUMNS, "within_seed", *STAT_COLUMNS]
    if not frames:
        return pd.DataFrame(columns=cols)
    df = pd.concat(frames, ignore_index=True)
    folder = Path(out_dir) if out_dir is not None else None
    triples = list(zip(df["metric"], df["a"], df["b"]))
    example = [_example_level(folder, m, a, b, config.seeds) for m, a, b in triples]
    df["within_seed"] = [_within_seed(e) for e in example]
    stats = pd.DataFrame([_seed_statistics(_seed_diffs(results, *t), e) for t, e in zip(triples, example)])
    df = pd.concat([df, stats], axis=1)
    df["primary"] = [t in primary for t in triples]
    df["p_holm"] = np.nan
    for family in (df["primary"], ~df["primary"]):
        df.loc[family, "p_holm"] = holm(df.loc[family, "p_signflip"].to_numpy(dtype=np.float64))
    return df[[c for c in cols if c in df.columns]]


def fixed_across_seeds(config: StudyConfig) -> list[str]:
    """What every seed of the study shares (drawn once, by ``prompt_seed``, or shipped): the intervals over
    seeds are conditional on it. Each seed draws the rest: with ``eval.prompts_per_seed`` its provocative
    evaluation prompts, probe pool and training pool; always its probe-fit / on-policy partition, its
    continuations of each pool prompt (when the pool holds more than it reads), its training prompts, and all
    sampling and training order."""
    ev = config.eval
    fixed = [
        f"the model ({config.model or 'the embedded Gemma-3-270M'}) and its base weights",
        f"the {ev.n_fluency_texts} neutral texts whose perplexity measures fluency",
        "the output classifier that labels every sampled text",
    ]
    if not ev.prompts_per_seed:
        fixed += [
            f"the {ev.n_provocative} evaluation prompts (eval.prompts_per_seed: false; each seed samples its own "
            f"continuations of them; the first {min(ev.n_telemetry_prompts, ev.n_provocative)} also give the rate "
            "at every telemetry step)",
            "the probe-pool prompts (each seed re-partitions them into probe-fit and on-policy prompts)",
            "the training-prompt pool each seed draws its training prompts from",
        ]
    if config.data_source != "fresh":
        fixed.append(
            "the reference continuations the probe pool is read from (one shipped sampling of each prompt; each seed "
            f"reads its own {config.data.samples_per_prompt} of them per prompt when the set holds more)"
        )
    else:
        fixed.append(
            "the probe pool's sampled continuations (sampled once: two seeds that draw the same pool prompt read "
            "the same continuations of it)"
        )
    if ev.curated is not None:
        size = "all of its rows" if ev.n_curated is None else f"{ev.n_curated} rows, one seeded subsample"
        fixed.insert(2, f"the curated set ({ev.curated}; {size})")
    return fixed


def train_data_markdown(config: StudyConfig, shares: Mapping[int, float]) -> str:
    """A line on what the training cells trained on: each seed's share of positive training samples."""
    td = config.train_data
    mix = (
        "the train split's own proportion of neutral prompts"
        if td.neutral_share is None
        else f"{td.neutral_share:g} of them neutral (train_data.neutral_share)"
    )
    per_seed = ", ".join(f"seed {s}: {v:.3f}" for s, v in sorted(shares.items()) if v == v)
    if not per_seed:
        return f"Training samples: {td.n_prompts} prompts per seed, {mix}; no classifier scored them.\n"
    vals = [v for v in shares.values() if v == v]
    return (
        f"Training samples: {td.n_prompts} prompts x {td.samples_per_prompt} samples per seed, {mix}; share the "
        f"output classifier scores positive (what every training cell of a seed samples from): {per_seed} "
        f"(mean {sum(vals) / len(vals):.3f}).\n"
    )


def headline_columns(config: StudyConfig, names: Mapping[str, list[str]]) -> dict[str, str]:
    """``{metric column: header}`` of the headline table, in order (``"toxicity rate"``: the behaviour's noun)."""
    single, ens = names["single"][0], names["ensemble"][0]
    layer = config.probes.layer
    words = BehaviourNames.of(config.behaviour_spec)
    cols = {
        words.metric_keys["rate"]: f"{words.noun} rate",
        str(K.eval_key("perplexity_neutral")): "perplexity (neutral)",
        str(K.eval_key("distinct_2")): "distinct-2",
        str(K.eval_key("response_length")): "response tokens",
        str(K.eval_key("eos_rate")): "EOS rate",
    }
    if config.eval.samples_per_prompt >= 2:
        cols[words.metric_keys["expected_max"]] = f"exp. max {words.noun} (k={config.eval.samples_per_prompt})"
    sets = ["curated", "onpolicy"] if config.eval.curated is not None else ["onpolicy"]
    for which in sets:
        label = "curated" if which == "curated" else "on-policy"
        cols[str(K.tracked_auroc(which, single))] = f"{single} AUROC {label}"
        cols[str(K.tracked_auroc(which, ens))] = f"{ens} AUROC {label}"
        cols[str(K.tracked_auroc(which, f"massmean_L{layer}"))] = f"massmean_L{layer} (held-out) AUROC {label}"
    label = "curated" if sets[0] == "curated" else "on-policy"
    for L in config.probes.heldout_layers:
        cols[str(K.tracked_auroc(sets[0], f"logistic_L{L}"))] = f"logistic_L{L} (held-out) AUROC {label}"
    cols[str(K.retrained_auroc(sets[0], resid_post_hook(layer)))] = f"retrained L{layer} AUROC {label}"
    for probe in (single, ens, f"massmean_L{layer}"):
        cols[str(monitor_key(sets[0], "recall", 0.01, probe))] = f"{probe} recall @1% base FPR {label}"
    cols[str(monitor_key(BENIGN, "fpr", 0.01, single))] = f"{single} benign FPR @1% base threshold"
    cols[str(K.cosine(single))] = f"{single} cos(orig, refit)"
    cols[str(K.cosine(K.member_name(ens, 0)))] = f"{ens} m0 cos(orig, refit)"
    cols[str(K.cosine(f"massmean_L{layer}"))] = f"massmean_L{layer} cos(orig, refit)"
    return cols


def headline_table(summary: pd.DataFrame, config: StudyConfig, names: Mapping[str, list[str]]) -> pd.DataFrame:
    """The summary's headline columns as ``"mean ± CI half-width"`` strings, one row per cell, with what
    each cell trains against."""
    cols = {m: h for m, h in headline_columns(config, names).items() if f"{m}_mean" in summary.columns}
    table = format_cells(summary, columns=list(cols)).rename(columns=cols)
    specs: dict[str, CellSpec] = {c.name: c for c in config.cell_specs}
    against = {
        c: ", ".join(s.trained_against(names)) or ("output classifier" if s.signal == "classifier" else "–")
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


def _num(v: Any, digits: int = 3, sign: str = "+") -> str:
    return f"{v:{sign}.{digits}f}" if isinstance(v, (int, float, np.floating)) and np.isfinite(v) else "–"


def _interval(lo: Any, hi: Any, digits: int = 3) -> str:
    return f"[{_num(lo, digits)}, {_num(hi, digits)}]" if np.isfinite(lo) and np.isfinite(hi) else "–"


def _over_seeds(con: pd.DataFrame, digits: int = 3) -> dict[str, list[str]]:
    """The statistics over seeds of each row of ``con`` as display columns."""
    return {
        "estimate (random effects)": [_num(v, digits) for v in con["re_estimate"]],
        "95% CI (HKSJ)": [_interval(lo, hi, digits) for lo, hi in zip(con["re_ci_low"], con["re_ci_high"])],
        "sign-flip p (exact)": [_num(v, 3, "") for v in con["p_signflip"]],
        "Holm p": [_num(v, 3, "") for v in con["p_holm"]],
        "I²": [_num(v, 2, "") for v in con["i2"]],
        "seeds": [str(n) for n in con["n_seeds"]],
        "weights": [
            "1/(DeLong var + tau²)" if m == "DL+HKSJ" else "equal (no within-seed variance)" for m in con["re_method"]
        ],
    }


def _stat_table(con: pd.DataFrame, digits: int = 3) -> str:
    """Contrast, metric, the statistics over seeds and the per-seed differences."""
    rows = {"contrast": list(con["contrast"]), "metric": list(con["metric"]), **_over_seeds(con, digits)}
    rows["per-seed Δ"] = list(con["per_seed"])
    return _markdown(pd.DataFrame(rows))


def contrasts_markdown(con: pd.DataFrame, digits: int = 3) -> str:
    """Every contrast: the mean difference with its t interval over seeds, the statistics over seeds, and the
    per-seed example-level intervals as a diagnostic."""
    if con.empty:
        return "_no contrast could be formed (a cell or its control is missing)_\n"
    rows = pd.DataFrame(
        {
            "contrast": con["contrast"],
            "metric": con["metric"],
            "primary": ["yes" if p else "" for p in con.get("primary", [False] * len(con))],
            "mean Δ": [f"{v:+.{digits}f}" for v in con["mean_diff"]],
            "95% t-CI over seeds": [
                f"[{lo:+.{digits}f}, {hi:+.{digits}f}]" if np.isfinite(lo) else "–"
                for lo, hi in zip(con["ci_low"], con["ci_high"])
            ],
            **_over_seeds(con, digits),
            "diagnostic: seeds whose example-level CI excludes 0": con.get("seed_ci_excludes_0", [""] * len(con)),
            "diagnostic: per seed (example-level DeLong CI, no between-seed variance)": [
                w or p for w, p in zip(con.get("within_seed", [""] * len(con)), con["per_seed"])
            ],
        }
    )
    return _markdown(rows)


def primary_markdown(con: pd.DataFrame, notes: Sequence[str], config: StudyConfig) -> str:
    """The primary contrasts: estimate, HKSJ interval, sign-flip p, I²; the skipped ones; the smallest p."""
    prim = con[con["primary"]] if "primary" in con else con.iloc[:0]
    text = _stat_table(prim) if len(prim) else "_no primary contrast could be formed in this study_\n"
    # the seeds the contrasts actually pair (a study stopped early has fewer than its config names)
    k = int(prim["n_seeds"].max()) if len(prim) and "n_seeds" in prim else len(config.seeds)
    text += (
        f"\nWith {k} seed{'s' if k != 1 else ''} the smallest attainable two-sided sign-flip p is 2/2^{k} = {2 / 2**k:.3g}. Holm p: "
        "within the primary family here; within the family of all other contrasts below. I²: share of the "
        "variance of the per-seed differences that is between seeds (DerSimonian-Laird).\n"
    )
    return text + "".join(f"\n- {n}" for n in notes) + ("\n" if notes else "")


def cosine_markdown(con: pd.DataFrame) -> str:
    """The drift cosine of each trained cell's probe minus the same probe's cosine in its classifier control."""
    keys = [MetricKey.parse(str(m)) for m in con["metric"]] if len(con) else []
    rows = con[[k.family == DRIFT and k.name == "cosine" for k in keys]] if keys else con
    if not len(rows):
        return "_no cell has a classifier control in this study_\n"
    return _stat_table(rows) + (
        "\nThe same probe re-fit on the same rows in the classifier control is the reference: a cell's cosine "
        "below its control's is drift beyond what training on the behaviour's output alone does. No within-seed "
        "variance exists for a cosine, so the interval is the t interval over seeds (equal weights).\n"
    )


def split_markdown(con: pd.DataFrame) -> str:
    """The behaviour and representation parts of the monitor's change (:mod:`~probe_lens.experiments.monitor_split`),
    each cell against its controls."""
    keys = [MetricKey.parse(str(m)) for m in con["metric"]] if len(con) else []
    rows = con[[k.output_split is not None for k in keys]] if keys else con
    if not len(rows):
        return "_no behaviour/representation split in this study (no probe-trained cell, or no output classifier)_\n"
    return _stat_table(rows) + (
        "\nOn each cell's evaluation outputs X_c, the original probe read on the trained model T (what the "
        "monitor sees) and on the base model B: total change S_T(X_c) − S_B(X_0) = behaviour S_B(X_c) − S_B(X_0) "
        "(X_0: the base cell's outputs; the new text as the original monitor on the original model reads it) + "
        "representation S_T(X_c) − S_B(X_c) (the same text, the trained model's activations). S: the mean probe "
        "score (`mean`) or the recall at the 1% base-FPR threshold over the outputs the output classifier flags "
        "(`recall01`). Against `base` a contrast is the part itself (0 in base); against the classifier control "
        "it is the part beyond what training on the classifier alone does. Secondary contrasts (Holm above).\n"
    )


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
    train_shares: Mapping[int, float] | None = None,
    interactions: pd.DataFrame | None = None,
) -> None:
    """``headline.md``: the primary contrasts and what stays fixed across seeds, the cosine drift against its
    control, yardsticks and noise floors, the headline table, every contrast with its statistics
    (``train_shares``: each seed's share of positive training samples, :func:`train_data_markdown`) and the
    differences of differences between objectives (``interactions``, :mod:`~probe_lens.experiments.interactions`)."""
    b = config.behaviour_spec
    onpolicy = (
        f"the pre-labelled responses of behaviour {b.name!r} to held-out pool prompts (its own labels; not "
        "the model's own text)"
        if b.prelabelled and config.scorer == "auto"
        else "the base model's continuations of held-out pool prompts, labelled by the output classifier "
        "(on-policy, noisy labels)"
    )
    primary_notes = primary_specs(config, names, set(table["cell"]))[1]
    fixed = "; ".join(fixed_across_seeds(config))
    text = [
        "# Headline\n",
        "## Primary contrasts (pre-declared in the config: primary_contrasts)\n",
        "Random-effects estimate over seeds with a Hartung-Knapp-Sidik-Jonkman 95% interval (per-seed paired "
        "differences weighted by their within-seed DeLong variances plus the DerSimonian-Laird between-seed "
        "variance), the exact sign-flip permutation p over seeds and I².\n",
        primary_markdown(con, primary_notes, config),
        f"\nFixed across seeds (every interval and p-value here is conditional on it): {fixed}. Each seed draws "
        "the rest itself (recorded in seeds/<s>/split.json and prompts.json).\n",
        train_data_markdown(config, train_shares or {}),
        "## Cosine drift against its control (cell − classifier control, paired by seed)\n",
        cosine_markdown(con),
        "## Behaviour vs representation (the monitor's change on each cell's own outputs)\n",
        split_markdown(con),
        "## Yardsticks\n",
        f"On-policy rows: {onpolicy}. Curated rows: the {b.name} behaviour's hand-labelled set read as responses "
        "(clean labels, off-policy). Prompt-only baselines: AUROC of a detector that sees only the prompt's "
        "type or topic (0.5 = no confound). Cosine floor: 5th percentile of cos(probe, the same estimator re-fit "
        "on a bootstrap resample of its probe-fit rows) on the base model: the spread of re-fitting on *other* "
        "rows. It is not the null of the drift cosine, which re-fits on the *same* rows (1 at base by "
        "construction); that null is the same probe's cosine in the classifier control (above).\n",
        yardsticks_markdown(seeds_info, floors, config, names, n_curated),
        "## Cells (mean ± 95% CI half-width over seeds)\n",
        "Monitor columns: a probe's recall at the threshold that flags 1% of the base model's benign rows (on-policy "
        "clean + curated clean, fixed once per seed and probe: seeds/<s>/monitor_thresholds.json), and the share "
        "of benign rows the trained model's activations push above that same threshold (benign FPR).\n",
        _markdown(table),
        "## All paired contrasts (cell − control, paired by seed)\n",
        "Diagnostic columns: each seed's example-level interval ignores the between-seed variance; it decides "
        "nothing.\n",
        contrasts_markdown(con),
    ]
    if interactions is not None and len(interactions):
        text += [
            "## Between objectives: does the way the signal reaches the model matter? (difference of differences)\n",
            "Each probe-trained cell minus the classifier control of its own objective, compared between two "
            "objectives that train against the same probe, paired by seed. Secondary: Holm-corrected as their "
            "own family.\n",
            interactions_markdown(interactions),
        ]
    atomic_write(Path(path), lambda p: p.write_text("\n".join(text)))


def interactions_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """The differences of differences (:func:`~probe_lens.experiments.interactions.interaction_contrasts`) as markdown."""
    if df.empty:
        return (
            "_no two probe-trained cells with different objectives, the same trained-against probe and their "
            "classifier controls_\n"
        )
    shown = pd.DataFrame(
        {
            "contrast": df["contrast"],
            "metric": df["metric"],
            "mean ΔΔ": [_num(v, digits) for v in df["mean_diff"]],
            "95% t-CI over seeds": [_interval(lo, hi, digits) for lo, hi in zip(df["ci_low"], df["ci_high"])],
            "sign-flip p (exact)": [_num(v, 3, "") for v in df["p_signflip"]],
            "Holm p (this family)": [_num(v, 3, "") for v in df["p_holm"]],
            "seeds": [str(n) for n in df["n_seeds"]],
            "per-seed ΔΔ": df["per_seed"],
        }
    )
    return _markdown(shown)
