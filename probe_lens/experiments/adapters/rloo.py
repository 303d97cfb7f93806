"""RLOO in a study: k fresh samples per training prompt at every step, rewarded by the cell's signal.

Against a probe (``probe``, ``ensemble``, ``maxpool``, ``attention``) the reward is minus the trained-against
probe's P(positive) on the policy's own activations (pooled as the study's probes were fit, or every response
token for a token probe; computed without gradient); against
``classifier`` it is minus the output classifier's score. Its settings are the study file's
``objectives: {rloo: {...}}`` section (``RLOOConfig``); the KL reference is the cell's starting model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from probe_lens.experiments.adapters.base import PROBE_SIGNALS, StudyObjective, frozen_copy
from probe_lens.experiments.adapters.probe_sft import trained_probes
from probe_lens.training import RLOOConfig, ScorerReward, TrainResult, probe_reward, train_rloo


def _for_cell(study: Any, cell: Any, settings: RLOOConfig) -> RLOOConfig:
    return dataclasses.replace(settings, pooling=study.data.pooling)


def train_prompts(context: Any) -> list[str]:
    """The seed's training prompts, each once, in the order of its training samples."""
    return list(dict.fromkeys(context.generation.prompts))


def _reward(context: Any, config: RLOOConfig):
    if context.spec.signal != "classifier":
        return probe_reward(context.study.model, trained_probes(context), config)
    if context.study.prelabelled:
        raise ValueError(
            f"cell {context.spec.name!r}: RLOO against the classifier scores fresh samples, but this study's "
            "behaviour is pre-labelled (no classifier can label new text); drop the cell or train against a probe"
        )
    return ScorerReward(context.study.scorer)


def _train(context: Any, config: RLOOConfig) -> TrainResult:
    model = context.study.model  # the cell's starting model: the KL reference (copied before any resume)
    return train_rloo(
        model,
        train_prompts(context),
        _reward(context, config),
        config,
        reference_model=frozen_copy(model) if config.beta > 0 else None,
        telemetry=context.telemetry,
        resume=context.resume,
    )


ADAPTER = StudyObjective(signals=(*PROBE_SIGNALS, "classifier"), train=_train, for_cell=_for_cell)
