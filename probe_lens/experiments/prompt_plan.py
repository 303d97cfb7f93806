"""Prompt plans and seed splits: which of the behaviour's prompts evaluate, fit the probes and train, and, per
seed, which pool prompts fit the probes, which give on-policy rows, and which of each prompt's continuations
are read.

Seeds are independent replicates of every draw: with ``eval.prompts_per_seed`` (default) each seed draws its
own provocative evaluation prompts, probe pool and training pool (:func:`make_prompt_plan` with ``seed``);
each seed draws its own fit / on-policy partition of its pool (stratified by topic), its own ``k`` of the
continuations the pool dataset holds per prompt (:func:`continuation_draw`) and its own training prompts.
The neutral perplexity texts stay fixed by ``prompt_seed``."""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from probe_lens.behaviours import BehaviourNames
from probe_lens.data.builder import ActivationDataset
from probe_lens.data.prompts import Prompt, stratified_partition, stratified_sample
from probe_lens.experiments.config import StudyConfig
from probe_lens.training.metric_keys import baseline_key

ONPOLICY = "onpolicy"
"""The name of the on-policy evaluation set (and of its part of a seed's probe pool)."""


class StudyDataError(ValueError):
    """The study's data cannot support it (e.g. the probe rows hold one class only): change the config."""


@dataclasses.dataclass
class PromptPlan:
    """The study's fixed prompt partition (by ``prompt_seed``), stratified by topic within each tag."""

    eval_provocative: list[Prompt]
    eval_neutral: list[Prompt]
    pool: list[Prompt]
    """Prompts whose base-model continuations fit the probes and give on-policy evaluation rows."""
    train_pool: list[Prompt]
    """Prompts training samples are drawn from (per seed)."""

    def as_ids(self) -> dict[str, list[str]]:
        return {f.name: [p.id for p in getattr(self, f.name)] for f in dataclasses.fields(self)}


@dataclasses.dataclass
class SeedSplit:
    """One seed's draw: which pool prompts fit the probes, which give on-policy rows; the training prompts."""

    fit_rows: np.ndarray
    """Rows of the pool dataset the probes are fit on (``probes.fit_rows``: every drawn continuation of the
    probe-fit prompts, or a class-balanced subsample of them)."""
    onpolicy_rows: np.ndarray
    """Every row of the on-policy prompts (evaluation only)."""
    train_prompts: list[Prompt]
    info: dict[str, Any]


def plan_seed(cfg: StudyConfig, seed: int | None) -> int:
    """The seed seed ``seed``'s provocative prompts are partitioned with: ``prompt_seed`` when ``seed`` is None
    or ``eval.prompts_per_seed`` is false, else one mixed from both (each seed its own draw)."""
    if seed is None or not cfg.eval.prompts_per_seed:
        return cfg.prompt_seed
    return int(np.random.SeedSequence([cfg.prompt_seed, 1 + int(seed)]).generate_state(1)[0] & 0x7FFFFFFF)


def make_prompt_plan(cfg: StudyConfig, seed: int | None = None) -> PromptPlan:
    """Evaluation prompts, the probe pool and the training pool of the behaviour's prompts, each tag
    stratified by topic: seed ``seed``'s (see :func:`plan_seed`; None: the one fixed by ``prompt_seed``).
    Neutral prompts are always partitioned by ``prompt_seed`` (fixed perplexity texts)."""
    prompts = cfg.behaviour_spec.load_prompts()
    key = cfg.sampling.stratify_by
    by_tag = {t: [p for p in prompts if p.tag == t] for t in ("provocative", "neutral")}
    n_eval = {"provocative": cfg.eval.n_provocative, "neutral": cfg.eval.n_fluency_texts}
    pool_tags = cfg.sampling.probe_tags
    td = cfg.train_data
    prov_share = (
        len(by_tag["provocative"]) / max(1, len(prompts)) if td.neutral_share is None else 1.0 - td.neutral_share
    )
    # keep enough prompts outside the pool for the training draws (a quarter more, so seeds draw different ones)
    n_train_prov = int(round(td.n_prompts * prov_share))
    reserve = {
        "provocative": max(int(np.ceil(1.25 * n_train_prov)), 4),
        "neutral": max(int(np.ceil(1.25 * (td.n_prompts - n_train_prov))), 2),
    }
    pool_total = sum(max(0, len(by_tag[t]) - n_eval[t] - reserve[t]) for t in pool_tags)
    want = pool_total if cfg.n_probe_prompts is None else cfg.n_probe_prompts
    if pool_total < 4:
        raise ValueError(
            f"behaviour {cfg.behaviour!r} has {len(prompts)} prompts ({len(by_tag['provocative'])} provocative): after the "
            f"{n_eval} evaluation prompts and the training reserve {reserve} only {pool_total} are left for the probe "
            "pool (at least 4 needed); lower eval.n_provocative or train_data.n_prompts, or give more prompts"
        )
    if want > pool_total:
        raise ValueError(
            f"n_probe_prompts={want} but only {pool_total} of behaviour {cfg.behaviour!r}'s {'/'.join(pool_tags)} prompts "
            "are left after the "
            f"{n_eval} evaluation prompts and the training reserve {reserve}; lower n_probe_prompts or eval sizes"
        )
    parts: dict[str, list[Prompt]] = {"eval_provocative": [], "eval_neutral": [], "pool": [], "train_pool": []}
    for tag, group in by_tag.items():
        n_pool = 0
        if tag in pool_tags:
            avail = {t: max(0, len(by_tag[t]) - n_eval[t] - reserve[t]) for t in pool_tags}
            n_pool = int(round(want * avail[tag] / max(1, sum(avail.values()))))
        n_train = len(group) - n_eval[tag] - n_pool
        if n_train < 1:
            raise ValueError(
                f"not enough {tag} prompts ({len(group)}) for {n_eval[tag]} evaluation + {n_pool} pool prompts"
            )
        sizes = {"eval": n_eval[tag], "pool": n_pool, "train": n_train}
        split = stratified_partition(group, sizes, seed=plan_seed(cfg, seed if tag == "provocative" else None), key=key)
        parts[f"eval_{tag}"] = split["eval"]
        parts["pool"] += split["pool"]
        parts["train_pool"] += split["train"]
    return PromptPlan(**parts)


