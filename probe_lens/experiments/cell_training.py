"""Training a cell: what an objective's study adapter gets (``CellContext``), a cell's training settings,
and running a cell's objective (a ``none`` cell only measures the base model)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from probe_lens._io import atomic_write
from probe_lens.experiments.adapters import cell_settings, train_cell
from probe_lens.experiments.cells import CellSpec
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.study_telemetry import StudyTelemetry
from probe_lens.models import Generation
from probe_lens.training.distributed import DistInfo


class StudyView(Protocol):
    """What a cell's training reads of its :class:`~probe_lens.experiments.Study` (a protocol, so that this
    room does not import the coordinator that imports it)."""

    config: StudyConfig
    progress: bool
    prelabelled: bool

    @property
    def model(self) -> Any: ...

    @property
    def scorer(self) -> Any: ...

    @property
    def dist(self) -> DistInfo: ...


def _train_config(config: StudyConfig, spec: CellSpec):
    """The cell's training settings (its objective's study adapter's); None for ``none``."""
    return cell_settings(config, spec) if spec.trains else None


# ---------------------------------------------------------------------------------------------
# objectives: a training cell is trained by its objective's study adapter (experiments.adapters
# .train_cell); a ``none`` cell only measures the base model
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CellContext:
    """What an objective's study adapter gets: the study, the cell, and the seed's shared data.

    Under torchrun a training cell runs on every rank; ``telemetry`` is None except on rank 0.
    """

    study: StudyView
    spec: CellSpec
    seed: int
    probes: dict[str, Any]
    trained: list[str]
    generation: Generation
    scores: dict[str, np.ndarray]
    telemetry: StudyTelemetry | None
    train_dir: Path
    resume: bool

    def train_config(self, base):
        """``base`` (the cell's settings) with this cell's seed, folder, telemetry and per-rank batch."""
        cfg = self.study.config
        tc = dataclasses.replace(
            base,
            seed=self.seed,
            out_dir=str(self.train_dir),
            telemetry_every=cfg.telemetry_every,
            progress=self.study.progress,
        )
        world = self.study.dist.world_size
        if world > 1:  # the study's batch is the global one: each rank takes its share (checked to divide)
            tc = dataclasses.replace(tc, batch_size=tc.batch_size // world)
        return tc


def _run_none(ctx: CellContext) -> dict[str, Any]:
    ctx.train_dir.mkdir(parents=True, exist_ok=True)
    assert ctx.telemetry is not None  # called on rank 0, which holds the telemetry
    row = {"step": 0, **ctx.telemetry.measure(ctx.study.model, 0)}
    atomic_write(ctx.train_dir / "metrics.jsonl", lambda p: p.write_text(json.dumps(row) + "\n"))
    return {}


def _run_objective(ctx: CellContext) -> dict[str, Any]:
    """Train a cell with its objective's study adapter."""
    res = train_cell(ctx)
    return {**res.info, "stopped_reason": res.stopped_reason, "final_step": res.final_step}
