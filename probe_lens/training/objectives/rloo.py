"""RLOO: REINFORCE with a leave-one-out baseline over k on-policy samples per prompt (reward only).

Each micro-batch samples ``k`` continuations of each of its prompts from the *current* policy (no
gradient), scores them with a :class:`Reward` (minus the frozen probe's P(positive) on the policy's own
activations of the sample, or minus an output classifier's score), subtracts the per-token KL penalty to
the reference model (``beta * sum_t [log pi(y_t) - log pi_ref(y_t)]`` on the sampled tokens, folded into
the reward as in TRL's RLOOTrainer and Ahmadian et al. 2024), and backpropagates

    loss = -1/N * sum_i A_i * sum_t log pi(y_{i,t} | y_{i,<t}),   A_i = r_i - mean_{j != i} r_j

over the step's N samples (``advantage="grpo"``: ``A_i = (r_i - mean_j r_j) / (std_j r_j + 1e-4)``). The
reward and the KL penalty are constants of the loss: the monitor's signal reaches the model only as a
number per sample, never as a gradient through the probe (contrast ``probe_sft``). RLOO-style
(Ahmadian et al. 2024); reward from a probe as in RL-Obfuscation (Gupta & Jenner 2025).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from jaxtyping import Float, Int

from probe_lens.activations import capture
from probe_lens.models import Generation, LensModel, generate
from probe_lens.models.compat import training_products
from probe_lens.training.config import TrainConfig
from probe_lens.training.losses import probe_probability, response_token_logps
from probe_lens.training.objectives.base import MicroBatch, Objective, StepOutput, check_config, model_device
from probe_lens.training.pairs import scorer_scores
from probe_lens.training.probes_util import FlatProbe, flatten_probes
from probe_lens.training.trainer import StepCallback, Trainer, TrainResult

ADVANTAGES = ("rloo", "grpo")
GRPO_EPS = 1e-4
"""Added to the group's standard deviation under ``advantage="grpo"`` (TRL's GRPOTrainer uses the same)."""


@dataclass
class RLOOConfig(TrainConfig):
    """RLOO against a probe or an output classifier (defaults sized for the embedded model on CPU).

    Args:
        samples_per_prompt: k, the samples drawn per prompt at every step (>= 2: the baseline leaves one out).
        max_new_tokens, temperature, top_p: how the k samples are drawn from the current policy.
        beta: weight of the KL penalty to the reference model in the reward (0: no reference model needed).
        advantage: ``rloo`` (leave-one-out baseline) or ``grpo`` (group mean and standard deviation).
        pooling: how a pooled probe reads the response activations (``mean``/``last``/``max``); token
            probes (max-pooled, attention) pool themselves.
        aggregate: how several probes' (or ensemble members') probabilities combine: ``mean`` or ``max``.
        fast_sampling: draw the samples on the fp16-weight fast path (``generate(fast=True)``): faster on
            CPU, but the samples then come from a rounded copy of the policy (slightly off-policy).
    """

    method: ClassVar[str] = "rloo"

    lr: float = 3e-5
    max_steps: int = 12
    warmup_steps: int = 1
    batch_size: int = 4
    trainable: str = r"^(blocks|ln_final)\."
    samples_per_prompt: int = 4
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.05
    advantage: str = "rloo"
    pooling: str = "mean"
    aggregate: str = "mean"
    fast_sampling: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, least in (("samples_per_prompt", 2), ("max_new_tokens", 1)):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, int) or n < least:
                raise ValueError(f"RLOOConfig.{name} must be an int >= {least}, got {n!r}")
        bounds: dict[str, tuple[float | None, float | None]] = {
            "temperature": (0.0, None),
            "top_p": (0.0, 1.0),
            "beta": (None, None),
        }
        for name, (low, high) in bounds.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"RLOOConfig.{name} must be a finite number >= 0, got {v!r}")
            if (low is not None and v <= low) or (high is not None and v > high):
                raise ValueError(f"RLOOConfig.{name} must be in ({low}, {high or 'inf'}], got {v!r}")
            setattr(self, name, float(v))
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.pooling not in ("mean", "last", "max"):
            raise ValueError(f"pooling must be 'mean', 'last' or 'max', got {self.pooling!r}")
        if self.aggregate not in ("mean", "max"):
            raise ValueError(f"aggregate must be 'mean' or 'max', got {self.aggregate!r}")
        if not isinstance(self.fast_sampling, bool):
            raise TypeError(f"fast_sampling must be True or False, got {self.fast_sampling!r}")


# ---------------------------------------------------------------------------------------------
# rewards: what the trained-against signal says of a sample (higher = better for the policy)
# ---------------------------------------------------------------------------------------------


class Reward(Protocol):
    """A sample's reward from the trained-against signal: ``reward(samples, acts) -> [n]`` (no gradient).

    ``hooks``: the activations it reads, captured from the policy's own forward pass over its samples
    (``acts[hook]``: ``[n, pos, d_model]``, detached, on the samples' token grid).
    """

    hooks: tuple[str, ...]

    def __call__(self, samples: Generation, acts: dict[str, torch.Tensor]) -> Float[torch.Tensor, " n"]: ...

    def describe(self) -> dict[str, Any]: ...


class ProbeReward:
    """Minus the frozen probes' P(positive) on the policy's activations of its own sample.

    Pooled probes read the response activations pooled by ``pooling``; token probes (``TokenProbe``:
    max-pooled, attention) read every response token. Several probes combine by ``aggregate``.
    """

    def __init__(self, probes: list[FlatProbe], *, pooling: str = "mean", aggregate: str = "mean") -> None:
        if not probes:
            raise ValueError("ProbeReward needs at least one probe")
        self.probes, self.pooling, self.aggregate = probes, pooling, aggregate
        self.hooks = tuple(sorted({p.hook for p in probes}))

    def probability(self, samples: Generation, acts: dict[str, torch.Tensor]) -> Float[torch.Tensor, " n"]:
        """The probes' combined P(positive) of each sample (computed without gradient, on detached activations)."""
        with torch.no_grad():
            detached = {h: a.detach() for h, a in acts.items()}
            pairs = [(f.hook, f.probe) for f in self.probes]
            return probe_probability(
                detached, samples.response_mask, pairs, pooling=self.pooling, aggregate=self.aggregate
            )

    def __call__(self, samples: Generation, acts: dict[str, torch.Tensor]) -> Float[torch.Tensor, " n"]:
        return -self.probability(samples, acts)

    def describe(self) -> dict[str, Any]:
        return {"reward": "-probe", "probes": {f.name: f.hook for f in self.probes}, "pooling": self.pooling}


class ScorerReward:
    """Minus an output classifier's score of each sample's response text (any ``score(texts) -> [n]``)."""

    hooks: tuple[str, ...] = ()

    def __init__(self, scorer: Any) -> None:
        if not hasattr(scorer, "score"):
            raise TypeError(f"scorer must have a score(texts) method, got {type(scorer).__name__}")
        self.scorer = scorer

    def __call__(self, samples: Generation, acts: dict[str, torch.Tensor]) -> Float[torch.Tensor, " n"]:
        return -torch.as_tensor(scorer_scores(self.scorer, samples), dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        name = self.scorer.describe()["name"] if hasattr(self.scorer, "describe") else type(self.scorer).__name__
        return {"reward": "-classifier", "scorer": name}


# ---------------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------------


def group_advantages(rewards: Float[torch.Tensor, "prompts k"], kind: str = "rloo") -> Float[torch.Tensor, "prompts k"]:
    """Advantages within each prompt's group of k samples: leave-one-out (``rloo``) or normalised (``grpo``)."""
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be [prompts, k] with k >= 2, got shape {tuple(rewards.shape)}")
    k = rewards.shape[1]
    mean = rewards.mean(dim=1, keepdim=True)
    if kind == "rloo":
        return (rewards - mean) * (k / (k - 1))  # = r_i - mean of the other k - 1
    if kind == "grpo":
        return (rewards - mean) / (rewards.std(dim=1, keepdim=True) + GRPO_EPS)
    raise ValueError(f"kind must be one of {ADVANTAGES}, got {kind!r}")


@dataclasses.dataclass
class Rollout:
    """One micro-batch's samples and what the loss made of them (all detached, on the CPU).

    ``samples`` holds prompt ``p``'s k samples in rows ``p * k .. p * k + k - 1``.
    """

    samples: Generation
    scores: Float[torch.Tensor, " n"]
    kl: Float[torch.Tensor, " n"]
    rewards: Float[torch.Tensor, " n"]
    advantages: Float[torch.Tensor, " n"]


class RLOOObjective(Objective):
    """RLOO on ``prompts`` (one example per prompt) with ``reward``; see the module docstring.

    ``reference_model`` (frozen: the starting weights) is needed when ``config.beta > 0``. After each
    :meth:`loss`, ``last_rollout`` holds that micro-batch's samples, rewards and advantages.
    """

    progress_metrics = ("train/loss", "objective/scores", "objective/kl")

    def __init__(
        self,
        model: LensModel,
        prompts: Sequence[str],
        reward: Reward,
        config: RLOOConfig,
        *,
        reference_model: LensModel | None = None,
    ) -> None:
        check_config(config, RLOOConfig)
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a non-empty list of strings")
        if not callable(reward) or not hasattr(reward, "hooks"):
            raise TypeError(
                f"reward must be a ProbeReward, ScorerReward or another Reward, got {type(reward).__name__}"
            )
        if config.beta > 0 and reference_model is None:
            raise ValueError("beta > 0 needs reference_model (a frozen copy of the starting model), or set beta=0")
        if model.tokenizer is None:
            raise ValueError("the model has no tokenizer: RLOO samples text from it")
        self.prompts, self.reward, self.config = list(prompts), reward, config
        self.k = config.samples_per_prompt
        self.reference_model = reference_model if config.beta > 0 else None
        self.last_rollout: Rollout | None = None

    @property
    def n_examples(self) -> int:
        return len(self.prompts)

    def batch_totals(self, indices: Int[torch.Tensor, " global_batch"]) -> dict[str, float]:
        return {"samples": float(len(indices) * self.k)}

    def sample(self, model: LensModel, indices: Int[torch.Tensor, " batch"]) -> Generation:
        """k samples of each prompt in ``indices`` from ``model`` as it is now (row seeds from torch's RNG,
        which checkpoints restore, so a resumed run draws the same samples)."""
        prompts = [self.prompts[i] for i in indices.tolist() for _ in range(self.k)]
        seeds = torch.randint(0, 2**31 - 1, (len(prompts),)).tolist()
        c = self.config
        samples = generate(
            model,
            prompts,
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            batch_size=len(prompts),
            progress=False,
            fast=c.fast_sampling,
            row_seeds=seeds,
        )
        return _trimmed(samples)

    def loss(self, batch: MicroBatch) -> StepOutput:
        samples = self.sample(batch.model, batch.indices)
        dev = model_device(batch.model)
        tok, am, rm = (t.to(dev) for t in (samples.tokens, samples.attention_mask, samples.response_mask))
        hooks = list(self.reward.hooks)
        captured: contextlib.AbstractContextManager[dict[str, torch.Tensor]] = (
            capture(batch.model, hooks) if hooks else contextlib.nullcontext({})
        )
        with captured as acts:
            lp = response_token_logps(batch.forward, tok, am, rm, hooked=batch.model)
        seq_lp = lp.sum(dim=1)
        with torch.no_grad():
            scores = self.reward(samples, {h: a.detach() for h, a in acts.items()}).to(dev, torch.float32)
            kl = self._kl(tok, am, rm, lp.detach())
            rewards = scores - self.config.beta * kl
            adv = group_advantages(rewards.view(-1, self.k), self.config.advantage).reshape(-1)
        n = batch.totals["samples"]
        loss = -(adv.to(seq_lp.dtype) * seq_lp).sum() / n
        self.last_rollout = Rollout(samples, *(t.detach().cpu() for t in (scores, kl, rewards, adv)))
        terms = {
            "objective/scores": scores.sum() / n,
            "objective/kl": kl.sum() / n,
            "objective/rlhf_reward": rewards.sum() / n,
            "logps/sampled": seq_lp.detach().sum() / n,
        }
        return StepOutput(loss, terms)

    def _kl(
        self,
        tok: Int[torch.Tensor, "n pos"],
        am: Int[torch.Tensor, "n pos"],
        rm: Int[torch.Tensor, "n pos"],
        lp: Float[torch.Tensor, "n m"],
    ) -> Float[torch.Tensor, " n"]:
        """Sum over each sample's tokens of ``log pi(y_t) - log pi_ref(y_t)`` (0 without a reference model)."""
        if self.reference_model is None:
            return torch.zeros(len(tok), device=tok.device)
        with torch.no_grad(), training_products():  # the policy pass's products: KL exactly 0 at step 0
            ref = response_token_logps(self.reference_model, tok, am, rm)
        return (lp - ref.to(lp.device)).sum(dim=1).float()

    def summary(self) -> dict[str, Any]:
        c = self.config
        return {
            "n_examples": self.n_examples,
            "samples_per_prompt": self.k,
            "advantage": c.advantage,
            "beta": c.beta,
            **self.reward.describe(),
        }


def _trimmed(g: Generation) -> Generation:
    """``g`` without the columns that are padding in every row (left of the prompts, right of the responses)."""
    cols = g.attention_mask.bool().any(dim=0).nonzero().flatten()
    first, last = int(cols[0]), int(cols[-1]) + 1
    return Generation(
        prompts=g.prompts,
        tokens=g.tokens[:, first:last],
        attention_mask=g.attention_mask[:, first:last],
        response_mask=g.response_mask[:, first:last],
        prompt_len=g.prompt_len - first,
        response_texts=g.response_texts,
    )


def probe_reward(model: LensModel, probes: Any, config: RLOOConfig, *, hook: str | int | None = None) -> ProbeReward:
    """A :class:`ProbeReward` from a probe, an ensemble, a list or a ``{name: probe}`` dict (hooks as in probe-SFT)."""
    return ProbeReward(flatten_probes(model, probes, hook), pooling=config.pooling, aggregate=config.aggregate)


def train_rloo(
    model: LensModel,
    prompts: Sequence[str],
    reward: Reward,
    config: RLOOConfig,
    *,
    reference_model: LensModel | None = None,
    telemetry=None,
    resume: bool = False,
    stop_after: int | None = None,
    on_step: StepCallback | None = None,
) -> TrainResult:
    """RLOO on ``prompts`` against ``reward`` (:func:`probe_reward` or ``ScorerReward(scorer)``).

    ``reference_model`` (frozen; the starting weights) is needed when ``config.beta > 0``. ``resume``,
    ``stop_after`` and ``on_step`` as in :func:`~probe_lens.training.train_probe_sft`.
    """
    objective = RLOOObjective(model, prompts, reward, config, reference_model=reference_model)
    trainer = Trainer(model, objective, config, telemetry=telemetry, on_step=on_step)
    return trainer.train(resume=resume, stop_after=stop_after)