def pool_union(cfg: StudyConfig) -> list[Prompt]:
    """Every pool prompt any of the study's seeds draws, in first-drawn order: the prompts the pool dataset is
    built over (once, shared by every seed)."""
    seen: dict[str, Prompt] = {}
    for seed in cfg.seeds if cfg.eval.prompts_per_seed else [None]:
        for p in make_prompt_plan(cfg, seed).pool:
            seen.setdefault(p.id, p)
    return list(seen.values())


def continuation_draw(ds: ActivationDataset, prompt_ids: Sequence[str], k: int, seed: int) -> dict[str, np.ndarray]:
    """Seed ``seed``'s ``k`` continuations of each prompt: ``{prompt id: rows of ds}``, a seeded draw without
    replacement of the prompt's rows when the dataset holds more than ``k`` (every row otherwise). Each prompt's
    draw depends on the seed and the prompt id only, not on which other prompts are drawn."""
    ex = ds.examples
    order = np.argsort(ex["prompt_id"].to_numpy(), kind="stable")
    pid_sorted = ex["prompt_id"].to_numpy()[order]
    out: dict[str, np.ndarray] = {}
    missing = []
    for pid in prompt_ids:
        lo, hi = np.searchsorted(pid_sorted, pid, "left"), np.searchsorted(pid_sorted, pid, "right")
        rows = np.sort(order[lo:hi])
        if len(rows) == 0:
            missing.append(pid)
            continue
        if len(rows) > k:
            rng = np.random.default_rng([int(seed), zlib.crc32(str(pid).encode())])
            rows = np.sort(rng.choice(rows, size=k, replace=False))
        out[pid] = rows
    if missing:
        raise StudyDataError(
            f"seed {seed}: {len(missing)} of its pool prompts (e.g. {missing[0]!r}) have no rows in the probe-pool "
            "dataset: it was built for other seeds or prompts (a run folder from an older probe_lens, or the seeds "
            "changed); start a new run folder or rerun with --overwrite"
        )
    return out


