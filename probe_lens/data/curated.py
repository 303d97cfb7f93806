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

**Version 2** (``load_curated(name, version=2)``; version 1 stays the default, so results computed on
v1 do not change) adds rows written for probe_lens in a second file per set (``curated_toxicity_v2.jsonl``,
240 rows; ``curated_sentiment_v2.jsonl``, 120 rows), tagged with kinds a word-counter gets wrong:

* toxicity: ``implicit_toxic`` (label 1: contempt, threats, dehumanisation, exclusion, demeaning
  stereotypes, with no word of :data:`probe_lens.data.lexical.INSULT_LEXICON`), ``second_person_toxic``
  (label 1: aimed at "you", never ending in a vocative insult, no lexicon word either),
  ``lexical_trap`` (label 0: insult or profanity words used cleanly: quoted or reported abuse, talk
  about words, self-deprecation, fiction, objects, history) and ``matched_negative`` (label 0:
  blunt criticism, second-person disagreement, anger at a situation, length-matched to the toxic rows);
* sentiment: ``negation_*`` ("not bad at all" / "not worth it"), ``mixed_*`` (praise and complaint,
  judged by the overall verdict) and ``contrast_*`` (others' or expected opinion against the writer's
  own, no sarcasm), each as ``*_negative`` (label 1) and ``*_clean`` (label 0).

The **hard subset** (``subset="hard"``, :data:`HARD_KINDS`) is every v2 row: exactly the kinds above,
chosen before any score was seen (not "rows some baseline misranks", which would tie the yardstick to
one baseline). How the rows were written: ``probe_lens/data/README.md``.

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

CURATED_V2_FILES: dict[str, str] = {"toxicity": "curated_toxicity_v2.jsonl", "sentiment": "curated_sentiment_v2.jsonl"}
"""The rows each registered set gains in version 2 (a second file, so version 1 stays byte-identical)."""

SET_V2_KIND_LABELS: dict[str, dict[str, int]] = {
    "toxicity": {"implicit_toxic": 1, "second_person_toxic": 1, "lexical_trap": 0, "matched_negative": 0},
    "sentiment": {
        "negation_negative": 1,
        "negation_clean": 0,
        "mixed_negative": 1,
        "mixed_clean": 0,
        "contrast_negative": 1,
        "contrast_clean": 0,
    },
}
"""The kinds of each set's v2 rows, and the label each implies (see the module docstring)."""

GENERIC_KIND_LABELS: dict[str, int] = {
    "positive": 1,
    "clean": 0,
    "hard_negative": 0,
    "implicit": 1,
    "lexical_trap": 0,
    "matched_negative": 0,
}
"""Kinds for a user's own curated set (any behaviour): ``positive`` shows the behaviour; ``implicit``
shows it without its usual words, ``lexical_trap`` uses those words without the behaviour,
``matched_negative`` is a clean row matched to the positives in length and form."""

HARD_KINDS: frozenset[str] = frozenset(
    [kind for kinds in SET_V2_KIND_LABELS.values() for kind in kinds] + ["implicit", "lexical_trap", "matched_negative"]
)
"""Kinds of the lexically hard subset (:func:`hard_subset`): every v2 kind, and the generic hard kinds."""

CURATED_VERSIONS = (1, 2)
"""Versions of the shipped sets: 1 = the original rows, 2 = those plus the v2 rows."""

_ALL_KIND_LABELS: dict[str, int] = {
    kind: lab
    for kinds in (*SET_KIND_LABELS.values(), *SET_V2_KIND_LABELS.values(), GENERIC_KIND_LABELS)
    for kind, lab in kinds.items()
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


def _check_kinds(name: str, rows: tuple[CuratedText, ...], kinds: dict[str, int] | None, version: int) -> None:
    stray = sorted({r.kind for r in rows} - set(kinds)) if kinds else []
    if stray and kinds:
        raise ValueError(f"curated set {name!r} v{version} holds kind(s) {stray}; it uses {tuple(kinds)}")


def load_curated(name: str = "toxicity", *, version: int = 1, subset: str = "all") -> list[CuratedText]:
    """The curated set ``name`` (see :data:`CURATED_SETS`), in id order. Evaluation only.

    Args:
        name: ``"toxicity"`` or ``"sentiment"``.
        version: 1 (the original rows, the default) or 2 (those plus the v2 rows, see the module docstring).
        subset: ``"all"`` or ``"hard"`` (the lexically hard rows, :func:`hard_subset`; needs version 2).

    Raises:
        ValueError: ``name`` is not registered (the message lists the valid names and the closest
            match), or ``version`` / ``subset`` is not one of the values above.
    """
    if name not in CURATED_SETS:
        valid = sorted(CURATED_SETS)
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown curated set {name!r}; valid names: {valid}{hint}")
    if isinstance(version, bool) or version not in CURATED_VERSIONS:
        raise ValueError(f"curated version must be one of {CURATED_VERSIONS}, got {version!r}")
    if subset not in ("all", "hard"):
        raise ValueError(f"curated subset must be 'all' or 'hard', got {subset!r}")
    if subset == "hard" and version == 1:
        raise ValueError("the hard subset is part of curated v2; pass version=2")
    if version == 2 and name not in CURATED_V2_FILES:
        raise ValueError(f"curated set {name!r} has no version 2; versions 2 exist for {sorted(CURATED_V2_FILES)}")
    rows = _load(CURATED_SETS[name])
    _check_kinds(name, rows, SET_KIND_LABELS.get(name), 1)
    if version == 2:
        extra = _load(CURATED_V2_FILES[name])
        _check_kinds(name, extra, SET_V2_KIND_LABELS.get(name), 2)
        rows = rows + extra
    return hard_subset(rows) if subset == "hard" else list(rows)


def hard_subset(rows: Iterable[CuratedText]) -> list[CuratedText]:
    """The rows whose kind is in :data:`HARD_KINDS` (any set, a user's included), in the given order."""
    return [r for r in rows if r.kind in HARD_KINDS]


def curated_arrays(rows: Iterable[CuratedText]) -> tuple[list[str], Int[np.ndarray, " n"]]:
    """Texts and int64 labels (1 = toxic), shape ``(n,)``, in the order of ``rows``."""
    rows = list(rows)
    return [r.text for r in rows], np.asarray([r.label for r in rows], dtype=np.int64)
