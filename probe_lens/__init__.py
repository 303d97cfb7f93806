"""probe_lens: does a linear probe keep working when you fine-tune a model against it?

The public API is small; everything else lives in the subpackages named by what they hold:
``models`` (loading, generation), ``activations`` (hooks, pooling, capture), ``probes`` (the zoo),
``data`` (prompts, loaders, the activation-set builder), ``scorers`` (output classifiers),
``training`` (the Trainer, objectives by name, telemetry), ``experiments`` (the study runner and report),
``plots`` (the report's figures as functions).
"""

from probe_lens._common import VERSION as __version__
from probe_lens.activations import capture, collect, pool, resolve_hook
from probe_lens.data import ActivationDataset, BuildConfig, build_dataset, load_prompts, split_prompts
from probe_lens.experiments import Study, StudyConfig, make_config
from probe_lens.models import Generation, generate, load_model, tokenize_pairs
from probe_lens.probes import (
    DiverseProbeEnsemble,
    LogisticProbe,
    MassMeanProbe,
    cosine_matrix,
    layer_sweep,
    load_probe,
    probe_report,
    save_probe,
)
from probe_lens.scorers import get_scorer
from probe_lens.training import (
    ClassifierSFTConfig,
    DPOConfig,
    DriftSet,
    DriftTelemetry,
    ProbeSFTConfig,
    RLOOConfig,
    Trainer,
    build_pairs,
    read_metrics,
    register_objective,
    train_classifier_sft,
    train_dpo,
    train_probe_sft,
    train_rloo,
)

__all__ = [
    "ActivationDataset",
    "BuildConfig",
    "ClassifierSFTConfig",
    "DPOConfig",
    "DiverseProbeEnsemble",
    "DriftSet",
    "DriftTelemetry",
    "Generation",
    "LogisticProbe",
    "MassMeanProbe",
    "ProbeSFTConfig",
    "RLOOConfig",
    "Study",
    "StudyConfig",
    "Trainer",
    "__version__",
    "build_dataset",
    "build_pairs",
    "capture",
    "collect",
    "cosine_matrix",
    "generate",
    "get_scorer",
    "layer_sweep",
    "load_model",
    "load_probe",
    "load_prompts",
    "make_config",
    "pool",
    "probe_report",
    "read_metrics",
    "register_objective",
    "resolve_hook",
    "save_probe",
    "split_prompts",
    "tokenize_pairs",
    "train_classifier_sft",
    "train_dpo",
    "train_probe_sft",
    "train_rloo",
]
