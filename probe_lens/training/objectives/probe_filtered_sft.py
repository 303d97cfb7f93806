"""Probe-filtered SFT: the LM loss on the samples the frozen probe(s) judge clean (P(toxic) < threshold).

The probe analogue of classifier-filtered SFT, written as a plug-in: this file plus one
``register_objective("probe_filtered_sft", ...)`` line in ``probe_lens.training.objectives``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from transformer_lens import HookedTransformer

from probe_lens.models import Generation
from probe_lens.training.config import ClassifierSFTConfig
from probe_lens.training.objectives.filtered_sft import FilteredSFTObjective
from probe_lens.training.pairs import probe_scores
from probe_lens.training.trainer import Trainer, TrainResult

if TYPE_CHECKING:
    from probe_lens.experiments.cells import CellSpec
    from probe_lens.experiments.config import StudyConfig
    from probe_lens.experiments.runner import CellContext


@dataclass
class ProbeFilteredSFTConfig(ClassifierSFTConfig):
    """Probe-filtered SFT: LM loss on the responses whose probe P(toxic) is ``< threshold``."""

    method: ClassVar[str] = "probe_filtered_sft"


class ProbeFilteredSFTObjective(FilteredSFTObjective):
    """Filtered SFT on ``data`` scored by ``probes`` on ``model`` as it is when the objective is built.

    ``score_batch_size``: rows per forward pass while scoring.
    """

    signals = ("probe", "ensemble")
    study_section = "classifier_sft"

    def __init__(
        self,
        model: HookedTransformer,
        data: Generation,
        probes: Any,
        config: ClassifierSFTConfig,
        *,
        score_batch_size: int = 16,
    ) -> None:
        scores = probe_scores(model, data, probes, batch_size=score_batch_size, progress=False)
        super().__init__(model, data, scores, config)

    @classmethod
    def cell_config(cls, study: StudyConfig, cell: CellSpec) -> ProbeFilteredSFTConfig:
        return ProbeFilteredSFTConfig(**asdict(super().cell_config(study, cell)))  # probe_filter_threshold

    @classmethod
    def train_cell(cls, cell: CellContext) -> TrainResult:
        config = cell.train_config(cls.cell_config(cell.study.config, cell.spec))
        probes = {n: cell.probes[n] for n in cell.trained}
        objective = cls(
            cell.study.model, cell.generation, probes, config, score_batch_size=cell.study.config.data.batch_size
        )
        return Trainer(cell.study.model, objective, config, telemetry=cell.telemetry).train(resume=cell.resume)
