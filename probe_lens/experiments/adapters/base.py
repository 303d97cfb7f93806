"""How a study trains a registered objective: :class:`StudyObjective` adapters, registered by name.

A training objective (``probe_lens.training``) knows its config, its examples and its loss; its adapter
knows the study side: which signals a cell of it may train against, where its settings live in a study
file, how one cell's settings differ from the section's (``for_cell``), and how a cell's examples are
built from the study's data and handed to the objective's trainer (``train``). The runner calls only
:func:`train_cell`, :func:`cell_settings` and :func:`settings_section`.

An objective with its own settings needs no study field: with ``section=None`` they are read from the
study file's ``objectives: {<name>: {...}}`` section, validated by the objective's registered config class.

The study's types are passed in, not imported (``study``: a ``StudyConfig``; ``cell``: a ``CellSpec``;
``context``: the runner's ``CellContext``), so that ``cells`` and ``config`` can look adapters up.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from probe_lens._registry import Registry
from probe_lens.training import OBJECTIVES, TrainConfig, TrainResult, get_objective

PROBE_SIGNALS: tuple[str, ...] = ("probe", "ensemble", "maxpool", "attention")
"""The signals that are a probe: ``probe`` (the single mean-pooled logistic probe), ``ensemble`` (the diverse
ensemble), ``maxpool`` and ``attention`` (the token probes of those families, ``probes.token_probes``)."""
SIGNALS: tuple[str, ...] = ("none", *PROBE_SIGNALS, "classifier")
"""What ranks, filters or penalises a cell's samples: ``none`` (a cell that trains nothing), a probe
(:data:`PROBE_SIGNALS`) or ``classifier`` (the output classifier)."""
TRAINING_SIGNALS: tuple[str, ...] = SIGNALS[1:]


@dataclasses.dataclass(frozen=True)
class StudyObjective:
    """How a study trains the cells of one registered objective.

    Args:
        signals: the signals a cell of it may train against (some of :data:`TRAINING_SIGNALS`).
        train: ``train(context, config) -> TrainResult``: train one cell on ``context.study.model`` with
            ``config`` (the cell's settings, its seed, folder and telemetry filled in). ``context`` holds the
            seed's shared data: ``generation`` (the training samples), ``scores[signal]`` (their scores,
            higher = more positive), ``probes`` and ``trained`` (the names of the probes the cell trains
            against), ``telemetry``, ``resume``, ``spec`` (the cell) and ``study.config`` (the study).
        section: the study's top-level section holding its settings (the built-ins': ``probe_sft``,
            ``classifier_sft``, ``dpo``); None: ``objectives.<name>``, typed by the registered config class.
        for_cell: ``for_cell(study, cell, settings) -> TrainConfig``: one cell's settings from the section's
            (e.g. a threshold that depends on the signal); None: the section's as they are.
        control: the objective whose ``classifier`` cells are the headline controls of this objective's
            probe-trained cells; None: this objective itself.
    """

    signals: tuple[str, ...]
    train: Callable[[Any, Any], TrainResult]
    section: str | None = None
    for_cell: Callable[[Any, Any, Any], TrainConfig] | None = None
    control: str | None = None

    def __post_init__(self) -> None:
        signals = tuple(self.signals) if isinstance(self.signals, (list, tuple)) else None
        if not signals or any(s not in TRAINING_SIGNALS for s in signals):
            raise ValueError(f"signals must be a non-empty list of {TRAINING_SIGNALS}, got {self.signals!r}")
        object.__setattr__(self, "signals", signals)
        for name in ("train", "for_cell"):
            fn = getattr(self, name)
            if not callable(fn) and not (name == "for_cell" and fn is None):
                raise TypeError(f"{name} must be a function, got {fn!r}")
        for name in ("section", "control"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise TypeError(f"{name} must be a non-empty string or None, got {value!r}")


STUDY_OBJECTIVES: Registry[StudyObjective] = Registry(
    "study objective", hint="register its adapter with probe_lens.experiments.register_study_objective"
)
"""Every objective a study cell may name, with its adapter."""


def register_study_objective(name: str, adapter: StudyObjective, *, replace: bool = False) -> StudyObjective:
    """Let study cells train objective ``name`` (registered with ``probe_lens.training.register_objective``)."""
    if name not in OBJECTIVES:
        raise ValueError(
            f"no training objective {name!r} is registered; register it first with "
            "probe_lens.training.register_objective(name, objective_cls, config_cls)"
        )
    if not isinstance(adapter, StudyObjective):
        raise TypeError(f"adapter must be a probe_lens.experiments.StudyObjective, got {type(adapter).__name__}")
    return STUDY_OBJECTIVES.register(name, adapter, replace=replace)


def get_study_objective(name: str) -> StudyObjective:
    """The adapter registered as ``name``; an unknown name raises ValueError with the close matches."""
    return STUDY_OBJECTIVES.get(name)


def own_section(name: str) -> bool:
    """True when objective ``name`` reads its settings from ``objectives.<name>`` (not a top-level section)."""
    return get_study_objective(name).section is None


def settings_section(name: str) -> str:
    """Where objective ``name``'s settings live in a study file (``dpo``, ``objectives.my_obj``), for messages."""
    section = get_study_objective(name).section
    return f"objectives.{name}" if section is None else section


def settings_class(name: str) -> type[TrainConfig]:
    """The config class of objective ``name`` (validates its ``objectives.<name>`` section)."""
    return get_objective(name).config_cls


def study_settings(study: Any, name: str) -> TrainConfig:
    """Objective ``name``'s settings in ``study`` (a StudyConfig), before any cell's adjustment."""
    section = get_study_objective(name).section
    return study.objectives[name] if section is None else getattr(study, section)


def cell_settings(study: Any, cell: Any) -> TrainConfig:
    """The settings a training ``cell`` (a CellSpec) of ``study`` trains with; the runner fills in seed and folder."""
    adapter = get_study_objective(cell.objective)
    settings = study_settings(study, cell.objective)
    return settings if adapter.for_cell is None else adapter.for_cell(study, cell, settings)


def frozen_copy(model: Any) -> Any:
    """A frozen copy of ``model`` as it is now (a cell's starting model: the base weights), for an objective's
    live reference model (probe-SFT's KL term, DPO without precomputed reference log-probs)."""
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    return reference.eval()


def train_cell(context: Any) -> TrainResult:
    """Train the runner's ``context`` (a CellContext) with its objective's adapter."""
    config = context.train_config(cell_settings(context.study.config, context.spec))
    return get_study_objective(context.spec.objective).train(context, config)
