"""The probe zoo: linear probes on TransformerLens activations, one scikit-learn estimator family.

- ``Probe``: the base every probe shares (single or ensemble): a binary sklearn classifier that
  maps any two labels through ``classes_`` (``pos_label``), plus ``forward`` for training.
- ``LogisticProbe``: L2 logistic regression on standardised activations (the paper's probe).
- ``MassMeanProbe``: difference of class means, or the LDA direction (``covariance="tied"``).
- ``MaxPooledLogisticProbe``: a per-token logistic probe scoring a sequence by its largest token logit.
- ``AttentionProbe``: a learned query softmax-weighs the tokens, a linear readout scores the mix.
  Both read token activations [n, pos, d_model] (NaN padding; ``activations.collect_tokens``).
- ``DiverseProbeEnsemble``: k probes with mutually orthogonal directions (nullspace or penalty).
- ``save_probe`` / ``load_probe``: safetensors + JSON folders, checked against a model and hook;
  ``register_probe_class`` adds a ``Probe`` subclass to ``PROBE_CLASSES``, ``probe_classes`` lists them.
- ``auroc``: the project's one AUROC (raises ValueError on single-class input); ``cosine``: its one cosine.
- ``probe_report``, ``cosine_matrix``, ``layer_sweep``: comparing probes and picking a layer.
"""

from probe_lens.probes.analysis import cosine_matrix, layer_sweep, probe_report
from probe_lens.probes.attention import AttentionProbe
from probe_lens.probes.base import (
    BaseProbe,
    Probe,
    ProbeMetadata,
    ProbeModule,
    ProbeNotFittedError,
    layer_of_hook,
)
from probe_lens.probes.ensemble import DiverseProbeEnsemble, EnsembleModule
from probe_lens.probes.io import (
    PROBE_CLASSES,
    ProbeFileError,
    load_probe,
    probe_classes,
    register_probe_class,
    save_probe,
)
from probe_lens.probes.logistic import LogisticProbe
from probe_lens.probes.mass_mean import MassMeanProbe
from probe_lens.probes.max_pooled import MaxPooledLogisticProbe
from probe_lens.probes.metrics import auroc, cosine
from probe_lens.probes.tokens import TokenProbe

__all__ = [
    "ProbeFileError",
    "PROBE_CLASSES",
    "AttentionProbe",
    "BaseProbe",
    "DiverseProbeEnsemble",
    "EnsembleModule",
    "LogisticProbe",
    "MassMeanProbe",
    "MaxPooledLogisticProbe",
    "Probe",
    "ProbeMetadata",
    "ProbeModule",
    "ProbeNotFittedError",
    "TokenProbe",
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
