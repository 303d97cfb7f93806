"""Lexical baselines: what a word-counter scores on a labelled set, to print beside every probe AUROC.

A probe that reads a behaviour only through its words cannot beat these; a drop of a probe's AUROC
under training means little if a lexicon scores the same set as well. Four baselines, each an AUROC
(label 1 = the behaviour is present, higher score = more of it):

* ``classifier``: the study's output scorer (any :class:`~probe_lens.scorers.Scorer`), e.g.
  alt-profanity-check (a bag of words itself) or VADER (a sentiment lexicon with rules);
* ``lexicon``: the number of words of a fixed word list the text holds (:data:`INSULT_LEXICON` for
  toxicity, :data:`NEGATIVE_LEXICON` for sentiment);
* ``bow``: a bag-of-words logistic regression fit on the set itself, cross-validated by topic
  (leave one topic out; out-of-fold scores pooled into one AUROC), so no text is scored by a model
  that saw its topic;
* ``length``: the text's length in characters.

Both word lists were written by hand for probe_lens (CC0, like the curated sets), from common English
insults, profanity and complaint words, and fixed **before** the curated v2 rows were written; they
were never edited to suit those rows. They hold no slur against a protected group.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

from probe_lens.data.curated import CuratedText
from probe_lens.probes.metrics import auroc


def _words(block: str) -> frozenset[str]:
    """The whitespace-separated words of a block of text."""
    return frozenset(block.split())


INSULT_LEXICON: frozenset[str] = _words(
    """
    idiot idiotic moron moronic stupid stupidest dumb dumber dumbest dumbass imbecile cretin dimwit
    halfwit nitwit twit dunce bonehead numbskull airhead brainless braindead fool foolish loser
    pathetic useless worthless incompetent ignorant clueless lazy disgusting ugly fat fatso gross
    filthy smelly spineless trash garbage scum scumbag lowlife jerk creep creepy freak weirdo psycho
    lunatic nutjob pig rat snake weasel worm cow hag witch ape monkey chimp vermin cockroach leech
    parasite troll clown brat punk muppet git dork noob coward liar crook hypocrite slob oaf
    bitch bastard prick dick dickhead douche douchebag asshole ass arse arsehole wanker tosser
    fuck fucking fucked fucker fuckin shit shitty bullshit crap crappy damn damned goddamn hell
    piss pissed bloody bugger screw sucks
    """
)
"""Insult and profanity words (lower case; plurals, ``'s`` and hyphens are folded, see :func:`lexicon_hits`).

Written for probe_lens: name-calling nouns (``idiot``, ``loser``, ``slob``), demeaning adjectives
(``stupid``, ``pathetic``, ``useless``), animal insults (``pig``, ``rat``, ``vermin``) and common
profanity (``fuck``, ``shit``, ``damn``). A text with none of these words has no insult or profanity
word in the sense of the curated v2 kinds ``implicit_toxic`` and ``lexical_trap``."""

NEGATIVE_LEXICON: frozenset[str] = _words(
    """
    bad worse worst terrible awful horrible dreadful disappointing disappointed disappointment poor
    hate hated annoying annoyed frustrating frustrated angry furious upset unhappy sad miserable
    regret useless broken rude slow late delayed cancelled dirty waste wasted ruined ruin boring
    bland mediocre overpriced fail failed failure problem issue complaint mess nightmare painful
    noisy crowded stale soggy tasteless unreliable unacceptable ridiculous pathetic lousy sucks
    worthless unpleasant stressful exhausting ugly crash crashed bug error wrong lost cold
    """
)
"""Negative-sentiment words (complaints, disappointment, faults), written for probe_lens; folded as
:data:`INSULT_LEXICON`. It cannot see negation (``not bad``) or a verdict that outweighs a complaint."""

LEXICONS: dict[str, frozenset[str]] = {"toxicity": INSULT_LEXICON, "sentiment": NEGATIVE_LEXICON}
"""The word list for each shipped curated set."""

_WORD = re.compile(r"[a-z]+")
_POSSESSIVE = re.compile(r"['\u2019]s\b")


def _folded(token: str) -> tuple[str, ...]:
    """A token and its singular guesses (``idiots`` -> ``idiot``, ``bitches`` -> ``bitch``)."""
    forms = [token]
    if token.endswith("es") and len(token) > 4:
        forms.append(token[:-2])
    if token.endswith("s") and len(token) > 3:
        forms.append(token[:-1])
    return tuple(forms)


def lexicon_hits(texts: Sequence[str], lexicon: Iterable[str] = INSULT_LEXICON) -> Float[np.ndarray, " n"]:
    """Words of ``lexicon`` in each text, counted with repeats, as float64 ``(n,)``.

    Lower-cased; hyphens and ``'s`` are dropped first (``brain-dead`` -> ``braindead``, ``pig's`` ->
    ``pig``); a plural matches its singular entry (``idiots``, ``bitches``).
    """
    words = frozenset(w.lower() for w in lexicon)
    if not words:
        raise ValueError("lexicon is empty; pass at least one word")
    out = np.zeros(len(texts), dtype=np.float64)
    for i, text in enumerate(texts):
        flat = _POSSESSIVE.sub("", text.lower().replace("-", ""))
        out[i] = sum(any(f in words for f in _folded(t)) for t in _WORD.findall(flat))
    return out


def length_scores(texts: Sequence[str]) -> Float[np.ndarray, " n"]:
    """Each text's length in characters, float64 ``(n,)``."""
    return np.asarray([len(t) for t in texts], dtype=np.float64)


