"""Normalising "a probe, an ensemble, a list or a dict of them" into (name, hook, probe) entries."""

from __future__ import annotations

import dataclasses
from typing import Any

from probe_lens.activations import resolve_hook
from probe_lens.training.metric_keys import member_name


@dataclasses.dataclass
class FlatProbe:
    """One single-direction probe with the hook it reads (ensembles are expanded into members)."""

    name: str
    hook: str
    probe: Any
    pooling: str | None
    parent: str  # name of the probe or ensemble this came from


def _meta(probe: Any, field: str) -> Any:
    meta = getattr(probe, "metadata", None)
    value = getattr(meta, field, None) if meta is not None else None
    return value if value is not None else getattr(probe, field, None)


def _members(probe: Any) -> list[Any] | None:
    members = getattr(probe, "members_", None)
    if members is None:
        return None
    if hasattr(probe, "member"):
        return [probe.member(i) for i in range(len(members))]
    return list(members)


def named_probes(probes: Any) -> dict[str, Any]:
    """``{name: probe}`` from a probe, a list (names ``probe0``, ...) or a dict."""
    if probes is None:
        return {}
    if isinstance(probes, dict):
        out = dict(probes)
    elif isinstance(probes, (list, tuple)):
        out = {f"probe{i}": p for i, p in enumerate(probes)}
    else:
        out = {"probe0": probes}
    if not out:
        raise ValueError("an empty collection of probes was given")
    for name, p in out.items():
        if not hasattr(p, "forward") or not hasattr(p, "predict_proba"):
            raise TypeError(
                f"probe {name!r} is a {type(p).__name__}; expected a fitted probe_lens probe "
                "(forward / predict_proba), e.g. LogisticProbe().fit(X, y)"
            )
    return out


def flatten_probes(model: Any, probes: Any, hook: str | int | None = None) -> list[FlatProbe]:
    """Expand probes and ensembles into single probes, each with a resolved hook name.

    The hook is the member's ``metadata.hook``, else its ensemble's, else ``hook``; if none is
    known the error says how to set one.
    """
    out: list[FlatProbe] = []
    default_hook = resolve_hook(model, hook) if hook is not None else None
    for name, probe in named_probes(probes).items():
        parent_hook = _meta(probe, "hook")
        parent_pool = _meta(probe, "pooling")
        members = _members(probe)
        entries = [(name, probe)] if members is None else [(member_name(name, i), m) for i, m in enumerate(members)]
        for sub, p in entries:
            h = _meta(p, "hook") or parent_hook or default_hook
            if h is None:
                raise ValueError(
                    f"probe {sub!r} has no hook: set it with probe.set_metadata(hook='blocks.L.hook_resid_post') "
                    "or pass hook=... to the trainer"
                )
            out.append(FlatProbe(sub, resolve_hook(model, h), p, _meta(p, "pooling") or parent_pool, name))
    return out
