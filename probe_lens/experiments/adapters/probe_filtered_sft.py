"""Probe-filtered SFT in a study: the ``classifier_sft`` settings with the probe threshold, scored by the objective."""

from __future__ import annotations

import dataclasses
from typing import Any

from probe_lens.experiments.adapters.base import PROBE_SIGNALS, StudyObjective
from probe_lens.experiments.adapters.filtered_sft import for_cell as filtered_for_cell
from probe_lens.experiments.adapters.probe_sft import trained_probes
from probe_lens.training import ClassifierSFTConfig, ProbeFilteredSFTConfig, TrainResult, train_probe_filtered_sft


def _for_cell(study: Any, cell: Any, settings: ClassifierSFTConfig) -> ProbeFilteredSFTConfig:
    return ProbeFilteredSFTConfig(**dataclasses.asdict(filtered_for_cell(study, cell, settings)))


def _train(context: Any, config: ProbeFilteredSFTConfig) -> TrainResult:
    return train_probe_filtered_sft(
        context.study.model,
        context.generation,
        trained_probes(context),
        config,
        score_batch_size=context.study.config.data.batch_size,
        telemetry=context.telemetry,
        resume=context.resume,
    )


ADAPTER = StudyObjective(
    signals=PROBE_SIGNALS, train=_train, section="classifier_sft", for_cell=_for_cell, control="filtered_sft"
)
