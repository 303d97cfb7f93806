"""Filtered SFT: the LM loss only, on the responses whose score (classifier or probe) is below a threshold."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from probe_lens.models import Generation, LensModel
from probe_lens.training.config import ClassifierSFTConfig
from probe_lens.training.objectives.base import check_config, check_generation
from probe_lens.training.objectives.probe_sft import SFTObjective
from probe_lens.training.trainer import StepCallback, Trainer, TrainResult


class FilteredSFTObjective(SFTObjective):
    """LM loss on the rows of ``data`` whose ``scores`` (higher = more toxic) are below ``config.threshold``."""

    def __init__(
        self, model: LensModel, data: Generation, scores: Float[Any, " n"], config: ClassifierSFTConfig
    ) -> None:
        check_config(config, ClassifierSFTConfig)
        check_generation(data, "data")
        self.keep = kept_rows(scores, len(data), config.decision_threshold)
        self.n_scored, self.threshold = len(data), config.decision_threshold
        super().__init__(model, data.select(self.keep.tolist()), lm_weight=1.0)

    def summary(self) -> dict[str, Any]:
        return {"n_examples": self.n_scored, "n_kept": int(len(self.keep)), "threshold": self.threshold}


def kept_rows(scores: Float[Any, " n"], n: int, threshold: float) -> np.ndarray:
    """Indices of the ``n`` scores below ``threshold``; refuses a wrong length, NaN/inf or nothing kept."""
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).reshape(-1)
    if len(s) != n:
        raise ValueError(f"{len(s)} scores for {n} responses; give one score per row of data")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN/inf")
    keep = np.flatnonzero(s < threshold)
    if len(keep) == 0:
        raise ValueError(
            f"no response scored below threshold {threshold} (min score {s.min():.3g}); nothing to train on"
        )
    return keep


def train_classifier_sft(
    model: LensModel,
    data: Generation,
    scores: Any,
    config: ClassifierSFTConfig,
    *,
    telemetry=None,
    resume: bool = False,
    stop_after: int | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Classifier-filtered SFT: LM loss only, on the rows whose output score is below ``config.threshold``."""
    objective = FilteredSFTObjective(model, data, scores, config)
    trainer = Trainer(model, objective, config, telemetry=telemetry, on_step=on_step)
    return trainer.train(resume=resume, stop_after=stop_after)
