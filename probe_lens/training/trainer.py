"""The :class:`Trainer`: the loop every :class:`~probe_lens.training.Objective` shares.

One optimizer step: take the step's global batch (fixed by seed and step), split it over processes
and micro-batches, backpropagate each micro-batch's share of the *global* loss (``Objective.loss``),
check the loss is finite, clip, step AdamW and the schedule. Every ``log_every`` steps a metrics row
goes to ``metrics.jsonl``; every ``telemetry_every`` steps the drift telemetry; every
``checkpoint_every`` steps (and at the end) a checkpoint. The model is trained in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from probe_lens._common import hook_layer
from probe_lens.models import LensModel
from probe_lens.training import distributed as D
from probe_lens.training._io import MetricsWriter, atomic_write_text, truncate_metrics
from probe_lens.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, step_folder_name
from probe_lens.training.config import TrainConfig, block_range
from probe_lens.training.objective import MicroBatch, Objective, model_device
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


# ---------------------------------------------------------------------------------------------
# the run folder
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
        # fields that change neither the weights nor the metrics may differ; out_dir is where config.json
        # was just read from (the same folder, given another way or moved with its study)
        free = ("progress", "save_optimizer_final", "out_dir")
        diff = sorted(k for k in set(saved) | set(now) if k not in free and saved.get(k) != now.get(k))
        if diff:
            detail = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {now.get(k)!r}" for k in diff)
            hint = (
                " (the schedule depends on max_steps: to train a finished run longer, start a new out_dir "
                "from its final weights)"
                if "max_steps" in diff
                else ""
            )
            raise ValueError(f"cannot resume {out}: the config differs ({detail}); use the saved config.json{hint}")
    elif not resume and ((out / "checkpoints" / "latest.json").exists() or (out / "metrics.jsonl").exists()):
        raise FileExistsError(f"{out} already holds a run; pass resume=True to continue it or choose a new out_dir")
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        config.save(cfg_path)
    D.barrier(info)
    return out


def _check_stop_after(stop_after: Any) -> None:
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after must be a positive int or None, got {stop_after!r}")


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------


class Trainer:
    """Trains ``model`` in place on ``objective`` with ``config`` (AdamW, warm-up + schedule, DDP).

    Args:
        model: the model to train (a ``HookedTransformer`` or a ``TransformerBridge``).
        objective: the examples and the loss (an :class:`~probe_lens.training.Objective`).
        config: optimizer, schedule, batching, logging and checkpoint settings.
        telemetry: measured at step 0 and every ``config.telemetry_every`` steps on the main process
            (e.g. a :class:`~probe_lens.training.DriftTelemetry`); its ``state_dict`` goes into checkpoints.
        on_step: ``on_step(step, row)`` after every optimizer step with that step's metrics (and the
            telemetry row when measured); returning True stops early (checkpointed, resumable).

    After :meth:`train`: ``params_`` (the trained parameters), ``optimizer_`` and ``scheduler_``.
    """

    def __init__(
        self,
        model: LensModel,
        objective: Objective,
        config: TrainConfig,
        *,
        telemetry: Any = None,
        on_step: StepCallback | None = None,
    ) -> None:
        self.model, self.objective, self.config = model, objective, config
        self.telemetry, self.on_step = telemetry, on_step

    def train(self, *, resume: bool = False, stop_after: int | None = None) -> TrainResult:
        """Train up to ``config.max_steps``; ``resume`` continues from the latest checkpoint in ``config.out_dir``.

        ``stop_after``: run at most this many steps in this call (checkpointed; resume later).
        """
        if not isinstance(self.objective, Objective):
            raise TypeError(f"objective must be a probe_lens.training.Objective, got {type(self.objective).__name__}")
        _check_stop_after(stop_after)
        self._open_run(resume)
        flags = {n: p.requires_grad for n, p in self.model.named_parameters()}
        was_training = self.model.training
        try:
            self._build_optimizer()
            start, resumed = self._resume(resume)
            self.objective.prepare(self.model, self.config, resumed=resumed)
            info = self._write_run_info()
            step, reason, nan_step = self._run_steps(start, stop_after)
            if reason in ("stop_after", "callback"):
                self._checkpoint_unless_saved(step)
            return TrainResult(
                final_step=step,
                stopped_reason=reason,
                out_dir=self._out,
                metrics_path=self._metrics_path,
                config_path=self._out / "config.json" if self._out else None,
                checkpoint_path=self._last_ckpt,
                nan_step=nan_step,
                history=self._history,
                info=info,
            )
        finally:
            self._close_run(flags, was_training)

    # ---- run setup and teardown ---------------------------------------------------------

    def _open_run(self, resume: bool) -> None:
        self._dev = model_device(self.model)
        self._dist = D.init_from_env(self._dev)
        self._out = _prepare_out_dir(self.config, resume, self._dist)
        self._ckpt_root = self._out / "checkpoints" if self._out else None
        self._metrics_path = self._out / "metrics.jsonl" if self._out else None
        torch.manual_seed(self.config.seed)
        self._writer: MetricsWriter | None = None
        self._history: list[dict[str, Any]] = []
        self._last_ckpt: Path | None = None

    def _build_optimizer(self) -> None:
        cfg = self.config
        chosen = set(select_trainable(self.model, cfg.trainable))
        for n, p in self.model.named_parameters():
            p.requires_grad_(n in chosen)
        self.params_ = [p for n, p in self.model.named_parameters() if n in chosen]
        self.optimizer_ = torch.optim.AdamW(
            self.params_,
            lr=cfg.lr,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        self.scheduler_ = torch.optim.lr_scheduler.LambdaLR(self.optimizer_, lr_lambda(cfg))

    def _resume(self, resume: bool) -> tuple[int, bool]:
        """Load the latest checkpoint (weights, AdamW, schedule, RNG, objective and telemetry state).

        Returns (its step, whether one was loaded); drops metric rows written after it.
        """
        ckpt = latest_checkpoint(self._ckpt_root) if (resume and self._ckpt_root) else None
        start = 0
        if ckpt is not None:
            # latest_checkpoint has just hashed every file of it: do not hash them again
            state = load_checkpoint(ckpt, self.model, self.optimizer_, self.scheduler_, verify=False)
            start, self._last_ckpt = int(state["step"]), ckpt
            if "optimizer" not in state and start < self.config.max_steps:
                warnings.warn(
                    f"{ckpt} holds no optimizer state (a final checkpoint written with save_optimizer_final=False); "
                    "AdamW restarts from zero moments, so the continued run differs from an uninterrupted one",
                    RuntimeWarning,
                    stacklevel=3,  # the caller of train()
                )
            self.objective.load_state_dict(state["extra"])
            self._load_telemetry_state(state["extra"])
        if self._dist.is_main and self._metrics_path is not None and resume:
            truncate_metrics(self._metrics_path, start if ckpt is not None else -1)
        return start, ckpt is not None

    def _write_run_info(self) -> dict[str, Any]:
        info = {
            **self.objective.summary(),
            "world_size": self._dist.world_size,
            "n_trainable_params": sum(p.numel() for p in self.params_),
        }
        if self._out is not None and self._dist.is_main:
            atomic_write_text(self._out / "run_info.json", json.dumps(info, indent=2, default=str))
        if self._dist.is_main and self._metrics_path is not None:
            self._writer = MetricsWriter(self._metrics_path)
        return info

    def _close_run(self, flags: dict[str, bool], was_training: bool) -> None:
        if self._writer is not None:
            self._writer.close()
        for n, p in self.model.named_parameters():
            p.requires_grad_(flags[n])
        self.model.train(was_training)

    # ---- steps --------------------------------------------------------------------------

    def _run_steps(self, start: int, stop_after: int | None) -> tuple[int, str, int | None]:
        """Steps ``start + 1 ..``; returns (last step applied, stop reason, the NaN step if any)."""
        cfg = self.config
        self._forward = D.wrap_model(
            self.model, self._dist, find_unused_parameters=not self.objective.uses_all_parameters
        )
        self.model.train()
        if start == 0 and cfg.telemetry_every:
            self._measure(0)
        self._autocast = torch.autocast(self._dev.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        bar = tqdm(
            total=cfg.max_steps,
            initial=start,
            desc=f"train {cfg.method}",
            disable=not (cfg.progress and self._dist.is_main),
        )
        step, reason, nan_step = start, "max_steps", None
        for step in range(start + 1, cfg.max_steps + 1):
            if stop_after is not None and step - start > stop_after:
                step, reason = step - 1, "stop_after"
                break
            t_step = time.perf_counter()
            values = self._accumulate_gradients(step)
            grad_norm = self._clip_gradients(values["train/loss"])
            if not (math.isfinite(values["train/loss"]) and math.isfinite(grad_norm)):
                self._stop_on_nan(step, values["train/loss"], grad_norm)
                step, reason, nan_step = step - 1, "nan", step
                break
            lr = self._apply_update()
            row = {
                "step": step,
                **values,
                "train/lr": lr,
                "train/grad_norm": grad_norm,
                "train/step_seconds": time.perf_counter() - t_step,
            }
            row = self._after_step(step, row, bar)
            if self._callback_stops(step, row):
                reason = "callback"
                break
        bar.close()
        return step, reason, nan_step

    def _accumulate_gradients(self, step: int) -> dict[str, float]:
        """Backpropagate every local micro-batch of step ``step``; its metrics summed over processes."""
        cfg, dist = self.config, self._dist
        global_batch = cfg.batch_size * cfg.grad_accum_steps * dist.world_size
        indices = batch_indices(step, self.objective.n_examples, global_batch, cfg.seed)
        totals = self.objective.batch_totals(indices)
        micro = list(D.shard(indices, dist).split(cfg.batch_size))
        self.optimizer_.zero_grad(set_to_none=True)
        sums: dict[str, torch.Tensor] = {}
        for j, idx in enumerate(micro):
            last = not dist.enabled or j == len(micro) - 1
            with contextlib.nullcontext() if last else self._forward.no_sync():  # DDP syncs on the last one
                with self._autocast:
                    out = self.objective.loss(MicroBatch(idx, totals, self._forward, self.model))
                (out.loss * dist.world_size).backward()
            for k, v in {**out.terms, "train/loss": out.loss}.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
        keys = sorted(sums)
        reduced = D.all_reduce_sum(torch.stack([sums[k].reshape(()) for k in keys]).to(self._dev), dist)
        return dict(zip(keys, reduced.tolist()))

    def _clip_gradients(self, loss: float) -> float:
        """The global gradient norm before clipping (NaN when the loss already is not finite)."""
        if not math.isfinite(loss):
            return float("nan")
        limit = self.config.max_grad_norm if self.config.max_grad_norm is not None else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(self.params_, limit))

    def _stop_on_nan(self, nan_step: int, loss: float, grad_norm: float) -> None:
        self.optimizer_.zero_grad(set_to_none=True)
        self._emit({"step": nan_step, "event": "nan_stop", "train/loss": loss, "train/grad_norm": grad_norm})
        warnings.warn(
            f"non-finite loss/gradient at step {nan_step} (loss={loss}, grad_norm={grad_norm}); "
            f"stopped without applying it. The model holds step {nan_step - 1}'s weights; last good checkpoint: "
            f"{self._last_ckpt}",
            RuntimeWarning,
            stacklevel=4,  # the caller of train()
        )

    def _apply_update(self) -> float:
        """Step AdamW and the schedule; returns the lr the step used."""
        lr = float(self.scheduler_.get_last_lr()[0])
        self.optimizer_.step()
        mark_model_updated(self.model)  # telemetry caches must not rely on version counters (fused AdamW)
        self.scheduler_.step()
        return lr

    def _after_step(self, step: int, row: dict[str, Any], bar: Any) -> dict[str, Any]:
        """Log, show, measure and checkpoint as the config asks; returns the row with any telemetry."""
        cfg = self.config
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            self._emit(row)
        bar.update(1)
        bar.set_postfix({k.split("/")[-1]: f"{row[k]:.4g}" for k in self.objective.progress_metrics if k in row})
        if cfg.telemetry_every and (step % cfg.telemetry_every == 0 or step == cfg.max_steps):
            row = {**row, **self._measure(step)}
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.max_steps:
            self._last_ckpt = self._checkpoint(step, final=step == cfg.max_steps) or self._last_ckpt
        return row

    def _callback_stops(self, step: int, row: dict[str, Any]) -> bool:
        if self.on_step is None:
            return False
        stop = bool(self.on_step(step, row)) if self._dist.is_main else False
        if self._dist.enabled:  # every rank stops together
            stop = D.all_reduce_sum(torch.tensor([float(stop)], device=self._dev), self._dist).item() > 0
        return stop and step < self.config.max_steps

    # ---- metrics, telemetry, checkpoints ------------------------------------------------

    def _emit(self, row: dict[str, Any]) -> None:
        row = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in row.items()}
        self._history.append(row)
        if self._writer is not None:
            self._writer.write(row)

    def _measure(self, step: int) -> dict[str, Any]:
        row: dict[str, Any] = {}
        if self.telemetry is not None and self._dist.is_main:
            self.model.eval()
            row = {"step": step, **self.telemetry.measure(self.model, step)}
            self._emit(row)
            self.model.train()
        return row

    def _telemetry_state(self) -> dict[str, torch.Tensor]:
        state_dict = getattr(self.telemetry, "state_dict", None)  # telemetry is any object with measure()
        return {f"telemetry.{k}": v for k, v in state_dict().items()} if state_dict is not None else {}

    def _load_telemetry_state(self, extra: dict[str, torch.Tensor]) -> None:
        load = getattr(self.telemetry, "load_state_dict", None)
        if load is not None:
            load({k[len("telemetry.") :]: v for k, v in extra.items() if k.startswith("telemetry.")})

    def _checkpoint(self, step: int, final: bool = False) -> Path | None:
        """Write step ``step``'s checkpoint (main process); returns the latest checkpoint folder."""
        cfg, path = self.config, None
        if self._ckpt_root is not None and self._dist.is_main:
            path = save_checkpoint(
                self._ckpt_root,
                step,
                self.model,
                None if final and not cfg.save_optimizer_final else self.optimizer_,
                self.scheduler_,
                params=cfg.checkpoint_params,
                extra_tensors={**self.objective.state_dict(), **self._telemetry_state()},
                metadata={"method": cfg.method},
                keep=cfg.keep_checkpoints,
            )
        D.barrier(self._dist)
        if path is not None or self._ckpt_root is None:
            return path
        written = self._ckpt_root / step_folder_name(step)  # by rank 0; not re-hashed on every other rank
        return written if written.is_dir() else None

    def _checkpoint_unless_saved(self, step: int) -> None:
        """A run stopped early is checkpointed at its last step (resumable), unless it just was."""
        if self._ckpt_root is not None and (
            self._last_ckpt is None or not str(self._last_ckpt).endswith(f"{step:06d}")
        ):
            self._last_ckpt = self._checkpoint(step) or self._last_ckpt
