"""Direct preference optimisation (sigmoid loss) on fixed preference pairs: ``DPOObjective`` and ``train_dpo``."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from probe_lens.models import Generation, LensModel
from probe_lens.models.compat import training_products
from probe_lens.models.generation import tokenizer_of
from probe_lens.training.config import DPOConfig, TrainConfig
from probe_lens.training.losses import dpo_loss, response_logits_start, response_token_logps
from probe_lens.training.objectives.base import (
    MicroBatch,
    Objective,
    StepOutput,
    check_config,
    check_generation,
    model_device,
    trim_padding,
)
from probe_lens.training.pairs import PreferencePairs
from probe_lens.training.trainer import StepCallback, Trainer, TrainResult


class DPOObjective(Objective):
    """Sigmoid DPO on fixed pairs; reference log-probs precomputed once (checkpointed) or from a live model.

    Reference and policy log-probs are computed alike, so with policy == reference they are bitwise
    equal and the margin at step 0 is exactly 0 (in fp32 and under bf16 autocast): every forward sees
    its rows on the pair set's one token grid (trimmed once for the whole set, not per batch: a row's
    left padding changes the rounding of its attention sums), unembeds from the same column, in
    batches of ``2 * batch_size`` rows (the last reference batch is filled up with repeated rows), and
    the no-grad reference pass computes the products of a training pass (``training_products``).
    """

    progress_metrics = ("train/loss", "rewards/accuracies")

    def __init__(
        self,
        model: LensModel,
        pairs: PreferencePairs,
        config: DPOConfig,
        *,
        reference_model: LensModel | None = None,
    ) -> None:
        _check_inputs(model, pairs, config, reference_model)
        self.pairs = pairs
        self.n = len(pairs)
        self.data = Generation.concat([pairs.chosen, pairs.rejected], tokenizer_of(model).pad_token_id)
        self.grid = trim_padding(self.data.tokens, self.data.attention_mask, self.data.response_mask)
        self.start = response_logits_start(self.grid[2])
        self.beta = config.beta
        self.precompute = config.precompute_reference
        self.reference_model = reference_model
        self.ref_logps: Float[torch.Tensor, " two_n"] | None = None

    @property
    def n_examples(self) -> int:
        return self.n

    def _rows(self, idx: Int[torch.Tensor, " batch"]) -> Int[torch.Tensor, " two_batch"]:
        """Rows of ``self.data``: the pairs' chosen responses, then their rejected ones."""
        return torch.cat([idx, idx + self.n])

    def _logps(self, forward, rows: torch.Tensor, dev) -> Float[torch.Tensor, " rows"]:
        tok, am, rm = (t[rows].to(dev) for t in self.grid)
        lp = response_token_logps(forward, tok, am, rm, hooked=getattr(forward, "module", forward), start=self.start)
        return lp.sum(dim=1)

    def _reference_logps(self, ref, rows: torch.Tensor) -> Float[torch.Tensor, " rows"]:
        with torch.no_grad(), training_products():
            return self._logps(ref, rows, model_device(ref))

    def prepare(self, model: LensModel, config: TrainConfig, *, resumed: bool) -> None:
        """Precompute the reference log-probs (from ``reference_model``, else ``model`` as it is now)."""
        if not self.precompute or self.ref_logps is not None:
            return
        if resumed:
            raise RuntimeError("the checkpoint has no precomputed reference log-probs (dpo.ref_logps); cannot resume")
        ref = self.reference_model if self.reference_model is not None else model
        dev = model_device(ref)
        was = ref.training
        ref.eval()
        size = config.batch_size
        chosen, rejected = [], []
        try:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=config.bf16):
                for start in tqdm(
                    range(0, self.n, size), desc="reference log-probs", disable=not config.progress, leave=False
                ):
                    idx = torch.arange(start, min(self.n, start + size))
                    b = len(idx)
                    full = torch.cat([idx, idx[-1:].expand(size - b)])  # a training micro-batch's shape
                    lp = self._reference_logps(ref, self._rows(full)).float().cpu()
                    chosen.append(lp[:b])
                    rejected.append(lp[size : size + b])
        finally:
            ref.train(was)
        self.ref_logps = torch.cat(chosen + rejected)  # [all chosen, all rejected], indexed by _rows

    def batch_totals(self, indices: Int[torch.Tensor, " global_batch"]) -> dict[str, float]:
        return {"examples": float(len(indices))}

    def loss(self, batch: MicroBatch) -> StepOutput:
        idx, n_global = batch.indices, batch.totals["examples"]
        dev = model_device(batch.model)
        rows = self._rows(idx)
        lp = self._logps(batch.forward, rows, dev)
        pc, pr = lp[: len(idx)], lp[len(idx) :]
        if self.ref_logps is not None:
            ref = self.ref_logps[rows].to(dev)
        else:
            ref = self._reference_logps(self.reference_model, rows).to(dev)
        rc, rr = ref[: len(idx)], ref[len(idx) :]
        loss_sum, metrics = dpo_loss(pc, pr, rc, rr, self.beta, reduction="sum")
        share = len(idx) / n_global
        return StepOutput(loss_sum / n_global, {k: v * share for k, v in metrics.items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"dpo.ref_logps": self.ref_logps} if self.ref_logps is not None else {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "dpo.ref_logps" in state:
            self.ref_logps = state["dpo.ref_logps"].float()

    def summary(self) -> dict[str, Any]:
        return self.pairs.summary()


def _check_inputs(model, pairs: Any, config: Any, reference_model) -> None:
    check_config(config, DPOConfig)
    if not isinstance(pairs, PreferencePairs):
        raise TypeError(f"pairs must be PreferencePairs (from build_pairs), got {type(pairs).__name__}")
    if len(pairs) == 0:
        raise ValueError(
            f"no preference pairs (dropped: {pairs.n_dropped_ties} ties, {pairs.n_dropped_margin} below the margin)"
        )
    check_generation(pairs.chosen, "pairs.chosen")
    check_generation(pairs.rejected, "pairs.rejected")
    if not config.precompute_reference and reference_model is None:
        raise ValueError("precompute_reference=False needs reference_model (a frozen copy of the starting model)")
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer (its pad token id is needed to align chosen and rejected)")


def train_dpo(
    model: LensModel,
    pairs: PreferencePairs,
    config: DPOConfig,
    *,
    reference_model: LensModel | None = None,
    telemetry=None,
    resume: bool = False,
    stop_after: int | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """DPO (sigmoid loss, ``config.beta``) on fixed preference pairs.

    With ``config.precompute_reference`` (default) the reference log-probs are computed once before
    training (from ``reference_model`` if given, else from ``model`` as it is now) and stored in
    the checkpoints, so no reference model is needed while training. Otherwise ``reference_model``
    is run live every step.
    """
    objective = DPOObjective(model, pairs, config, reference_model=reference_model)
    trainer = Trainer(model, objective, config, telemetry=telemetry, on_step=on_step)
    return trainer.train(resume=resume, stop_after=stop_after)
