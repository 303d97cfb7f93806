"""The interface between the :class:`~probe_lens.training.Trainer` and what it trains: :class:`Objective`.

An objective owns the training examples and the loss. Each optimizer step the Trainer picks the step's
global batch (``batch_indices``: fixed by seed and step), asks the objective for the batch's totals
(:meth:`Objective.batch_totals`: e.g. response tokens), splits the batch over processes and
micro-batches, and calls :meth:`Objective.loss` once per :class:`MicroBatch`. Each call returns a
:class:`StepOutput` whose loss is that micro-batch's *share* of the step's loss (its sums divided by the
global totals), so the shares add up to the loss of the whole batch whatever the split.

Optional hooks, each with a do-nothing default: :meth:`~Objective.prepare` (once before the first step,
e.g. precomputed reference log-probs), :meth:`~Objective.state_dict` / :meth:`~Objective.load_state_dict`
(tensors stored in checkpoints) and :meth:`~Objective.summary` (facts for ``run_info.json``).

This module sits outside the ``objectives`` package so that the Trainer, which every objective file
imports, depends on the interface only (no import cycle, no import order to keep).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int

if TYPE_CHECKING:
    from probe_lens.models import LensModel
    from probe_lens.training.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class MicroBatch:
    """One micro-batch of an optimizer step, as the Trainer hands it to :meth:`Objective.loss`.

    Attributes:
        indices: ``[batch]`` rows of the objective's examples (``0 .. n_examples - 1``).
        totals: the *global* batch's totals from :meth:`Objective.batch_totals` (over every process and
            micro-batch); divide this micro-batch's sums by them.
        forward: what to run the model's forward passes through: ``DistributedDataParallel(model)``
            under torchrun (so gradients are averaged over processes), else ``model`` itself.
        model: the model being trained (its hooks, config and device).
    """

    indices: Int[torch.Tensor, " batch"]
    totals: dict[str, float]
    forward: Callable[..., Any]
    model: LensModel


@dataclasses.dataclass(frozen=True)
class StepOutput:
    """What :meth:`Objective.loss` returns for one micro-batch.

    Attributes:
        loss: scalar; the micro-batch's share of the step's loss (backpropagated). The Trainer logs the
            step's sum of shares as ``train/loss``.
        terms: scalar shares of the other logged metrics (``train/lm_loss``, ``rewards/margins``, ...):
            summed over micro-batches and processes into the step's metrics row.
    """

    loss: Float[torch.Tensor, ""]
    terms: dict[str, Float[torch.Tensor, ""]] = dataclasses.field(default_factory=dict)


class Objective(abc.ABC):
    """What the Trainer trains on: the examples, the loss of a micro-batch, and optional hooks.

    Subclass it, implement :attr:`n_examples`, :meth:`batch_totals` and :meth:`loss`, and register the
    class with :func:`~probe_lens.training.register_objective` to use it by name (a study adapts it with
    ``probe_lens.experiments.register_study_objective``).
    """

    progress_metrics: ClassVar[tuple[str, ...]] = ("train/loss",)
    """Metrics shown on the progress bar."""

    @property
    @abc.abstractmethod
    def n_examples(self) -> int:
        """Number of training examples (DPO: pairs); batches index ``0 .. n_examples - 1``."""

    @property
    def uses_all_parameters(self) -> bool:
        """False when some trainable parameters get no gradient (DDP must then search for unused ones)."""
        return True

    @abc.abstractmethod
    def batch_totals(self, indices: Int[torch.Tensor, " global_batch"]) -> dict[str, float]:
        """Totals of a step's global batch that the micro-batch sums are divided by (e.g. ``tokens``)."""

    @abc.abstractmethod
    def loss(self, batch: MicroBatch) -> StepOutput:
        """The micro-batch's share of the step's loss (and of its logged terms)."""

    # ---- optional hooks ----------------------------------------------------------------

    def prepare(self, model: LensModel, config: TrainConfig, *, resumed: bool) -> None:
        """Called once before the first step, after a resume restored :meth:`load_state_dict`."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to store in checkpoints (keys prefixed with the objective's name)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` stored (``state`` may hold other keys too)."""

    def summary(self) -> dict[str, Any]:
        """Facts about the run (examples kept, pairs, probes) for ``run_info.json`` and ``TrainResult.info``."""
        return {"n_examples": self.n_examples}


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
