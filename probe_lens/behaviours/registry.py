"""The behaviour registry: ``register_behaviour`` once, ``get_behaviour(name)`` everywhere else."""

from __future__ import annotations

import difflib

from probe_lens.behaviours.base import Behaviour

BEHAVIOURS: dict[str, Behaviour] = {}
"""Registered behaviours by name (built-ins: ``toxicity``, ``sentiment``). Add with :func:`register_behaviour`."""

DEFAULT_BEHAVIOUR = "toxicity"
"""The behaviour of the paper, and of every study that names none."""


def register_behaviour(behaviour: Behaviour, *, replace: bool = False) -> Behaviour:
    """Make ``behaviour`` available to :func:`get_behaviour` under its name; returns it.

    Registering a second, different behaviour under a taken name raises ValueError unless
    ``replace=True``; registering the same object again is a no-op.
    """
    if not isinstance(behaviour, Behaviour):
        raise TypeError(f"only Behaviour objects can be registered, got {type(behaviour).__name__}")
    current = BEHAVIOURS.get(behaviour.name)
    if current is not None and current is not behaviour and not replace:
        raise ValueError(f"a behaviour named {behaviour.name!r} is already registered; pass replace=True to replace it")
    BEHAVIOURS[behaviour.name] = behaviour
    return behaviour


def get_behaviour(name: str | Behaviour = DEFAULT_BEHAVIOUR) -> Behaviour:
    """The registered behaviour ``name`` (a :class:`Behaviour` is returned as it is).

    Raises:
        ValueError: ``name`` is not registered (the message lists the names and the closest match).
    """
    if isinstance(name, Behaviour):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a behaviour is given by name (str) or as a Behaviour, got {type(name).__name__}")
    if name in BEHAVIOURS:
        return BEHAVIOURS[name]
    close = difflib.get_close_matches(name, list(BEHAVIOURS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(
        f"unknown behaviour {name!r}{hint}; registered: {sorted(BEHAVIOURS)}. Build your own with "
        "Behaviour.from_jsonl(...) and register_behaviour(...)"
    )
