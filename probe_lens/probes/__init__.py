"""The probe zoo: linear probes on TransformerLens activations, one scikit-learn estimator family.

- ``Probe``: the base every probe shares (single or ensemble): a binary sklearn classifier that
  maps any two labels through ``classes_`` (``pos_label``), plus ``forward`` for training.
- ``LogisticProbe``: L2 logistic regression on standardised activations (the paper's probe).
- ``MassMeanProbe``: difference of class means, or the LDA direction (``covariance="tied"``).
- ``DiverseProbeEnsemble``: k probes with mutually orthogonal directions (nullspace or penalty).
- ``save_probe`` / ``load_probe``: safetensors + JSON folders, checked against a model and hook;
  ``register_probe_class`` adds a ``Probe`` subclass to ``PROBE_CLASSES``, ``probe_classes`` lists them.
- ``auroc``: the project's one AUROC (raises ValueError on single-class input); ``cosine``: its one cosine.
- ``probe_report``, ``cosine_matrix``, ``layer_sweep``: comparing probes and picking a layer.
"""

from probe_lens.probes.analysis import cosine_matrix, layer_sweep, probe_report
from probe_lens.probes.base import (
    BaseProbe,
    Probe,
    ProbeMetadata,
    ProbeModule,
    ProbeNotFittedError,
    layer_of_hook,
)
from probe_lens.probes.ensemble import DiverseProbeEnsemble, EnsembleModule
from probe_lens.probes.io import PROBE_CLASSES, load_probe, probe_classes, register_probe_class, save_probe
from probe_lens.probes.logistic import LogisticProbe
from probe_lens.probes.mass_mean import MassMeanProbe
from probe_lens.probes.metrics import auroc, cosine

__all__ = [
    "PROBE_CLASSES",
    "BaseProbe",
    "DiverseProbeEnsemble",
    "EnsembleModule",
    "LogisticProbe",
    "MassMeanProbe",
    "Probe",
    "ProbeMetadata",
    "ProbeModule",
    "ProbeNotFittedError",
    "auroc",
    "cosine",
    "cosine_matrix",
    "layer_of_hook",
    "layer_sweep",
    "load_probe",
    "probe_classes",
    "probe_report",
    "register_probe_class",
    "save_probe",
]
