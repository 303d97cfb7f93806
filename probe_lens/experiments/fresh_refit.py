"""Probes re-fit as in the paper: on **fresh samples of the trained model**.

The telemetry's re-fit probes (``probe/<set>_auroc_retrained/<hook>``) are fit on the seed's probe-fit rows:
the *base* model's continuations, teacher-forced through the current model. Here, per cell, the trained model
samples ``eval.fresh_refit_samples`` continuations of each of ``eval.fresh_refit_prompts`` of the seed's
probe-fit prompts (a seeded draw; None: all), the study's output
classifier labels them (score >= ``data.threshold``, as the probe pool), and a probe of the study's re-fit
estimator (``probes.retrain_estimator``) is fit per telemetry hook on the trained model's activations of those
samples; it is read on the same yardsticks as every other probe (the on-policy evaluation rows, curated,
curated_hard): ``probe/<set>_auroc_refit_fresh/<hook>``. Samples of one class only give NaN, with the reason
logged.

Token probes (``probes.token_probes``) get no fresh re-fit: the re-fit here is one pooled estimator per hook, and
a token family's would need the fresh samples' token activations and (attention) an L-BFGS fit per cell; their
drift is read by the telemetry's ``drift/cosine/<probe>`` (re-fit on the probe-fit rows' tokens) instead. A
cell with token probes logs this once (:data:`TOKEN_PROBES_SKIPPED`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from probe_lens.activations import collect
from probe_lens.data.prompts import Prompt
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.prompt_plan import ONPOLICY
from probe_lens.experiments.study_data import sample
from probe_lens.training import scorer_scores
from probe_lens.training.metric_keys import DRIFT_SET, eval_key, refit_fresh_auroc

__all__ = ["FRESH_SEED", "TOKEN_PROBES_SKIPPED", "fresh_refit_metrics"]

log = logging.getLogger(__name__)

FRESH_SEED = 30_000
"""Fresh samples of seed ``s`` are drawn with sampling seed ``FRESH_SEED + s``."""
TOKEN_PROBES_SKIPPED = (
    "token probes %s get no fresh re-fit (probe/<set>_auroc_refit_fresh is one pooled estimator per hook); "
    "their drift is drift/cosine/<probe>"
)
_logged_skip: set[tuple[str, ...]] = set()


def fresh_refit_metrics(
    model, tele: Any, prompts: list[Prompt], scorer: Any, cfg: StudyConfig, seed: int, *, progress: bool = False
) -> dict[str, float]:
    """``probe/<set>_auroc_refit_fresh/<hook>`` of every telemetry hook and set of ``tele`` (a cell's
    :class:`~probe_lens.experiments.study_telemetry.StudyTelemetry`), plus ``eval/refit_fresh_n`` and
    ``eval/refit_fresh_positive_share``; ``prompts``: the seed's probe-fit prompts; ``scorer``: the output
    classifier (None: a pre-labelled behaviour, nothing labels fresh samples, nothing measured)."""
    ev = cfg.eval
    if not ev.fresh_refit or scorer is None or not prompts:
        return {}
    if ev.fresh_refit_prompts is not None and len(prompts) > ev.fresh_refit_prompts:
        keep = np.random.default_rng(FRESH_SEED + seed).choice(len(prompts), ev.fresh_refit_prompts, replace=False)
        prompts = [prompts[i] for i in sorted(keep)]
    probes = {**tele.trained_probes, **tele.heldout_probes}
    token = tuple(sorted(n for n, p in probes.items() if getattr(p, "reads_tokens", False)))
    if token and token not in _logged_skip:
        _logged_skip.add(token)
        log.info(TOKEN_PROBES_SKIPPED, list(token))
    sets = tele.all_activations(model)
    hooks = sorted(sets[DRIFT_SET])
    gen = sample(model, prompts, ev.fresh_refit_samples, ev, FRESH_SEED + seed, cfg, progress)
    y = (scorer_scores(scorer, gen) >= cfg.data.threshold).astype(np.int64)
    out = {str(eval_key("refit_fresh_n")): float(len(y)), str(eval_key("refit_fresh_positive_share")): float(y.mean())}
    keys = [(w, h) for w in sets for h in hooks]
    if len(np.unique(y)) < 2:
        log.warning(
            "seed %s: the %d fresh samples of the trained model hold one class only (%d positive); the probes "
            "re-fit on fresh samples are NaN (raise eval.fresh_refit_samples for more)",
            seed,
            len(y),
            int(y.sum()),
        )
        return out | {str(refit_fresh_auroc(_label(w), h)): float("nan") for w, h in keys}
    pooling = cfg.data.pooling or "mean"
    fresh = collect(
        model, gen.tokens, gen.attention_mask, gen.response_mask, hooks, pooling=pooling,
        batch_size=cfg.data.batch_size, progress=False,
    )  # fmt: skip
    for h in hooks:
        probe = tele.refit_factory().fit(fresh[h].double().numpy(), y)
        for which, acts in sets.items():
            ds = tele.drift_set if which == DRIFT_SET else tele.eval_sets[which]
            rows = ds.is_eval
            s = np.asarray(probe.predict_proba(acts[h][rows]))[:, 1]
            out[str(refit_fresh_auroc(_label(which), h))] = float(roc_auc_score(ds.labels[rows], s))
    return out


def _label(which: str) -> str:
    return ONPOLICY if which == DRIFT_SET else which
