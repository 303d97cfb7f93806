"""Interpretability instruments in a study: where did the trained model hide what the probe read?

For each probe some cell trains against (an ensemble: its first member, ``<ensemble>/m0``) and the held-out
mass-mean probe at the same layer, every cell reports:

* the geometry of evasion (always; no sampling): :func:`~probe_lens.interventions.signal_decomposition` of
  the cell's model on the seed's held-out on-policy rows, with the angle to a probe re-fit there
  (``evasion/<stat>/<probe>``: ``share_on_probe``, ``on_probe``, ``off_probe``, ``n_components``, ...);
* with ``eval.causal``, the direction's causal role (:func:`~probe_lens.interventions.causal_metrics`):
  steering slope and ablation effect on the cell's model (``causal/<stat>/<probe>``) and on the seed's base
  model (``causal/<stat>_base/<probe>``, measured once per seed, saved as ``seeds/<seed>/causal_base.json``);
* with ``eval.attribution``, each component's share of the probe's positive-minus-negative logit gap on the cell's
  model and once per seed on the base model (:mod:`~probe_lens.experiments.score_attribution`: JSON files, not
  results columns), timed as ``attribution_s``.

Every cell measures the same probes, so a probe cell and its controls share the columns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probe_lens.activations import resolve_hook
from probe_lens.experiments.config import StudyConfig
from probe_lens.experiments.run_folder import RunFolder, read_derived_json, write_json
from probe_lens.experiments.score_attribution import (
    ATTRIBUTION_BASE_JSON,
    ATTRIBUTION_CSV,
    ATTRIBUTION_JSON,
    attribution_contrasts,
    attribution_markdown,
    attribution_table,
    cached_attribution,
    control_pairs,
    measure_attribution,
)
from probe_lens.experiments.study_data import CURATED
from probe_lens.experiments.timings import Clock
from probe_lens.interventions import causal_metrics, signal_decomposition
from probe_lens.probes.base import BaseProbe
from probe_lens.training.metric_keys import CAUSAL, EVASION, MetricKey, causal_key, evasion_key, member_name

__all__ = ["Instruments", "instrument_probes", "write_instruments"]

log = logging.getLogger(__name__)

CAUSAL_BASE_JSON = "causal_base.json"
INSTRUMENTS_MD = "instruments.md"
_SHOWN = {
    CAUSAL: ("steer_slope", "ablation_effect"),
    EVASION: ("share_on_probe", "off_probe", "n_components", "angle_deg"),
}


def instrument_probes(probes: Mapping[str, Any], config: StudyConfig, names: Mapping[str, list[str]]) -> dict[str, Any]:
    """``{name: single probe}``: each probe a cell of ``config`` trains against (an ensemble's first member
    as ``<ensemble>/m0``) and the held-out mass-mean probe at the trained-against layer."""
    single, ens = names["single"][0], names["ensemble"][0]
    wanted = dict.fromkeys(n for spec in config.cell_specs for n in spec.trained_against(single, ens))
    wanted[f"massmean_L{config.probes.layer}"] = None
    out: dict[str, Any] = {}
    for name in wanted:
        probe = probes[name]
        if isinstance(probe, BaseProbe):
            out[name] = probe
        else:
            out[member_name(name, 0)] = probe.member_probes()[0]
    return out


def decomposition(model, tele: Any, probes: Mapping[str, Any]) -> dict[str, float]:
    """``evasion/<stat>/<probe>`` of ``model`` on the held-out rows of ``tele``'s drift set, each probe's
    direction against a probe re-fit (``tele.refit_factory``) on the set's probe-fit rows."""
    acts = tele.activations(model)
    ds = tele.drift_set
    ev, y = ds.is_eval, ds.labels
    out: dict[str, float] = {}
    refits: dict[str, Any] = {}
    for name, probe in probes.items():
        hook = resolve_hook(model, probe.hook)
        if hook not in refits:
            refits[hook] = tele.refit_factory().fit(acts[hook][~ev], y[~ev])
        stats = signal_decomposition(probe, acts[hook][ev], y[ev], retrained=refits[hook])
        out.update({str(evasion_key(k, name)): float(v) for k, v in stats.items()})
    return out


