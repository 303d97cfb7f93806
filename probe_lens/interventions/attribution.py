"""Direct attribution of a linear probe's logit to the model's components.

The residual stream at ``blocks.L.hook_resid_post`` is a sum: the token embedding (+ a learned
positional embedding, if the model adds one), then each layer's attention output and MLP output.
An attention output is ``sum_h z_h @ W_O[h] + b_O`` (one term per *query* head, also under
grouped-query attention, where heads share keys and values but not ``z``). Where the model
normalises a sub-layer's output before adding it (Gemma's ``ln1_post``/``ln2_post``), the RMS
scale of each token is read from the forward pass and held fixed, so the decomposition stays exact.

A probe scores ``pool(resid) @ coef_raw_ + bias_`` with mean (or last-token) pooling, both linear,
so each component's *direct contribution* is ``pool(component) @ coef_raw_`` and::

    sum of contributions + bias_ == probe.decision_function(pool(resid))   (to float rounding)

Contributions are direct effects only: a head's output also changes what later layers compute,
which is counted in those layers' terms, not in the head's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from transformer_lens import ActivationCache, HookedTransformer

from probe_lens.activations import pool, resolve_hook, trim_left_padding
from probe_lens.activations.hooks import hook_layer
from probe_lens.probes.base import BaseProbe, Probe

__all__ = ["Component", "attribution_gap", "component_gap", "components", "probe_attribution", "probe_attributions"]

_STAGES = {"hook_resid_pre": 0, "hook_resid_mid": 1, "hook_resid_post": 2}


@dataclass(frozen=True)
class Component:
    """One additive term of the probe's logit: ``kind`` in embed, pos_embed, head, attn_bias, mlp, bias."""

    kind: str
    layer: int | None = None
    head: int | None = None

    @property
    def label(self) -> str:
        if self.kind == "head":
            return f"L{self.layer}H{self.head}"
        return self.kind if self.layer is None else f"L{self.layer} {self.kind}"


def _reads(model: HookedTransformer, hook: str) -> tuple[int, int]:
    """(layers fully before the hook, 1 if the hook's own layer's attention is included)."""
    layer, stage = hook_layer(hook), hook.rsplit(".", 1)[-1]
    if layer is None or stage not in _STAGES or hook != f"blocks.{layer}.{stage}":
        raise ValueError(f"attribution reads a residual-stream hook (blocks.L.hook_resid_pre/mid/post), got {hook!r}")
    cfg = model.cfg
    if cfg.parallel_attn_mlp or cfg.original_architecture in ("Olmo2ForCausalLM", "Olmo3ForCausalLM"):
        raise NotImplementedError("attribution supports sequential pre-norm blocks (GPT-2, Llama, Gemma families)")
    if cfg.use_normalization_before_and_after and not str(cfg.normalization_type).startswith("RMS"):
        raise NotImplementedError("attribution supports post-sub-layer norms of RMS type only")
    stage_index = _STAGES[stage]
    return (layer + 1, 0) if stage_index == 2 else (layer, int(stage_index == 1))


def _adds_pos_embed(model: HookedTransformer) -> bool:
    return model.cfg.positional_embedding_type == "standard"


def components(model: HookedTransformer, hook: str) -> list[Component]:
    """The additive terms of the residual stream at ``hook`` (a resid_pre/mid/post hook), in order."""
    full, own_attn = _reads(model, hook)
    out = [Component("embed")] + ([Component("pos_embed")] if _adds_pos_embed(model) else [])
    for layer in range(full + own_attn):
        out += [Component("head", layer, h) for h in range(model.cfg.n_heads)]
        out.append(Component("attn_bias", layer))
        if layer < full and not model.cfg.attn_only:
            out.append(Component("mlp", layer))
    return out


def _names(model: HookedTransformer, comps: Sequence[Component]) -> list[str]:
    names = ["blocks.0.hook_resid_pre"] + (["hook_pos_embed"] if _adds_pos_embed(model) else [])
    post = model.cfg.use_normalization_before_and_after
    for c in comps:
        if c.kind == "attn_bias":
            names.append(f"blocks.{c.layer}.attn.hook_z")
            names += [f"blocks.{c.layer}.ln1_post.hook_scale"] if post else []
        elif c.kind == "mlp":
            names.append(f"blocks.{c.layer}.hook_mlp_out")
    return names