def make_seed_split(
    cfg: StudyConfig, plan: PromptPlan, ds: ActivationDataset, seed: int, names: BehaviourNames
) -> SeedSplit:
    """Seed ``seed``'s draw from its prompt ``plan``: probe-fit and on-policy prompts (stratified), ``k``
    (``data.samples_per_prompt``) continuations of each from the probe-pool dataset ``ds``, and its training
    prompts; its record (``info``) is what ``split.json`` holds (every prompt and continuation drawn)."""
    key = cfg.sampling.stratify_by
    parts = stratified_partition(
        plan.pool, {"fit": cfg.sampling.fit_fraction, ONPOLICY: 1.0 - cfg.sampling.fit_fraction}, seed=seed, key=key
    )
    drawn = continuation_draw(ds, [p.id for p in plan.pool], cfg.data.samples_per_prompt, seed)
    labels = ds.examples["label"].to_numpy().astype(np.int64)
    fit_all = np.sort(np.concatenate([drawn[p.id] for p in parts["fit"]]))
    onpolicy = np.sort(np.concatenate([drawn[p.id] for p in parts[ONPOLICY]]))
    balanced = cfg.probes.fit_rows == "balanced" and cfg.data.balance
    fit = _balanced(fit_all, labels, seed) if balanced else fit_all
    for what, rows in (("probe-fit", fit), ("on-policy", onpolicy)):
        if len(np.unique(labels[rows])) < 2:
            raise StudyDataError(
                f"seed {seed}: the {what} rows hold one class only ({len(rows)} rows, {int(labels[rows].sum())} "
                f"{names.positive_label}); sample more (data.samples_per_prompt, data.max_rounds, "
                "n_probe_prompts) or lower data.threshold"
            )
    train = train_prompts(plan.train_pool, cfg.train_data.n_prompts, seed, key, cfg.train_data.neutral_share)
    pid = ds.examples["prompt_id"].to_numpy()
    tags = ds.examples["tag"].to_numpy() if "tag" in ds.examples else np.array(["provocative"] * len(ds.examples))
    topics = {p.id: getattr(p, "topic", "") for p in plan.pool}
    sample = ds.examples["sample"].to_numpy() if "sample" in ds.examples else np.arange(len(ds.examples))
    info = {
        "seed": seed,
        "fit_prompts": [p.id for p in parts["fit"]],
        "onpolicy_prompts": [p.id for p in parts[ONPOLICY]],
        "train_prompts": [p.id for p in train],
        "eval_prompts": [p.id for p in plan.eval_provocative],
        "fluency_prompts": [p.id for p in plan.eval_neutral],
        "continuations": {p: [int(i) for i in sample[rows]] for p, rows in drawn.items()},
        "fit_rows_mode": "balanced" if balanced else "weighted",
        "n_fit_rows": int(len(fit)),
        names.metric_keys["n_fit_positive"]: int(labels[fit].sum()),
        "n_onpolicy_rows": int(len(onpolicy)),
        names.metric_keys["n_onpolicy_positive"]: int(labels[onpolicy].sum()),
        str(baseline_key("auroc_prompt_type")): prompt_type_auroc(labels[onpolicy], tags[onpolicy]),
        str(baseline_key("auroc_prompt_topic")): prompt_topic_auroc(
            labels, [topics.get(i, "") for i in pid], fit_all, onpolicy
        ),
    }
    return SeedSplit(fit, onpolicy, train, info)


def _balanced(rows: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """As many of ``rows`` of each class (drawn with ``seed``) as the smaller class has, sorted."""
    rng = np.random.default_rng(seed)
    pos, neg = rows[labels[rows] == 1], rows[labels[rows] == 0]
    n = min(len(pos), len(neg))
    return np.sort(np.concatenate([rng.permutation(pos)[:n], rng.permutation(neg)[:n]]))


def train_prompts(pool: list[Prompt], n: int, seed: int, key: str, neutral_share: float | None = None) -> list[Prompt]:
    """``n`` training prompts from ``pool``, each tag stratified by ``key``: ``neutral_share`` of them neutral
    (the rest provocative; None: tags in the pool's proportion)."""
    by_tag = {t: [p for p in pool if p.tag == t] for t in sorted({p.tag for p in pool})}
    n = min(n, len(pool))
    if neutral_share is None:
        share = {t: len(g) / len(pool) for t, g in by_tag.items()}
    else:
        share = {t: (neutral_share if t == "neutral" else 1.0 - neutral_share) for t in by_tag}
        share = {t: v / max(1e-12, sum(share.values())) for t, v in share.items()}
    counts = {t: min(len(by_tag[t]), int(round(n * share[t]))) for t in by_tag}
    drift = n - sum(counts.values())
    if drift and counts:  # rounding (or a tag short of prompts): the tag with the largest share and room takes it
        for t in sorted(counts, key=lambda t: (-share[t], -len(by_tag[t]))):
            if share[t] > 0 or neutral_share is None:
                take = max(-counts[t], min(drift, len(by_tag[t]) - counts[t]))
                counts[t] += take
                drift -= take
    chosen: list[Prompt] = []
    for t, g in by_tag.items():
        if counts[t] > 0:
            chosen += stratified_sample(g, min(counts[t], len(g)), seed=seed, key=key)
    return chosen


def prompt_type_auroc(labels: np.ndarray, tags: np.ndarray) -> float:
    """AUROC of a detector that sees only the prompt's tag (provocative = 1): the prompt-type confound.
    0.5 when every row comes from one prompt type."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, (np.asarray(tags) == "provocative").astype(float)))


def prompt_topic_auroc(
    labels: np.ndarray, topics: Sequence[str] | np.ndarray, fit_rows: np.ndarray, eval_rows: np.ndarray
) -> float:
    """AUROC on ``eval_rows`` of a detector that sees only the prompt's topic: each topic's share of
    label 1 on ``fit_rows`` (unseen topics: the overall share)."""
    from sklearn.metrics import roc_auc_score

    topics = np.asarray(topics)
    ye = labels[eval_rows]
    if len(np.unique(ye)) < 2:
        return float("nan")
    df = pd.DataFrame({"topic": topics[fit_rows], "y": labels[fit_rows]})
    rate = df.groupby("topic")["y"].mean().to_dict()
    overall = float(labels[fit_rows].mean())
    return float(roc_auc_score(ye, [rate.get(t, overall) for t in topics[eval_rows]]))
