"""The drift report's figures, as public functions for notebooks and papers.

Each ``fig_*`` takes the tables a study writes and returns a ``plotly.graph_objects.Figure``; it raises
:class:`NoFigureData` when its input holds nothing to draw. Lines are means over seeds, bands Student-t
95% CIs (none with one seed); a cell measured at one step only (``base``) is a dotted reference line.
``behaviour=`` (a :class:`~probe_lens.behaviours.Behaviour`, its ``describe()`` record or a registered
name; None: toxicity) gives the metric keys and words; ``scorer=`` names the labeller in the subtitle.

Inputs: ``metrics`` = ``Study.metrics()`` (rows with ``cell``, ``seed``, ``step`` and the logged metric
names), ``results`` = ``Study.results()`` (one row per cell and seed), ``contrasts`` = a run's
``contrasts.csv``, ``geometry`` = ``{cell: {hook: {"before": ..., "after": ...}}}`` from each cell's
``geometry.json``.

========================== =============================================================================
function                   draws
========================== =============================================================================
fig_results_table          results: mean ± 95% CI half-width per cell and metric
fig_contrasts              paired contrasts (cell − control, per seed) as a forest plot
fig_tracked_auroc_vs_step  every tracked probe's AUROC vs step on each evaluation set, cells vs controls
fig_auroc_vs_step          frozen, held-out and re-fit probe AUROC vs step (``probe/auroc_<kind>/*``)
fig_cosine_drift           cos(original direction, direction re-fit on the current model) vs step
fig_rate_vs_step           the behaviour's rate metrics vs step (``eval/<prefix>_rate``, ...)
fig_geometry_vs_step       class means projected on the original direction vs step
fig_geometry               activations before vs after training, in 2-D projections
fig_steering_curves        rate and neutral KL vs steering alpha, ablation as a level (interventions)
fig_attribution_heatmap    per-component probe-logit gap: base, trained, difference (interventions)
fig_signal_decomposition   class signal on vs off the probe direction per model (interventions)
fig_training_curves        training loss, probe term, KL per step and cell (report_sections)
fig_yardsticks             lexical baselines beside the probes on each curated set (report_sections)
fig_instruments            steering slope, ablation effect, evasion geometry per cell (report_sections)
fig_attribution_contrast   attribution heatmaps: base, probe cell, control, paired difference (report_sections)
========================== =============================================================================

The same functions build ``report.html`` (``Study.report()``); they live in
:mod:`probe_lens.experiments.report` and are re-exported here unchanged. The last three live in :mod:`probe_lens.interventions.figures`
and raise ``ValueError`` on empty input.
"""

from probe_lens.experiments.report import (
    NoFigureData,
    fig_auroc_vs_step,
    fig_contrasts,
    fig_cosine_drift,
    fig_geometry,
    fig_geometry_vs_step,
    fig_rate_vs_step,
    fig_results_table,
    fig_tracked_auroc_vs_step,
    results_summary,
)

__all__ = [
    "NoFigureData",
    "fig_auroc_vs_step",
    "fig_contrasts",
    "fig_cosine_drift",
    "fig_geometry",
    "fig_geometry_vs_step",
    "fig_rate_vs_step",
    "fig_results_table",
    "fig_tracked_auroc_vs_step",
    "results_summary",
]

# The interpretability instruments' figures (probe_lens.interventions.figures), re-exported.
from probe_lens.interventions.figures import (  # noqa: E402
    fig_attribution_heatmap,
    fig_signal_decomposition,
    fig_steering_curves,
)

__all__ += ["fig_attribution_heatmap", "fig_signal_decomposition", "fig_steering_curves"]

# The report's training-curve, yardstick and instrument figures (probe_lens.experiments.report_sections);
# they raise ValueError on empty input.
from probe_lens.experiments.report_sections import (  # noqa: E402
    fig_attribution_contrast,
    fig_instruments,
    fig_training_curves,
    fig_yardsticks,
)

__all__ += ["fig_attribution_contrast", "fig_instruments", "fig_training_curves", "fig_yardsticks"]
