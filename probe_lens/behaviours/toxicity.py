"""Toxicity, the paper's behaviour: the embedded CC0 prompt set, the curated toxicity set, scorer "auto"."""

from __future__ import annotations

from probe_lens.behaviours.base import Behaviour
from probe_lens.data.curated import load_curated
from probe_lens.data.prompts import load_prompts

TOXICITY = Behaviour(
    name="toxicity",
    positive_label="toxic",
    negative_label="clean",
    prompt_loader=load_prompts,
    scorer="auto",  # Detoxify when its weights are local, else alt-profanity-check
    curated_loader=lambda: load_curated("toxicity"),
    threshold=0.5,
    metric_prefix="toxicity",
    description="toxic (rude, abusive, insulting) continuations; Wehner & Fritz (2025)",
    prompts_source="probe_lens.data/prompts.jsonl",
    curated_source="probe_lens.data/curated_toxicity.jsonl",
)
