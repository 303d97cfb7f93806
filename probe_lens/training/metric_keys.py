"""Metric keys: every telemetry, evaluation and study metric name is built and parsed here, and only here.

A key is ``<family>/<name>[/<subject>]`` (geometry: ``geometry/<hook>/<stat>``), the subject a probe
(an ensemble member: ``<probe>/m<i>``) or a hook; a results column's interval adds ``/ci_low`` or
``/ci_high``. The keys in use::

    probe/auroc_frozen/<probe>          telemetry: AUROC of a trained-against probe on the drift set
    probe/auroc_heldout/<probe>         telemetry: AUROC of a held-out probe
    probe/auroc_retrained/<hook>        telemetry: AUROC of a probe re-fit on the current activations
    <set>/auroc_<kind>/<probe or hook>  the same on the evaluation-only set ``<set>`` (e.g. curated)
    drift/cosine/<probe>                cosine(original direction, the same estimator re-fit now)
    geometry/<hook>/<stat>              residual geometry (mean_diff_norm, proj_toxic, pca_var_top5, ...)
    probe/<set>_auroc/<probe>           a study's tracked probe on its evaluation set (onpolicy, curated)
    probe/<set>_auroc_retrained/<hook>  a study's re-fit probe on that set
    drift/cosine_floor/<probe>          the probe's bootstrap noise floor of the drift cosine
    probe/<set>_recall_at_fpr<pp>/<probe>   recall at the threshold giving pp% FPR on the base model's benign rows
    probe/<set>_fpr_at_fpr<pp>/<probe>      false-positive rate at that threshold (``benign``: every benign row)
    probe/<set>_auroc_kind_<kind>/<probe>  a tracked probe on the rows of one ``kind`` of a curated set
    causal/<stat>/<probe>               a probe direction's causal role in a cell's model (steer_slope, ...)
    causal/<stat>_base/<probe>          the same on the seed's base model
    evasion/<stat>/<probe>              the class signal split along the probe's direction (share_on_probe, ...)
    outputs/<stat>_<part>/<probe>       a cell's evaluation outputs read by the original probe (``stat``: mean,
                                        recall01; ``part``: trained, base, representation, behaviour)
    probe/<set>_auroc_refit_fresh/<hook>  a probe re-fit on fresh samples of the cell's model
    eval/<name>, baseline/<name>        evaluation and baseline numbers (no subject)

:meth:`MetricKey.parse` reads every one of them back (``str(MetricKey.parse(k)) == k``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

PROBE, DRIFT, GEOMETRY, EVAL, BASELINE = "probe", "drift", "geometry", "eval", "baseline"
CAUSAL, EVASION, OUTPUTS = "causal", "evasion", "outputs"
OUTPUT_STATS = ("mean", "recall01")
OUTPUT_PARTS = ("trained", "base", "representation", "behaviour")
DRIFT_SET = "drift"
"""Telemetry's name for its own (drift) set; its AUROC keys carry the family ``probe``."""
AUROC_KINDS = ("frozen", "heldout", "retrained")
INTERVALS = ("ci_low", "ci_high")
_AUROC = "auroc"
_RETRAINED = "retrained"
_MEMBER = "m"
_KIND = "_kind_"
_BASE = "_base"


