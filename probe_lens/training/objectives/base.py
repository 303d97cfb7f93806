"""The interface between the :class:`~probe_lens.training.Trainer` and what it trains: :class:`Objective`.

An objective owns the training examples and the loss. Each optimizer step the Trainer picks the step's
global batch (``batch_indices``: fixed by seed and step), asks the objective for the batch's totals
(:meth:`Objective.batch_totals`: e.g. response tokens), splits the batch over processes and
micro-batches, and calls :meth:`Objective.loss` once per :class:`MicroBatch`. Each call returns a
:class:`StepOutput` whose loss is that micro-batch's *share* of the step's loss (its sums divided by the
global totals), so the shares add up to the loss of the whole batch whatever the split.

Optional hooks, each with a do-nothing default: :meth:`~Objective.prepare` (once before the first step,
e.g. precomputed reference log-probs), :meth:`~Objective.state_dict` / :meth:`~Objective.load_state_dict`
(tensors stored in checkpoints), :meth:`~Objective.summary` (facts for ``run_info.json``) and the study
hooks (:attr:`~Objective.signals`, :attr:`~Objective.study_section`, :meth:`~Objective.cell_config`,
:meth:`~Objective.train_cell`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int

from probe_lens.activations import trim_left_padding
from probe_lens.models import Generation

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from probe_lens.experiments.cells import CellSpec
    from probe_lens.experiments.config import StudyConfig
    from probe_lens.experiments.runner import CellContext
    from probe_lens.training.config import TrainConfig
    from probe_lens.training.trainer import TrainResult


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
    model: HookedTransformer


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
    class with :func:`~probe_lens.training.register_objective` to use it by name (and in studies, with
    the study hooks).
    """

    signals: ClassVar[tuple[str, ...]] = ()
    """Study signals a cell of this objective may train with (``probe``, ``ensemble``, ``classifier``);
    empty: not usable in a study."""
    study_section: ClassVar[str | None] = None
    """The ``StudyConfig`` section holding a cell's training settings (``probe_sft``, ``classifier_sft``, ``dpo``)."""
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

    def prepare(self, model: HookedTransformer, config: TrainConfig, *, resumed: bool) -> None:
        """Called once before the first step, after a resume restored :meth:`load_state_dict`."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to store in checkpoints (keys prefixed with the objective's name)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` stored (``state`` may hold other keys too)."""

    def summary(self) -> dict[str, Any]:
        """Facts about the run (examples kept, pairs, probes) for ``run_info.json`` and ``TrainResult.info``."""
        return {"n_examples": self.n_examples}

    # ---- study hooks -------------------------------------------------------------------

    @classmethod
    def cell_config(cls, study: StudyConfig, cell: CellSpec) -> TrainConfig:
        """The study's training settings for a cell of this objective (the runner fills in seed and folder)."""
        if cls.study_section is None:
            raise NotImplementedError(f"{cls.__name__} has no study hooks (signals, study_section, train_cell)")
        return getattr(study, cls.study_section)

    @classmethod
    def train_cell(cls, cell: CellContext) -> TrainResult:
        """Train one study cell on ``cell.study.model`` with ``cell.train_config(cls.cell_config(...))``."""
        raise NotImplementedError(f"{cls.__name__} has no study hooks (signals, study_section, train_cell)")


# ---- helpers objectives share ----------------------------------------------------------


def trim_padding(tokens: Int[torch.Tensor, "batch pos"], *masks: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop columns that are padding in every row, on both sides (``masks[0]``: the attention mask)."""
    tokens, *kept = trim_left_padding(tokens, *masks)
    real = kept[0].bool().any(dim=0)
    last = int(real.nonzero()[-1]) + 1 if bool(real.any()) else tokens.shape[1]
    return (tokens[:, :last], *(m[:, :last] for m in kept))


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def check_generation(data: Generation, what: str) -> None:
    """Refuse anything but a non-empty Generation whose every row has response tokens."""
    if not isinstance(data, Generation):
        raise TypeError(
            f"{what} must be a probe_lens Generation (from generate(...) or tokenize_pairs(...)), got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError(f"{what} is empty")
    empty = torch.nonzero(data.response_mask.sum(dim=1) == 0).flatten().tolist()
    if empty:
        raise ValueError(f"{what} rows {empty[:10]} have no response tokens; drop them (e.g. data.select(...))")


def check_config(config: Any, cls: type) -> None:
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
