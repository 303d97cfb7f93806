"""One validated config dataclass per training method, saved as ``config.json`` beside every run.

Fields mirror TRL/HF names where there is one (``lr``, ``warmup_steps``, ``max_grad_norm``,
``grad_accum_steps``, ``beta``). ``from_dict`` rejects unknown keys, so a typo in a YAML file fails
loudly instead of silently using a default.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

SCHEDULERS = ("linear", "cosine", "constant")
_BLOCKS_RE = re.compile(r"^blocks:(\d+)(?:-(\d+))?$")


@dataclass
class TrainConfig:
    """Settings shared by every loop.

    Args:
        lr: peak AdamW learning rate.
        weight_decay: AdamW (decoupled) weight decay.
        adam_beta1, adam_beta2, adam_eps: AdamW moments and epsilon.
        warmup_steps: optimizer steps of linear warm-up from 0 to ``lr``.
        max_steps: optimizer steps to train for.
        scheduler: learning-rate shape after warm-up: ``"linear"`` (to 0), ``"cosine"`` (to 0) or
            ``"constant"``.
        batch_size: examples (DPO: pairs) per micro-batch *per process*. One optimizer step sees
            ``batch_size * grad_accum_steps * world_size`` examples.
        grad_accum_steps: micro-batches accumulated per optimizer step.
        max_grad_norm: clip the global gradient norm to this (None: no clipping).
        seed: seeds torch and the data order (the order depends only on seed and step).
        trainable: which parameters train: ``"all"``, ``"blocks:A-B"`` (blocks A..B inclusive,
            ``"blocks:A"`` for one) or a regular expression searched in parameter names
            (e.g. ``r"blocks\\.(4|5)\\.mlp"``).
        bf16: run forward/backward under bfloat16 autocast (weights and optimizer stay fp32).
        log_every: write training metrics every N optimizer steps.
        telemetry_every: run drift telemetry every N steps (and at step 0 and the end); 0 = never.
        checkpoint_every: write a checkpoint every N steps (and at the end); 0 = only at the end.
            Needs ``out_dir``.
        keep_checkpoints: how many recent checkpoints to keep on disk (>= 1).
        checkpoint_params: ``"trainable"`` (small; resume needs the same base model) or ``"all"``.
        save_optimizer_final: keep the AdamW moments in the final checkpoint of a finished run too
            (twice the weights' size). Intermediate checkpoints always hold them, for resuming; a
            final one without them still loads for evaluation.
        out_dir: where ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` go (None: in memory only).
        progress: show a tqdm bar.
    """

    method: ClassVar[str] = "base"

    lr: float = 1e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    max_steps: int = 100
    scheduler: str = "linear"
    batch_size: int = 8
    grad_accum_steps: int = 1
    max_grad_norm: float | None = 1.0
    seed: int = 0
    trainable: str = "all"
    bf16: bool = False
    log_every: int = 1
    telemetry_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 1
    checkpoint_params: str = "trainable"
    save_optimizer_final: bool = False
    out_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.out_dir is not None:
            self.out_dir = str(self.out_dir)
        _positive(self, "lr", float, allow_zero=False)
        _positive(self, "weight_decay", float)
        _positive(self, "adam_eps", float, allow_zero=False)
        for b in ("adam_beta1", "adam_beta2"):
            v = getattr(self, b)
            if not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ValueError(f"{type(self).__name__}.{b} must be in [0, 1), got {v!r}")
        _int(self, "warmup_steps", minimum=0)
        _int(self, "max_steps", minimum=1)
        _int(self, "batch_size", minimum=1)
        _int(self, "grad_accum_steps", minimum=1)
        _int(self, "seed", minimum=0)
        _int(self, "log_every", minimum=1)
        _int(self, "telemetry_every", minimum=0)
        _int(self, "checkpoint_every", minimum=0)
        _int(self, "keep_checkpoints", minimum=1)
        if self.warmup_steps > self.max_steps:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) exceeds max_steps ({self.max_steps}); lower warmup_steps"
            )
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.max_grad_norm is not None:
            _positive(self, "max_grad_norm", float, allow_zero=False)
        if not isinstance(self.bf16, bool):
            raise TypeError(f"bf16 must be True or False, got {self.bf16!r}")
        if not isinstance(self.save_optimizer_final, bool):
            raise TypeError(f"save_optimizer_final must be True or False, got {self.save_optimizer_final!r}")
        if self.checkpoint_params not in ("trainable", "all"):
            raise ValueError(f"checkpoint_params must be 'trainable' or 'all', got {self.checkpoint_params!r}")
        validate_trainable(self.trainable)
        # (checkpoint_every > 0 without out_dir is refused when training starts: a study file sets
        # checkpoint_every and the runner fills in each cell's out_dir)

    # ---- serialisation -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, with the method name under ``"method"``."""
        return {"method": self.method, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError naming them."""
        d = dict(d)
        method = d.pop("method", cls.method)
        if method != cls.method:
            raise ValueError(f"this dict is a {method!r} config, not {cls.method!r}; use the matching class")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {unknown}; valid fields: {sorted(names)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write ``to_dict()`` as JSON atomically."""
        from probe_lens.training._io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @staticmethod
    def load(path: str | Path) -> TrainConfig:
        """Read a saved config back into the config class its ``method`` names: any ``TrainConfig`` subclass that
        sets ``method`` (a class defined again, e.g. by a notebook cell run twice, replaces the earlier one)."""
        d = json.loads(Path(path).read_text())
        classes = _config_classes()
        method = d.get("method", "base")
        if method not in classes:
            raise ValueError(f"{path}: unknown method {method!r}; known: {sorted(classes)}")
        return classes[method].from_dict(d)


@dataclass
class ProbeSFTConfig(TrainConfig):
    """Probe-based SFT: ``lm_weight * LM loss + probe_weight * P(toxic) [+ kl_weight * KL(policy||ref)]``.

    Args:
        probe_weight: lambda, the weight of the frozen probe's mean predicted probability.
        lm_weight: weight of the response-token language-modelling loss (0: probe term only).
        kl_weight: weight of the per-token KL to the frozen reference model (needs ``reference_model``).
        pooling: how the live response activations are pooled before the probe (``mean``/``last``/``max``).
        aggregate: how several probes' (or ensemble members') probabilities combine: ``mean`` or ``max``.
    """

    method: ClassVar[str] = "probe_sft"

    probe_weight: float = 1.0
    lm_weight: float = 1.0
    kl_weight: float = 0.0
    pooling: str = "mean"
    aggregate: str = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "probe_weight", float)
        _positive(self, "lm_weight", float)
        _positive(self, "kl_weight", float)
        if self.probe_weight == 0 and self.lm_weight == 0 and self.kl_weight == 0:
            raise ValueError("probe_weight, lm_weight and kl_weight are all 0: nothing to train")
        if self.pooling not in ("mean", "last", "max"):
            raise ValueError(f"pooling must be 'mean', 'last' or 'max', got {self.pooling!r}")
        if self.aggregate not in ("mean", "max"):
            raise ValueError(f"aggregate must be 'mean' or 'max', got {self.aggregate!r}")


@dataclass
class ClassifierSFTConfig(TrainConfig):
    """Classifier-filtered SFT baseline: LM loss on the responses an output scorer calls non-toxic.

    Args:
        threshold: responses with score ``< threshold`` are kept; None: 0.5 (a study sets its
            behaviour's threshold).
    """

    method: ClassVar[str] = "classifier_sft"

    threshold: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        t = self.threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 1):
            raise ValueError(f"threshold must be in (0, 1] or null, got {t!r}")

    @property
    def decision_threshold(self) -> float:
        """``threshold``, or 0.5 when it is None."""
        return 0.5 if self.threshold is None else float(self.threshold)


@dataclass
class DPOConfig(TrainConfig):
    """Direct preference optimisation (sigmoid loss) on fixed preference pairs.

    Args:
        beta: DPO temperature (TRL's ``beta``).
        margin: pairs whose score gap is below this were dropped when building pairs (recorded here).
        precompute_reference: compute reference log-probs once before training (no reference model
            in memory while training); False keeps a live ``reference_model``.
    """

    method: ClassVar[str] = "dpo"

    beta: float = 0.1
    margin: float = 0.0
    precompute_reference: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "beta", float, allow_zero=False)
        _positive(self, "margin", float)
        if not isinstance(self.precompute_reference, bool):
            raise TypeError(f"precompute_reference must be True or False, got {self.precompute_reference!r}")


# ---- helpers ---------------------------------------------------------------------------


def _config_classes() -> dict[str, type[TrainConfig]]:
    """``{method: class}`` over TrainConfig and the subclasses that set ``method`` themselves, breadth first
    (siblings in the order they were defined, so the later of two same-named classes wins)."""
    classes: dict[str, type[TrainConfig]] = {}
    todo: list[type[TrainConfig]] = [TrainConfig]
    while todo:
        cls = todo.pop(0)
        if "method" in vars(cls):
            classes[cls.method] = cls
        todo += cls.__subclasses__()
    return classes


def validate_trainable(spec: str) -> None:
    """Check a ``trainable`` spec: ``"all"``, ``"blocks:A-B"`` or a compilable regex."""
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"trainable must be 'all', 'blocks:A-B' or a regex string, got {spec!r}")
    if spec == "all":
        return
    if spec.startswith("blocks:"):
        m = _BLOCKS_RE.match(spec)
        if not m:
            raise ValueError(f"trainable={spec!r}: block ranges look like 'blocks:3-5' or 'blocks:4'")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise ValueError(f"trainable={spec!r}: the range end {b} is below its start {a}")
        return
    try:
        re.compile(spec)
    except re.error as e:
        raise ValueError(f"trainable={spec!r} is not 'all', 'blocks:A-B' or a valid regex: {e}") from e


def block_range(spec: str) -> tuple[int, int] | None:
    m = _BLOCKS_RE.match(spec)
    return (int(m.group(1)), int(m.group(2) or m.group(1))) if m else None


def _int(cfg: Any, name: str, *, minimum: int) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{type(cfg).__name__}.{name} must be an int, got {v!r}")
    if v < minimum:
        raise ValueError(f"{type(cfg).__name__}.{name} must be >= {minimum}, got {v}")


def _positive(cfg: Any, name: str, _t: type, *, allow_zero: bool = True) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{type(cfg).__name__}.{name} must be a number, got {v!r}")
    if v != v or v in (float("inf"), float("-inf")) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{type(cfg).__name__}.{name} must be finite and {bound}, got {v!r}")
    setattr(cfg, name, float(v))
