"""Behaviours as plug-ins: what a study detects and trains against (toxicity by default).

- ``Behaviour``: class names, scorer, prompts, curated set, threshold and metric prefix in one record;
  ``Behaviour.from_jsonl`` / ``Behaviour.from_labelled_jsonl`` build one from your own files.
- ``register_behaviour`` / ``get_behaviour`` / ``BEHAVIOURS``: the registry.
- ``LabelledRows``: the scorer of a pre-labelled behaviour (looks labels up; no model).
- ``load_behaviour_file``: a behaviour from a JSON/YAML spec (``probe-lens ... --behaviour-file``).
- ``BehaviourNames``: a behaviour's words and metric keys, also read back from a run's saved record.

A new built-in behaviour is one file defining a ``Behaviour`` plus one ``register_behaviour`` line here.
"""

from probe_lens.behaviours._jsonl import BehaviourFileError
from probe_lens.behaviours.base import METRIC_ROLES, Behaviour
from probe_lens.behaviours.labelled import LabelledRows, UnlabelledTextError
from probe_lens.behaviours.names import BehaviourNames
from probe_lens.behaviours.registry import BEHAVIOURS, DEFAULT_BEHAVIOUR, get_behaviour, register_behaviour
from probe_lens.behaviours.sentiment import SENTIMENT
from probe_lens.behaviours.spec import load_behaviour_file
from probe_lens.behaviours.toxicity import TOXICITY

register_behaviour(TOXICITY)
register_behaviour(SENTIMENT)

__all__ = [
    "BEHAVIOURS",
    "DEFAULT_BEHAVIOUR",
    "METRIC_ROLES",
    "Behaviour",
    "BehaviourFileError",
    "BehaviourNames",
    "LabelledRows",
    "UnlabelledTextError",
    "get_behaviour",
    "load_behaviour_file",
    "register_behaviour",
]
