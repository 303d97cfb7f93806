"""Training objectives by name: ``register_objective(name, objective_cls, config_cls)`` and ``get_objective``.

The built-in objectives register themselves in ``probe_lens.training.objectives``; a new one is a file
with its :class:`~probe_lens.training.Objective` subclass (and config) plus one ``register_objective``
call.
"""

from __future__ import annotations

import dataclasses
import inspect
import re

from probe_lens._registry import Registry
from probe_lens.training.config import TrainConfig
from probe_lens.training.objective import Objective

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RESERVED = ("none",)
"""Names that are no objective (``none``: a study cell that trains nothing)."""


@dataclasses.dataclass(frozen=True)
class RegisteredObjective:
    """A registered objective: its name, its :class:`Objective` class and its config dataclass."""

    name: str
    objective_cls: type[Objective]
    config_cls: type[TrainConfig]


OBJECTIVES: Registry[RegisteredObjective] = Registry(
    "objective", hint="register one with probe_lens.training.register_objective"
)
"""Every registered objective by name (read it; add with :func:`register_objective`)."""


def register_objective(
    name: str, objective_cls: type[Objective], config_cls: type[TrainConfig], *, replace: bool = False
) -> RegisteredObjective:
    """Make ``objective_cls`` (trained with a ``config_cls``) available by ``name``; returns the entry.

    Raises TypeError when ``objective_cls`` is no concrete :class:`Objective` subclass or ``config_cls``
    no :class:`TrainConfig` subclass, ValueError for a malformed or reserved name, or a taken one
    without ``replace=True``.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"an objective name is lowercase letters, digits and '_' (e.g. 'probe_sft'), got {name!r}")
    if name in RESERVED:
        raise ValueError(f"{name!r} is reserved (a study cell that trains nothing); choose another name")
    if not (inspect.isclass(objective_cls) and issubclass(objective_cls, Objective)):
        raise TypeError(f"objective_cls must be a subclass of probe_lens.training.Objective, got {objective_cls!r}")
    if inspect.isabstract(objective_cls):
        missing = ", ".join(sorted(objective_cls.__abstractmethods__))
        raise TypeError(f"{objective_cls.__name__} does not implement {missing} (see probe_lens.training.Objective)")
    if not (inspect.isclass(config_cls) and issubclass(config_cls, TrainConfig)):
        raise TypeError(f"config_cls must be a subclass of probe_lens.training.TrainConfig, got {config_cls!r}")
    return OBJECTIVES.register(name, RegisteredObjective(name, objective_cls, config_cls), replace=replace)


def get_objective(name: str) -> RegisteredObjective:
    """The objective registered as ``name``; an unknown name raises ValueError with the close matches."""
    return OBJECTIVES.get(name)
