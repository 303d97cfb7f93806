"""The paper's comparison as a resumable study: config, presets, runner, metrics, statistics, report."""

from probe_lens.experiments.config import CELLS, EvalSetup, ProbeSetup, StudyConfig, TrainData
from probe_lens.experiments.presets import PRESETS, make_config
from probe_lens.experiments.runner import Study, StudyFolderError

__all__ = [
    "CELLS",
    "PRESETS",
    "EvalSetup",
    "ProbeSetup",
    "Study",
    "StudyConfig",
    "StudyFolderError",
    "TrainData",
    "make_config",
]
