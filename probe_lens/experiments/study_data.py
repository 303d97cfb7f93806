"""A study's data: the probe pool (the base model's labelled continuations of the pool prompts, sampled or
read from a reference set), each seed's evaluation sets (on-policy rows, the curated texts) and its
training samples, scored by every signal."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from probe_lens.behaviours import Behaviour
from probe_lens.data import build_dataset
from probe_lens.data.builder import ActivationDataset, dataset_from_labelled, dataset_from_reference
from probe_lens.data.curated import CuratedText, curated_arrays, hard_subset, load_curated
from probe_lens.data.prompts import Prompt
from probe_lens.data.reference import ReferenceMismatch, ReferenceSet, load_reference, reference_mismatch
from probe_lens.experiments.config import StudyConfig, has_shipped_v2
from probe_lens.experiments.prompt_plan import SeedSplit
from probe_lens.experiments.run_folder import load_generation, read_derived_json, save_generation, write_json
from probe_lens.experiments.timings import Clock
from probe_lens.models import Generation, generate
from probe_lens.training import DriftSet, probe_scores, scorer_scores

log = logging.getLogger(__name__)

SCORES = "scores.json"
CURATED, CURATED_HARD = "curated", "curated_hard"
"""The curated evaluation sets' names: the behaviour's set and its lexically hard rows."""


def check_prelabelled(cfg: StudyConfig) -> None:
    """Refuse what a pre-labelled behaviour cannot do: cells trained against the output classifier
    (it would have to label fresh samples) and a probe pool from anywhere but its rows."""
    bad = [c.name for c in cfg.cell_specs if c.signal == "classifier"]
    if bad:
        keep = [
            c
            for c in cfg.cells
            if not (isinstance(c, str) and c in bad or isinstance(c, dict) and c.get("name") in bad)
        ]
        raise ValueError(
            f"behaviour {cfg.behaviour!r} is pre-labelled: its labels cover only the rows it was given, so nothing "
            f"labels the fresh samples that cell(s) {bad} rank or filter with the output classifier. Drop them "
            f"(--set cells={json.dumps(keep)}) or name a scorer (--set scorer=NAME)"
        )
    if cfg.eval.causal:
        raise ValueError(
            f"behaviour {cfg.behaviour!r} is pre-labelled: nothing labels the samples the causal instruments "
            "steer; set eval.causal: false or name a scorer (--set scorer=NAME)"
        )
    if cfg.data_source != "auto":
        raise ValueError(
            f"behaviour {cfg.behaviour!r} is pre-labelled: the probe pool is read from its rows, so data_source "
            f"must be 'auto', not {cfg.data_source!r}"
        )


# ---- the probe pool ----------------------------------------------------------------------------
def choose_reference(cfg: StudyConfig, get_model: Callable[[], Any], pool: list[Prompt]) -> ReferenceSet | None:
    """The reference continuations the probe pool is read from (``data_source``), or None to sample.

    ``get_model()``: the base model (loaded only when a reference set is compared with it).
    ``auto`` uses the shipped set for the embedded model when it covers the study's settings and logs
    why not otherwise; ``reference`` or a path insists (a mismatch is an error saying what differs).
    """
    src = cfg.data_source
    if src == "fresh":
        return None
    try:
        ref = load_reference(None if src in ("auto", "reference") else src)
    except FileNotFoundError:
        if src == "auto":
            return None
        raise
    why = reference_mismatch(ref, get_model(), pool, cfg.data)
    if why is None:
        return ref
    if src == "auto":
        log.info("sampling the probe pool afresh: the reference set does not cover this study (%s)", why)
        return None
    raise ReferenceMismatch(
        f"data_source={src!r}, but the reference set cannot replace sampling: {why}; "
        "use --fresh-data (data_source: fresh) or change those settings"
    )


def build_probe_pool(
    model, pool: list[Prompt], scorer, cfg: StudyConfig, source: ReferenceSet | str | None, **common
) -> ActivationDataset:
    """The probe-pool dataset from ``source``: ``"labelled"`` (a pre-labelled behaviour's rows, read
    teacher-forced), a reference set (every continuation it holds of each prompt: each seed draws
    ``data.samples_per_prompt`` of them), or None (sampled); ``common``: the builder's ``out_dir``, ``progress``,
    ``behaviour``."""
    if source == "labelled":
        return dataset_from_labelled(model, pool, scorer, cfg.data, **common)
    if isinstance(source, ReferenceSet):
        every = dataclasses.replace(cfg.data, samples_per_prompt=source.config.samples_per_prompt)
        return dataset_from_reference(model, source, pool, scorer, every, **common)
    return build_dataset(model, pool, scorer, cfg.data, **common)


def pool_token_acts(model, ds: ActivationDataset, hook: str, path: Path, *, batch_size: int, progress: bool) -> Any:
    """The probe pool's response-token activations at ``hook`` (float32 ``[n_rows, width, d_model]``, NaN-padded
    as :func:`~probe_lens.activations.collect_tokens` returns them; ``model`` holds the base weights), read from
    ``path`` (safetensors) when it holds this pool's, else collected and written there atomically.

    Memory: ``n_rows * width * d_model * 4`` bytes (width: the longest response), e.g. 800 rows of 32 tokens at
    d_model 640 is 66 MB."""
    import torch
    from safetensors.torch import load_file, save_file

    from probe_lens._io import atomic_write
    from probe_lens.activations import collect_tokens

    gen = ds.generation
    stamp = {"hook": hook, "n_rows": str(len(gen)), "n_tokens": str(int(gen.response_mask.sum()))}
    if path.exists():
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                saved = f.metadata() or {}
            if saved == stamp:
                return load_file(str(path))["acts"]
            log.info("re-collecting the pool's token activations: %s holds %s, this pool needs %s", path, saved, stamp)
        except Exception as e:  # a torn or foreign file: collect afresh
            log.warning("re-collecting the pool's token activations: %s could not be read (%s)", path, e)
    acts, _ = collect_tokens(
        model, gen.tokens, gen.attention_mask, gen.response_mask, [hook], batch_size=batch_size, progress=progress
    )
    out = acts[hook].to(torch.float32).contiguous()
    atomic_write(path, lambda p: save_file({"acts": out}, str(p), metadata=stamp))
    return out


# ---- evaluation sets ---------------------------------------------------------------------------
def onpolicy_set(ds: ActivationDataset, split: SeedSplit) -> DriftSet:
    """A seed's on-policy set: probe-fit rows (re-fits read them) + on-policy rows (AUROCs read them)."""
    rows = np.concatenate([split.fit_rows, split.onpolicy_rows])
    gen = ds.generation.select(rows.tolist())
    labels = ds.examples["label"].to_numpy()[rows]
    is_eval = np.concatenate([np.zeros(len(split.fit_rows), bool), np.ones(len(split.onpolicy_rows), bool)])
    groups = ds.examples["prompt_id"].to_numpy()[rows]  # several continuations per prompt: clustered intervals
    return DriftSet(gen.tokens, gen.attention_mask, gen.response_mask, labels, is_eval, groups=groups)


