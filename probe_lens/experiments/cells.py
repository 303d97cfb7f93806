"""The study grid as declared records: what each cell trains with, and against what.

A cell is a :class:`CellSpec`: an ``objective`` (how the model is trained: ``none`` or a name registered
with ``probe_lens.training.register_objective`` and adapted to studies with
``probe_lens.experiments.register_study_objective``) and a ``signal`` (what ranks, filters or penalises its
samples; each objective's adapter declares the signals it takes). The runner looks both up; it never
parses cell names.

=================  ==============  ===========================================================
objective          signals         what trains
=================  ==============  ===========================================================
``none``           ``none``        nothing (the base model: the reference every cell is paired with)
``probe_sft``      any probe       LM loss on the model's own samples + lambda * P(toxic) of the frozen
                                   probe(s), backpropagated through the live activations
``filtered_sft``   any but none    LM loss on the samples the signal judges clean (score < threshold)
``dpo``            any but none    DPO on k samples per prompt ranked by the signal
``rloo``           any but none    REINFORCE-LOO on k fresh samples per prompt per step, reward = minus
                                   the signal's score (no gradient through the probe), KL to the base
=================  ==============  ===========================================================

``probe_filtered_sft`` (any probe) is ``filtered_sft`` with the probe's scores computed by the
objective itself: the example of a plug-in objective (one training file + one adapter).

Signals: ``probe`` (the single trained-against logistic probe, mean-pooled), ``ensemble`` (the diverse orthogonal
ensemble), ``maxpool`` / ``attention`` (the token probes of those families at the same layer, ``probes.token_probes``;
"any probe" above is one of these four), ``classifier`` (the output classifier: a baseline that trains against no
probe). Which probe a signal trains against is looked up in :data:`SIGNAL_PROBES`, never parsed from a name.

Built-in cells against token probes (in no preset's default grid): ``probe_sft_max``, ``probe_dpo_max``,
``probe_rloo_max`` (the max-pooled probe) and ``probe_sft_attn``, ``probe_dpo_attn``, ``probe_rloo_attn`` (the
attention probe): gradient through the probe (SFT) vs ranking (DPO) vs reward only (RLOO), per pooling.

Every pre-training probe is tracked in every cell; a cell only decides which of them it trains
against (:meth:`CellSpec.trained_against`), so each trained-against probe has its controls: the same
probe, measured the same way, in the cells that do not train against it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from probe_lens.experiments.adapters import PROBE_SIGNALS, SIGNALS, STUDY_OBJECTIVES, get_study_objective
from probe_lens.training import OBJECTIVES

__all__ = [
    "BUILTIN_CELLS",
    "DEFAULT_GRID",
    "SIGNALS",
    "SIGNAL_PROBES",
    "CellSpec",
    "objective_signals",
    "resolve_cell",
    "resolve_cells",
]

SIGNAL_PROBES: dict[str, str] = {
    "probe": "single",
    "ensemble": "ensemble",
    "maxpool": "maxpool",
    "attention": "attention",
}
"""Each probe signal -> the key of the probe suite's names (``ProbeSuite.names()``) holding the probe it trains
against (a token family's key is the family: present when ``probes.token_probes`` lists it)."""
assert set(SIGNAL_PROBES) == set(PROBE_SIGNALS)


def objective_signals(objective: str) -> tuple[str, ...]:
    """The signals a cell of ``objective`` takes (``none`` trains nothing and takes ``none``)."""
    return ("none",) if objective == "none" else get_study_objective(objective).signals


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """One cell of the grid.

    Args:
        name: the cell's name in results and folders.
        objective: ``none`` or an objective with a study adapter (``probe_sft``, ``filtered_sft``, ``dpo``, ...).
        signal: ``none``, a probe signal (``probe``, ``ensemble``, ``maxpool``, ``attention``) or ``classifier``, as
            the objective's adapter allows.
    """

    name: str
    objective: str
    signal: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"a cell name must be a non-empty string without '/', got {self.name!r}")
        if self.objective in OBJECTIVES and self.objective not in STUDY_OBJECTIVES:
            raise ValueError(
                f"cell {self.name!r}: objective {self.objective!r} has no study adapter; register one with "
                "probe_lens.experiments.register_study_objective"
            )
        if self.objective != "none" and self.objective not in STUDY_OBJECTIVES:
            known = ("none", *STUDY_OBJECTIVES)
            close = difflib.get_close_matches(str(self.objective), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"cell {self.name!r}: objective must be one of {known}, got {self.objective!r}{hint}")
        allowed = objective_signals(self.objective)
        if self.signal not in allowed:
            raise ValueError(
                f"cell {self.name!r}: objective {self.objective!r} takes signal {' or '.join(allowed)}, got {self.signal!r}"
            )

    @property
    def trains(self) -> bool:
        return self.objective != "none"

    @property
    def uses_probe(self) -> bool:
        """True when a probe (single, ensemble or a token probe) is the training signal."""
        return self.signal in SIGNAL_PROBES

    def trained_against(self, names: Mapping[str, Sequence[str]] | str, ensemble: str | None = None) -> list[str]:
        """Names of the probes this cell trains against, given the study's probe names (``ProbeSuite.names()``).

        The older form ``trained_against(single, ensemble)`` (the two mean-pooled candidates' names) knows no token
        probe: a cell trained against one gives ``[]`` there."""
        if isinstance(names, str):
            names = {"single": [names], "ensemble": [] if ensemble is None else [ensemble]}
        key = SIGNAL_PROBES.get(self.signal)
        return list(names.get(key, ()))[:1] if key is not None else []

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


