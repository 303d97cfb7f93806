"""Experiment tracking: each (cell, seed)'s telemetry rows and final metrics, and the study's headline
contrasts, sent to Weights & Biases or trackio; one tracker run per (cell, seed), grouped by study.

A tracker is registered by name (``TRACKERS``); ``open_run(name, group, config, folder)`` returns an
object with ``log(row, step)``, ``summary(values)`` and ``finish()``. Rows are read from the run
folder after a task finishes (``metrics.jsonl``, ``eval.json``, ``contrasts.csv``), so what the tracker
shows is exactly what the study wrote, whichever executor ran it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from probe_lens._registry import Registry
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.run_folder import RunFolder

log = logging.getLogger(__name__)


class TrackerUnavailableError(ValueError):
    """The chosen tracker's package is not installed."""


class TrackerRun(Protocol):
    def log(self, row: dict[str, float], step: int | None) -> None: ...
    def summary(self, values: dict[str, float]) -> None: ...
    def figures(self, figures: dict[str, Any]) -> None: ...
    def finish(self) -> None: ...


OpenRun = Callable[[str, str, dict[str, Any], Path, str], TrackerRun]
"""``open_run(name, group, config, folder, project) -> TrackerRun``."""

TRACKERS: Registry[OpenRun] = Registry("tracker", hint="Add one with TRACKERS.register(name, open_run).")


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a flat record (bools, texts, lists and NaNs left out)."""
    return {
        k: float(v)
        for k, v in d.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    }


class _WandbRun:
    def __init__(self, name: str, group: str, config: dict[str, Any], folder: Path, project: str) -> None:
        try:
            import wandb
        except ImportError as e:
            raise TrackerUnavailableError(
                "launch.log=wandb needs Weights & Biases: pip install 'probe-lens[wandb]' (or choose --log none)"
            ) from e
        # offline unless told otherwise: a cluster node often has no network; `wandb sync` uploads later
        mode: Any = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        folder.mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=project, group=group, name=name, config=config, dir=str(folder), mode=mode, reinit="create_new"
        )

    def log(self, row: dict[str, float], step: int | None) -> None:
        self._run.log(row, step=step, commit=True)

    def summary(self, values: dict[str, float]) -> None:
        self._run.summary.update(values)

    def figures(self, figures: dict[str, Any]) -> None:
        """Each plotly figure as an interactive W&B chart ``report/<name>``."""
        import wandb

        if figures:
            self._run.log({f"report/{k}": wandb.Plotly(f) for k, f in figures.items()}, commit=True)

    def finish(self) -> None:
        import wandb

        self._run.finish()
        wandb.teardown()  # stops W&B's service, which writes the run file's last records only then


class _TrackioRun:
    def __init__(self, name: str, group: str, config: dict[str, Any], folder: Path, project: str) -> None:
        try:
            import trackio
        except ImportError as e:
            raise TrackerUnavailableError(
                "launch.log=trackio needs trackio: pip install 'probe-lens[trackio]' (or choose --log none)"
            ) from e
        self._trackio = trackio
        self._run = trackio.init(project=project, name=name, group=group, config=config)

    def log(self, row: dict[str, float], step: int | None) -> None:
        self._trackio.log(row, step=step)

    def summary(self, values: dict[str, float]) -> None:
        self._trackio.log({f"final/{k}": v for k, v in values.items()})

    def figures(self, figures: dict[str, Any]) -> None:
        if figures:  # trackio logs numbers, tables and images; the interactive figures stay in report.html
            log.warning("trackio: the report's %d figures are not sent (see report.html)", len(figures))

    def finish(self) -> None:
        self._trackio.finish()


TRACKERS.register("wandb", _WandbRun)
TRACKERS.register("trackio", _TrackioRun)


def check_tracker(config: StudyConfig) -> None:
    """Fail before any work when the study's tracker cannot be imported."""
    name = config.launch.log
    module = {"wandb": "wandb", "trackio": "trackio"}.get(name)
    if module is None:
        return
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise TrackerUnavailableError(
            f"--log {name} needs the {module} package: pip install 'probe-lens[{name}]' (or choose --log none)"
        )


def study_group(root: Path) -> str:
    return Path(root).resolve().name


def log_cell(config: StudyConfig, root: Path, cell: str, seed: int) -> None:
    """Send one finished (cell, seed)'s telemetry and training rows (by step) and its ``eval.json`` numbers
    (the run's summary) to the study's tracker; nothing for ``log: none``."""
    if config.launch.log == "none":
        return
    folder = RunFolder(root)
    cdir = folder.cell_dir(cell, seed)
    run = TRACKERS.get(config.launch.log)(
        f"{cell}/seed{seed}",
        study_group(root),
        {"cell": cell, "seed": seed, "study": config.to_dict()},
        Path(root) / "launch" / "tracker",
        config.launch.project,
    )
    try:
        metrics = cdir / "train" / "metrics.jsonl"
        if metrics.exists():
            from probe_lens.training import read_metrics

            by_step: dict[int | None, dict[str, float]] = {}  # a step's training and telemetry rows, as one
            for row in read_metrics(metrics).to_dict("records"):
                step = row.get("step")
                key = int(step) if isinstance(step, (int, float)) and math.isfinite(step) else None
                by_step.setdefault(key, {}).update(_numbers({k: v for k, v in row.items() if k != "step"}))
            for step, values in by_step.items():
                if values:
                    run.log(values, step)
        run.summary(_numbers(json.loads((cdir / "eval.json").read_text())))
    finally:
        run.finish()


def log_headline(config: StudyConfig, root: Path, figures: dict[str, Any] | None = None) -> None:
    """The study's paired contrasts (``contrasts.csv``) as one tracker run named ``headline``, with the
    report's ``figures`` (:attr:`Study.report_figures`, by name) where given."""
    if config.launch.log == "none" or not (Path(root) / "contrasts.csv").exists():
        return
    import pandas as pd

    table = pd.read_csv(Path(root) / "contrasts.csv")
    run = TRACKERS.get(config.launch.log)(
        "headline",
        study_group(root),
        {"study": config.to_dict()},
        Path(root) / "launch" / "tracker",
        config.launch.project,
    )
    try:
        values: dict[str, float] = {}
        for _, r in table.iterrows():
            key = "/".join(str(r[c]) for c in ("a", "b", "metric") if c in table.columns) or str(r.name)
            values.update({f"contrast/{key}/{k}": v for k, v in _numbers(r.to_dict()).items()})
        run.summary(values)
        run.figures(dict(figures or {}))
    finally:
        run.finish()
