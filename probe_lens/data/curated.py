"""Curated labelled text sets shipped with probe_lens: an off-policy yardstick for probe AUROC.

``curated_toxicity.jsonl`` (345 rows) was written by hand by the probe_lens authors for this
project and is dedicated to the public domain (CC0 1.0, see ``LICENSE-curated.txt``); nothing was
copied from an existing dataset. Each text is a short first- or second-person forum reply or chat
message (6-34 words) over 16 everyday topics (work, school, gaming, driving, neighbours, sports,
politics, food, family, public spaces, customer service, online, tech, housing, travel, health),
every topic holding both classes so that topic alone does not predict the label:

* ``toxic`` (label 1, 170 rows): insults, abusive name-calling, harassment, demeaning language,
  non-specific threats and profanity aimed at a person.
* ``hard_negative`` (label 0, 94 rows): clean texts that share surface features with toxic ones:
  anger or frustration without abuse, blunt criticism of work or ideas, crime and violence reported
  in news style, heated politics without abuse, medical and anatomical vocabulary, "kill the process".
  No profanity.
* ``clean`` (label 0, 81 rows): ordinary everyday replies.

The texts are read as a model's *response* to the fixed neutral prompt :data:`CURATED_PROMPT`, so a
probe sees them in the position where it sees the model's own continuations.

CONTENT WARNING: half of the rows are deliberately abusive (no slur against a protected group is
written out, and no real person is named).

``curated_sentiment.jsonl`` (CC0, same authorship and format, see ``LICENSE-curated.txt``) is the
negative-sentiment analogue: clearly negative replies (label 1), hard negatives that share the
vocabulary of complaints without being negative (problems solved, praise after a fix, delays reported
as facts), and ordinary positive or neutral replies, every topic holding both classes.

Rule: **never tune anything on these sets** (no probe fitting, threshold choice, layer selection or
early stopping). They are for evaluation only; otherwise they stop being independent yardsticks.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

import numpy as np
from jaxtyping import Int

CURATED_PROMPT = "Here is what I wrote in reply:\n"
"""The fixed neutral prompt every curated text is read as a response to (prompt + text is fed to
the model; activations are taken over the text's tokens only, as for on-policy continuations)."""

KIND_LABELS: dict[str, int] = {"toxic": 1, "clean": 0, "hard_negative": 0}
"""Each row's ``kind`` and the binary label it implies (1 = toxic), in the toxicity set."""

CURATED_SETS: dict[str, str] = {"toxicity": "curated_toxicity.jsonl", "sentiment": "curated_sentiment.jsonl"}
"""Registered curated sets: name -> file in ``probe_lens.data``."""

SET_KIND_LABELS: dict[str, dict[str, int]] = {
    "toxicity": KIND_LABELS,
    "sentiment": {"negative": 1, "clean": 0, "hard_negative": 0},
}
"""The kinds each registered set uses, and the label each implies (1 = the behaviour is present).

In the sentiment set, ``negative`` (label 1) is clearly negative sentiment, ``hard_negative`` (label
0) shares the vocabulary of complaints without being negative, ``clean`` is positive or neutral."""

GENERIC_KIND_LABELS: dict[str, int] = {"positive": 1, "clean": 0, "hard_negative": 0}
"""Kinds for a user's own curated set (any behaviour): ``positive`` shows the behaviour."""

_ALL_KIND_LABELS: dict[str, int] = {
    kind: lab for kinds in (*SET_KIND_LABELS.values(), GENERIC_KIND_LABELS) for kind, lab in kinds.items()
}


@dataclass(frozen=True)
class CuratedText:
    """One hand-labelled text.

    Args:
        id: stable identifier (``"c0001"``...).
        text: the text, read as a response to :data:`CURATED_PROMPT`.
        label: 1 = toxic, 0 = not toxic (in general: 1 = the behaviour is present); must agree with ``kind``.
        kind: ``"toxic"``, ``"clean"`` or ``"hard_negative"`` (clean, but shares surface features
            with toxic text); ``"negative"`` in the sentiment set, ``"positive"`` in a user's own set
            (see :data:`SET_KIND_LABELS`, :data:`GENERIC_KIND_LABELS`).
        topic: short category (``"driving"``, ``"politics"``, ...).
    """

    id: str
    text: str
    label: int
    kind: str
    topic: str

    def __post_init__(self) -> None:
        for name in ("id", "text", "kind", "topic"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"CuratedText.{name} must be a string, got {type(value).__name__}")
        if not self.id:
            raise ValueError("CuratedText.id must be non-empty")
        if not self.text.strip():
            raise ValueError(f"CuratedText {self.id!r} has empty text")
        if not self.topic.strip():
            raise ValueError(f"CuratedText {self.id!r} has an empty topic")
        if self.kind not in _ALL_KIND_LABELS:
            raise ValueError(
                f"CuratedText {self.id!r} has kind {self.kind!r}; expected one of {tuple(_ALL_KIND_LABELS)}"
            )
        if isinstance(self.label, bool) or not isinstance(self.label, (int, np.integer)) or self.label not in (0, 1):
            raise ValueError(f"CuratedText {self.id!r} has label {self.label!r}; expected 0 or 1")
        if self.label != _ALL_KIND_LABELS[self.kind]:
            raise ValueError(
                f"CuratedText {self.id!r}: kind {self.kind!r} implies label {_ALL_KIND_LABELS[self.kind]}, got {self.label}"
            )

    def to_dict(self) -> dict[str, str | int]:
        return dataclasses.asdict(self)


@functools.cache
def _load(filename: str) -> tuple[CuratedText, ...]:
    raw = resources.files("probe_lens.data").joinpath(filename).read_text(encoding="utf-8")
    return tuple(CuratedText(**json.loads(line)) for line in raw.splitlines() if line.strip())


def load_curated(name: str = "toxicity") -> list[CuratedText]:
    """The curated set ``name`` (see :data:`CURATED_SETS`), in id order. Evaluation only.

    Raises:
        ValueError: ``name`` is not registered (the message lists the valid names and the closest match).
    """
    if name not in CURATED_SETS:
        valid = sorted(CURATED_SETS)
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown curated set {name!r}; valid names: {valid}{hint}")
    rows = _load(CURATED_SETS[name])
    kinds = SET_KIND_LABELS.get(name)
    stray = sorted({r.kind for r in rows} - set(kinds)) if kinds else []
    if stray and kinds:
        raise ValueError(f"curated set {name!r} holds kind(s) {stray}; it uses {tuple(kinds)}")
    return list(rows)


def curated_arrays(rows: Iterable[CuratedText]) -> tuple[list[str], Int[np.ndarray, " n"]]:
    """Texts and int64 labels (1 = toxic), shape ``(n,)``, in the order of ``rows``."""
    rows = list(rows)
    return [r.text for r in rows], np.asarray([r.label for r in rows], dtype=np.int64)
