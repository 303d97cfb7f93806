"""VADER (vaderSentiment, MIT): a rule-based sentiment lexicon, offline, no weights; scores P(negative).

VADER's ``compound`` score lies in [-1, 1]; its documented convention calls a text negative when
``compound <= -0.05``, neutral in between and positive when ``compound >= 0.05``. This scorer maps
``compound`` to P(negative) by a monotone, piecewise-linear map hinged at that cut-off::

    P = 0.5 + 0.5 * (-0.05 - c) / 0.95     for c <= -0.05   (c = -1 -> 1.0, c = -0.05 -> 0.5)
    P = 0.5 * (1 - c) / 1.05               for c >  -0.05   (c = +1 -> 0.0, just above -0.05 -> < 0.5)

so that the project's usual decision rule ``P >= 0.5`` means exactly VADER's "negative": neutral and
positive texts both count as not negative.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from probe_lens.scorers.base import PackageScorer

DIST = "vaderSentiment"

NEGATIVE_CUTOFF = -0.05
"""VADER's documented cut-off: ``compound <= -0.05`` is negative sentiment."""

THRESHOLD = 0.5
"""P(negative) at and above which a text is negative: where :data:`NEGATIVE_CUTOFF` lands."""


def negative_probability(compound: Any) -> np.ndarray:
    """VADER compound scores in [-1, 1] -> P(negative) in [0, 1], float64, same shape.

    Monotone decreasing; ``>= 0.5`` exactly when ``compound <= -0.05`` (see the module docstring).
    """
    c = np.clip(np.asarray(compound, dtype=np.float64), -1.0, 1.0)
    cut = NEGATIVE_CUTOFF
    negative = THRESHOLD + THRESHOLD * (cut - c) / (1.0 + cut)
    # the upper branch stays strictly below the threshold, whatever the rounding
    rest = np.minimum(THRESHOLD * (1.0 - c) / (1.0 - cut), np.nextafter(THRESHOLD, 0.0))
    return np.where(c <= cut, negative, rest)


class VaderScorer(PackageScorer):
    """P(negative sentiment) from VADER's ``compound`` score (Hutto & Gilbert, ICWSM 2014).

    A lexicon with rules for negation, intensifiers, "but" and punctuation; runs offline on the CPU
    in microseconds per text. It reads words, not situations: "the flight was cancelled" carries no
    negative lexicon entry and scores neutral.
    """

    name = "vader"
    dist = DIST
    module = "vaderSentiment.vaderSentiment"

    def _setup(self, backend: Any) -> None:
        self._analyzer = backend.SentimentIntensityAnalyzer()

    def compound(self, texts: list[str]) -> np.ndarray:
        """VADER's raw ``compound`` score per text, float64 in [-1, 1]."""
        return np.array([self._analyzer.polarity_scores(t)["compound"] for t in texts], dtype=np.float64)

    def _score(self, texts: list[str]) -> np.ndarray:
        return negative_probability(self.compound(texts))

    def details(self) -> dict[str, Any]:
        return {
            **super().details(),
            "positive_class": "negative sentiment",
            "mapping": "piecewise-linear in compound, hinged at compound = -0.05 -> P = 0.5",
            "negative_cutoff": NEGATIVE_CUTOFF,
        }
