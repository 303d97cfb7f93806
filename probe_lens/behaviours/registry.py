"""The behaviour registry: ``register_behaviour`` once, ``get_behaviour(name)`` everywhere else."""

from __future__ import annotations

from probe_lens._registry import Registry
from probe_lens.behaviours.base import Behaviour

BEHAVIOURS: Registry[Behaviour] = Registry(
    "behaviour", hint="Build your own with Behaviour.from_jsonl(...) and register_behaviour(...)"
)
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
    return BEHAVIOURS.register(behaviour.name, behaviour, replace=replace)


def get_behaviour(name: str | Behaviour = DEFAULT_BEHAVIOUR) -> Behaviour:
    """The registered behaviour ``name`` (a :class:`Behaviour` is returned as it is).

    Raises:
        ValueError: ``name`` is not registered (the message lists the names and the closest match).
    """
    if isinstance(name, Behaviour):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a behaviour is given by name (str) or as a Behaviour, got {type(name).__name__}")
    return BEHAVIOURS.get(name)
