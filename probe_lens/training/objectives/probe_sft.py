"""Probe-based SFT: LM loss on the responses + lambda * P(toxic) of frozen probe(s) on the live activations.

``SFTObjective`` holds the loss the SFT objectives share
(``lm_weight * CE/token + probe_weight * mean P(toxic) + kl_weight * KL/token`` on response tokens);
``ProbeSFTObjective`` builds it from a ``ProbeSFTConfig`` and probes; ``train_probe_sft`` runs it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from jaxtyping import Float, Int

from probe_lens.activations import capture
from probe_lens.activations.hooks import stop_layer_for
from probe_lens.models import Generation, LensModel
from probe_lens.models.compat import training_products
from probe_lens.training.config import ProbeSFTConfig
from probe_lens.training.losses import kl_per_token, probe_probability, response_token_logps
from probe_lens.training.objectives.base import (
    MicroBatch,
    Objective,
    StepOutput,
    check_config,
    check_generation,
    model_device,
    trim_padding,
)
from probe_lens.training.probes_util import FlatProbe, flatten_probes
from probe_lens.training.trainer import StepCallback, Trainer, TrainResult


class SFTObjective(Objective):
    """``lm_weight * CE/token + probe_weight * mean P(toxic) + kl_weight * KL/token`` on the responses of ``data``.

    ``probes`` are read on the response-pooled (``pooling``) live activations and combined by
    ``aggregate``; ``reference_model`` (frozen) is needed when ``kl_weight > 0``. Without logits to
    compute (probe term only) the forward stops after the probes' deepest layer.
    """

    progress_metrics = ("train/loss", "train/probe_prob")

    def __init__(
        self,
        model: LensModel,
        data: Generation,
        *,
        probes: list[FlatProbe] | None = None,
        lm_weight: float = 1.0,
        probe_weight: float = 0.0,
        kl_weight: float = 0.0,
        pooling: str = "mean",
        aggregate: str = "mean",
        reference_model: LensModel | None = None,
    ) -> None:
        self.data = data
        self.probes = probes or []
        self.lm_weight, self.probe_weight, self.kl_weight = lm_weight, probe_weight if probes else 0.0, kl_weight
        self.pooling, self.aggregate = pooling, aggregate
        self.reference_model = reference_model
        self.hooks = sorted({p.hook for p in self.probes})
        self._needs_logits = self.lm_weight > 0 or self.kl_weight > 0
        self.stop_at_layer = None if self._needs_logits else stop_layer_for(self.hooks, model.cfg.n_layers)

    @property
    def n_examples(self) -> int:
        return len(self.data)

    @property
    def uses_all_parameters(self) -> bool:
        return self._needs_logits

    def batch_totals(self, indices: Int[torch.Tensor, " global_batch"]) -> dict[str, float]:
        n_tok = int(self.data.response_mask[indices][:, 1:].sum())
        if n_tok == 0:
            raise ValueError("a batch has no response tokens to train on; check data.response_mask")
        return {"tokens": float(n_tok), "examples": float(len(indices))}

    def loss(self, batch: MicroBatch) -> StepOutput:
        tok, am, rm = self._rows(batch)
        lp, logits, acts = self._forward(batch, tok, am, rm)
        totals = batch.totals
        loss, terms = torch.zeros((), device=tok.device), {}
        if lp is not None:
            lm = -lp.sum() / totals["tokens"]
            terms["train/lm_loss"] = lm.detach()
            if self.lm_weight:
                loss = loss + self.lm_weight * lm
        if self.probe_weight:
            probes = [(f.hook, f.probe) for f in self.probes]
            p = probe_probability(acts, rm, probes, pooling=self.pooling, aggregate=self.aggregate)
            term = p.sum() / totals["examples"]
            terms["train/probe_prob"] = term.detach()
            loss = loss + self.probe_weight * term
        if self.kl_weight:
            assert logits is not None  # kl_weight > 0 runs the forward to the logits
            kl = self._kl_to_reference(tok, am, rm, logits).sum() / totals["tokens"]
            terms["train/kl"] = kl.detach()
            loss = loss + self.kl_weight * kl
        return StepOutput(loss, terms)

    def _rows(self, batch: MicroBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens, attention and response masks of the micro-batch's rows, padding columns dropped, on the model's device."""
        d, idx = self.data, batch.indices
        tok, am, rm = trim_padding(d.tokens[idx], d.attention_mask[idx], d.response_mask[idx])
        dev = model_device(batch.model)
        return tok.to(dev), am.to(dev), rm.to(dev)

    def _forward(
        self,
        batch: MicroBatch,
        tok: Int[torch.Tensor, "batch pos"],
        am: Int[torch.Tensor, "batch pos"],
        rm: Int[torch.Tensor, "batch pos"],
    ) -> tuple[
        Float[torch.Tensor, "batch n"] | None, Float[torch.Tensor, "batch n vocab"] | None, dict[str, torch.Tensor]
    ]:
        """Response token log-probs and their logits (None when the forward stops early), and the probes' activations."""
        captured: contextlib.AbstractContextManager[dict[str, torch.Tensor]] = (
            capture(batch.model, self.hooks) if self.hooks else contextlib.nullcontext({})
        )
        with captured as acts:
            if self.stop_at_layer is None:
                lp, logits = response_token_logps(batch.forward, tok, am, rm, hooked=batch.model, return_logits=True)
                return lp, logits, acts
            batch.forward(tok, attention_mask=am, stop_at_layer=self.stop_at_layer, return_type=None)
        return None, None, acts

    def _kl_to_reference(
        self,
        tok: Int[torch.Tensor, "batch pos"],
        am: Int[torch.Tensor, "batch pos"],
        rm: Int[torch.Tensor, "batch pos"],
        logits: Float[torch.Tensor, "batch n vocab"],
    ) -> Float[torch.Tensor, "batch n_minus_1"]:
        """Per-token KL(policy || reference) at the response positions of the policy's logits."""
        assert self.reference_model is not None  # kl_weight > 0 needs one (checked before training)
        with torch.no_grad(), training_products():  # the policy pass's products: KL exactly 0 at step 0
            _, ref_logits = response_token_logps(self.reference_model, tok, am, rm, return_logits=True)
        start = tok.shape[1] - logits.shape[1]
        return kl_per_token(logits, ref_logits, rm[:, start:])

    def summary(self) -> dict[str, Any]:
        return {"n_examples": len(self.data), "probes": {f.name: f.hook for f in self.probes}}


