"""``get_scorer(name)``: one entry point; ``"auto"`` picks the best scorer available offline."""

from __future__ import annotations

from typing import Any

from probe_lens.scorers.base import Scorer, ScorerUnavailableError, check_device
from probe_lens.scorers.detoxify_scorer import DetoxifyScorer
from probe_lens.scorers.profanity import ProfanityCheckScorer
from probe_lens.scorers.vader import VaderScorer

SCORERS = ("auto", "detoxify", "profanity", "vader")


def get_scorer(name: str = "auto", *, device: Any = "cpu", **kwargs: Any) -> Scorer:
    """A scorer by name: a toxicity scorer, or ``"vader"`` (P(negative sentiment)).

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
    if not isinstance(name, str) or name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; valid names: {list(SCORERS)}")
    device = check_device(device)
    if name == "profanity":
        if kwargs:
            raise TypeError(f"the 'profanity' scorer takes no options besides device, got {sorted(kwargs)}")
        return ProfanityCheckScorer()
    if name == "vader":
        if kwargs:
            raise TypeError(f"the 'vader' scorer takes no options besides device, got {sorted(kwargs)}")
        return VaderScorer()
    if name == "detoxify":
        return DetoxifyScorer(device=device, **kwargs)

    allowed = {"model_type", "checkpoint", "huggingface_config_path", "batch_size"}
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"get_scorer('auto') got unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    ok, why = DetoxifyScorer.why(
        kwargs.get("model_type", "original"),
        checkpoint=kwargs.get("checkpoint"),
        huggingface_config_path=kwargs.get("huggingface_config_path"),
    )
    if ok:
        scorer: Scorer = DetoxifyScorer(device=device, **kwargs)
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