def _token_terms(
    model: HookedTransformer, cache: ActivationCache, comps: Sequence[Component], w: torch.Tensor
) -> Float[torch.Tensor, "batch pos n_components n_probes"]:
    """Each component's per-token dot product with each probe weight (``w``: [d_model, n_probes], float64)."""
    cols: list[torch.Tensor] = []
    pos_embed = cache["hook_pos_embed"].double() if _adds_pos_embed(model) else None
    for c in comps:
        if c.kind == "embed":
            embed = cache["blocks.0.hook_resid_pre"].double() - (0 if pos_embed is None else pos_embed)
            cols.append((embed @ w)[..., None, :])
        elif c.kind == "pos_embed" and pos_embed is not None:
            cols.append((pos_embed @ w)[..., None, :])
        elif c.kind == "attn_bias":
            cols.append(_attention_terms(model, cache, int(c.layer or 0), w))
        elif c.kind == "mlp":
            cols.append((cache[f"blocks.{c.layer}.hook_mlp_out"].double() @ w)[..., None, :])
    return torch.cat(cols, dim=2)


def _attention_terms(
    model: HookedTransformer, cache: ActivationCache, layer: int, w: torch.Tensor
) -> Float[torch.Tensor, "batch pos n_heads_plus_1 n_probes"]:
    """Per-head terms then the b_O term of one layer: ``z_h @ W_O[h] @ w`` (post-norm scale held)."""
    block = model.blocks[layer]
    read = w
    if model.cfg.use_normalization_before_and_after:
        read = w * block.ln1_post.w.double()[:, None]
    v = block.attn.W_O.double() @ read  # [n_heads, d_head, n_probes]
    z = cache[f"blocks.{layer}.attn.hook_z"].double()  # [batch, pos, n_heads, d_head]
    bias = (block.attn.b_O.double() @ read).expand(*z.shape[:2], -1)[:, :, None, :]
    terms = torch.cat([torch.einsum("bphd,hdk->bphk", z, v), bias], dim=2)
    if model.cfg.use_normalization_before_and_after:
        terms = terms / cache[f"blocks.{layer}.ln1_post.hook_scale"].double()[..., None]
    return terms


def _probe_parts(probe: Probe, hook: str | None, pooling: str | None) -> tuple[BaseProbe, str, str]:
    if not isinstance(probe, BaseProbe):
        raise TypeError(f"attribution needs a single linear probe, got {type(probe).__name__}; pass a member")
    probe._check_fitted()
    hook = hook or probe.hook
    if hook is None:
        raise ValueError("the probe records no hook; pass hook=")
    pooling = pooling or probe.pooling or "mean"
    if pooling not in ("mean", "last"):
        raise ValueError(f"attribution needs a linear pooling ('mean' or 'last'), got {pooling!r}")
    return probe, hook, pooling


