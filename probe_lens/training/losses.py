"""Losses of the training loops: response log-probs, LM loss, probe term, KL term and DPO.

Everything here acts on *response* tokens only: position ``t`` of ``response_mask`` marks a token
whose log-probability (given tokens ``< t``) counts. Reductions are explicit so the loops can
normalise by the size of the whole (multi-process, accumulated) batch.

Under autocast (bf16 training) the log-softmax, the log-prob sums, the KL and the DPO loss run in fp32
with autocast off (the unembedding itself is fp32 under autocast, see ``probe_lens.models.compat``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from probe_lens.activations import pool
from probe_lens.probes import TokenProbe

_IGNORE = -100


def _fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in at least fp32 (fp64 stays fp64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _no_autocast(t: torch.Tensor):
    return torch.autocast(t.device.type, enabled=False)


def token_logps(
    logits: Float[torch.Tensor, "batch pos vocab"],
    tokens: Int[torch.Tensor, "batch pos"],
    response_mask: Int[torch.Tensor, "batch pos"],
) -> Float[torch.Tensor, "batch pos_minus_1"]:
    """log p(tokens[:, t] | tokens[:, <t]) at response positions, 0 elsewhere (fp32).

    Column ``t-1`` of the result holds the log-prob of ``tokens[:, t]``.
    """
    targets = tokens[:, 1:].masked_fill(~response_mask[:, 1:].bool(), _IGNORE)
    with _no_autocast(logits):
        flat = _fp32(logits[:, :-1].reshape(-1, logits.shape[-1]))
        nll = F.cross_entropy(flat, targets.reshape(-1), ignore_index=_IGNORE, reduction="none")
    return -nll.view(targets.shape)


_LM_HEAD_INPUT = "ln_final.hook_normalized"
# TransformerBridge's NormalizationBridge warns so when a forward hook edits hook_normalized (logits_from)
_BRIDGE_NORM_EDIT_WARNING = "A forward hook edited hook_scale/hook_normalized"


def response_logits_start(response_mask: Int[torch.Tensor, "batch pos"]) -> int:
    """First column whose logits any response token needs (the one before the first response token)."""
    cols = response_mask.bool().any(dim=0).nonzero()
    return max(int(cols[0]) - 1, 0) if len(cols) else 0


@contextlib.contextmanager
def logits_from(model: torch.nn.Module | Callable[..., torch.Tensor], start: int) -> Iterator[None]:
    """Inside this block a HookedTransformer unembeds only positions ``>= start``.

    The LM head (here a 262k-token vocabulary) is the most expensive layer of a small model, and the
    losses only need logits before response tokens; prompt positions are dropped just before it
    (at ``ln_final.hook_normalized``), so every value that is computed equals the full forward's.
    Models without that hook point (e.g. HF models) are left untouched: check ``logits.shape``. On a
    ``TransformerBridge`` the final norm's output is then rebuilt from the hooked values (TransformerLens
    warns that it may differ from HF's own at float rounding); that expected warning is silenced here.
    """
    base: Any = getattr(model, "module", model)  # DistributedDataParallel wraps the HookedTransformer
    hook_dict = getattr(base, "hook_dict", {})
    if start <= 0 or _LM_HEAD_INPUT not in hook_dict:
        yield
        return
    with base.hooks(fwd_hooks=[(_LM_HEAD_INPUT, lambda x, hook: x[:, start:])]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_BRIDGE_NORM_EDIT_WARNING, category=UserWarning)
        yield


def response_token_logps(
    model: Callable[..., torch.Tensor],
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"],
    response_mask: Int[torch.Tensor, "batch pos"],
    *,
    hooked: torch.nn.Module | None = None,
    return_logits: bool = False,
    start: int | None = None,
):
    """:func:`token_logps` of a forward that unembeds only the positions the response needs.

    Returns ``[batch, pos - 1 - start]`` log-probs aligned with ``tokens[:, start + 1:]`` (and the
    logits when ``return_logits``). ``hooked`` is the HookedTransformer whose hooks to use when
    ``model`` is a wrapper (DDP). ``start`` (default :func:`response_logits_start` of this batch) fixes
    the first unembedded column, e.g. to one that does not depend on the batch's rows.
    """
    first = response_logits_start(response_mask)
    if start is None:
        start = first
    elif not 0 <= start <= first:
        raise ValueError(
            f"start={start} must lie in [0, {first}] (the column before this batch's first response token)"
        )
    with logits_from(hooked if hooked is not None else model, start):
        logits = model(tokens, attention_mask=attention_mask)
    if logits.shape[1] == tokens.shape[1]:  # the model ignored the hook (not a HookedTransformer)
        logits = logits[:, start:]
    lp = token_logps(logits, tokens[:, start:], response_mask[:, start:].to(tokens.device))
    return (lp, logits) if return_logits else lp


def _sum_logps(lp: Float[torch.Tensor, "batch pos"]) -> Float[torch.Tensor, " batch"]:
    with _no_autocast(lp):
        return _fp32(lp).sum(dim=1)


def _check(tokens: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor) -> None:
    if tokens.ndim != 2 or attention_mask.shape != tokens.shape or response_mask.shape != tokens.shape:
        raise ValueError(
            f"tokens, attention_mask and response_mask must all be [batch, pos]; got "
            f"{tuple(tokens.shape)}, {tuple(attention_mask.shape)}, {tuple(response_mask.shape)}"
        )
    if bool(response_mask[:, 0].any()):
        raise ValueError("response_mask marks position 0; a response token needs at least one token before it")
    if bool((response_mask.bool() & ~attention_mask.bool()).any()):
        raise ValueError("response_mask marks padding (attention_mask is 0 there); the masks disagree")


def sequence_logps(
    model: Callable[..., torch.Tensor],
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"],
    response_mask: Int[torch.Tensor, "batch pos"],
) -> Float[torch.Tensor, " batch"]:
    """Sum of the log-probs of the response tokens given everything before them (nats, fp32)."""
    _check(tokens, attention_mask, response_mask)
    return _sum_logps(response_token_logps(model, tokens, attention_mask, response_mask))


def lm_loss(
    model: Callable[..., torch.Tensor],
    tokens: Int[torch.Tensor, "batch pos"],
    attention_mask: Int[torch.Tensor, "batch pos"],
    response_mask: Int[torch.Tensor, "batch pos"],
) -> Float[torch.Tensor, ""]:
    """Mean cross-entropy over all response tokens of the batch (nats per token)."""
    _check(tokens, attention_mask, response_mask)
    lp = response_token_logps(model, tokens, attention_mask, response_mask)
    n = response_mask[:, 1:].sum()
    if int(n) == 0:
        raise ValueError("no response tokens in this batch; lm_loss needs at least one")
    return -lp.sum() / n


def kl_per_token(
    policy_logits: Float[torch.Tensor, "batch pos vocab"],
    ref_logits: Float[torch.Tensor, "batch pos vocab"],
    response_mask: Int[torch.Tensor, "batch pos"],
) -> Float[torch.Tensor, "batch pos_minus_1"]:
    """KL(policy || reference) of the next-token distributions predicting each response token.

    Column ``t-1`` is the KL at the position that predicts ``tokens[:, t]``; 0 off the response.
    """
    with _no_autocast(policy_logits):
        p_log = torch.log_softmax(_fp32(policy_logits[:, :-1]), dim=-1)
        q_log = torch.log_softmax(_fp32(ref_logits[:, :-1]).to(p_log.device), dim=-1)
        kl = (p_log.exp() * (p_log - q_log)).sum(dim=-1)
        return kl * response_mask[:, 1:].to(kl.device, kl.dtype)


def probe_probability(
    acts: dict[str, Float[torch.Tensor, "batch pos d_model"]],
    response_mask: Int[torch.Tensor, "batch pos"],
    probes: Sequence[tuple[str, Any]],
    *,
    pooling: str = "mean",
    aggregate: str = "mean",
) -> Float[torch.Tensor, " batch"]:
    """P(toxic) from frozen probes on pooled *live* activations (differentiable w.r.t. ``acts``).

    ``probes`` is a list of ``(hook, probe)``; each probe's ``forward`` maps ``[batch, d_model]``
    to probabilities, a token probe's (``TokenProbe``: max-pooled, attention) reads every response token of
    ``[batch, pos, d_model]`` instead (``pooling`` does not apply to it). Several probes combine by
    ``aggregate`` (``mean`` or ``max``).
    """
    if not probes:
        raise ValueError("no probes given")
    pooled: dict[str, torch.Tensor] = {}
    out = []
    for hook, probe in probes:
        if hook not in acts:
            raise KeyError(f"no activation captured at {hook!r}; captured: {sorted(acts)}")
        if isinstance(probe, TokenProbe):
            out.append(probe.forward(acts[hook], response_mask.to(acts[hook].device).bool()).float().reshape(-1))
            continue
        if hook not in pooled:
            pooled[hook] = pool(acts[hook], response_mask.to(acts[hook].device), pooling)
        out.append(probe.forward(pooled[hook]).float().reshape(-1))
    stacked = torch.stack(out, dim=0)
    if aggregate == "mean":
        return stacked.mean(dim=0)
    if aggregate == "max":
        return stacked.max(dim=0).values
    raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")


def dpo_loss(
    policy_chosen_logps: Float[torch.Tensor, " batch"],
    policy_rejected_logps: Float[torch.Tensor, " batch"],
    ref_chosen_logps: Float[torch.Tensor, " batch"],
    ref_rejected_logps: Float[torch.Tensor, " batch"],
    beta: float,
    *,
    reduction: str = "mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sigmoid DPO loss (Rafailov et al. 2023) and TRL-named metrics.

    ``loss_i = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``; ``rewards/chosen`` is
    ``beta * (pi_c - ref_c)`` (detached). ``reduction``: ``"mean"``, ``"sum"`` or ``"none"``;
    metrics are batch means.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    shapes = {
        tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    }
    if len(shapes) != 1:
        raise ValueError(f"all four log-prob tensors must have the same shape [batch]; got {sorted(shapes)}")
    with _no_autocast(policy_chosen_logps):
        return _dpo_loss_fp32(
            _fp32(policy_chosen_logps),
            _fp32(policy_rejected_logps),
            ref_chosen_logps,
            ref_rejected_logps,
            beta,
            reduction,
        )


def _dpo_loss_fp32(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta, reduction):
    ref_c = ref_chosen_logps.to(policy_chosen_logps)
    ref_r = ref_rejected_logps.to(policy_rejected_logps)
    logits = (policy_chosen_logps - ref_c) - (policy_rejected_logps - ref_r)
    losses = -F.logsigmoid(beta * logits)
    chosen_rewards = beta * (policy_chosen_logps - ref_c).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_r).detach()
    metrics = {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }
    if reduction == "mean":
        return losses.mean(), metrics
    if reduction == "sum":
        return losses.sum(), metrics
    if reduction == "none":
        return losses, metrics
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
