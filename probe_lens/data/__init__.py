"""Prompt sets: the embedded CC0 prompt set with fixed splits, and loaders for the real datasets."""

from probe_lens.data.builder import ActivationDataset, BuildConfig, build_dataset
from probe_lens.data.loaders import (
    DatasetUnavailableError,
    load_civil_comments,
    load_real_toxicity_prompts,
    truncate_prompt,
)
from probe_lens.data.prompts import (
    TAGS,
    Prompt,
    PromptSplits,
    load_prompts,
    neutral,
    provocative,
    split_prompts,
    texts,
)

__all__ = [
    "TAGS",
    "ActivationDataset",
    "BuildConfig",
    "build_dataset",
    "DatasetUnavailableError",
    "Prompt",
    "PromptSplits",
    "load_civil_comments",
    "load_prompts",
    "load_real_toxicity_prompts",
    "neutral",
    "provocative",
    "split_prompts",
    "texts",
    "truncate_prompt",
]
