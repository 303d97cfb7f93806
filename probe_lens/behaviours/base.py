"""``Behaviour``: what a study detects and trains against, as one record instead of words spread in code.

A behaviour names its two classes, the output scorer that labels responses (P(positive class)),
the prompts that invite it, an optional curated labelled set for off-policy evaluation, the
decision threshold and the prefix of its metric names.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probe_lens._common import check_threshold, metric_word as _slug
from probe_lens.behaviours import _jsonl
from probe_lens.data.curated import CURATED_PROMPT, CuratedText
from probe_lens.data.prompts import Prompt
from probe_lens.scorers.registry import SCORERS

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

METRIC_ROLES: tuple[str, ...] = (
    "rate",
    "mean",
    "expected_max",
    "probability",
    "probe_p",
    "n_positive",
    "n_negative",
    "n_fit_positive",
    "n_onpolicy_positive",
    "proj_positive",
    "proj_negative",
)
"""The roles :attr:`Behaviour.metric_keys` names; see there for the keys of the toxicity behaviour."""


@dataclasses.dataclass(frozen=True, eq=False)  # compared and hashed by identity: it holds loaders
class Behaviour:
    """A behaviour to probe for and train against.

    Args:
        name: registry name, lower-case ``[a-z][a-z0-9_]*`` (``"toxicity"``, ``"sentiment"``).
        positive_label: the class the scorer and probes detect, label 1 (``"toxic"``, ``"negative"``).
        negative_label: the other class, label 0 (``"clean"``, ``"not negative"``).
        prompt_loader: zero-argument callable returning the :class:`~probe_lens.data.prompts.Prompt`
            rows: tag ``"provocative"`` invites the behaviour, ``"neutral"`` does not.
        scorer: a name for :func:`probe_lens.scorers.get_scorer` (resolved lazily by
            :meth:`get_scorer`) or a ready object with ``score(texts) -> P(positive)`` and ``describe()``.
        scorer_kwargs: options for the named scorer (not allowed with an object).
        curated_loader: zero-argument callable returning the curated labelled
            :class:`~probe_lens.data.curated.CuratedText` rows (evaluation only), or None.
        threshold: P(positive) at and above which a response counts as positive, in (0, 1).
        metric_prefix: the word in metric names (``eval/{prefix}_rate``); default ``name``.
        curated_prompt: the fixed prompt curated texts are read as responses to.
        description: one line for humans.
        prompts_source, curated_source: where the rows come from, for :meth:`describe`.
    """

    name: str
    positive_label: str
    negative_label: str
    prompt_loader: Callable[[], Sequence[Prompt]]
    scorer: Any = "auto"
    scorer_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    curated_loader: Callable[[], Sequence[CuratedText]] | None = None
    threshold: float = 0.5
    metric_prefix: str | None = None
    curated_prompt: str = CURATED_PROMPT
    description: str = ""
    prompts_source: str | None = None
    curated_source: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                f"a behaviour name must match [a-z][a-z0-9_]* (it is used in keys and folders), got {self.name!r}"
            )
        for field in ("positive_label", "negative_label"):
            value = getattr(self, field)
            if not isinstance(value, str) or not _slug(value):
                raise ValueError(f"behaviour {self.name!r}: {field} must be a non-empty word, got {value!r}")
        if _slug(self.positive_label) == _slug(self.negative_label):
            raise ValueError(
                f"behaviour {self.name!r}: positive and negative labels must differ, both are {self.positive_label!r}"
            )
        prefix = self.name if self.metric_prefix is None else self.metric_prefix
        if not isinstance(prefix, str) or not _NAME_RE.match(prefix):
            raise ValueError(f"behaviour {self.name!r}: metric_prefix must match [a-z][a-z0-9_]*, got {prefix!r}")
        object.__setattr__(self, "metric_prefix", prefix)
        object.__setattr__(
            self, "threshold", check_threshold(self.threshold, name=f"behaviour {self.name!r} threshold")
        )
        if not callable(self.prompt_loader):
            raise TypeError(f"behaviour {self.name!r}: prompt_loader must be a callable returning Prompt rows")
        if self.curated_loader is not None and not callable(self.curated_loader):
            raise TypeError(
                f"behaviour {self.name!r}: curated_loader must be a callable returning CuratedText rows, or None"
            )
        if not isinstance(self.curated_prompt, str) or not self.curated_prompt:
            raise ValueError(f"behaviour {self.name!r}: curated_prompt must be a non-empty string")
        if not isinstance(self.scorer_kwargs, Mapping) or not all(isinstance(k, str) for k in self.scorer_kwargs):
            raise TypeError(f"behaviour {self.name!r}: scorer_kwargs must be a mapping of option name -> value")
        object.__setattr__(self, "scorer_kwargs", types.MappingProxyType(dict(self.scorer_kwargs)))
        if isinstance(self.scorer, str):
            if self.scorer not in SCORERS:
                close = difflib.get_close_matches(self.scorer, SCORERS.names(), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"behaviour {self.name!r}: unknown scorer {self.scorer!r}{hint}; valid names: {SCORERS.names()}"
                )
        else:
            missing = [m for m in ("score", "describe") if not callable(getattr(self.scorer, m, None))]
            if missing:
                raise TypeError(
                    f"behaviour {self.name!r}: scorer must be a scorer name or an object with score(texts) and "
                    f"describe() (see probe_lens.scorers.Scorer); {type(self.scorer).__name__} lacks {missing}"
                )
            if self.scorer_kwargs:
                raise TypeError(
                    f"behaviour {self.name!r}: scorer_kwargs apply to a scorer name, not to a scorer object"
                )

    # ---- data ------------------------------------------------------------------------------

    def load_prompts(self) -> list[Prompt]:
        """The prompt rows (a fresh list): unique ids, at least one ``"provocative"``."""
        rows = list(self.prompt_loader())
        bad = [i for i, p in enumerate(rows) if not isinstance(p, Prompt)]
        if bad:
            raise TypeError(f"behaviour {self.name!r}: its prompt loader returned a non-Prompt at index {bad[0]}")
        dup = sorted(i for i, k in Counter(p.id for p in rows).items() if k > 1)
        if dup:
            raise ValueError(f"behaviour {self.name!r}: prompt ids must be unique; duplicated: {dup[:5]}")
        if not any(p.tag == "provocative" for p in rows):
            raise ValueError(f"behaviour {self.name!r}: no prompt is tagged 'provocative' (inviting the behaviour)")
        return rows

    @property
    def has_curated(self) -> bool:
        """True if the behaviour ships a curated labelled set."""
        return self.curated_loader is not None

    def load_curated(self) -> list[CuratedText]:
        """The curated labelled rows (a fresh list; evaluation only, never tune on them)."""
        if self.curated_loader is None:
            raise ValueError(
                f"behaviour {self.name!r} has no curated set; pass curated_path= (or curated_loader=) to add one"
            )
        rows = list(self.curated_loader())
        bad = [i for i, r in enumerate(rows) if not isinstance(r, CuratedText)]
        if bad:
            raise TypeError(f"behaviour {self.name!r}: its curated loader returned a non-CuratedText at index {bad[0]}")
        if len({r.label for r in rows}) < 2:
            raise ValueError(f"behaviour {self.name!r}: the curated set needs both labels (0 and 1)")
        return rows

    # ---- scoring ---------------------------------------------------------------------------

    def get_scorer(self, device: Any = "cpu") -> Any:
        """The scorer: built now by :func:`probe_lens.scorers.get_scorer` for a name, else the object itself.

        A named scorer is built on every call (Detoxify loads weights); keep the result.
        """
        if not isinstance(self.scorer, str):
            return self.scorer
        import probe_lens.scorers as scorers

        return scorers.get_scorer(self.scorer, device=device, **self.scorer_kwargs)

    def label(self, scores: Any) -> np.ndarray:
        """Binary labels (int64, 1 = positive class) from P(positive): ``scores >= threshold``."""
        from probe_lens.scorers import label

        return label(scores, self.threshold)

    @property
    def prelabelled(self) -> bool:
        """True when the scorer only looks labels up (:class:`~probe_lens.behaviours.LabelledRows`): it
        cannot label fresh generations, so a study reads its probe data from the rows (see ``Study``)."""
        from probe_lens.behaviours.labelled import LabelledRows

        return isinstance(self.scorer, LabelledRows)

    def __copy__(self) -> Behaviour:
        return self

    def __deepcopy__(self, memo: dict) -> Behaviour:
        return self  # immutable, and it holds loaders: a copy is the same behaviour

    # ---- names -----------------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, str]:
        """``(negative_label, positive_label)``, indexed by the 0/1 label."""
        return (self.negative_label, self.positive_label)

    @property
    def noun(self) -> str:
        """The behaviour as a word for titles: the metric prefix with spaces (``"toxicity"``)."""
        return str(self.metric_prefix).replace("_", " ")

    @property
    def metric_keys(self) -> dict[str, str]:
        """Metric and record key per role (:data:`METRIC_ROLES`); for toxicity, today's keys unchanged.

        ``rate`` ``eval/toxicity_rate``, ``mean`` ``eval/mean_toxicity``, ``expected_max``
        ``eval/expected_max_toxicity``, ``probability`` ``eval/toxicity_probability``, ``probe_p``
        ``eval/probe_p_toxic``, ``n_positive`` ``n_toxic``, ``n_negative`` ``n_clean``,
        ``n_fit_positive`` ``n_fit_toxic``, ``n_onpolicy_positive`` ``n_onpolicy_toxic``,
        ``proj_positive`` ``proj_toxic``, ``proj_negative`` ``proj_clean`` (geometry stats, used as
        ``geometry/<hook>/proj_toxic``). The prefix fills the first four, the class names the rest.
        """
        p, pos, neg = self.metric_prefix, _slug(self.positive_label), _slug(self.negative_label)
        return {
            "rate": f"eval/{p}_rate",
            "mean": f"eval/mean_{p}",
            "expected_max": f"eval/expected_max_{p}",
            "probability": f"eval/{p}_probability",
            "probe_p": f"eval/probe_p_{pos}",
            "n_positive": f"n_{pos}",
            "n_negative": f"n_{neg}",
            "n_fit_positive": f"n_fit_{pos}",
            "n_onpolicy_positive": f"n_onpolicy_{pos}",
            "proj_positive": f"proj_{pos}",
            "proj_negative": f"proj_{neg}",
        }

    def describe(self) -> dict[str, Any]:
        """JSON-ready record of the behaviour, to save next to a run's results.

        It holds :attr:`metric_keys`, so a report can find a run's columns without the behaviour
        being registered where the report runs.
        """
        if isinstance(self.scorer, str):
            scorer = {"name": self.scorer, "kwargs": dict(self.scorer_kwargs)}
        else:
            scorer = self.scorer.describe()
        return {
            "name": self.name,
            "positive_label": self.positive_label,
            "negative_label": self.negative_label,
            "threshold": self.threshold,
            "metric_prefix": self.metric_prefix,
            "metric_keys": self.metric_keys,
            "scorer": scorer,
            "prompts": self.prompts_source,
            "curated": self.curated_source,
            "curated_prompt": self.curated_prompt,
            "description": self.description,
        }

    # ---- bring your own ----------------------------------------------------------------------

    @classmethod
    def from_jsonl(
        cls,
        name: str,
        prompts_path: str | Path,
        *,
        positive_label: str,
        negative_label: str,
        scorer: Any,
        scorer_kwargs: Mapping[str, Any] | None = None,
        curated_path: str | Path | None = None,
        threshold: float = 0.5,
        metric_prefix: str | None = None,
        provocative_tag: str = "provocative",
        neutral_tag: str = "neutral",
        curated_prompt: str = CURATED_PROMPT,
        description: str = "",
    ) -> Behaviour:
        """A behaviour from your own JSONL files, read and checked now (errors name file and line).

        Args:
            prompts_path: one ``{"text", "tag", "id"?, "topic"?}`` object per line; ``tag`` is
                ``provocative_tag`` (invites the behaviour) or ``neutral_tag``. Missing ids become
                ``"p<line>"``, missing topics ``"none"``.
            curated_path: optional ``{"text", "label", "kind"?, "topic"?, "id"?}`` per line, label 1 =
                the behaviour is present; kind ``positive`` / ``hard_negative`` / ``clean`` (default
                from the label), or the hard kinds ``implicit`` / ``lexical_trap`` / ``matched_negative``
                (:data:`probe_lens.data.curated.GENERIC_KIND_LABELS`; ``curated.hard_subset`` selects them).
            scorer, scorer_kwargs, positive_label, negative_label, threshold, metric_prefix,
            curated_prompt, description: as for :class:`Behaviour`.
        """
        text, source = _jsonl.read_text(prompts_path)
        prompts = tuple(_jsonl.read_prompts(text, source, provocative_tag=provocative_tag, neutral_tag=neutral_tag))
        curated = None
        if curated_path is not None:
            ctext, csource = _jsonl.read_text(curated_path)
            curated = tuple(_jsonl.read_curated(ctext, csource))
        return cls(
            name=name,
            positive_label=positive_label,
            negative_label=negative_label,
            prompt_loader=lambda: prompts,
            scorer=scorer,
            scorer_kwargs=scorer_kwargs or {},
            curated_loader=(lambda: curated) if curated is not None else None,
            threshold=threshold,
            metric_prefix=metric_prefix,
            curated_prompt=curated_prompt,
            description=description,
            prompts_source=source,
            curated_source=str(curated_path) if curated_path is not None else None,
        )

    @classmethod
    def from_labelled_jsonl(
        cls,
        name: str,
        path: str | Path,
        *,
        positive_label: str,
        negative_label: str,
        curated_path: str | Path | None = None,
        metric_prefix: str | None = None,
        provocative_tag: str = "provocative",
        neutral_tag: str = "neutral",
        curated_prompt: str = CURATED_PROMPT,
        description: str = "",
    ) -> Behaviour:
        """A behaviour from pre-labelled rows, with no scorer: labels are looked up, not computed.

        ``path`` holds one ``{"prompt", "response", "label", "tag"?, "topic"?}`` object per line
        (label 1 = the behaviour is present; a missing tag means ``provocative_tag``). The prompts
        are the distinct prompt texts (ids ``"l0001"``... in first-seen order); the scorer is a
        :class:`~probe_lens.behaviours.labelled.LabelledRows` over the rows (threshold 0.5), which
        raises :class:`~probe_lens.behaviours.labelled.UnlabelledTextError` for text it was not given.
        """
        from probe_lens.behaviours.labelled import LabelledRows

        text, source = _jsonl.read_text(path)
        rows = _jsonl.read_labelled(text, source, provocative_tag=provocative_tag, neutral_tag=neutral_tag)
        seen: dict[str, dict[str, Any]] = {}
        for r in rows:
            first = seen.setdefault(r["prompt"], r)
            if first["tag"] != r["tag"]:
                raise _jsonl.BehaviourFileError(
                    f"{source}:{r['line']}: this prompt is tagged {r['tag']!r} here "
                    f"but {first['tag']!r} on line {first['line']}"
                )
        prompts = tuple(
            Prompt(id=f"l{k:04d}", text=p, tag=r["tag"], topic=r["topic"]) for k, (p, r) in enumerate(seen.items(), 1)
        )
        if not any(p.tag == "provocative" for p in prompts):
            raise _jsonl.BehaviourFileError(
                f"{source}: no row is tagged {provocative_tag!r}; the behaviour needs prompts that invite it"
            )
        curated = None
        if curated_path is not None:
            ctext, csource = _jsonl.read_text(curated_path)
            curated = tuple(_jsonl.read_curated(ctext, csource))
        return cls(
            name=name,
            positive_label=positive_label,
            negative_label=negative_label,
            prompt_loader=lambda: prompts,
            scorer=LabelledRows([(r["prompt"], r["response"], r["label"]) for r in rows], source=source),
            curated_loader=(lambda: curated) if curated is not None else None,
            threshold=0.5,
            metric_prefix=metric_prefix,
            curated_prompt=curated_prompt,
            description=description,
            prompts_source=source,
            curated_source=str(curated_path) if curated_path is not None else None,
        )
