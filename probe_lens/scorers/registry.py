"""Scorers by name: ``get_scorer(name)`` everywhere, ``register_scorer(name, factory)`` to add one.

A factory is called as ``factory(device=<canonical device string>, **options)`` and returns a scorer
(``score(texts) -> P(positive)`` and ``describe()``; see :class:`~probe_lens.scorers.Scorer`).
``"auto"`` picks the best toxicity scorer available offline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from probe_lens._registry import Registry
from probe_lens.scorers.base import Scorer, ScorerUnavailableError, check_device
from probe_lens.scorers.detoxify_scorer import DetoxifyScorer
from probe_lens.scorers.profanity import ProfanityCheckScorer
from probe_lens.scorers.vader import VaderScorer

ScorerFactory = Callable[..., Any]
"""``factory(device: str, **options) -> scorer``."""

SCORERS: Registry[ScorerFactory] = Registry(
    "scorer", hint="Add one with probe_lens.scorers.register_scorer(name, factory)."
)
"""Every scorer :func:`get_scorer` can build, by name (built-ins: auto, detoxify, profanity, vader)."""

_AUTO_OPTIONS = frozenset({"model_type", "checkpoint", "huggingface_config_path", "batch_size"})


def register_scorer(name: str, factory: ScorerFactory, *, replace: bool = False) -> ScorerFactory:
    """Make ``factory`` available as ``get_scorer(name, device=..., **options)``; returns it.

    A scorer class with a ``device`` argument is a factory as it is. Another factory under a taken name
    needs ``replace=True``.
    """
    if not callable(factory):
        raise TypeError(f"a scorer factory is a callable (device=..., **options) -> scorer, got {factory!r}")
    return SCORERS.register(name, factory, replace=replace)


def get_scorer(name: str = "auto", *, device: Any = "cpu", **kwargs: Any) -> Scorer:
    """A scorer by name: a toxicity scorer, ``"vader"`` (P(negative sentiment)) or one registered by you.

    ``device`` (default ``"cpu"``) is where a neural scorer runs (``"cuda"``, ``"cuda:1"``: Detoxify
    on a GPU); alt-profanity-check is a bag-of-words model and always runs on the CPU.

    * ``"detoxify"``: :class:`DetoxifyScorer` (kwargs: ``model_type``, ``checkpoint``,
      ``huggingface_config_path``, ``batch_size``, ``allow_download``).
    * ``"profanity"``: :class:`ProfanityCheckScorer` (no other kwargs).
    * ``"vader"``: :class:`VaderScorer`, P(negative sentiment) (no other kwargs; CPU).
    * ``"auto"``: Detoxify if its weights are available locally (kwargs as for detoxify, never
      downloads), else alt-profanity-check. ``describe()`` of the result records
      ``chosen_by="auto"`` and the reason.

    An explicitly named scorer that cannot run raises :class:`ScorerUnavailableError`; it never
    falls back silently.
    """
    factory = SCORERS.get(name)
    scorer = factory(device=check_device(device), **kwargs)
    missing = [m for m in ("score", "describe") if not callable(getattr(scorer, m, None))]
    if missing:
        raise TypeError(f"the factory of scorer {name!r} returned a {type(scorer).__name__}, which lacks {missing}")
    return scorer


def _without_options(cls: type[Scorer]) -> ScorerFactory:
    """The factory of a scorer class that takes no options (and runs on the CPU whatever the device)."""

    def make(device: str, **options: Any) -> Scorer:
        if options:
            raise TypeError(f"the {cls.name!r} scorer takes no options besides device, got {sorted(options)}")
        return cls()

    return make


def _auto(device: str, **options: Any) -> Scorer:
    """Detoxify when its weights are local (never downloads), else alt-profanity-check; records why."""
    unknown = set(options) - _AUTO_OPTIONS
    if unknown:
        raise TypeError(f"get_scorer('auto') got unknown option(s) {sorted(unknown)}; allowed: {sorted(_AUTO_OPTIONS)}")
    ok, why = DetoxifyScorer.why(
        options.get("model_type", "original"),
        checkpoint=options.get("checkpoint"),
        huggingface_config_path=options.get("huggingface_config_path"),
    )
    if ok:
        scorer: Scorer = DetoxifyScorer(device=device, **options)
        reason = f"detoxify available locally ({why})"
    else:
        try:
            scorer = ProfanityCheckScorer()
        except ScorerUnavailableError as exc:
            raise ScorerUnavailableError(
                f"no toxicity scorer is available: detoxify ({why}) and alt-profanity-check ({exc})"
            ) from exc
        reason = f"detoxify unavailable ({why}); fell back to alt-profanity-check"
    scorer.chosen_by = "auto"
    scorer.choice_reason = reason
    return scorer


register_scorer("auto", _auto)
register_scorer("detoxify", DetoxifyScorer)
register_scorer("profanity", _without_options(ProfanityCheckScorer))
register_scorer("vader", _without_options(VaderScorer))