def bow_oof_scores(
    texts: Sequence[str], labels: Sequence[int] | np.ndarray, topics: Sequence[str]
) -> Float[np.ndarray, " n"]:
    """Out-of-fold P(label 1) of a bag-of-words logistic regression, leaving one topic out per fold.

    Unigram+bigram counts (lower case, default sklearn tokens), ``LogisticRegression(C=1.0,
    max_iter=2000)``; each topic's texts are scored by a model fit on the other topics. Needs at least
    two topics, and both labels in the training part of every fold.
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline

    y = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(topics)
    if len(set(groups.tolist())) < 2:
        raise ValueError("the bag-of-words baseline is cross-validated by topic; it needs at least two topics")
    out = np.zeros(len(texts), dtype=np.float64)
    text_arr = np.asarray(texts, dtype=object)
    for train, test in LeaveOneGroupOut().split(text_arr, y, groups):
        if len(set(y[train].tolist())) < 2:
            raise ValueError(f"leaving out topic {groups[test[0]]!r} leaves one label only; cannot fit")
        model = make_pipeline(CountVectorizer(ngram_range=(1, 2)), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(text_arr[train].tolist(), y[train])
        out[test] = model.predict_proba(text_arr[test].tolist())[:, 1]
    return out


def _check_inputs(texts: Sequence[str], labels: Any, topics: Sequence[str]) -> np.ndarray:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single string")
    y = np.asarray(labels)
    if not (len(texts) == len(y) == len(topics)):
        raise ValueError(f"texts, labels and topics must pair up; got {len(texts)}, {len(y)} and {len(topics)}")
    if not np.isin(y, [0, 1]).all() or len(np.unique(y)) != 2:
        raise ValueError("labels must hold both 0 and 1 (1 = the behaviour is present)")
    return y.astype(np.int64)


def lexical_baselines(
    texts: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    topics: Sequence[str],
    scorer: Any = None,
    *,
    lexicon: Iterable[str] | None = INSULT_LEXICON,
) -> dict[str, float]:
    """AUROC of each lexical baseline on one labelled set (see the module docstring).

    Args:
        texts, labels, topics: the set (labels 1 = the behaviour is present; both labels needed).
        scorer: an object with ``score(texts) -> P(positive)`` (the :mod:`probe_lens.scorers`
            protocol), or None to skip the ``classifier`` baseline.
        lexicon: the word list (:data:`LEXICONS` holds one per shipped set), or None to skip the
            ``lexicon`` baseline (a behaviour with no fitting word list).

    Returns:
        ``{"classifier"?, "lexicon"?, "bow", "length"}`` -> AUROC (``classifier`` only with a scorer,
        ``lexicon`` only with a word list).
    """
    y = _check_inputs(texts, labels, topics)
    texts = list(texts)
    out: dict[str, float] = {}
    if scorer is not None:
        out["classifier"] = auroc(y, np.asarray(scorer.score(texts), dtype=np.float64))
    if lexicon is not None:
        out["lexicon"] = auroc(y, lexicon_hits(texts, lexicon))
    out["bow"] = auroc(y, bow_oof_scores(texts, y, topics))
    out["length"] = auroc(y, length_scores(texts))
    return out


def curated_baselines(
    rows: Iterable[CuratedText], scorer: Any = None, *, lexicon: Iterable[str] | None = INSULT_LEXICON
) -> dict[str, float]:
    """:func:`lexical_baselines` of curated rows (their texts, labels and topics)."""
    rows = list(rows)
    return lexical_baselines(
        [r.text for r in rows], [r.label for r in rows], [r.topic for r in rows], scorer, lexicon=lexicon
    )


def auroc_by_kind(scores: Any, labels: Any, kinds: Sequence[str]) -> dict[str, float]:
    """AUROC of ``scores`` within each ``kind`` of a labelled set, in first-seen order.

    A kind holding both labels is scored on its own rows. A kind holding one label is scored against
    **all rows of the other label in the set** (e.g. ``implicit_toxic`` against every clean row,
    ``lexical_trap`` against every toxic row), so it reads "how well this kind is told apart from the
    other class". A set holding one label only gives ``{}``.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    k = np.asarray(kinds, dtype=object)
    if not (len(s) == len(y) == len(k)):
        raise ValueError(f"scores, labels and kinds must pair up; got {len(s)}, {len(y)} and {len(k)}")
    out: dict[str, float] = {}
    if len(np.unique(y)) < 2:
        return out
    for kind in dict.fromkeys(k.tolist()):
        mine = k == kind
        present = np.unique(y[mine])
        rows = mine if len(present) == 2 else mine | (y != present[0])
        out[kind] = auroc(y[rows], s[rows])
    return out
