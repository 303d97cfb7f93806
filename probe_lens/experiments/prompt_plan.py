"""Prompt plans and seed splits: which of the behaviour's prompts evaluate, fit the probes and train (fixed
by ``prompt_seed``), and, per seed, which pool prompts fit the probes and which give on-policy rows.
Each seed redraws that split (stratified by topic), so intervals over seeds include probe-data variance."""

from __future__ import annotations

import dataclasses
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
    """Balanced rows of the pool dataset the probes are fit on."""
    onpolicy_rows: np.ndarray
    """Every row of the on-policy prompts (evaluation only)."""
    train_prompts: list[Prompt]
    info: dict[str, Any]


def make_prompt_plan(cfg: StudyConfig) -> PromptPlan:
    """Evaluation prompts, the probe pool and the training pool of the behaviour's prompts, each tag
    stratified by topic."""
    prompts = cfg.behaviour_spec.load_prompts()
    key, seed = cfg.sampling.stratify_by, cfg.prompt_seed
    by_tag = {t: [p for p in prompts if p.tag == t] for t in ("provocative", "neutral")}
    n_eval = {"provocative": cfg.eval.n_provocative, "neutral": cfg.eval.n_fluency_texts}
    pool_tags = cfg.sampling.probe_tags
    td = cfg.train_data
    prov_share = len(by_tag["provocative"]) / max(1, len(prompts))
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
        split = stratified_partition(group, {"eval": n_eval[tag], "pool": n_pool, "train": n_train}, seed=seed, key=key)
        parts[f"eval_{tag}"] = split["eval"]
        parts["pool"] += split["pool"]
        parts["train_pool"] += split["train"]
    return PromptPlan(**parts)


def make_seed_split(
    cfg: StudyConfig, plan: PromptPlan, ds: ActivationDataset, seed: int, names: BehaviourNames
) -> SeedSplit:
    """Seed ``seed``'s draw of probe-fit and on-policy prompts (stratified) and its training prompts, from
    the probe-pool dataset ``ds``; its record (``info``) is what ``split.json`` holds."""
    key = cfg.sampling.stratify_by
    parts = stratified_partition(
        plan.pool, {"fit": cfg.sampling.fit_fraction, ONPOLICY: 1.0 - cfg.sampling.fit_fraction}, seed=seed, key=key
    )
    pid = ds.examples["prompt_id"].to_numpy()
    labels = ds.examples["label"].to_numpy().astype(np.int64)
    fit_all = np.flatnonzero(np.isin(pid, [p.id for p in parts["fit"]]))
    onpolicy = np.flatnonzero(np.isin(pid, [p.id for p in parts[ONPOLICY]]))
    fit = _balanced(fit_all, labels, seed) if cfg.data.balance else fit_all
    for what, rows in (("probe-fit", fit), ("on-policy", onpolicy)):
        if len(np.unique(labels[rows])) < 2:
            raise StudyDataError(
                f"seed {seed}: the {what} rows hold one class only ({len(rows)} rows, {int(labels[rows].sum())} "
                f"{names.positive_label}); sample more (data.samples_per_prompt, data.max_rounds, "
                "n_probe_prompts) or lower data.threshold"
            )
    train = train_prompts(plan.train_pool, cfg.train_data.n_prompts, seed, key)
    tags = ds.examples["tag"].to_numpy() if "tag" in ds.examples else np.array(["provocative"] * len(ds.examples))
    topics = {p.id: getattr(p, "topic", "") for p in plan.pool}
    info = {
        "seed": seed,
        "fit_prompts": [p.id for p in parts["fit"]],
        "onpolicy_prompts": [p.id for p in parts[ONPOLICY]],
        "train_prompts": [p.id for p in train],
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


def train_prompts(pool: list[Prompt], n: int, seed: int, key: str) -> list[Prompt]:
    """``n`` training prompts from ``pool``, tags in the pool's proportion, each tag stratified by ``key``."""
    by_tag = {t: [p for p in pool if p.tag == t] for t in sorted({p.tag for p in pool})}
    n = min(n, len(pool))
    counts = {t: int(round(n * len(g) / len(pool))) for t, g in by_tag.items()}
    drift = n - sum(counts.values())
    if drift and counts:
        t = max(counts, key=lambda t: len(by_tag[t]))
        counts[t] += drift
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
