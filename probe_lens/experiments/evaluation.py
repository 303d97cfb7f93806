"""Evaluating a cell: the behaviour's rates, degeneration and fluency of fresh samples, every tracked probe
on every evaluation set (with intervals; per row kind on the curated sets), the instruments (evasion
geometry, causal metrics), and the geometry after training; :meth:`CellEvaluation.finish`
writes a cell's ``eval.json`` (the cell is then finished), for a cell just trained and for one evaluated
later from its final checkpoint alike."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from probe_lens._io import atomic_write
from probe_lens.behaviours import BehaviourNames
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.fresh_refit import fresh_refit_metrics
from probe_lens.experiments.instruments import Instruments
from probe_lens.experiments.monitor import monitor_metrics
from probe_lens.experiments.monitor_split import split_metrics
from probe_lens.experiments.prompt_plan import ONPOLICY, PromptPlan
from probe_lens.experiments.run_folder import write_json
from probe_lens.experiments.study_data import sample
from probe_lens.experiments.study_telemetry import BaseMeasurements, StudyTelemetry
from probe_lens.experiments.timings import Clock
from probe_lens.experiments.yardsticks import kind_aurocs
from probe_lens.models import Generation
from probe_lens.training import probe_scores, scorer_scores
from probe_lens.training.metric_keys import (
    DRIFT_SET,
    GROUPS,
    LABELS,
    as_tracked,
    baseline_key,
    cosine_floor,
    eval_key,
    score_key,
)


@dataclasses.dataclass
class CellEvaluation:
    """What evaluating any cell of a study reads: its settings, prompts, scorer and clock.

    ``scorer`` is the study's output classifier (for a pre-labelled behaviour, ``prelabelled``, it is only
    named in the results: nothing labels fresh samples, so no rates).
    """

    config: StudyConfig
    plan: PromptPlan
    names: BehaviourNames
    behaviour: str
    scorer: Any
    prelabelled: bool
    progress: bool
    clock: Clock
    kinds: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Each curated set's row kinds (``{set: kind per row}``), for the probes' AUROC per kind."""
    instruments: Instruments | None = None
    """The interpretability instruments every cell reports (evasion geometry; causal with ``eval.causal``)."""

    def finish(
        self,
        model,
        cell: str,
        seed: int,
        tele: StudyTelemetry,
        base: BaseMeasurements,
        cdir: Path,
        *,
        info: dict[str, Any],
        geometry: tuple[dict, dict, list[str]],
        **parts,
    ) -> dict[str, Any]:
        """Evaluate ``model`` as cell ``cell`` of seed ``seed`` (``parts``: :meth:`evaluate`'s), then write
        its ``geometry.json`` and, last, its ``eval.json`` holding ``info`` (the cell's record).
        ``geometry``: the base model's points, their basis and the hooks (``BaseMeasurements.geometry_before``)."""
        before, basis, hooks = geometry
        after = base.geometry_after(tele, model, seed, hooks, basis)  # before evaluate swaps weights (cached acts)
        result = self.evaluate(model, cell, seed, tele, cdir, **parts)
        result["info"] = info
        write_json(cdir / "geometry.json", {"before": before, "after": after})
        write_json(cdir / "eval.json", result)
        return result

    def evaluate(
        self,
        model,
        cell: str,
        seed: int,
        tele: StudyTelemetry,
        cdir: Path,
        *,
        probe: Any,
        split_info: dict[str, Any],
        floors: dict[str, dict[str, float]],
        thresholds: dict[str, Any] | None = None,
        base_weights: Callable[[], AbstractContextManager[Any]] | None = None,
    ) -> dict[str, Any]:
        """The cell's numbers (``probe``: the one whose P(positive) of the samples is ``probe_p``; ``thresholds``:
        the seed's monitor thresholds, :mod:`~probe_lens.experiments.monitor`, None: no monitor metrics;
        ``base_weights``: a context in which ``model`` holds the base weights, for the behaviour vs
        representation split, :mod:`~probe_lens.experiments.monitor_split`, None: no split); writes
        ``probe_scores.json`` and ``eval_samples.parquet`` into ``cdir``."""
        batch = self.config.data.batch_size
        gen = self._samples(model, seed)
        with self.clock.timed("score_s"):
            sample_scores = None if self.prelabelled else scorer_scores(self.scorer, gen)
        out: dict[str, Any] = {"cell": cell, "seed": seed, "behaviour": self.behaviour}
        out.update(self._sample_metrics(model, gen, sample_scores))
        out[self.names.metric_keys["probe_p"]] = float(
            probe_scores(model, gen, probe, batch_size=batch, progress=False).mean()
        )
        out.update(tele.measure(model, rates=False))
        out[str(eval_key("n_responses"))] = len(gen)
        for k in ("auroc_prompt_type", "auroc_prompt_topic"):
            key = str(baseline_key(k))
            out[key] = split_info[key]
        for name, v in floors.items():
            out[str(cosine_floor(name))] = v["p05"]
        scores = tele.scores(model)
        if thresholds is not None:
            out.update(monitor_metrics(scores, thresholds))
        out.update(kind_aurocs(scores, self.kinds))
        if self.instruments is not None:
            with self.clock.timed("instruments_s"):
                out.update(self.instruments.measure(model, seed, tele))
            self.instruments.attribute_cell(model, tele, cdir)  # timed as attribution_s
        with self.clock.timed("refit_fresh_s"):
            fit_ids = set(split_info.get("fit_prompts", []))
            prompts = [p for p in self.plan.pool if p.id in fit_ids]
            out.update(fresh_refit_metrics(model, tele, prompts, None if self.prelabelled else self.scorer,
                                           self.config, seed, progress=self.progress))  # fmt: skip
        if base_weights is not None and sample_scores is not None:  # last: it swaps the model's weights
            with self.clock.timed("monitor_split_s"):
                flagged = sample_scores >= self.config.eval.threshold
                probes = {**tele.trained_probes, **tele.heldout_probes}
                out.update(split_metrics(model, gen, probes, flagged, thresholds, base_weights,
                                         pooling=self.config.data.pooling, batch_size=batch))  # fmt: skip
        groups = _groups(tele)
        out["intervals"] = self._intervals(scores, groups)
        cdir.mkdir(parents=True, exist_ok=True)
        saved = {_set_name(w): {k_: v.tolist() for k_, v in s.items()} for w, s in scores.items()}
        for w, g in groups.items():
            saved[_set_name(w)][GROUPS] = g.tolist()
        write_json(cdir / "probe_scores.json", saved)
        _save_samples(cdir, gen, sample_scores)
        return out

    def _samples(self, model, seed: int) -> Generation:
        ev = self.config.eval
        with self.clock.timed("generate_eval_s"):
            return sample(
                model, self.plan.eval_provocative, ev.samples_per_prompt, ev, 10_000 + seed, self.config, self.progress
            )

    def _sample_metrics(self, model, gen: Generation, sample_scores: np.ndarray | None) -> dict[str, Any]:
        """Rates (none without scores), diversity, degeneration and neutral-text perplexity."""
        from probe_lens.experiments.metrics import degeneration_metrics, evaluate_generation, perplexity

        ev = self.config.eval
        assert ev.threshold is not None  # StudyConfig resolves it from the behaviour
        out = evaluate_generation(
            sample_scores,
            gen.response_texts,
            ev.samples_per_prompt,
            self.scorer.describe(),
            threshold=ev.threshold,
            metric_keys=self.names.metric_keys,
        )
        resp = gen.tokens[:, gen.prompt_len :]
        out.update(degeneration_metrics(gen.response_mask[:, gen.prompt_len :], resp, model.tokenizer.eos_token_id))
        fluency = [p.text for p in self.plan.eval_neutral]
        out[str(eval_key("perplexity_neutral"))] = perplexity(model, fluency, batch_size=self.config.data.batch_size)
        return out

    def _intervals(
        self, scores: dict[str, dict[str, np.ndarray]], groups: dict[str, np.ndarray]
    ) -> dict[str, list[float]]:
        """An interval over examples per AUROC of every tracked probe on every set (clustered by prompt on a
        set with ``groups``: the on-policy set, several continuations per prompt)."""
        from probe_lens.experiments.stats import auroc_ci

        intervals: dict[str, list[float]] = {}
        for which, s in scores.items():
            for name, vals in s.items():
                if name == LABELS:
                    continue
                _, lo, hi = auroc_ci(s[LABELS], vals, method=self.config.eval.ci_method, clusters=groups.get(which))
                intervals[str(as_tracked(score_key(which, name), ONPOLICY))] = [lo, hi]
        return intervals


def _groups(tele: StudyTelemetry) -> dict[str, np.ndarray]:
    """``{set: prompt id per evaluation row}`` of the telemetry's sets that carry prompt ids (in ``scores``' row order)."""
    sets = {DRIFT_SET: tele.drift_set, **tele.eval_sets}
    return {w: np.asarray(ds.groups)[ds.is_eval] for w, ds in sets.items() if ds.groups is not None}


def _set_name(which: str) -> str:
    """A telemetry set's name in a study's files (its drift set is the on-policy set)."""
    return ONPOLICY if which == DRIFT_SET else which


def _save_samples(cdir: Path, gen: Generation, sample_scores: np.ndarray | None) -> None:
    samples = pd.DataFrame(
        {
            "prompt": gen.prompts,
            "response": gen.response_texts,
            "score": np.full(len(gen), np.nan) if sample_scores is None else sample_scores,
        }
    )
    atomic_write(cdir / "eval_samples.parquet", lambda p: samples.to_parquet(p, index=False))
