"""Probe-SFT in a study: against the single probe, the ensemble (pooled as the study's probes were fit) or a
token probe (``maxpool``, ``attention``: the gradient flows through its read of every response token)."""

from __future__ import annotations

import dataclasses
from typing import Any

from probe_lens.experiments.adapters.base import PROBE_SIGNALS, StudyObjective, frozen_copy
from probe_lens.training import ProbeSFTConfig, TrainResult, train_probe_sft


def trained_probes(context: Any) -> dict[str, Any]:
    """``{name: probe}`` of the probes the cell trains against."""
    return {n: context.probes[n] for n in context.trained}


def _for_cell(study: Any, cell: Any, settings: ProbeSFTConfig) -> ProbeSFTConfig:
    return dataclasses.replace(settings, pooling=study.data.pooling)


def _train(context: Any, config: ProbeSFTConfig) -> TrainResult:
    # the KL term's reference is the cell's starting model (the base weights; a resumed cell loads its
    # checkpoint into the policy only after this copy is taken)
    model = context.study.model
    return train_probe_sft(
        model,
        context.generation,
        trained_probes(context),
        config,
        telemetry=context.telemetry,
        resume=context.resume,
        reference_model=frozen_copy(model) if config.kl_weight > 0 else None,
    )


ADAPTER = StudyObjective(
    signals=PROBE_SIGNALS, train=_train, section="probe_sft", for_cell=_for_cell, control="filtered_sft"
)
