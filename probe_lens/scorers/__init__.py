"""Output scorers behind one protocol: ``score(texts) -> P(positive class)`` (float64 in [0, 1]): toxicity
(Detoxify, alt-profanity-check) and negative sentiment (VADER). ``register_scorer(name, factory)`` adds one
that ``get_scorer(name)`` (and a study's ``scorer:`` or a behaviour's) can then build."""

from probe_lens.scorers.base import (
    PackageScorer,
    Scorer,
    ScorerOutputError,
    ScorerUnavailableError,
    check_scores,
    label,
    scorer_name,
    validate_texts,
)
from probe_lens.scorers.detoxify_scorer import DetoxifyScorer
from probe_lens.scorers.probe_scorer import ProbeScorer
from probe_lens.scorers.profanity import ProfanityCheckScorer
from probe_lens.scorers.registry import SCORERS, get_scorer, register_scorer
from probe_lens.scorers.vader import VaderScorer

__all__ = [
    "SCORERS",
    "DetoxifyScorer",
    "PackageScorer",
    "ProbeScorer",
    "ProfanityCheckScorer",
    "Scorer",
    "ScorerOutputError",
    "ScorerUnavailableError",
    "VaderScorer",
    "check_scores",
    "get_scorer",
    "label",
    "register_scorer",
    "scorer_name",
    "validate_texts",
]
