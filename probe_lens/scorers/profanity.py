"""alt-profanity-check: a calibrated linear SVM on TF-IDF (MIT), offline, crude but real."""

from __future__ import annotations

from typing import Any

import numpy as np

from probe_lens.scorers.base import Scorer, ScorerUnavailableError, package_version

DIST = "alt-profanity-check"


class ProfanityCheckScorer(Scorer):
    """P(toxic) from ``profanity_check.predict_prob`` (trained on ~200k labelled comments).

    Runs offline in milliseconds; it is a bag-of-words model, so it reacts to rude words, not to
    meaning (it gives "I love my dog" about 0.3).
    """

    name = "profanity"

    def __init__(self) -> None:
        super().__init__()
        try:
            import profanity_check
        except ImportError as exc:
            raise ScorerUnavailableError(
                f"the 'profanity' scorer needs the {DIST} package: pip install {DIST}"
            ) from exc
        self._predict_prob = profanity_check.predict_prob
        self.version = package_version(DIST)

    @staticmethod
    def available() -> bool:
        """True if ``alt-profanity-check`` can be imported."""
        try:
            import profanity_check  # noqa: F401
        except ImportError:
            return False
        return True

    def _score(self, texts: list[str]) -> np.ndarray:
        return self._predict_prob(texts)

    def details(self) -> dict[str, Any]:
        return {"package": DIST}
