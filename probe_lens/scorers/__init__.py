"""Output scorers behind one protocol: ``score(texts) -> P(positive class)`` (float64 in [0, 1]): toxicity
(Detoxify, alt-profanity-check) and negative sentiment (VADER)."""

from probe_lens.scorers.base import Scorer, ScorerUnavailableError, label, validate_texts
from probe_lens.scorers.detoxify_scorer import DetoxifyScorer
from probe_lens.scorers.probe_scorer import ProbeScorer
from probe_lens.scorers.profanity import ProfanityCheckScorer
from probe_lens.scorers.registry import SCORERS, get_scorer
from probe_lens.scorers.vader import VaderScorer

__all__ = [
    "SCORERS",
    "DetoxifyScorer",
    "ProbeScorer",
    "ProfanityCheckScorer",
    "Scorer",
    "ScorerUnavailableError",
    "VaderScorer",
    "get_scorer",
    "label",
    "validate_texts",
]