def curated_set(cfg: StudyConfig, behaviour: Behaviour, model) -> DriftSet:
    """The behaviour's curated labelled texts (``eval.n_curated`` of them) as an evaluation-only set."""
    return curated_drift_set(curated_rows(cfg, behaviour)[CURATED], behaviour, model)


def curated_drift_set(rows: list[CuratedText], behaviour: Behaviour, model) -> DriftSet:
    """Curated ``rows`` as an evaluation-only set, each read as the response to the behaviour's prompt."""
    texts, labels = curated_arrays(rows)
    return DriftSet.from_texts(model, behaviour.curated_prompt, texts, labels)


def curated_rows(cfg: StudyConfig, behaviour: Behaviour) -> dict[str, list[CuratedText]]:
    """The curated evaluation sets' rows, ``eval.n_curated`` of each (stratified by kind): ``curated`` (the
    behaviour's set, version ``eval.curated_version``) and, with ``eval.curated_hard``, ``curated_hard``
    (the lexically hard rows, when they hold both labels); ``{}`` when ``eval.curated`` is null."""
    ev = cfg.eval
    if ev.curated is None:
        return {}
    shipped = has_shipped_v2(behaviour)
    rows = load_curated(behaviour.name, version=2) if ev.curated_version == 2 else behaviour.load_curated()
    sets = {CURATED: rows}
    if ev.curated_hard:
        hard = load_curated(behaviour.name, version=2, subset="hard") if shipped else hard_subset(rows)
        if len({r.label for r in hard}) == 2:
            sets[CURATED_HARD] = hard
        else:
            log.info(
                "no curated_hard set: behaviour %r's curated rows hold no hard rows of both labels", behaviour.name
            )
    n = ev.n_curated
    return {
        k: subsample_by_kind(v, n, seed=cfg.prompt_seed) if n is not None and n < len(v) else v for k, v in sets.items()
    }


