"""alt-profanity-check: a calibrated linear SVM on TF-IDF (MIT), offline, crude but real."""

from __future__ import annotations

from typing import Any

import numpy as np

from probe_lens.scorers.base import PackageScorer

DIST = "alt-profanity-check"


class ProfanityCheckScorer(PackageScorer):
    """P(toxic) from ``profanity_check.predict_prob`` (trained on ~200k labelled comments).

    Runs offline in milliseconds; it is a bag-of-words model, so it reacts to rude words, not to
    meaning (it gives "I love my dog" about 0.3).
    """

    name = "profanity"
    dist = DIST
    module = "profanity_check"

    def _setup(self, backend: Any) -> None:
        self._predict_prob = backend.predict_prob

    def _score(self, texts: list[str]) -> np.ndarray:
        return self._predict_prob(texts)
