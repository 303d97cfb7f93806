"""Prompt sets: the embedded CC0 prompt set with seeded stratified draws, the curated labelled evaluation set,
and loaders for the real datasets."""

from probe_lens.data.builder import ActivationDataset, BuildConfig, build_dataset
from probe_lens.data.curated import CURATED_PROMPT, CuratedText, hard_subset, load_curated
from probe_lens.data.lexical import auroc_by_kind, lexical_baselines
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
    stratified_partition,
    stratified_sample,
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
    "stratified_partition",
    "stratified_sample",
    "texts",
    "CURATED_PROMPT",
    "CuratedText",
    "load_curated",
    "hard_subset",
    "lexical_baselines",
    "auroc_by_kind",
    "truncate_prompt",
]
