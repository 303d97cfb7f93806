"""The probe zoo: linear probes on TransformerLens activations with one sklearn-style API.

- ``LogisticProbe``: L2 logistic regression on standardised activations (the paper's probe).
- ``MassMeanProbe``: difference of class means, or the LDA direction (``covariance="tied"``).
- ``DiverseProbeEnsemble``: k probes with mutually orthogonal directions (nullspace or penalty).
- ``save_probe`` / ``load_probe``: safetensors + JSON folders, checked against a model and hook.
- ``probe_report``, ``cosine_matrix``, ``layer_sweep``: comparing probes and picking a layer.
"""

from probe_lens.probes.analysis import cosine_matrix, layer_sweep, probe_report
from probe_lens.probes.base import BaseProbe, ProbeMetadata, ProbeModule, layer_of_hook
from probe_lens.probes.ensemble import DiverseProbeEnsemble, EnsembleModule
from probe_lens.probes.io import load_probe, register_probe_class, save_probe
from probe_lens.probes.logistic import LogisticProbe
from probe_lens.probes.mass_mean import MassMeanProbe

__all__ = [
    "BaseProbe",
    "DiverseProbeEnsemble",
    "EnsembleModule",
    "LogisticProbe",
    "MassMeanProbe",
    "ProbeMetadata",
    "ProbeModule",
    "cosine_matrix",
    "layer_of_hook",
    "layer_sweep",
    "load_probe",
    "probe_report",
    "register_probe_class",
    "save_probe",
]