class ProbeSFTObjective(SFTObjective):
    """Probe-based SFT with a :class:`ProbeSFTConfig` (see :func:`train_probe_sft`)."""

    def __init__(
        self,
        model: LensModel,
        data: Generation,
        probes: Any,
        config: ProbeSFTConfig,
        *,
        hook: str | int | None = None,
        reference_model: LensModel | None = None,
    ) -> None:
        check_config(config, ProbeSFTConfig)
        check_generation(data, "data")
        flat = flatten_probes(model, probes, hook)
        if config.kl_weight > 0 and reference_model is None:
            raise ValueError("kl_weight > 0 needs reference_model (a frozen copy of the starting model)")
        super().__init__(
            model,
            data,
            probes=flat,
            lm_weight=config.lm_weight,
            probe_weight=config.probe_weight,
            kl_weight=config.kl_weight,
            pooling=config.pooling,
            aggregate=config.aggregate,
            reference_model=reference_model,
        )


def train_probe_sft(
    model: LensModel,
    data: Generation,
    probes: Any,
    config: ProbeSFTConfig,
    *,
    hook: str | int | None = None,
    telemetry=None,
    reference_model: LensModel | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Probe-based SFT on ``data``: LM loss on the responses + lambda * P(toxic) of the frozen probe(s).

    ``probes``: a probe, an ensemble, a list or a ``{name: probe}`` dict; each reads its
    ``metadata.hook`` (else ``hook``) on the response-pooled *live* activations, so the gradient
    flows through the probe into the model. ``reference_model`` (frozen) is needed when
    ``config.kl_weight > 0``. ``resume=True`` continues from the latest checkpoint in ``out_dir``.
    ``stop_after``: run at most this many steps in this call (checkpointed; resume later).
    ``on_step(step, row)``: called after every optimizer step with its metrics (and telemetry row when
    measured); return True to stop early (checkpointed, ``stopped_reason="callback"``).
    """
    objective = ProbeSFTObjective(model, data, probes, config, hook=hook, reference_model=reference_model)
    trainer = Trainer(model, objective, config, telemetry=telemetry, on_step=on_step)
    return trainer.train(resume=resume, stop_after=stop_after)
