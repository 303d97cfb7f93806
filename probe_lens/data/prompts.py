"""The embedded prompt set (``prompts.jsonl``, CC0, written by the probe_lens authors) and its splits.

Provocative prompts are openers a base LM is likely to continue rudely (cut-off insults, angry
forum replies, rants); neutral prompts are everyday openers on the same topics. Content warning:
see ``LICENSE-prompts.txt``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Sequence

import numpy as np

TAGS = ("provocative", "neutral")
PROMPTS_FILE = "prompts.jsonl"


@dataclass(frozen=True)
class Prompt:
    """One prompt opener.

    Args:
        id: stable identifier (``"p0001"`` for the embedded set; e.g. ``"civil_comments/train/17"``).
        text: the opener the model continues.
        tag: ``"provocative"`` (likely to draw a toxic continuation) or ``"neutral"``.
        topic: short category (``"drivers"``, ``"cooking"``, ``"civil_comments"``, ...).
    """

    id: str
    text: str
    tag: str
    topic: str

    def __post_init__(self) -> None:
        for name in ("id", "text", "topic"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"Prompt.{name} must be a string, got {type(value).__name__}")
        if not self.id:
            raise ValueError("Prompt.id must be non-empty")
        if not self.text.strip():
            raise ValueError(f"Prompt {self.id!r} has empty text")
        if self.tag not in TAGS:
            raise ValueError(f"Prompt {self.id!r} has tag {self.tag!r}; expected one of {TAGS}")

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=1)
def _load_embedded() -> tuple[Prompt, ...]:
    raw = resources.files("probe_lens.data").joinpath(PROMPTS_FILE).read_text(encoding="utf-8")
    return tuple(Prompt(**json.loads(line)) for line in raw.splitlines() if line.strip())


def load_prompts() -> list[Prompt]:
    """The embedded prompt set (about 480 provocative + 250 neutral English openers), in id order."""
    return list(_load_embedded())


def provocative(prompts: Iterable[Prompt]) -> list[Prompt]:
    """The prompts tagged ``"provocative"``."""
    return [p for p in prompts if p.tag == "provocative"]


def neutral(prompts: Iterable[Prompt]) -> list[Prompt]:
    """The prompts tagged ``"neutral"``."""
    return [p for p in prompts if p.tag == "neutral"]


def texts(prompts: Iterable[Prompt]) -> list[str]:
    """Just the texts, for ``generate``."""
    return [p.text for p in prompts]


@dataclass
class PromptSplits:
    """Disjoint splits of a prompt set.

    Attributes:
        probe_fit: prompts whose continuations fit the probes (before any fine-tuning).
        train: prompts used for fine-tuning.
        eval: held-out prompts for evaluation only (``n_eval_provocative`` provocative ones).
        seed: the seed that made the split.
    """

    probe_fit: list[Prompt]
    train: list[Prompt]
    eval: list[Prompt]
    seed: int = 0

    def as_ids(self) -> dict[str, list[str]]:
        """``{"probe_fit": [...ids], "train": [...], "eval": [...]}`` (JSON-ready, for run records)."""
        return {name: [p.id for p in getattr(self, name)] for name in ("probe_fit", "train", "eval")}


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def split_prompts(
    prompts: Sequence[Prompt] | None = None,
    *,
    seed: int = 0,
    n_eval_provocative: int = 100,
    n_eval_neutral: int = 50,
    fit_fraction: float = 0.5,
) -> PromptSplits:
    """Split prompts into disjoint probe-fit / train / eval sets, deterministically given ``seed``.

    Each tag is permuted on its own (``np.random.default_rng(seed)``, after sorting by id, so the
    input order does not matter). ``eval`` takes the first ``n_eval_provocative`` provocative and
    ``n_eval_neutral`` neutral prompts; the rest is divided ``fit_fraction : 1 - fit_fraction``
    between ``probe_fit`` and ``train``, per tag. Within a split, prompts keep id order.

    Args:
        prompts: prompts to split (default: :func:`load_prompts`). Ids must be unique.
        seed: seed of the permutation.
        n_eval_provocative: provocative prompts held out for evaluation (paper: 100).
        n_eval_neutral: neutral prompts held out for evaluation (0 for an all-provocative set,
            e.g. Civil Comments).
        fit_fraction: share of the non-eval prompts of each tag that go to ``probe_fit``, in (0, 1).
    """
    if prompts is None:
        prompts = load_prompts()
    if isinstance(prompts, (str, bytes)):
        raise TypeError("prompts must be a list of Prompt objects, got a string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("the prompt list is empty; pass at least one Prompt (or None for the embedded set)")
    for i, p in enumerate(prompts):
        if not isinstance(p, Prompt):
            raise TypeError(
                f"prompts[{i}] is a {type(p).__name__}, not a Prompt; build Prompt(id, text, tag, topic) objects"
            )
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"prompt ids must be unique; duplicated: {dup}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    n_eval = {"provocative": _check_count("n_eval_provocative", n_eval_provocative),
              "neutral": _check_count("n_eval_neutral", n_eval_neutral)}
    if not (isinstance(fit_fraction, (int, float)) and 0.0 < float(fit_fraction) < 1.0):
        raise ValueError(f"fit_fraction must be a number in (0, 1), got {fit_fraction!r}")

    rng = np.random.default_rng(int(seed))
    rank = {p.id: k for k, p in enumerate(sorted(prompts, key=lambda p: p.id))}
    parts: dict[str, list[Prompt]] = {"probe_fit": [], "train": [], "eval": []}
    for tag in TAGS:
        group = sorted((p for p in prompts if p.tag == tag), key=lambda p: p.id)
        if not group and n_eval[tag] == 0:
            continue
        rest_needed = 2  # at least one for probe_fit and one for train
        if len(group) < n_eval[tag] + rest_needed:
            raise ValueError(
                f"not enough {tag} prompts: {len(group)} given, but {n_eval[tag]} are held out for eval "
                f"and probe_fit/train need at least one each. Lower n_eval_{tag} or add prompts"
                + (" (use n_eval_neutral=0 for an all-provocative set)" if tag == "neutral" else "")
                + "."
            )
        order = rng.permutation(len(group))
        shuffled = [group[i] for i in order]
        eval_part, rest = shuffled[: n_eval[tag]], shuffled[n_eval[tag] :]
        n_fit = min(max(1, int(round(fit_fraction * len(rest)))), len(rest) - 1)
        parts["eval"] += eval_part
        parts["probe_fit"] += rest[:n_fit]
        parts["train"] += rest[n_fit:]
    for name in parts:
        parts[name].sort(key=lambda p: rank[p.id])
    return PromptSplits(seed=int(seed), **parts)
