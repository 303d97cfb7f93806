"""The paper's comparison as a resumable study: config, presets, runner, metrics, statistics, report.

:class:`Study` (``runner``) coordinates rooms with one job each: ``run_folder`` (layout and identity),
``ranks`` (torchrun), ``prompt_plan`` (prompt plans, seed splits), ``study_data`` (probe pool, evaluation
sets, training samples), ``probe_suite`` (the tracked probes), ``study_telemetry``, ``cell_training``,
``evaluation``, ``results`` and ``timings``."""

from probe_lens.experiments.adapters import StudyObjective, get_study_objective, register_study_objective
from probe_lens.experiments.cells import BUILTIN_CELLS, CellSpec
from probe_lens.experiments.config import CELLS, EvalSetup, ProbeSetup, SamplingSetup, StudyConfig, TrainData
from probe_lens.experiments.presets import PRESETS, make_config
from probe_lens.experiments.prompt_plan import StudyDataError
from probe_lens.experiments.run_folder import FolderLockedError, StudyFolderError
from probe_lens.experiments.runner import Study

__all__ = [
    "BUILTIN_CELLS",
    "CELLS",
    "CellSpec",
    "SamplingSetup",
    "StudyDataError",
    "PRESETS",
    "EvalSetup",
    "FolderLockedError",
    "ProbeSetup",
    "Study",
    "StudyConfig",
    "StudyFolderError",
    "StudyObjective",
    "TrainData",
    "get_study_objective",
    "make_config",
    "register_study_objective",
]
