"""DPO in a study: preference pairs from the k samples per prompt, ranked by the cell's signal.

Pairs whose score gap is below ``dpo_margin_classifier`` (classifier cells) or ``dpo_margin_probe``
(probe cells) are dropped.
"""

from __future__ import annotations

from typing import Any

from probe_lens.experiments.adapters.base import PROBE_SIGNALS, StudyObjective, frozen_copy
from probe_lens.training import DPOConfig, TrainResult, build_pairs, train_dpo


def _train(context: Any, config: DPOConfig) -> TrainResult:
    study, signal = context.study.config, context.spec.signal
    margin = study.dpo_margin_classifier if signal == "classifier" else study.dpo_margin_probe
    k = study.train_data.samples_per_prompt
    pairs = build_pairs(context.generation, context.scores[signal], k=k, margin=margin)
    model = context.study.model  # the cell's starting model: the reference when it is not precomputed
    reference = None if config.precompute_reference else frozen_copy(model)
    return train_dpo(
        model, pairs, config, telemetry=context.telemetry, resume=context.resume, reference_model=reference
    )


ADAPTER = StudyObjective(signals=(*PROBE_SIGNALS, "classifier"), train=_train, section="dpo")
