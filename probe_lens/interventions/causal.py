"""Causal role of a probe's direction: behaviour and neutral-text KL under steering and ablation.

:func:`steering_curve` measures, for each step ``alpha`` along a probe's direction (both signs) and
under directional ablation, (a) the scorer's positive rate on fresh samples of the prompts and (b)
the mean per-token KL divergence from the unsteered model's next-token distribution on neutral
texts. :func:`steering_slope` fits rate ~ alpha by least squares; :func:`causal_metrics` is the
flat summary a study stores per model and probe.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from transformer_lens import HookedTransformer

from probe_lens.activations.hooks import HookSpec, resolve_hook
from probe_lens.interventions.steering import Positions, ablate, steer, target_hook
from probe_lens.models.generation import generate, left_pad, tokenize_prompts
from probe_lens.probes.base import Probe
from probe_lens.scorers.base import Scorer, label

__all__ = ["DEFAULT_ALPHAS", "causal_metrics", "residual_norm", "steering_curve", "steering_slope"]

DEFAULT_ALPHAS: tuple[float, ...] = (-0.25, -0.1, 0.1, 0.25)
"""Steps along the unit direction, in multiples of the mean residual norm at the hook (``relative``)."""

Condition = tuple[str, float, Callable[[], contextlib.AbstractContextManager[Any]]]


def _neutral_batches(
    model: HookedTransformer, texts: Sequence[str], batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ids = tokenize_prompts(model, list(texts), max_prompt_tokens=model.cfg.n_ctx)
    pad = model.tokenizer.pad_token_id if model.tokenizer is not None else 0
    return [left_pad(ids[i : i + batch_size], pad) for i in range(0, len(ids), batch_size)]


@torch.no_grad()
def residual_norm(model: HookedTransformer, hook: HookSpec, texts: Sequence[str], *, batch_size: int = 8) -> float:
    """Mean L2 norm of the activation at ``hook`` over the tokens of ``texts`` after BOS.

    BOS is left out: its residual norm is often far larger than any other token's (Gemma's by ~100x).
    """
    name = resolve_hook(model, hook)
    total, count = 0.0, 0
    for tokens, mask in _neutral_batches(model, texts, batch_size):
        _, cache = model.run_with_cache(
            tokens.to(model.cfg.device), attention_mask=mask.to(model.cfg.device), names_filter=name
        )
        norms = cache[name].float().norm(dim=-1).cpu()
        real = mask.bool()
        real[torch.arange(len(real)), real.int().argmax(dim=1)] = False  # each text's BOS: an outlier norm
        total += float(norms[real].sum())
        count += int(real.sum())
    if count == 0:
        raise ValueError("the neutral texts have no tokens after BOS to measure the residual norm on")
    return total / count


def _log_probs(model: HookedTransformer, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logits = model(tokens.to(model.cfg.device), attention_mask=mask.to(model.cfg.device))
    return torch.log_softmax(logits.float(), dim=-1)


@torch.no_grad()
def _neutral_kl(
    model: HookedTransformer, texts: Sequence[str], conditions: Sequence[Condition], batch_size: int
) -> list[float]:
    """Mean per-token KL(unsteered || condition) over the real tokens of ``texts``, per condition."""
    sums, count = [0.0] * len(conditions), 0
    for tokens, mask in _neutral_batches(model, texts, batch_size):
        base = _log_probs(model, tokens, mask)
        real = mask.bool().to(base.device)
        count += int(real.sum())
        for i, (_, _, context) in enumerate(conditions):
            with context():
                other = _log_probs(model, tokens, mask)
            kl = (base.exp() * (base - other)).sum(dim=-1)
            sums[i] += float(kl[real].sum())
    return [s / count for s in sums]


def _rates(
    model: HookedTransformer,
    prompts: list[str],
    scorer: Scorer,
    threshold: float,
    context: Callable[[], contextlib.AbstractContextManager[Any]],
    gen_kwargs: dict[str, Any],
) -> tuple[float, float]:
    with context():
        gen = generate(model, prompts, progress=False, **gen_kwargs)
    scores = scorer.score(gen.response_texts)
    return float(label(scores, threshold).mean()), float(scores.mean())


def steering_curve(
    model: HookedTransformer,
    probe: Probe | Float[torch.Tensor, " d_model"],
    prompts: Sequence[str],
    scorer: Scorer,
    *,
    neutral_texts: Sequence[str],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    hook: HookSpec | None = None,
    relative: bool = True,
    positions: Positions = "all",
    samples_per_prompt: int = 1,
    max_new_tokens: int = 16,
    threshold: float = 0.5,
    seed: int = 0,
    fast: bool = False,
    batch_size: int = 8,
) -> pd.DataFrame:
    """Rate and neutral-text KL for no intervention, each ``alpha`` and directional ablation.

    Every condition samples the same prompts with the same ``seed`` (common random numbers, so
    differences between conditions are not sampling noise of independent draws).

    Args:
        probe: a fitted single probe (its raw-space direction and hook) or a direction tensor.
        prompts: evaluation prompts; each is sampled ``samples_per_prompt`` times per condition.
        scorer: labels the continuations (``score(texts)`` -> P(positive); positive if >= ``threshold``).
        neutral_texts: texts on which the KL to the unsteered model is measured (every position
            is steered there, whatever ``positions`` says for generation).
        alphas: steps along the unit direction (0 is the unsteered row, always present); with
            ``relative`` in multiples of the mean residual norm at the hook on ``neutral_texts``.
        positions: where generation is steered (see :func:`~probe_lens.interventions.steer`).

    Returns:
        One row per condition: ``intervention`` (``"none"``, ``"steer"``, ``"ablate"``), ``alpha``
        (NaN for ablation), ``alpha_abs`` (residual units), ``rate``, ``mean_score``, ``kl`` (nats
        per token), ``n_samples``.
    """
    if not prompts or not neutral_texts:
        raise ValueError("steering_curve needs at least one prompt and one neutral text")
    name = target_hook(model, probe, hook)
    scale = residual_norm(model, name, neutral_texts, batch_size=batch_size) if relative else 1.0
    steps = sorted({float(a) for a in alphas} - {0.0})
    conditions: list[Condition] = [("none", 0.0, contextlib.nullcontext)]
    for a in steps:
        conditions.append(("steer", a, _steer_context(model, probe, a * scale, name, positions)))
    conditions.append(("ablate", math.nan, lambda: ablate(model, probe, name, positions=positions)))
    rows = [p for p in prompts for _ in range(samples_per_prompt)]
    gen_kwargs = {"max_new_tokens": max_new_tokens, "seed": seed, "fast": fast, "batch_size": batch_size}
    rates = [_rates(model, rows, scorer, threshold, c, gen_kwargs) for _, _, c in conditions]
    kls = [0.0, *_neutral_kl(model, neutral_texts, conditions[1:], batch_size)]
    return pd.DataFrame(
        {
            "intervention": [c[0] for c in conditions],
            "alpha": [c[1] for c in conditions],
            "alpha_abs": [c[1] * scale for c in conditions],
            "rate": [r[0] for r in rates],
            "mean_score": [r[1] for r in rates],
            "kl": kls,
            "n_samples": len(rows),
        }
    )


def _steer_context(
    model: HookedTransformer, probe: Any, alpha: float, hook: str, positions: Positions
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    return lambda: steer(model, probe, alpha, hook, positions=positions)


def steering_slope(curve: pd.DataFrame, column: str = "rate") -> float:
    """Least-squares slope of ``column`` on ``alpha`` over the unsteered and steered rows."""
    rows = curve[curve["intervention"].isin(["none", "steer"])]
    x, y = rows["alpha"].to_numpy(float), rows[column].to_numpy(float)
    if len(np.unique(x)) < 2:
        raise ValueError("a slope needs at least two distinct alphas")
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def causal_metrics(
    model: HookedTransformer,
    probe: Probe,
    prompts: Sequence[str],
    scorer: Scorer,
    *,
    neutral_texts: Sequence[str],
    **curve_kwargs: Any,
) -> dict[str, float]:
    """The study-facing summary of :func:`steering_curve` for one model and probe.

    Keys: ``steer_slope`` (rate per unit alpha), ``rate_unsteered``, ``rate_ablated``,
    ``ablation_effect`` (ablated minus unsteered rate), ``kl_ablated`` and ``kl_max_steer`` (the
    largest neutral-text KL over the steered rows: how much steering costs the model elsewhere).
    """
    curve = steering_curve(model, probe, prompts, scorer, neutral_texts=neutral_texts, **curve_kwargs)
    by = curve.set_index("intervention")
    none, ablated = by.loc["none"], by.loc["ablate"]
    return {
        "steer_slope": steering_slope(curve),
        "rate_unsteered": float(none["rate"]),
        "rate_ablated": float(ablated["rate"]),
        "ablation_effect": float(ablated["rate"] - none["rate"]),
        "kl_ablated": float(ablated["kl"]),
        "kl_max_steer": float(curve.loc[curve["intervention"] == "steer", "kl"].max()),
    }