BUILTIN_CELLS: dict[str, CellSpec] = {
    c.name: c
    for c in (
        CellSpec("base", "none"),
        CellSpec("probe_sft_1", "probe_sft", "probe"),
        CellSpec("probe_sft_ens", "probe_sft", "ensemble"),
        CellSpec("probe_dpo_1", "dpo", "probe"),
        CellSpec("probe_dpo_ens", "dpo", "ensemble"),
        CellSpec("classifier_dpo", "dpo", "classifier"),
        CellSpec("classifier_sft", "filtered_sft", "classifier"),
        CellSpec("probe_filtered_sft", "filtered_sft", "probe"),
        CellSpec("probe_rloo_1", "rloo", "probe"),
        CellSpec("classifier_rloo", "rloo", "classifier"),
        CellSpec("probe_sft_max", "probe_sft", "maxpool"),
        CellSpec("probe_dpo_max", "dpo", "maxpool"),
        CellSpec("probe_rloo_max", "rloo", "maxpool"),
        CellSpec("probe_sft_attn", "probe_sft", "attention"),
        CellSpec("probe_dpo_attn", "dpo", "attention"),
        CellSpec("probe_rloo_attn", "rloo", "attention"),
    )
}
"""Cells a study file may name by string. ``probe_filtered_sft`` (SFT on the samples the frozen probe
judges clean) is the probe analogue of ``classifier_sft``: a baseline the paper lacks. ``probe_rloo_1`` and
``classifier_rloo`` (RLOO: reward only, fresh samples every step) are declared but in no preset's default grid:
name them in ``cells`` to run them."""

DEFAULT_GRID: tuple[str, ...] = (
    "base",
    "probe_sft_1",
    "probe_sft_ens",
    "probe_dpo_1",
    "probe_dpo_ens",
    "classifier_dpo",
    "classifier_sft",
    "probe_filtered_sft",
)


def resolve_cell(spec: Any) -> CellSpec:
    """A :class:`CellSpec` from a built-in name, a ``{name, objective, signal}`` mapping or a CellSpec."""
    if isinstance(spec, CellSpec):
        return spec
    if isinstance(spec, str):
        if spec in BUILTIN_CELLS:
            return BUILTIN_CELLS[spec]
        close = difflib.get_close_matches(spec, list(BUILTIN_CELLS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown cell {spec!r}{hint}; built-in cells: {list(BUILTIN_CELLS)}, or declare one as "
            "{name: ..., objective: ..., signal: ...}"
        )
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"name", "objective", "signal"})
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in cell {spec!r}; a cell has name, objective, signal")
        if "name" not in spec or "objective" not in spec:
            raise ValueError(f"cell {spec!r} needs at least 'name' and 'objective'")
        cell = CellSpec(**spec)
        builtin = BUILTIN_CELLS.get(cell.name)
        if builtin is not None and builtin != cell:  # e.g. a 'base' that trains: every pairing would break
            raise ValueError(
                f"cell name {cell.name!r} is reserved for the built-in cell (objective {builtin.objective!r}, "
                f"signal {builtin.signal!r}); give your cell {spec!r} another name"
            )
        return cell
    raise TypeError(f"a cell is a name or a {{name, objective, signal}} mapping, got {type(spec).__name__}")


def resolve_cells(specs: Any) -> list[CellSpec]:
    """Resolve a list of cells; names must be distinct."""
    if isinstance(specs, (str, dict)) or not hasattr(specs, "__iter__"):
        raise TypeError("cells must be a list of cell names or {name, objective, signal} mappings")
    cells = [resolve_cell(s) for s in specs]
    names = [c.name for c in cells]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"cell names must be distinct; repeated: {dup}")
    if not cells:
        raise ValueError("cells is empty; name at least one cell (e.g. 'base')")
    return cells
