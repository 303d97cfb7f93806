"""Training objectives, one file each, registered by name.

- ``base``: helpers the objective files share; the interface (:class:`Objective`, the step's
  :class:`MicroBatch` / :class:`StepOutput`) is ``probe_lens.training.objective``.
- ``registry``: :func:`register_objective`, :func:`get_objective`, :data:`OBJECTIVES`.
- ``probe_sft``: LM loss + lambda * P(toxic) of frozen probes on the live activations (``train_probe_sft``).
- ``filtered_sft``: LM loss on the samples a score (classifier or probe) calls clean (``train_classifier_sft``).
- ``dpo``: sigmoid DPO on preference pairs (``train_dpo``).
- ``probe_filtered_sft``: LM loss on the samples the frozen probe calls clean (scored here;
  ``train_probe_filtered_sft``).
- ``rloo``: REINFORCE with a leave-one-out baseline over k on-policy samples per prompt, rewarded by minus
  a frozen probe's score (no gradient through it) or an output classifier's, KL penalty to the reference
  (``train_rloo``).

A new objective is a new file with an :class:`Objective` subclass (and its config) plus one
``register_objective`` line below (or in your own code). Objectives know nothing of studies: a study
trains one through an adapter registered in ``probe_lens.experiments.adapters``.
"""

from probe_lens.training.config import ClassifierSFTConfig, DPOConfig, ProbeSFTConfig
from probe_lens.training.objective import MicroBatch, Objective, StepOutput
from probe_lens.training.objectives.dpo import DPOObjective, train_dpo
from probe_lens.training.objectives.filtered_sft import FilteredSFTObjective, train_classifier_sft
from probe_lens.training.objectives.probe_filtered_sft import (
    ProbeFilteredSFTConfig,
    ProbeFilteredSFTObjective,
    train_probe_filtered_sft,
)
from probe_lens.training.objectives.probe_sft import ProbeSFTObjective, SFTObjective, train_probe_sft
from probe_lens.training.objectives.registry import OBJECTIVES, RegisteredObjective, get_objective, register_objective
from probe_lens.training.objectives.rloo import (
    ProbeReward,
    Reward,
    RLOOConfig,
    RLOOObjective,
    Rollout,
    ScorerReward,
    group_advantages,
    probe_reward,
    train_rloo,
)

register_objective("probe_sft", ProbeSFTObjective, ProbeSFTConfig)
register_objective("filtered_sft", FilteredSFTObjective, ClassifierSFTConfig)
register_objective("dpo", DPOObjective, DPOConfig)
register_objective("probe_filtered_sft", ProbeFilteredSFTObjective, ProbeFilteredSFTConfig)
register_objective("rloo", RLOOObjective, RLOOConfig)

__all__ = [
    "DPOObjective",
    "FilteredSFTObjective",
    "MicroBatch",
    "OBJECTIVES",
    "Objective",
    "ProbeFilteredSFTConfig",
    "ProbeFilteredSFTObjective",
    "ProbeReward",
    "ProbeSFTObjective",
    "RLOOConfig",
    "RLOOObjective",
    "Reward",
    "Rollout",
    "ScorerReward",
    "RegisteredObjective",
    "SFTObjective",
    "StepOutput",
    "get_objective",
    "group_advantages",
    "probe_reward",
    "register_objective",
    "train_classifier_sft",
    "train_dpo",
    "train_probe_filtered_sft",
    "train_probe_sft",
    "train_rloo",
]