@dataclasses.dataclass(frozen=True)
class MetricKey:
    """One metric key, e.g. ``MetricKey("drift", "cosine", "ensemble3_L6/m0")`` is ``drift/cosine/ensemble3_L6/m0``."""

    family: str
    """The first part: ``probe``, ``drift``, ``geometry``, ``eval``, ``baseline`` or an evaluation set's name
    ("" for a key of one part, e.g. ``step``)."""
    name: str
    """What is measured: ``auroc_frozen``, ``onpolicy_auroc``, ``cosine``, ``resid_norm``, ``toxicity_rate``, ..."""
    subject: str | None = None
    """The probe (an ensemble member ``<probe>/m<i>``) or hook measured; None for none."""
    interval: str | None = None
    """``ci_low`` / ``ci_high`` for a results column's interval bound; None for the value itself."""

    def __str__(self) -> str:
        if not self.family:
            parts = [self.name]
        elif self.family == GEOMETRY and self.subject is not None:
            parts = [self.family, self.subject, self.name]
        else:
            parts = [self.family, self.name, *([self.subject] if self.subject is not None else [])]
        return "/".join(parts + ([self.interval] if self.interval else []))

    @classmethod
    def parse(cls, key: str) -> MetricKey:
        """The key ``key`` (any metric or results column name) as a :class:`MetricKey`."""
        if not isinstance(key, str) or not key:
            raise ValueError(f"a metric key is a non-empty string, got {key!r}")
        parts = key.split("/")
        interval = parts.pop() if len(parts) > 1 and parts[-1] in INTERVALS else None
        if len(parts) == 1:
            return cls("", parts[0], None, interval)
        if parts[0] == GEOMETRY and len(parts) == 3:
            return cls(GEOMETRY, parts[2], parts[1], interval)
        return cls(parts[0], parts[1], "/".join(parts[2:]) or None, interval)

    # ---- what a key says -----------------------------------------------------------------
    @property
    def member(self) -> int | None:
        """The ensemble member index of the subject (``<probe>/m<i>``), else None."""
        return member_index(self.subject) if self.subject is not None else None

    @property
    def probe(self) -> str | None:
        """The subject without its member part (an ensemble member's ensemble)."""
        return parent_probe(self.subject) if self.subject is not None else None

    @property
    def auroc_kind(self) -> str | None:
        """``frozen`` / ``heldout`` / ``retrained`` for a telemetry AUROC key, else None."""
        head, _, kind = self.name.partition("_")
        return kind if head == _AUROC and kind in AUROC_KINDS and self.subject is not None else None

    @property
    def tracked_set(self) -> str | None:
        """The evaluation set of a study's tracked-probe AUROC (``probe/<set>_auroc/<probe>``), else None."""
        head, sep, tail = self.name.rpartition("_")
        if self.family == PROBE and sep and tail == _AUROC and self.subject is not None:
            return head
        return None

    @property
    def curated_kind(self) -> tuple[str, str] | None:
        """``(set, kind)`` of a per-kind AUROC key (``probe/<set>_auroc_kind_<kind>/<probe>``), else None."""
        head, sep, kind = self.name.partition(f"_{_AUROC}{_KIND}")
        return (head, kind) if self.family == PROBE and sep and head and kind and self.subject is not None else None

    @property
    def output_split(self) -> tuple[str, str] | None:
        """``(stat, part)`` of an outputs key (``outputs/<stat>_<part>/<probe>``), else None."""
        stat, sep, part = self.name.rpartition("_")
        ok = self.family == OUTPUTS and sep and stat in OUTPUT_STATS and part in OUTPUT_PARTS and self.subject
        return (stat, part) if ok else None

    @property
    def on_base(self) -> bool:
        """True for a causal key measured on the base model (``causal/<stat>_base/<probe>``)."""
        return self.family == CAUSAL and self.name.endswith(_BASE)

    def with_interval(self, bound: str) -> MetricKey:
        """This key's interval column (``bound``: ``ci_low`` or ``ci_high``)."""
        if bound not in INTERVALS:
            raise ValueError(f"an interval bound is one of {INTERVALS}, got {bound!r}")
        return dataclasses.replace(self, interval=bound)


# ---- ensemble members -----------------------------------------------------------------------
def member_name(probe: str, index: int) -> str:
    """The name of member ``index`` of ensemble ``probe``: ``<probe>/m<index>``."""
    return f"{probe}/{_MEMBER}{int(index)}"


def member_index(name: str) -> int | None:
    """``i`` of a member name ``<probe>/m<i>``, else None."""
    head, sep, tail = name.rpartition("/")
    digits = tail[len(_MEMBER) :]
    return int(digits) if sep and head and tail.startswith(_MEMBER) and digits.isdigit() else None


def parent_probe(name: str) -> str:
    """The ensemble of a member name ``<probe>/m<i>``; any other name unchanged."""
    return name.rpartition("/")[0] if member_index(name) is not None else name


# ---- builders -------------------------------------------------------------------------------
def telemetry_auroc(which: str, kind: str, subject: str) -> MetricKey:
    """Telemetry's AUROC key of ``subject`` on set ``which`` (``drift``: family ``probe``): ``<fam>/auroc_<kind>/<subject>``."""
    if kind not in AUROC_KINDS:
        raise ValueError(f"an AUROC kind is one of {AUROC_KINDS}, got {kind!r}")
    return MetricKey(PROBE if which == DRIFT_SET else which, f"{_AUROC}_{kind}", subject)


def cosine(probe: str) -> MetricKey:
    """``drift/cosine/<probe>``."""
    return MetricKey(DRIFT, "cosine", probe)


def cosine_floor(probe: str) -> MetricKey:
    """``drift/cosine_floor/<probe>``."""
    return MetricKey(DRIFT, "cosine_floor", probe)


def geometry(hook: str, stat: str) -> MetricKey:
    """``geometry/<hook>/<stat>``."""
    return MetricKey(GEOMETRY, stat, hook)


def tracked_auroc(which: str, probe: str) -> MetricKey:
    """A study's tracked-probe AUROC on evaluation set ``which``: ``probe/<which>_auroc/<probe>``."""
    return MetricKey(PROBE, f"{which}_{_AUROC}", probe)


def retrained_auroc(which: str, hook: str) -> MetricKey:
    """A study's re-fit probe AUROC on evaluation set ``which``: ``probe/<which>_auroc_retrained/<hook>``."""
    return MetricKey(PROBE, f"{which}_{_AUROC}_{_RETRAINED}", hook)


def study_summary(which: str, what: str) -> MetricKey:
    """A study's per-row summary of set ``which`` (``what``: ``trained_against``, ``heldout_avg``):
    ``probe/<which>_auroc_<what>``."""
    return MetricKey(PROBE, f"{which}_{_AUROC}_{what}")


MONITOR_STATS = ("recall", "fpr")


