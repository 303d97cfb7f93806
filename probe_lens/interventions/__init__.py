"""Interpretability instruments along probe directions: interventions, causal curves, attribution, geometry.

- :mod:`~probe_lens.interventions.steering`: :func:`steer` and :func:`ablate`, hook context managers.
- :mod:`~probe_lens.interventions.causal`: :func:`steering_curve`, :func:`steering_slope`,
  :func:`causal_metrics` (behaviour and neutral KL vs alpha, and under ablation).
- :mod:`~probe_lens.interventions.attribution`: :func:`probe_attribution` (a probe's logit split into
  embedding, per-head, attention-bias and MLP terms; :func:`probe_attributions`: several probes, one pass), :func:`component_gap`, :func:`attribution_gap`.
- :mod:`~probe_lens.interventions.geometry`: :func:`signal_decomposition`, :func:`angle_degrees`,
  :func:`between_class_components`.
- :mod:`~probe_lens.interventions.figures`: the plots (re-exported by :mod:`probe_lens.plots`).

Layer: above ``probes`` and ``scorers``; imports only ``models``, ``activations``, ``probes``, ``scorers``.
"""

from probe_lens.interventions.attribution import (
    Component,
    attribution_gap,
    component_gap,
    components,
    probe_attribution,
    probe_attributions,
)
from probe_lens.interventions.causal import (
    DEFAULT_ALPHAS,
    causal_metrics,
    residual_norm,
    steering_curve,
    steering_slope,
)
from probe_lens.interventions.geometry import angle_degrees, between_class_components, signal_decomposition
from probe_lens.interventions.steering import ablate, direction_vector, steer, target_hook

__all__ = [
    "DEFAULT_ALPHAS",
    "Component",
    "ablate",
    "angle_degrees",
    "attribution_gap",
    "between_class_components",
    "causal_metrics",
    "component_gap",
    "components",
    "direction_vector",
    "probe_attribution",
    "probe_attributions",
    "residual_norm",
    "signal_decomposition",
    "steer",
    "steering_curve",
    "steering_slope",
    "target_hook",
]
