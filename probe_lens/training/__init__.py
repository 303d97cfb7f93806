"""Fine-tuning against probes (probe-SFT, probe-DPO), their classifier baselines, and drift telemetry.

- ``config``: one validated dataclass per method (``ProbeSFTConfig``, ``ClassifierSFTConfig``, ``DPOConfig``).
- ``losses``: response log-probs, LM loss, probe term, KL term, the sigmoid DPO loss.
- ``pairs``: preference pairs from k samples per prompt (``build_pairs``).
- ``objective``: the ``Objective`` interface (``MicroBatch``, ``StepOutput``) the Trainer calls.
- ``objectives``: the registry (``register_objective``, ``get_objective``) and one file per objective
  (``train_probe_sft``, ``train_classifier_sft``, ``train_dpo``, ``train_probe_filtered_sft``, ``train_rloo``), each
  knowing its config, examples and loss and nothing of studies.
- ``trainer``: the ``Trainer``, the loop every objective shares.
- ``telemetry``: ``DriftSet``, ``DriftTelemetry``, ``read_metrics``.
- ``checkpoint``: atomic safetensors + JSON checkpoints; ``distributed``: torchrun/DDP helpers.
"""

from probe_lens.training._io import MetricsWriter, read_metrics
from probe_lens.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from probe_lens.training.config import ClassifierSFTConfig, DPOConfig, ProbeSFTConfig, TrainConfig
from probe_lens.training.losses import dpo_loss, kl_per_token, lm_loss, probe_probability, sequence_logps, token_logps
from probe_lens.training.objective import MicroBatch, Objective, StepOutput
from probe_lens.training.objectives import (
    OBJECTIVES,
    ProbeFilteredSFTConfig,
    ProbeReward,
    RLOOConfig,
    ScorerReward,
    get_objective,
    probe_reward,
    register_objective,
    train_classifier_sft,
    train_dpo,
    train_probe_filtered_sft,
    train_probe_sft,
    train_rloo,
)
from probe_lens.training.pairs import PreferencePairs, build_pairs, probe_scores, scorer_scores
from probe_lens.training.telemetry import DriftSet, DriftTelemetry
from probe_lens.training.trainer import Trainer, TrainResult, batch_indices, select_trainable

__all__ = [
    "OBJECTIVES",
    "ClassifierSFTConfig",
    "DPOConfig",
    "DriftSet",
    "DriftTelemetry",
    "MetricsWriter",
    "MicroBatch",
    "Objective",
    "PreferencePairs",
    "ProbeFilteredSFTConfig",
    "ProbeReward",
    "ProbeSFTConfig",
    "RLOOConfig",
    "ScorerReward",
    "StepOutput",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "batch_indices",
    "build_pairs",
    "dpo_loss",
    "get_objective",
    "kl_per_token",
    "latest_checkpoint",
    "lm_loss",
    "load_checkpoint",
    "probe_probability",
    "probe_reward",
    "probe_scores",
    "read_metrics",
    "register_objective",
    "save_checkpoint",
    "scorer_scores",
    "select_trainable",
    "sequence_logps",
    "token_logps",
    "train_classifier_sft",
    "train_dpo",
    "train_probe_filtered_sft",
    "train_probe_sft",
    "train_rloo",
]
