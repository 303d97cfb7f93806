"""Probe-SFT in a study: against the single probe or the ensemble, pooled as the study's probes were fit."""

from __future__ import annotations

import dataclasses
from typing import Any

from probe_lens.experiments.adapters.base import StudyObjective
from probe_lens.training import ProbeSFTConfig, TrainResult, train_probe_sft


def trained_probes(context: Any) -> dict[str, Any]:
    """``{name: probe}`` of the probes the cell trains against."""
    return {n: context.probes[n] for n in context.trained}


def _for_cell(study: Any, cell: Any, settings: ProbeSFTConfig) -> ProbeSFTConfig:
    return dataclasses.replace(settings, pooling=study.data.pooling)


def _train(context: Any, config: ProbeSFTConfig) -> TrainResult:
    return train_probe_sft(
        context.study.model,
        context.generation,
        trained_probes(context),
        config,
        telemetry=context.telemetry,
        resume=context.resume,
    )


ADAPTER = StudyObjective(
    signals=("probe", "ensemble"), train=_train, section="probe_sft", for_cell=_for_cell, control="filtered_sft"
)