@dataclasses.dataclass
class Instruments:
    """What a study's instruments read: its settings, run folder, output classifier, prompts and neutral texts."""

    config: StudyConfig
    folder: RunFolder
    names: Mapping[str, list[str]]
    scorer: Any
    prompts: list[str]
    """Held-out provocative prompts steered (the first ``eval.causal_prompts``)."""
    neutral: list[str]
    """Held-out neutral texts the KL to the unsteered model is measured on."""
    clock: Clock | None = None
    """Times the attribution (``attribution_s``); None: untimed."""

    def probes(self, tele: Any) -> dict[str, Any]:
        return instrument_probes({**tele.trained_probes, **tele.heldout_probes}, self.config, self.names)

    def causal(self, model, probes: Mapping[str, Any], seed: int, *, base: bool = False) -> dict[str, float]:
        """``causal/<stat>[_base]/<probe>`` of ``model`` along each of ``probes``."""
        ev, cfg = self.config.eval, self.config
        out: dict[str, float] = {}
        for name, probe in probes.items():
            stats = causal_metrics(
                model,
                probe,
                self.prompts[: ev.causal_prompts],
                self.scorer,
                neutral_texts=self.neutral,
                alphas=ev.causal_alphas,
                max_new_tokens=ev.max_new_tokens,
                threshold=ev.threshold,
                seed=30_000 + seed,
                fast=cfg.data.fast_sampling,
                batch_size=cfg.data.batch_size,
            )
            out.update({str(causal_key(k, name, base=base)): float(v) for k, v in stats.items()})
        return out

    def _base_path(self, seed: int) -> Path:
        return self.folder.seed_dir(seed) / CAUSAL_BASE_JSON

    def prime_base(self, model, seed: int, tele: Any) -> None:
        """Measure the causal metrics and the attribution on the base model (``model`` holds the base weights)
        once per seed."""
        if self.config.eval.causal and read_derived_json(self._base_path(seed)) is None:
            write_json(self._base_path(seed), self.causal(model, self.probes(tele), seed, base=True))
        self.attribute(model, tele, self.folder.seed_dir(seed) / ATTRIBUTION_BASE_JSON)

    def attribute(self, model, tele: Any, path: Path) -> None:
        """With ``eval.attribution``: ``model``'s attribution record at ``path`` (a saved one is kept)."""
        ev = self.config.eval
        if not ev.attribution:
            return
        probes = self.probes(tele)

        def compute() -> dict[str, Any]:
            rows_set = tele.eval_sets[CURATED]
            acts = tele.activations(model, CURATED)
            return measure_attribution(
                model,
                probes,
                rows_set,
                acts,
                n_per_class=ev.attribution_rows,
                pooling=self.config.data.pooling,
                batch_size=self.config.data.batch_size,
            )

        with self.clock.timed("attribution_s") if self.clock else contextlib.nullcontext():
            cached_attribution(path, probes, compute)

    def attribute_cell(self, model, tele: Any, cdir: Path) -> None:
        """The cell's attribution (``cdir/attribution.json``), with ``eval.attribution``."""
        self.attribute(model, tele, cdir / ATTRIBUTION_JSON)

    def measure(self, model, seed: int, tele: Any) -> dict[str, float]:
        """A cell's instruments: the geometry of evasion, and with ``eval.causal`` the causal metrics on the
        cell's model and (saved by :meth:`prime_base`) on the base model."""
        probes = self.probes(tele)
        out = decomposition(model, tele, probes)
        if self.config.eval.causal:
            out.update(self.causal(model, probes, seed))
            base = read_derived_json(self._base_path(seed))
            if base is None:
                log.warning("no base-model causal metrics for seed %s (%s missing)", seed, self._base_path(seed))
            out.update(base or {})
        return out


def instruments_markdown(summary: Any, config: StudyConfig) -> str:
    """The headline section: the steering slope and ablation effect (cell's model and base model) and the
    signal decomposition of each measured probe, one row per cell (mean over seeds)."""
    from probe_lens.experiments.headline import _markdown
    from probe_lens.experiments.stats import format_cells

    cols = {}
    for c in summary.columns:
        if c.endswith("_mean"):
            key = MetricKey.parse(c[: -len("_mean")])
            stat = key.name.removesuffix("_base") if key.on_base else key.name
            if stat in _SHOWN.get(key.family, ()):
                where = " (base)" if key.on_base else ""
                cols[str(key)] = f"{key.subject} {stat}{where}"
    if not cols:
        return ""
    table = format_cells(summary, columns=sorted(cols, key=lambda k: (MetricKey.parse(k).subject, k)))
    text = [
        "## Instruments: did the model stop using the probe's direction?\n",
        "Evasion geometry on the held-out on-policy rows (`share_on_probe`: share of the class-mean difference "
        "along the probe's direction; `off_probe`: its size orthogonal to it; `n_components`: principal "
        "components holding 90% of the between-class variance; `angle_deg`: to a probe re-fit on the cell's "
        "model)."
        + (
            " Causal role: `steer_slope` (behaviour rate per unit step along the direction) and "
            "`ablation_effect` (rate with the direction projected out minus without), on the cell's model and "
            "on the base model."
            if config.eval.causal
            else ""
        )
        + "\n",
        _markdown(table.rename(columns=cols)),
    ]
    return "\n".join(text)


