"""Filtered SFT in a study: on the samples the cell's signal scores below the threshold.

Against the output classifier the ``classifier_sft`` section's threshold applies; against a probe, the
study's ``probe_filter_threshold``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from probe_lens.experiments.adapters.base import PROBE_SIGNALS, StudyObjective
from probe_lens.training import ClassifierSFTConfig, TrainResult, train_classifier_sft


def for_cell(study: Any, cell: Any, settings: ClassifierSFTConfig) -> ClassifierSFTConfig:
    if cell.signal == "classifier":
        return settings
    return dataclasses.replace(settings, threshold=study.probe_filter_threshold)


def _train(context: Any, config: ClassifierSFTConfig) -> TrainResult:
    scores = context.scores[context.spec.signal]
    return train_classifier_sft(
        context.study.model, context.generation, scores, config, telemetry=context.telemetry, resume=context.resume
    )


ADAPTER = StudyObjective(
    signals=(*PROBE_SIGNALS, "classifier"), train=_train, section="classifier_sft", for_cell=for_cell
)
