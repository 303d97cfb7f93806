"""The shared training loop and its three objectives: probe-SFT, classifier-filtered SFT and DPO.

One optimizer step: take the step's global batch (fixed by seed and step), split it over processes
and micro-batches, backpropagate each micro-batch's share of the *global* loss, check the loss is
finite, clip, step AdamW and the schedule. Every ``log_every`` steps a metrics row goes to
``metrics.jsonl``; every ``telemetry_every`` steps the drift telemetry; every ``checkpoint_every``
steps (and at the end) a checkpoint. The model is trained in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from probe_lens._common import hook_layer
from probe_lens.activations import capture, trim_left_padding
from probe_lens.activations.hooks import stop_layer_for
from probe_lens.models import Generation
from probe_lens.models.compat import training_products
from probe_lens.training import distributed as D
from probe_lens.training._io import MetricsWriter, atomic_write_text, truncate_metrics
from probe_lens.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from probe_lens.training.config import (
    ClassifierSFTConfig,
    DPOConfig,
    ProbeSFTConfig,
    TrainConfig,
    block_range,
)
from probe_lens.training.losses import (
    dpo_loss,
    kl_per_token,
    probe_probability,
    response_logits_start,
    response_token_logps,
)
from probe_lens.training.pairs import PreferencePairs
from probe_lens.training.probes_util import FlatProbe, flatten_probes
from probe_lens.training.telemetry import mark_model_updated

STOP_REASONS = ("max_steps", "nan", "stop_after", "callback")

# on_step(step, row) -> stop?: called after every optimizer step with that step's metrics (loss terms,
# lr, grad norm, seconds, and the telemetry row when telemetry ran at this step)
StepCallback = Callable[[int, dict[str, Any]], "bool | None"]


@dataclasses.dataclass
class TrainResult:
    """What a training call did.

    Attributes:
        final_step: last optimizer step completed (the model holds the weights after it).
        stopped_reason: ``"max_steps"``, ``"nan"`` (non-finite loss or gradient at ``nan_step``;
            the step was not applied), ``"stop_after"`` (the call's step budget ran out; resume later)
            or ``"callback"`` (``on_step`` returned True; checkpointed, resumable).
        out_dir, metrics_path, config_path: run files (None when ``out_dir`` is None).
        checkpoint_path: folder of the last good checkpoint (None if none was written).
        history: the metric rows written (also in ``metrics.jsonl``).
        info: run facts (examples kept, pairs, probes, world size).
    """

    final_step: int
    stopped_reason: str
    out_dir: Path | None = None
    metrics_path: Path | None = None
    config_path: Path | None = None
    checkpoint_path: Path | None = None
    nan_step: int | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def metrics(self):
        """``history`` as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.history)


# ---------------------------------------------------------------------------------------------
# parameter selection, schedule, batching
# ---------------------------------------------------------------------------------------------


def select_trainable(model: torch.nn.Module, spec: str) -> list[str]:
    """Names of the parameters ``spec`` selects (``"all"``, ``"blocks:A-B"`` or a regex)."""
    names = [n for n, _ in model.named_parameters()]
    if spec == "all":
        chosen = names
    elif (rng := block_range(spec)) is not None:
        a, b = rng
        n_layers = getattr(getattr(model, "cfg", None), "n_layers", None)
        if n_layers is not None and b >= n_layers:
            raise ValueError(f"trainable={spec!r}: the model has blocks 0..{n_layers - 1}")
        chosen = [n for n in names if (L := hook_layer(n)) is not None and n.startswith("blocks.") and a <= L <= b]
    else:
        pattern = re.compile(spec)
        chosen = [n for n in names if pattern.search(n)]
    if not chosen:
        raise ValueError(f"trainable={spec!r} selects no parameter; names look like {names[:4]}")
    return chosen


def lr_lambda(config: TrainConfig):
    """Multiplier of the peak lr after ``step`` scheduler steps (warm-up, then the schedule)."""
    warm, total, kind = config.warmup_steps, config.max_steps, config.scheduler

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / (warm + 1)
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def batch_indices(step: int, n: int, global_batch: int, seed: int) -> torch.Tensor:
    """Example indices of optimizer step ``step`` (1-based): consecutive slices of seeded epoch permutations."""
    start = (step - 1) * global_batch
    out = []
    pos = start
    while pos < start + global_batch:
        epoch, offset = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = min(n - offset, start + global_batch - pos)
        out.append(perm[offset : offset + take])
        pos += take
    return torch.cat(out)