def monitor_key(which: str, stat: str, fpr: float, probe: str) -> MetricKey:
    """A tracked probe read as a monitor, at the threshold fixed on the base model's benign rows for
    false-positive rate ``fpr`` (a whole percent, e.g. 0.01): ``probe/<which>_<stat>_at_fpr<pp>/<probe>``
    (``stat``: ``recall`` or ``fpr``; ``which``: an evaluation set, or ``benign`` for all its benign rows)."""
    if stat not in MONITOR_STATS:
        raise ValueError(f"a monitor statistic is one of {MONITOR_STATS}, got {stat!r}")
    pct = round(float(fpr) * 100)
    if not 0 < pct < 100 or abs(pct - float(fpr) * 100) > 1e-9:
        raise ValueError(f"a monitor's target false-positive rate is a whole percent in (0, 1), got {fpr!r}")
    return MetricKey(PROBE, f"{which}_{stat}_at_fpr{pct:02d}", probe)


def kind_auroc(which: str, kind: str, probe: str) -> MetricKey:
    """A tracked probe's AUROC on the rows of ``kind`` of curated set ``which``: ``probe/<which>_auroc_kind_<kind>/<probe>``."""
    return MetricKey(PROBE, f"{which}_{_AUROC}{_KIND}{kind}", probe)


def causal_key(stat: str, probe: str, *, base: bool = False) -> MetricKey:
    """``causal/<stat>/<probe>`` (a cell's model) or ``causal/<stat>_base/<probe>`` (the seed's base model)."""
    return MetricKey(CAUSAL, stat + (_BASE if base else ""), probe)


def evasion_key(stat: str, probe: str) -> MetricKey:
    """``evasion/<stat>/<probe>``: the class signal relative to ``probe``'s direction (``share_on_probe``, ...)."""
    return MetricKey(EVASION, stat, probe)


def output_split_key(stat: str, part: str, probe: str) -> MetricKey:
    """A cell's evaluation outputs read by original probe ``probe``: ``outputs/<stat>_<part>/<probe>`` (see
    :mod:`probe_lens.experiments.monitor_split`)."""
    if stat not in OUTPUT_STATS or part not in OUTPUT_PARTS:
        raise ValueError(f"an outputs key is <{'|'.join(OUTPUT_STATS)}>_<{'|'.join(OUTPUT_PARTS)}>, got {stat}_{part}")
    return MetricKey(OUTPUTS, f"{stat}_{part}", probe)


def refit_fresh_auroc(which: str, hook: str) -> MetricKey:
    """A probe re-fit on fresh samples of the cell's model, on set ``which``: ``probe/<which>_auroc_refit_fresh/<hook>``
    (the telemetry's re-fit, on the base model's continuations teacher-forced, is ``..._auroc_retrained``)."""
    return MetricKey(PROBE, f"{which}_{_AUROC}_refit_fresh", hook)


def eval_key(name: str) -> MetricKey:
    """``eval/<name>``."""
    return MetricKey(EVAL, name)


def baseline_key(name: str) -> MetricKey:
    """``baseline/<name>``."""
    return MetricKey(BASELINE, name)


def as_tracked(key: MetricKey, drift_set: str) -> MetricKey:
    """A telemetry AUROC key under a study's role-free name: the drift set is called ``drift_set``, frozen
    and held-out probes alike ``probe/<set>_auroc/<probe>``, re-fits ``probe/<set>_auroc_retrained/<hook>``;
    any other key unchanged."""
    kind = key.auroc_kind
    if kind is None:
        return key
    which = drift_set if key.family == PROBE else key.family
    assert key.subject is not None  # an AUROC kind has a subject
    return retrained_auroc(which, key.subject) if kind == _RETRAINED else tracked_auroc(which, key.subject)


# ---- score tables (``DriftTelemetry.scores``: {set: {score name: P(positive) per evaluation row}}) ----
LABELS = "__y__"
"""The score table's entry holding the rows' 0/1 labels."""
GROUPS = "__prompt__"
"""A saved score table's entry holding each row's prompt (on-policy rows: several continuations per prompt),
the clusters of its intervals; absent where every row is its own."""


def retrained_score_name(hook: str) -> str:
    """The score table's name of the probe re-fit at ``hook``: ``retrained/<hook>``."""
    return f"{_RETRAINED}/{hook}"


def retrained_hook(name: str) -> str | None:
    """The hook of a score-table name ``retrained/<hook>``, else None (a probe's name)."""
    head, sep, hook = name.partition("/")
    return hook if sep and head == _RETRAINED else None


def score_key(which: str, name: str, trained: Collection[str] = ()) -> MetricKey:
    """Telemetry's AUROC key of score-table entry ``name`` of set ``which`` (``trained``: the probe and member
    names trained against, ``auroc_frozen``; other probes ``auroc_heldout``; re-fits ``auroc_retrained``)."""
    hook = retrained_hook(name)
    if hook is not None:
        return telemetry_auroc(which, _RETRAINED, hook)
    return telemetry_auroc(which, "frozen" if name in trained else "heldout", name)