def subsample_by_kind(rows: list[Any], n: int, seed: int) -> list[Any]:
    """``n`` of ``rows`` (curated texts), each ``kind`` in proportion (largest remainder), seeded, in id order."""
    rng = np.random.default_rng(seed)
    kinds = sorted({r.kind for r in rows})
    groups = {k: [r for r in rows if r.kind == k] for k in kinds}
    share = np.array([len(groups[k]) for k in kinds], dtype=float) * n / len(rows)
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts))[: n - counts.sum()]:
        counts[i] += 1
    picked = [
        r for k, c in zip(kinds, counts) for r in (groups[k][i] for i in sorted(rng.permutation(len(groups[k]))[:c]))
    ]
    return sorted(picked, key=lambda r: r.id)


# ---- training samples --------------------------------------------------------------------------
def load_train_data(folder: Path) -> tuple[Generation, dict[str, np.ndarray]] | None:
    """A seed's saved training samples and their scores, or None when they are missing or corrupt."""
    saved = read_derived_json(folder / SCORES)
    if saved is None:
        return None
    return load_generation(folder), {k: np.asarray(v) for k, v in saved.items()}


def sample(
    model, prompts: list[Prompt], k: int, settings: Any, seed: int, cfg: StudyConfig, progress: bool
) -> Generation:
    """``k`` samples of each of ``prompts`` from ``model`` (seeded by ``seed``), with the ``max_new_tokens``,
    ``temperature`` and ``top_p`` of ``settings`` (a study section: ``train_data``, ``eval``)."""
    texts = [p.text for p in prompts for _ in range(k)]
    return generate(
        model,
        texts,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=seed,
        batch_size=cfg.data.batch_size,
        progress=progress,
        fast=cfg.data.fast_sampling,
    )


def score_train_data(
    model, gen: Generation, scorer, signal_probes: dict[str, Any], batch_size: int, clock: Clock
) -> dict[str, np.ndarray]:
    """Every signal's scores of ``gen``: ``classifier`` (``scorer``; None: a pre-labelled behaviour, no
    classifier) and each of ``signal_probes`` (``{signal: probe}``)."""
    with clock.timed("score_s"):
        scores = {} if scorer is None else {"classifier": scorer_scores(scorer, gen)}
    with clock.timed("probe_scores_s"):
        for signal, probe in signal_probes.items():
            scores[signal] = probe_scores(model, gen, probe, batch_size=batch_size, progress=False)
    return scores


TRAIN_POSITIVE_SHARE = "train_positive_share"
"""The column of ``results.csv`` (and key of a training cell's ``eval.json`` ``info``): the share of the seed's
training samples the output classifier scores positive (at ``eval.threshold``)."""


def train_composition(gen: Generation, scores: dict[str, np.ndarray], threshold: float | None) -> dict[str, Any]:
    """What a training cell samples from: ``train_positive_share`` (NaN without a classifier: a pre-labelled
    behaviour), ``train_n_samples`` and ``train_n_prompts``."""
    cls = scores.get("classifier")
    share = float(np.mean(np.asarray(cls) >= (0.5 if threshold is None else threshold))) if cls is not None else None
    return {
        TRAIN_POSITIVE_SHARE: float("nan") if share is None else share,
        "train_n_samples": len(gen),
        "train_n_prompts": len(dict.fromkeys(gen.prompts)),
    }


def save_train_data(folder: Path, gen: Generation, scores: dict[str, np.ndarray]) -> None:
    save_generation(folder, gen)
    write_json(folder / SCORES, {k: v.tolist() for k, v in scores.items()})
