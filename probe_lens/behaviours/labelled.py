"""``LabelledRows``: a scorer that looks labels up in pre-labelled (prompt, response, label) rows.

For a behaviour with no automatic scorer (human or LLM-judge labels collected elsewhere). It can
only score text it was given: fresh generations (evaluation rates, classifier-ranked DPO,
classifier-filtered SFT) need a real scorer, and asking for them raises :class:`UnlabelledTextError`.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

from probe_lens.scorers.base import Scorer, validate_texts


class UnlabelledTextError(LookupError):
    """A :class:`LabelledRows` scorer was asked for a text it holds no label for."""


class LabelledRows(Scorer):
    """P(positive) = the stored 0/1 label of each (prompt, response) row.

    Args:
        rows: ``(prompt, response, label)`` triples, label 0 or 1. A pair may repeat only with the
            same label.
        source: where the rows came from (a path), recorded by :meth:`describe`.

    ``score(responses)`` looks responses up by text alone (the :class:`Scorer` protocol sees no
    prompt); a response stored under several prompts with different labels is ambiguous there and
    needs :meth:`score_pairs`. ``version`` is a hash of the rows, so results trace to the labels.
    """

    name = "labelled"

    def __init__(self, rows: Iterable[tuple[str, str, int]], *, source: str | None = None) -> None:
        super().__init__()
        self.source = source
        labels: dict[tuple[str, str], int] = {}
        for i, row in enumerate(rows):
            try:
                prompt, response, label = row
            except (TypeError, ValueError) as exc:
                raise TypeError(f"rows[{i}] must be a (prompt, response, label) triple, got {row!r}") from exc
            if not isinstance(prompt, str) or not isinstance(response, str):
                raise TypeError(f"rows[{i}]: prompt and response must be strings, got {prompt!r}, {response!r}")
            if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)) or label not in (0, 1):
                raise ValueError(f"rows[{i}]: label must be 0 or 1, got {label!r}")
            if labels.setdefault((prompt, response), int(label)) != int(label):
                raise ValueError(f"rows[{i}]: the pair ({prompt!r}, {response!r}) is given both labels 0 and 1")
        if not labels:
            raise ValueError("LabelledRows needs at least one (prompt, response, label) row")
        self._labels = labels
        by_response: dict[str, set[int]] = defaultdict(set)
        for (_, response), label in labels.items():
            by_response[response].add(label)
        self._by_response = dict(by_response)
        canon = json.dumps(sorted([p, r, y] for (p, r), y in labels.items()), ensure_ascii=False)
        self.version = "sha256:" + hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]

    @property
    def rows(self) -> list[tuple[str, str, int]]:
        """The distinct ``(prompt, response, label)`` rows, in first-given order."""
        return [(p, r, y) for (p, r), y in self._labels.items()]

    def __len__(self) -> int:
        return len(self._labels)

    def _unknown(self, missing: list[str], n: int) -> UnlabelledTextError:
        where = f" from {self.source}" if self.source else ""
        return UnlabelledTextError(
            f"the labelled rows{where} hold no label for {len(missing)} of {n} text(s), e.g. {missing[0]}. "
            "A pre-labelled behaviour scores only the rows it was given; scoring fresh generations "
            "(evaluation rates, classifier-ranked DPO, classifier-filtered SFT) needs a real scorer."
        )

    def _score(self, texts: list[str]) -> np.ndarray:
        missing = [f"response {t!r}" for t in texts if t not in self._by_response]
        if missing:
            raise self._unknown(missing, len(texts))
        ambiguous = [t for t in texts if len(self._by_response[t]) > 1]
        if ambiguous:
            raise UnlabelledTextError(
                f"response {ambiguous[0]!r} is labelled 0 under one prompt and 1 under another; "
                "use score_pairs(prompts, responses)"
            )
        return np.array([next(iter(self._by_response[t])) for t in texts], dtype=np.float64)

    def score_pairs(self, prompts: Sequence[str], responses: Sequence[str]) -> Float[np.ndarray, " n"]:
        """The label of each ``(prompts[i], responses[i])`` as float64 [n]."""
        prompts, responses = validate_texts(prompts), validate_texts(responses)
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        missing = [f"prompt {p!r} / response {r!r}" for p, r in zip(prompts, responses) if (p, r) not in self._labels]
        if missing:
            raise self._unknown(missing, len(prompts))
        return np.array([self._labels[(p, r)] for p, r in zip(prompts, responses)], dtype=np.float64)

    def details(self) -> dict[str, Any]:
        n, n_pos = len(self._labels), sum(self._labels.values())
        return {"source": self.source, "rows": n, "n_positive": n_pos, "n_negative": n - n_pos}
