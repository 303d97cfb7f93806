"""Toxicity scorers behind one protocol: ``score(texts) -> P(toxic)`` (float64 in [0, 1])."""

from probe_lens.scorers.base import Scorer, ScorerUnavailableError, label, validate_texts
from probe_lens.scorers.detoxify_scorer import DetoxifyScorer
from probe_lens.scorers.probe_scorer import ProbeScorer
from probe_lens.scorers.profanity import ProfanityCheckScorer
from probe_lens.scorers.registry import SCORERS, get_scorer

__all__ = [
    "SCORERS",
    "DetoxifyScorer",
    "ProbeScorer",
    "ProfanityCheckScorer",
    "Scorer",
    "ScorerUnavailableError",
    "get_scorer",
    "label",
    "validate_texts",
]
