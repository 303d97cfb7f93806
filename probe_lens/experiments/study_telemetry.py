"""Study telemetry: drift telemetry under a study's role-free names plus the behaviour's rate, built for one
cell; and the base model's measurements of a seed (activations, rates, reference directions, the
geometry before training), measured once and shared by every cell of the seed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from probe_lens.behaviours import BehaviourNames
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.prompt_plan import ONPOLICY
from probe_lens.experiments.study_data import CURATED, CURATED_HARD
from probe_lens.models import generate
from probe_lens.training import DriftSet, DriftTelemetry
from probe_lens.training.metric_keys import MetricKey, as_tracked
from probe_lens.training.telemetry import model_state_key

__all__ = ["CURATED", "CURATED_HARD", "BaseMeasurements", "StudyTelemetry", "build_telemetry", "geometry_points"]


class StudyTelemetry(DriftTelemetry):
    """Drift telemetry for a study: every tracked probe under one name in every cell, and the behaviour's rate.

    Probe AUROCs are logged as ``probe/onpolicy_auroc/<probe>``, ``probe/curated_auroc/<probe>`` and
    ``probe/curated_hard_auroc/<probe>`` (the lexically hard curated rows; retrained: ``probe/<set>_auroc_retrained/<hook>``) whether or not the cell trains against the probe
    (which it does is in the cell's ``eval.json`` info), so a probe's curve in a cell that trains against
    it and in its control cells share a column. Adds the rate and mean score (``metric_keys`` roles
    ``rate`` and ``mean``: ``eval/toxicity_rate``, ``eval/mean_toxicity`` for toxicity, the default) of a
    few held-out provocative prompts (1 sample each, ``rate_prompts``; none: no rates) to every row, for
    the rate vs step.
    """

    def __init__(
        self,
        *args,
        rate_prompts: list[str],
        scorer,
        max_new_tokens: int,
        threshold: float,
        seed: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        fast_sampling: bool = False,
        metric_keys: Mapping[str, str] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.fast_sampling = fast_sampling
        self.rate_prompts = rate_prompts
        self.metric_keys = dict(BehaviourNames.of(None).metric_keys if metric_keys is None else metric_keys)
        self.scorer = scorer
        self.max_new_tokens = max_new_tokens
        self.threshold = threshold
        self.seed = seed
        self.temperature = temperature
        self.top_p = top_p
        self._rate_cache: tuple[Any, dict[str, float]] | None = None

    def measure(self, model, step: int | None = None, *, rates: bool = True) -> dict[str, float]:
        raw = super().measure(model, step)
        out = {str(as_tracked(MetricKey.parse(k), ONPOLICY)): v for k, v in raw.items()}
        if rates:
            out.update(self.rates(model))
        return out

    def rates(self, model) -> dict[str, float]:
        """The behaviour's rate and mean score of the telemetry prompts' samples (cached per model state)."""
        if not self.rate_prompts:
            return {}
        key = model_state_key(model)
        if self._rate_cache is not None and self._rate_cache[0] == key:
            return dict(self._rate_cache[1])
        gen = generate(
            model,
            self.rate_prompts,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
            temperature=self.temperature,
            top_p=self.top_p,
            batch_size=self.batch_size,
            progress=False,
            fast=self.fast_sampling,
        )
        scores = np.asarray(self.scorer.score(gen.response_texts))
        out = {
            self.metric_keys["rate"]: float((scores >= self.threshold).mean()),
            self.metric_keys["mean"]: float(scores.mean()),
        }
        self._rate_cache = (key, out)
        return dict(out)

    def prime_rates(self, model, values: dict[str, float]) -> None:
        """Declare ``values`` (from :meth:`rates` of an identical model and seed) as ``model``'s."""
        self._rate_cache = (model_state_key(model), dict(values))


def build_telemetry(
    cfg: StudyConfig,
    names: BehaviourNames,
    seed: int,
    probes: dict[str, Any],
    trained: list[str],
    templates: dict[str, tuple[Any, int]],
    sets: tuple[DriftSet, dict[str, DriftSet]],
    rate_prompts: list[str],
    scorer: Any,
    refit_factory: Callable[[], Any],
) -> StudyTelemetry:
    """The telemetry of one cell of seed ``seed``: every tracked probe (``trained`` ones as trained-against)
    on the seed's on-policy set and the curated sets (``sets``: the drift set and ``{name: set}``, e.g.
    ``curated`` and ``curated_hard``); the rates of the first
    ``eval.n_telemetry_prompts`` of ``rate_prompts``, scored by ``scorer`` (None: a pre-labelled behaviour,
    no rates)."""
    ev = cfg.eval
    assert ev.threshold is not None  # StudyConfig resolves it from the behaviour
    drift, curated = sets
    k = min(ev.n_telemetry_prompts, len(rate_prompts))
    return StudyTelemetry(
        drift,
        {k_: probes[k_] for k_ in trained} or None,
        {k_: v for k_, v in probes.items() if k_ not in trained},
        refit_factory=refit_factory,
        refit_templates=templates,
        eval_sets=dict(curated) or None,
        hooks=list(cfg.telemetry_hooks),
        batch_size=cfg.data.batch_size,
        pooling=cfg.data.pooling,
        class_names=names.class_names,
        metric_keys=names.metric_keys,
        rate_prompts=[] if scorer is None else rate_prompts[:k],
        scorer=scorer,
        max_new_tokens=ev.max_new_tokens,
        threshold=ev.threshold,
        seed=20_000 + seed,
        temperature=ev.telemetry_temperature,
        top_p=ev.telemetry_top_p,
        fast_sampling=cfg.data.fast_sampling,
    )


class BaseMeasurements:
    """The base model's telemetry per seed (activations and rates of every set) and the seed's reference
    directions (class-mean difference on the base model's probe-fit rows, per hook), shared by its cells.
    The token probes' token activations (``width`` times the pooled ones' size) are kept for the latest
    seed only: a study runs its cells seed by seed."""

    def __init__(self) -> None:
        self.acts: dict[int, dict[str, Any]] = {}
        self.tokens: dict[int, dict[str, Any]] = {}
        self.rates: dict[int, dict[str, float]] = {}
        self.reference: dict[int, dict[str, np.ndarray]] = {}

    def prime(self, tele: StudyTelemetry, model, seed: int) -> None:
        """Give ``tele`` the base model's shared telemetry (computed once per seed) and the seed's
        reference directions; ``model`` holds the base weights."""
        if seed in self.acts:
            tele.prime(model, self.acts[seed], self.tokens.get(seed))
        if seed in self.rates:
            tele.prime_rates(model, self.rates[seed])
        self.acts[seed] = tele.all_activations(model)
        self.tokens = {seed: tele.all_token_activations(model)}
        self.rates[seed] = tele.rates(model)
        if seed not in self.reference:
            acts, ds = self.acts[seed]["drift"], tele.drift_set
            fit, y = ~ds.is_eval, ds.labels
            self.reference[seed] = {}
            for h, X in acts.items():
                d = X[fit & (y == 1)].mean(axis=0) - X[fit & (y == 0)].mean(axis=0)
                self.reference[seed][h] = d / max(float(np.linalg.norm(d)), 1e-12)
        tele.reference_directions.update(self.reference[seed])

    def geometry_before(self, tele: StudyTelemetry, seed: int, hooks: list[str]) -> tuple[dict, dict]:
        """The base model's geometry points of the seed and their basis (see :func:`geometry_points`)."""
        return geometry_points(self.acts[seed]["drift"], tele.drift_set, self.reference[seed], hooks)

    def geometry_after(self, tele: StudyTelemetry, model, seed: int, hooks: list[str], basis: dict) -> dict:
        """``model``'s geometry points in the base model's ``basis``."""
        return geometry_points(tele.activations(model), tele.drift_set, self.reference[seed], hooks, basis)[0]


def geometry_points(
    acts: dict[str, np.ndarray],
    drift: DriftSet,
    reference: dict[str, np.ndarray],
    hooks: list[str],
    basis: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """On-policy evaluation rows projected on the seed's reference direction and on the top-2 PCs.

    The reference direction per hook is fit once on the base model (class-mean difference on the
    probe-fit rows) and the same in every cell; the PC basis (and centre) comes from ``basis`` when given
    (the base model's), so before and after share one coordinate system. Returns ``(points, basis)``.
    """
    rows = drift.is_eval
    points: dict[str, Any] = {}
    basis = dict(basis or {})
    for hook in hooks:
        X = np.asarray(acts[hook], dtype=np.float64)[rows]
        if hook not in basis:
            centre = X.mean(axis=0)
            _, _, vt = np.linalg.svd(X - centre, full_matrices=False)
            basis[hook] = {"centre": centre, "pcs": vt[:2]}
        centre, pcs = basis[hook]["centre"], basis[hook]["pcs"]
        proj = (X - centre) @ pcs.T
        points[hook] = {
            "x_dir": (X @ reference[hook]).tolist(),
            "x_pc1": proj[:, 0].tolist(),
            "x_pc2": proj[:, 1].tolist(),
            "label": np.asarray(drift.labels[rows]).astype(int).tolist(),
        }
    return points, basis