@torch.no_grad()
def probe_attribution(
    model: HookedTransformer,
    probe: Probe,
    tokens: Int[torch.Tensor, "n pos"],
    attention_mask: Int[torch.Tensor, "n pos"],
    pool_mask: Int[torch.Tensor, "n pos"],
    *,
    hook: str | None = None,
    pooling: str | None = None,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Direct contribution of every component to the probe's logit, per text (tidy, long format).

    Inputs as :func:`probe_lens.collect` (``pool_mask``: the positions the probe pools over, e.g.
    the response tokens). ``hook``/``pooling`` default to the probe's metadata (pooling: mean).

    Returns:
        Columns ``text`` (row index), ``component`` (embed, pos_embed, head, attn_bias, mlp, bias),
        ``layer`` and ``head`` (nullable ints), ``label`` (e.g. ``"L3H1"``), ``contribution``
        (float64). Per text the contributions, the probe's ``bias`` row included, sum to its logit.
    """
    return probe_attributions(
        model, {"probe": probe}, tokens, attention_mask, pool_mask, hook=hook, pooling=pooling, batch_size=batch_size
    )["probe"]


@torch.no_grad()
def probe_attributions(
    model: HookedTransformer,
    probes: Mapping[str, Probe],
    tokens: Int[torch.Tensor, "n pos"],
    attention_mask: Int[torch.Tensor, "n pos"],
    pool_mask: Int[torch.Tensor, "n pos"],
    *,
    hook: str | None = None,
    pooling: str | None = None,
    batch_size: int = 8,
) -> dict[str, pd.DataFrame]:
    """:func:`probe_attribution` of several probes, ``{name: table}``: one forward pass per batch for all the
    probes that read the same hook (``hook``/``pooling``: as there, for every probe)."""
    parts = {name: _probe_parts(p, hook, pooling) for name, p in probes.items()}
    groups: dict[tuple[str, str], list[str]] = {}
    for name, (_, h, pl) in parts.items():
        groups.setdefault((resolve_hook(model, h), pl), []).append(name)
    out: dict[str, pd.DataFrame] = {}
    for (h, pl), names in groups.items():
        fitted = [parts[n][0] for n in names]
        values = _pooled_terms(model, fitted, h, pl, tokens, attention_mask, pool_mask, batch_size)
        comps = components(model, h)
        out.update(
            {n: _tidy(values[..., i], comps, p.bias_) for i, (n, p) in enumerate(zip(names, fitted, strict=True))}
        )
    return {name: out[name] for name in probes}


def _pooled_terms(
    model: HookedTransformer,
    probes: Sequence[BaseProbe],
    hook: str,
    pooling: str,
    tokens: Int[torch.Tensor, "n pos"],
    attention_mask: Int[torch.Tensor, "n pos"],
    pool_mask: Int[torch.Tensor, "n pos"],
    batch_size: int,
) -> np.ndarray:
    """[n, n_components, n_probes]: each component's pooled contribution to each probe's logit (no bias)."""
    comps = components(model, hook)
    names = _names(model, comps)
    w = torch.stack([torch.as_tensor(p.coef_raw_, dtype=torch.float64) for p in probes], dim=1)
    w = w.to(model.cfg.device)
    stop = (hook_layer(hook) or 0) + 1
    parts = []
    for start in range(0, tokens.shape[0], batch_size):
        sl = slice(start, start + batch_size)
        tok, am, pm = trim_left_padding(tokens[sl], attention_mask[sl], pool_mask[sl])
        _, cache = model.run_with_cache(
            tok.to(model.cfg.device),
            attention_mask=am.to(model.cfg.device),
            names_filter=names,
            stop_at_layer=stop if stop < model.cfg.n_layers else None,
        )
        terms = _token_terms(model, cache, comps, w)  # [batch, pos, n_components, n_probes]
        pooled = pool(terms.flatten(2), pm.to(terms.device), pooling)
        parts.append(pooled.reshape(terms.shape[0], *terms.shape[2:]).cpu())
    return torch.cat(parts).numpy()


def _tidy(values: np.ndarray, comps: Sequence[Component], bias: float) -> pd.DataFrame:
    comps = [*comps, Component("bias")]
    values = np.concatenate([values, np.full((values.shape[0], 1), bias)], axis=1)
    n, k = values.shape
    return pd.DataFrame(
        {
            "text": np.repeat(np.arange(n), k),
            "component": [c.kind for c in comps] * n,
            "layer": pd.array([c.layer for c in comps] * n, dtype="Int64"),
            "head": pd.array([c.head for c in comps] * n, dtype="Int64"),
            "label": [c.label for c in comps] * n,
            "contribution": values.reshape(-1),
        }
    )


def component_gap(attribution: pd.DataFrame, labels: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """Per component: mean contribution on positive texts minus mean on negative texts.

    ``labels`` (0/1, one per text, in ``text`` order). Returns columns component, layer, head,
    label, gap; the gaps sum to the probe's mean positive-minus-negative logit gap.
    """
    y = np.asarray(labels).astype(int)
    n = int(attribution["text"].max()) + 1
    if y.shape != (n,) or not set(np.unique(y)) <= {0, 1} or len(np.unique(y)) < 2:
        raise ValueError(f"labels must be 0/1 with both classes, one per text ({n}), got shape {y.shape}")
    sign = np.where(y == 1, 1.0 / (y == 1).sum(), -1.0 / (y == 0).sum())
    weighted = attribution.assign(gap=attribution["contribution"] * sign[attribution["text"].to_numpy()])
    keys = ["component", "layer", "head", "label"]
    return weighted.groupby(keys, sort=False, dropna=False)["gap"].sum().reset_index()


def attribution_gap(
    base: HookedTransformer,
    trained: HookedTransformer,
    probe: Probe,
    tokens: Int[torch.Tensor, "n pos"],
    attention_mask: Int[torch.Tensor, "n pos"],
    pool_mask: Int[torch.Tensor, "n pos"],
    labels: Sequence[int] | np.ndarray,
    **kwargs: object,
) -> pd.DataFrame:
    """The positive-minus-negative gap per component on the same texts for two models.

    Returns columns component, layer, head, label, ``base``, ``trained`` and ``difference``
    (trained minus base): which components moved the probe's score gap.
    """
    gaps = [
        component_gap(probe_attribution(m, probe, tokens, attention_mask, pool_mask, **kwargs), labels)  # type: ignore[arg-type]
        for m in (base, trained)
    ]
    out = gaps[0].rename(columns={"gap": "base"})
    out["trained"] = gaps[1]["gap"].to_numpy()
    out["difference"] = out["trained"] - out["base"]
    return out
