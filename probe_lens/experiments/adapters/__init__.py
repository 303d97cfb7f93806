"""Study adapters of the training objectives, one file per built-in objective, registered below.

A study cell names an objective (``probe_lens.training.register_objective``) and a signal; the objective's
:class:`StudyObjective` adapter says which signals it takes, where its settings live in a study file and
how the study trains a cell of it. Adding an objective to studies: its training file, plus one
``register_study_objective(name, StudyObjective(...))`` call (here or in your own code).
"""

from probe_lens.experiments.adapters import dpo, filtered_sft, probe_filtered_sft, probe_sft, rloo
from probe_lens.experiments.adapters.base import (
    PROBE_SIGNALS,
    SIGNALS,
    STUDY_OBJECTIVES,
    StudyObjective,
    cell_settings,
    get_study_objective,
    own_section,
    register_study_objective,
    settings_class,
    settings_section,
    study_settings,
    train_cell,
)

register_study_objective("probe_sft", probe_sft.ADAPTER)
register_study_objective("filtered_sft", filtered_sft.ADAPTER)
register_study_objective("dpo", dpo.ADAPTER)
register_study_objective("probe_filtered_sft", probe_filtered_sft.ADAPTER)
register_study_objective("rloo", rloo.ADAPTER)

__all__ = [
    "PROBE_SIGNALS",
    "SIGNALS",
    "STUDY_OBJECTIVES",
    "StudyObjective",
    "cell_settings",
    "get_study_objective",
    "own_section",
    "register_study_objective",
    "settings_class",
    "settings_section",
    "study_settings",
    "train_cell",
]
