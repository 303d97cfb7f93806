"""``BehaviourNames``: a behaviour's words and metric keys without its data, for tables, figures and logs.

A report reads them from a run's saved record (``Behaviour.describe()``), so a run of a behaviour that
is not registered where the report runs still renders with its own words.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from typing import Any

from probe_lens._common import metric_word
from probe_lens.behaviours.base import METRIC_ROLES, Behaviour


@dataclasses.dataclass(frozen=True)
class BehaviourNames:
    """What a behaviour is called: its class names, decision threshold, noun and metric keys.

    Build with :meth:`of` from a :class:`Behaviour`, its ``describe()`` record, a registered name,
    or None (the default behaviour, toxicity).
    """

    name: str
    positive_label: str
    negative_label: str
    threshold: float
    metric_prefix: str
    metric_keys: Mapping[str, str]

    @property
    def noun(self) -> str:
        """The behaviour as a word for titles (``"toxicity"``, ``"negativity"``)."""
        return self.metric_prefix.replace("_", " ")

    @property
    def class_names(self) -> tuple[str, str]:
        """``(negative_label, positive_label)``, indexed by the 0/1 label."""
        return (self.negative_label, self.positive_label)

    @property
    def class_words(self) -> tuple[str, str]:
        """The class names as metric-key words (``("clean", "toxic")``, ``("not_negative", "negative")``)."""
        return (metric_word(self.negative_label), metric_word(self.positive_label))

    @classmethod
    def of(cls, behaviour: BehaviourNames | Behaviour | Mapping[str, Any] | str | None = None) -> BehaviourNames:
        """The names of ``behaviour``: a Behaviour, its ``describe()`` record, a registered name, or None (toxicity)."""
        if isinstance(behaviour, BehaviourNames):
            return behaviour
        if behaviour is None or isinstance(behaviour, str):
            from probe_lens.behaviours.registry import DEFAULT_BEHAVIOUR, get_behaviour

            behaviour = get_behaviour(DEFAULT_BEHAVIOUR if behaviour is None else behaviour)
        if isinstance(behaviour, Behaviour):
            return cls(
                behaviour.name,
                behaviour.positive_label,
                behaviour.negative_label,
                behaviour.threshold,
                str(behaviour.metric_prefix),
                types.MappingProxyType(dict(behaviour.metric_keys)),
            )
        if not isinstance(behaviour, Mapping):
            raise TypeError(
                f"a behaviour is a Behaviour, its describe() record, a registered name or None, got {type(behaviour).__name__}"
            )
        missing = [k for k in ("name", "positive_label", "negative_label", "metric_prefix") if not behaviour.get(k)]
        if missing:
            raise ValueError(f"the behaviour record lacks {missing}; pass Behaviour.describe()")
        keys = behaviour.get("metric_keys")
        if not isinstance(keys, Mapping) or set(keys) != set(METRIC_ROLES):
            raise ValueError(f"the behaviour record's metric_keys must name every role {list(METRIC_ROLES)}")
        return cls(
            str(behaviour["name"]),
            str(behaviour["positive_label"]),
            str(behaviour["negative_label"]),
            float(behaviour.get("threshold", 0.5)),
            str(behaviour["metric_prefix"]),
            types.MappingProxyType(dict(keys)),
        )
