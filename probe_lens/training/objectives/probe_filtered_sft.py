"""Probe-filtered SFT: the LM loss on the samples the frozen probe(s) judge clean (P(toxic) < threshold).

The probe analogue of classifier-filtered SFT, written as a plug-in: this file plus one
``register_objective("probe_filtered_sft", ...)`` line in ``probe_lens.training.objectives``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from probe_lens.models import Generation, LensModel
from probe_lens.training.config import ClassifierSFTConfig
from probe_lens.training.objectives.filtered_sft import FilteredSFTObjective
from probe_lens.training.pairs import probe_scores
from probe_lens.training.trainer import StepCallback, Trainer, TrainResult


@dataclass
class ProbeFilteredSFTConfig(ClassifierSFTConfig):
    """Probe-filtered SFT: LM loss on the responses whose probe P(toxic) is ``< threshold``."""

    method: ClassVar[str] = "probe_filtered_sft"


class ProbeFilteredSFTObjective(FilteredSFTObjective):
    """Filtered SFT on ``data`` scored by ``probes`` on ``model`` as it is when the objective is built.

    ``score_batch_size``: rows per forward pass while scoring.
    """

    def __init__(
        self,
        model: LensModel,
        data: Generation,
        probes: Any,
        config: ClassifierSFTConfig,
        *,
        score_batch_size: int = 16,
    ) -> None:
        scores = probe_scores(model, data, probes, batch_size=score_batch_size, progress=False)
        super().__init__(model, data, scores, config)


def train_probe_filtered_sft(
    model: LensModel,
    data: Generation,
    probes: Any,
    config: ClassifierSFTConfig,
    *,
    score_batch_size: int = 16,
    telemetry=None,
    resume: bool = False,
    stop_after: int | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Probe-filtered SFT: LM loss only, on the rows of ``data`` whose probe P(toxic) (scored on ``model``
    before training, ``score_batch_size`` rows per pass) is below ``config.threshold``."""
    objective = ProbeFilteredSFTObjective(model, data, probes, config, score_batch_size=score_batch_size)
    trainer = Trainer(model, objective, config, telemetry=telemetry, on_step=on_step)
    return trainer.train(resume=resume, stop_after=stop_after)
