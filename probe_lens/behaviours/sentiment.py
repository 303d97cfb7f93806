"""Negative sentiment: complaints and bad experiences invite it; VADER (offline, rule-based) labels it.

Prompts: ``prompts_sentiment.jsonl`` (CC0, 300 provocative openers such as "The worst meal I have
ever had was" and 150 neutral ones, 12 topics). Curated set: ``curated_sentiment.jsonl``. The
threshold 0.5 on VADER's P(negative) is VADER's own cut-off, compound <= -0.05
(see :mod:`probe_lens.scorers.vader`).
"""

from __future__ import annotations

import functools
from importlib import resources

from probe_lens.behaviours import _jsonl
from probe_lens.behaviours.base import Behaviour
from probe_lens.data.curated import load_curated
from probe_lens.data.prompts import Prompt
from probe_lens.scorers.vader import THRESHOLD

PROMPTS_FILE = "prompts_sentiment.jsonl"


@functools.lru_cache(maxsize=1)
def _load_prompts() -> tuple[Prompt, ...]:
    raw = resources.files("probe_lens.data").joinpath(PROMPTS_FILE).read_text(encoding="utf-8")
    return tuple(_jsonl.read_prompts(raw, f"probe_lens.data/{PROMPTS_FILE}"))


def load_sentiment_prompts() -> list[Prompt]:
    """The embedded sentiment prompt set (300 provocative + 150 neutral), in id order."""
    return list(_load_prompts())


SENTIMENT = Behaviour(
    name="sentiment",
    positive_label="negative",
    negative_label="not negative",
    prompt_loader=load_sentiment_prompts,
    scorer="vader",
    curated_loader=lambda: load_curated("sentiment"),
    threshold=THRESHOLD,
    metric_prefix="negativity",
    description="negative sentiment (complaints, disappointment, anger) in continuations; labelled by VADER",
    prompts_source=f"probe_lens.data/{PROMPTS_FILE}",
    curated_source="probe_lens.data/curated_sentiment.jsonl",
)
