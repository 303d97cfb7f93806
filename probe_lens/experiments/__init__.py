"""The paper's comparison as a resumable study: config, presets, runner, metrics, statistics, report."""

from probe_lens.experiments.adapters import StudyObjective, get_study_objective, register_study_objective
from probe_lens.experiments.cells import BUILTIN_CELLS, CellSpec
from probe_lens.experiments.config import CELLS, EvalSetup, ProbeSetup, SamplingSetup, StudyConfig, TrainData
from probe_lens.experiments.presets import PRESETS, make_config
from probe_lens.experiments.runner import Study, StudyDataError, StudyFolderError

__all__ = [
    "BUILTIN_CELLS",
    "CELLS",
    "CellSpec",
    "SamplingSetup",
    "StudyDataError",
    "PRESETS",
    "EvalSetup",
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