def _trim(tokens: torch.Tensor, *masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop columns that are padding in every row, on both sides."""
    tokens, *masks = trim_left_padding(tokens, *masks)
    real = masks[0].bool().any(dim=0)
    last = int(real.nonzero()[-1]) + 1 if bool(real.any()) else tokens.shape[1]
    return (tokens[:, :last], *(m[:, :last] for m in masks))


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------
# objectives
# ---------------------------------------------------------------------------------------------


class _SFTObjective:
    """``lm_weight * CE/token + probe_weight * mean P(toxic) + kl_weight * KL/token`` on responses."""

    def __init__(
        self,
        data: Generation,
        *,
        probes: list[FlatProbe] | None,
        lm_weight: float,
        probe_weight: float,
        kl_weight: float,
        pooling: str,
        aggregate: str,
        reference_model: torch.nn.Module | None,
        n_layers: int,
    ) -> None:
        self.data = data
        self.probes = probes or []
        self.lm_weight, self.probe_weight, self.kl_weight = lm_weight, probe_weight if probes else 0.0, kl_weight
        self.pooling, self.aggregate = pooling, aggregate
        self.reference_model = reference_model
        self.hooks = sorted({p.hook for p in self.probes})
        needs_logits = self.lm_weight > 0 or self.kl_weight > 0
        self.stop_at_layer = None if needs_logits else stop_layer_for(self.hooks, n_layers)
        self.uses_all_params = needs_logits
        self.n_examples = len(data)

    def normalizers(self, idx: torch.Tensor) -> dict[str, float]:
        n_tok = int(self.data.response_mask[idx][:, 1:].sum())
        if n_tok == 0:
            raise ValueError("a batch has no response tokens to train on; check data.response_mask")
        return {"tokens": float(n_tok), "examples": float(len(idx))}

    def micro(self, fwd, model, idx, norm) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dev = _device(model)
        tok, am, rm = (t.to(dev) for t in _trim(self.data.tokens[idx], self.data.attention_mask[idx], self.data.response_mask[idx]))
        with capture(model, self.hooks) if self.hooks else contextlib.nullcontext({}) as acts:
            if self.stop_at_layer is None:
                lp, logits = response_token_logps(fwd, tok, am, rm, hooked=model, return_logits=True)
            else:
                lp = logits = None
                fwd(tok, attention_mask=am, stop_at_layer=self.stop_at_layer, return_type=None)
        zero = torch.zeros((), device=dev)
        loss, metrics = zero, {}
        if lp is not None:
            lm = -lp.sum() / norm["tokens"]
            metrics["train/lm_loss"] = lm.detach()
            if self.lm_weight:
                loss = loss + self.lm_weight * lm
        if self.probe_weight:
            p = probe_probability(acts, rm, [(f.hook, f.probe) for f in self.probes], pooling=self.pooling, aggregate=self.aggregate)
            term = p.sum() / norm["examples"]
            metrics["train/probe_prob"] = term.detach()
            loss = loss + self.probe_weight * term
        if self.kl_weight:
            with torch.no_grad(), training_products():  # the policy pass's products: KL exactly 0 at step 0
                _, ref_logits = response_token_logps(self.reference_model, tok, am, rm, return_logits=True)
            start = tok.shape[1] - logits.shape[1]
            kl = kl_per_token(logits, ref_logits, rm[:, start:]).sum() / norm["tokens"]
            metrics["train/kl"] = kl.detach()
            loss = loss + self.kl_weight * kl
        metrics["train/loss"] = loss.detach()
        return loss, metrics

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_extra(self, extra: dict[str, torch.Tensor]) -> None:
        pass

    def prepare(self, model, config, resumed: bool) -> None:
        pass


class _DPOObjective:
    """Sigmoid DPO on fixed pairs; reference log-probs precomputed once or from a live model.

    Reference and policy log-probs are computed alike, so with policy == reference they are bitwise
    equal and the margin at step 0 is exactly 0 (in fp32 and under bf16 autocast): every forward sees
    its rows on the pair set's one token grid (trimmed once for the whole set, not per batch: a row's
    left padding changes the rounding of its attention sums), unembeds from the same column, in
    batches of ``2 * batch_size`` rows (the last reference batch is filled up with repeated rows), and
    the no-grad reference pass computes the products of a training pass (``training_products``).
    """

    def __init__(self, pairs: PreferencePairs, config: DPOConfig, pad_id: int, reference_model) -> None:
        self.n = len(pairs)
        self.data = Generation.concat([pairs.chosen, pairs.rejected], pad_id)
        self.grid = _trim(self.data.tokens, self.data.attention_mask, self.data.response_mask)
        self.start = response_logits_start(self.grid[2])
        self.beta = config.beta
        self.precompute = config.precompute_reference
        self.reference_model = reference_model
        self.ref_logps: torch.Tensor | None = None
        self.uses_all_params = True
        self.n_examples = self.n

    def _rows(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.cat([idx, idx + self.n])

    def _logps(self, fwd, rows: torch.Tensor, dev) -> torch.Tensor:
        tok, am, rm = (t[rows].to(dev) for t in self.grid)
        lp = response_token_logps(fwd, tok, am, rm, hooked=getattr(fwd, "module", fwd), start=self.start)
        return lp.sum(dim=1)

    def _reference_logps(self, ref, rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), training_products():
            return self._logps(ref, rows, _device(ref))

    def prepare(self, model, config: DPOConfig, resumed: bool) -> None:
        if not self.precompute or self.ref_logps is not None:
            return
        if resumed:
            raise RuntimeError("the checkpoint has no precomputed reference log-probs (dpo.ref_logps); cannot resume")
        ref = self.reference_model if self.reference_model is not None else model
        dev = _device(ref)
        was = ref.training
        ref.eval()
        size = config.batch_size
        chosen, rejected = [], []
        try:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=config.bf16):
                for start in tqdm(range(0, self.n, size), desc="reference log-probs", disable=not config.progress, leave=False):
                    idx = torch.arange(start, min(self.n, start + size))
                    b = len(idx)
                    full = torch.cat([idx, idx[-1:].expand(size - b)])  # a training micro-batch's shape
                    lp = self._reference_logps(ref, self._rows(full)).float().cpu()
                    chosen.append(lp[:b])
                    rejected.append(lp[size : size + b])
        finally:
            ref.train(was)
        self.ref_logps = torch.cat(chosen + rejected)  # [all chosen, all rejected], indexed by _rows

    def normalizers(self, idx: torch.Tensor) -> dict[str, float]:
        return {"examples": float(len(idx))}

    def micro(self, fwd, model, idx, norm) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        dev = _device(model)
        rows = self._rows(idx)
        lp = self._logps(fwd, rows, dev)
        pc, pr = lp[: len(idx)], lp[len(idx) :]
        if self.ref_logps is not None:
            ref = self.ref_logps[rows].to(dev)
        else:
            ref = self._reference_logps(self.reference_model, rows).to(dev)
        rc, rr = ref[: len(idx)], ref[len(idx) :]
        loss_sum, m = dpo_loss(pc, pr, rc, rr, self.beta, reduction="sum")
        share = len(idx) / norm["examples"]
        loss = loss_sum / norm["examples"]
        metrics = {k: v * share for k, v in m.items()}
        metrics["train/loss"] = loss.detach()
        return loss, metrics

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        return {"dpo.ref_logps": self.ref_logps} if self.ref_logps is not None else {}

    def load_extra(self, extra: dict[str, torch.Tensor]) -> None:
        if "dpo.ref_logps" in extra:
            self.ref_logps = extra["dpo.ref_logps"].float()


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------


def _prepare_out_dir(config: TrainConfig, resume: bool, info: D.DistInfo) -> Path | None:
    if config.out_dir is None:
        if resume:
            raise ValueError("resume=True needs config.out_dir (where the run's checkpoints are)")
        if config.checkpoint_every:
            raise ValueError("checkpoint_every > 0 needs out_dir (where checkpoints are written)")
        return None
    out = Path(config.out_dir)
    cfg_path = out / "config.json"
    if resume and cfg_path.exists():
        saved = json.loads(cfg_path.read_text())
        now = config.to_dict()
        # fields that change neither the weights nor the metrics may differ
        free = ("progress", "save_optimizer_final")
        diff = sorted(k for k in set(saved) | set(now) if k not in free and saved.get(k) != now.get(k))
        if diff:
            detail = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff)
            hint = (" (the schedule depends on max_steps: to train a finished run longer, start a new out_dir "
                    "from its final weights)" if "max_steps" in diff else "")
            raise ValueError(f"cannot resume {out}: the config differs ({detail}); use the saved config.json{hint}")
    elif not resume and ((out / "checkpoints" / "latest.json").exists() or (out / "metrics.jsonl").exists()):
        raise FileExistsError(f"{out} already holds a run; pass resume=True to continue it or choose a new out_dir")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config.save(cfg_path)
    D.barrier(info)
    return out


def _run(
    objective,
    model: HookedTransformer,
    config: TrainConfig,
    *,
    telemetry=None,
    resume: bool = False,
    stop_after: int | None = None,
    run_info: dict[str, Any] | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after must be a positive int or None, got {stop_after!r}")
    dev = _device(model)
    info = D.init_from_env(dev)
    out = _prepare_out_dir(config, resume, info)
    ckpt_root = out / "checkpoints" if out else None
    metrics_path = out / "metrics.jsonl" if out else None

    torch.manual_seed(config.seed)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    writer = None
    history: list[dict[str, Any]] = []
    try:
        chosen = set(select_trainable(model, config.trainable))
        for n, p in model.named_parameters():
            p.requires_grad_(n in chosen)
        params = [p for n, p in model.named_parameters() if n in chosen]
        optimizer = torch.optim.AdamW(
            params, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
            weight_decay=config.weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))

        start_step, last_ckpt = 0, None
        ckpt = latest_checkpoint(ckpt_root) if (resume and ckpt_root) else None
        if ckpt is not None:
            state = load_checkpoint(ckpt, model, optimizer, scheduler)
            start_step, last_ckpt = int(state["step"]), ckpt
            if "optimizer" not in state and start_step < config.max_steps:
                warnings.warn(
                    f"{ckpt} holds no optimizer state (a final checkpoint written with save_optimizer_final=False); "
                    "AdamW restarts from zero moments, so the continued run differs from an uninterrupted one",
                    RuntimeWarning, stacklevel=3,
                )
            objective.load_extra(state["extra"])
            if telemetry is not None and hasattr(telemetry, "load_state_dict"):
                telemetry.load_state_dict({k[len("telemetry."):]: v for k, v in state["extra"].items() if k.startswith("telemetry.")})
        if info.is_main and metrics_path is not None and resume:
            truncate_metrics(metrics_path, start_step if ckpt is not None else -1)
        objective.prepare(model, config, resumed=ckpt is not None)

        run_info = {**(run_info or {}), "world_size": info.world_size, "n_trainable_params": sum(p.numel() for p in params)}
        if out is not None and info.is_main:
            atomic_write_text(out / "run_info.json", json.dumps(run_info, indent=2, default=str))
        if info.is_main and metrics_path is not None:
            writer = MetricsWriter(metrics_path)

        def emit(row: dict[str, Any]) -> None:
            row = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in row.items()}
            history.append(row)
            if writer is not None:
                writer.write(row)

        def measure(step: int) -> dict[str, Any]:
            row: dict[str, Any] = {}
            if telemetry is not None and info.is_main:
                model.eval()
                row = {"step": step, **telemetry.measure(model, step)}
                emit(row)
                model.train()
            return row

        def checkpoint(step: int, final: bool = False) -> Path | None:
            path = None
            if ckpt_root is not None and info.is_main:
                extra = dict(objective.extra_tensors())
                if telemetry is not None and hasattr(telemetry, "state_dict"):
                    extra.update({f"telemetry.{k}": v for k, v in telemetry.state_dict().items()})
                path = save_checkpoint(
                    ckpt_root, step, model, None if final and not config.save_optimizer_final else optimizer,
                    scheduler, params=config.checkpoint_params,
                    extra_tensors=extra, metadata={"method": config.method}, keep=config.keep_checkpoints,
                )
            D.barrier(info)
            return path if path is not None else (latest_checkpoint(ckpt_root) if ckpt_root else None)

        fwd = D.wrap_model(model, info, find_unused_parameters=not objective.uses_all_params)
        model.train()
        if start_step == 0 and config.telemetry_every:
            measure(0)
        global_batch = config.batch_size * config.grad_accum_steps * info.world_size
        autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=config.bf16)
        bar = tqdm(total=config.max_steps, initial=start_step, desc=f"train {config.method}", disable=not (config.progress and info.is_main))
        step, reason, nan_step = start_step, "max_steps", None
        for step in range(start_step + 1, config.max_steps + 1):
            if stop_after is not None and step - start_step > stop_after:
                step, reason = step - 1, "stop_after"
                break
            t_step = time.perf_counter()
            g_idx = batch_indices(step, objective.n_examples, global_batch, config.seed)
            norm = objective.normalizers(g_idx)
            local = D.shard(g_idx, info)
            micro = list(local.split(config.batch_size))
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, torch.Tensor] = {}
            for j, mb in enumerate(micro):
                sync = contextlib.nullcontext() if (not info.enabled or j == len(micro) - 1) else fwd.no_sync()
                with sync:
                    with autocast:
                        loss, metrics = objective.micro(fwd, model, mb, norm)
                    (loss * info.world_size).backward()
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v.detach().float()
            keys = sorted(sums)
            reduced = D.all_reduce_sum(torch.stack([sums[k].reshape(()) for k in keys]).to(dev), info)
            values = dict(zip(keys, reduced.tolist()))
            limit = config.max_grad_norm if config.max_grad_norm is not None else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, limit)) if math.isfinite(values["train/loss"]) else float("nan")
            if not (math.isfinite(values["train/loss"]) and math.isfinite(grad_norm)):
                step, reason, nan_step = step - 1, "nan", step
                optimizer.zero_grad(set_to_none=True)
                emit({"step": nan_step, "event": "nan_stop", "train/loss": values["train/loss"], "train/grad_norm": grad_norm})
                warnings.warn(
                    f"non-finite loss/gradient at step {nan_step} (loss={values['train/loss']}, grad_norm={grad_norm}); "
                    f"stopped without applying it. The model holds step {step}'s weights; last good checkpoint: {last_ckpt}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                break
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            mark_model_updated(model)  # telemetry caches must not rely on version counters (fused AdamW)
            scheduler.step()
            seconds = time.perf_counter() - t_step
            step_row = {"step": step, **values, "train/lr": lr, "train/grad_norm": grad_norm, "train/step_seconds": seconds}
            if step % config.log_every == 0 or step == config.max_steps:
                emit(step_row)
            bar.update(1)
            bar.set_postfix({k.split("/")[-1]: f"{values[k]:.4g}" for k in ("train/loss", "train/probe_prob", "rewards/accuracies") if k in values})
            if config.telemetry_every and (step % config.telemetry_every == 0 or step == config.max_steps):
                step_row = {**step_row, **measure(step)}
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == config.max_steps:
                last_ckpt = checkpoint(step, final=step == config.max_steps) or last_ckpt
            if on_step is not None:
                stop = bool(on_step(step, step_row)) if info.is_main else False
                if info.enabled:  # every rank stops together
                    stop = D.all_reduce_sum(torch.tensor([float(stop)], device=dev), info).item() > 0
                if stop and step < config.max_steps:
                    reason = "callback"
                    break
        bar.close()
        if reason in ("stop_after", "callback") and ckpt_root is not None and (last_ckpt is None or not str(last_ckpt).endswith(f"{step:06d}")):
            last_ckpt = checkpoint(step) or last_ckpt
        return TrainResult(
            final_step=step,
            stopped_reason=reason,
            out_dir=out,
            metrics_path=metrics_path,
            config_path=out / "config.json" if out else None,
            checkpoint_path=last_ckpt,
            nan_step=nan_step,
            history=history,
            info=run_info,
        )
    finally:
        if writer is not None:
            writer.close()
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        model.train(was_training)


# ---------------------------------------------------------------------------------------------
# public entry points
# ---------------------------------------------------------------------------------------------


def _check_data(data: Generation, what: str) -> None:
    if not isinstance(data, Generation):
        raise TypeError(
            f"{what} must be a probe_lens Generation (from generate(...) or tokenize_pairs(...)), got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError(f"{what} is empty")
    empty = torch.nonzero(data.response_mask.sum(dim=1) == 0).flatten().tolist()
    if empty:
        raise ValueError(f"{what} rows {empty[:10]} have no response tokens; drop them (e.g. data.select(...))")


def train_probe_sft(
    model: HookedTransformer,
    data: Generation,
    probes: Any,
    config: ProbeSFTConfig,
    *,
    hook: str | int | None = None,
    telemetry=None,
    reference_model: HookedTransformer | None = None,
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
    if not isinstance(config, ProbeSFTConfig):
        raise TypeError(f"config must be a ProbeSFTConfig, got {type(config).__name__}")
    _check_data(data, "data")
    flat = flatten_probes(model, probes, hook)
    if config.kl_weight > 0 and reference_model is None:
        raise ValueError("kl_weight > 0 needs reference_model (a frozen copy of the starting model)")
    objective = _SFTObjective(
        data, probes=flat, lm_weight=config.lm_weight, probe_weight=config.probe_weight, kl_weight=config.kl_weight,
        pooling=config.pooling, aggregate=config.aggregate, reference_model=reference_model, n_layers=model.cfg.n_layers,
    )
    info = {"n_examples": len(data), "probes": {f.name: f.hook for f in flat}}
    return _run(objective, model, config, telemetry=telemetry, resume=resume, stop_after=stop_after, on_step=on_step, run_info=info)


def train_classifier_sft(
    model: HookedTransformer,
    data: Generation,
    scores: Any,
    config: ClassifierSFTConfig,
    *,
    telemetry=None,
    resume: bool = False,
    stop_after: int | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """Classifier-filtered SFT: LM loss only, on the rows whose output score is below ``config.threshold``."""
    if not isinstance(config, ClassifierSFTConfig):
        raise TypeError(f"config must be a ClassifierSFTConfig, got {type(config).__name__}")
    _check_data(data, "data")
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).reshape(-1)
    if len(s) != len(data):
        raise ValueError(f"{len(s)} scores for {len(data)} responses; give one score per row of data")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN/inf")
    keep = np.flatnonzero(s < config.threshold)
    if len(keep) == 0:
        raise ValueError(
            f"no response scored below threshold {config.threshold} (min score {s.min():.3g}); nothing to train on"
        )
    kept = data.select(keep.tolist())
    objective = _SFTObjective(
        kept, probes=None, lm_weight=1.0, probe_weight=0.0, kl_weight=0.0, pooling="mean", aggregate="mean",
        reference_model=None, n_layers=model.cfg.n_layers,
    )
    info = {"n_examples": len(data), "n_kept": int(len(keep)), "threshold": config.threshold}
    return _run(objective, model, config, telemetry=telemetry, resume=resume, stop_after=stop_after, on_step=on_step, run_info=info)


def train_dpo(
    model: HookedTransformer,
    pairs: PreferencePairs,
    config: DPOConfig,
    *,
    reference_model: HookedTransformer | None = None,
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
    if not isinstance(config, DPOConfig):
        raise TypeError(f"config must be a DPOConfig, got {type(config).__name__}")
    if not isinstance(pairs, PreferencePairs):
        raise TypeError(f"pairs must be PreferencePairs (from build_pairs), got {type(pairs).__name__}")
    if len(pairs) == 0:
        raise ValueError(
            f"no preference pairs (dropped: {pairs.n_dropped_ties} ties, {pairs.n_dropped_margin} below the margin)"
        )
    _check_data(pairs.chosen, "pairs.chosen")
    _check_data(pairs.rejected, "pairs.rejected")
    if not config.precompute_reference and reference_model is None:
        raise ValueError("precompute_reference=False needs reference_model (a frozen copy of the starting model)")
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer (its pad token id is needed to align chosen and rejected)")
    objective = _DPOObjective(pairs, config, model.tokenizer.pad_token_id, reference_model)
    return _run(objective, model, config, telemetry=telemetry, resume=resume, stop_after=stop_after, on_step=on_step, run_info=pairs.summary())