def _spread(values: Any) -> str:
    """``"mean ± SD (n)"`` of the finite ``values`` (SD between seeds; none with one seed)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return "–"
    sd = f" ± {v.std(ddof=1):.3f}" if len(v) > 1 else ""
    return f"{v.mean():+.3f}{sd} ({len(v)})"


def causal_seeds_markdown(results: Any, config: StudyConfig) -> str:
    """The causal metrics over seeds: per cell mean ± between-seed SD (n seeds), and paired by seed, each probe
    cell minus its control and minus the seed's base model; "" without causal columns."""
    probes = dict.fromkeys(str(MetricKey.parse(c).subject) for c in results.columns if str(c).startswith(f"{CAUSAL}/"))
    # (label, the cell's column, the base model's column)
    cols = [
        (f"{p} {s}", str(causal_key(s, p)), str(causal_key(s, p, base=True)))
        for p in probes
        for s in _SHOWN[CAUSAL]
        if str(causal_key(s, p)) in results.columns
    ]
    if not cols:
        return ""
    head = "| {} | " + " | ".join(label for label, _, _ in cols) + " |"
    rule = "|---|" + "---|" * len(cols)
    per_cell = [head.format("cell"), rule]
    for cell, g in results.groupby("cell", sort=False):
        per_cell.append(f"| {cell} | " + " | ".join(_spread(g[own]) for _, own, _ in cols) + " |")
    paired = [head.format("paired by seed"), rule]
    by_seed = results.set_index(["cell", "seed"])
    pairs = [(c, k) for c, k in control_pairs(config) if c in by_seed.index and k in by_seed.index]
    for cell, control in pairs:
        a, b = by_seed.loc[cell], by_seed.loc[control]
        paired.append(f"| {cell} − {control} | " + " | ".join(_spread(a[own] - b[own]) for _, own, _ in cols) + " |")
    for cell in dict.fromkeys(c for c, _ in pairs):
        a = by_seed.loc[cell]
        diffs = [_spread(a[own] - a[base]) if base in a else "–" for _, own, base in cols]
        paired.append(f"| {cell} − base model | " + " | ".join(diffs) + " |")
    return "\n".join(
        [
            "## Causal metrics over seeds\n",
            "Mean ± between-seed SD (n seeds) of each probe direction's steering slope and ablation effect on the "
            "cell's model; below, paired by seed: each probe cell minus its control, and minus the same seed's base "
            "model (same prompts and sampling seed).\n",
            "\n".join(per_cell) + "\n",
            "\n".join(paired) + "\n",
        ]
    )


def attribution_md(root: Path, config: StudyConfig) -> str:
    """With saved attributions: write ``attribution.csv`` (:func:`attribution_contrasts`) in ``root`` and return
    the ``instruments.md`` section (components that moved most); "" when nothing was attributed."""
    from probe_lens._io import atomic_write

    table = attribution_table(RunFolder(root), config.seeds)
    if table.empty:
        return ""
    contrasts = attribution_contrasts(table, control_pairs(config))
    atomic_write(root / ATTRIBUTION_CSV, lambda p: contrasts.to_csv(p, index=False))
    return attribution_markdown(contrasts)


def write_instruments(root: Path, summary: Any, config: StudyConfig, results: Any = None) -> str:
    """Write ``instruments.md`` in ``root`` when the results hold instrument columns or the run saved
    attributions (``results``: the per-seed rows, for the causal metrics over seeds); returns its first section,
    the one ``headline.md`` shows (or "")."""
    from probe_lens._io import atomic_write

    parts = [instruments_markdown(summary, config)]
    if results is not None:
        parts.append(causal_seeds_markdown(results, config))
    parts.append(attribution_md(root, config))
    text = "\n".join(p for p in parts if p)
    if text:
        atomic_write(root / INSTRUMENTS_MD, lambda p: p.write_text(text))
    return parts[0]
