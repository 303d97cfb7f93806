"""A user's objective, with its own settings, in a study: one training objective + one study adapter.

``AvoidToken`` (push down one token's logit; its config has a ``token_id`` no built-in has) is registered
here, outside the library, and trained in a tiny study through a declared cell; its settings come from the
study file's ``objectives: {avoid_token: {...}}`` section, typed by its own config class. The same study
runs a declared ``probe_filtered_sft`` cell (the built-in plug-in) against the classifier-SFT control.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, ClassVar

import pytest

from probe_lens.experiments import Study, StudyConfig, StudyObjective, get_study_objective, register_study_objective
from probe_lens.experiments.adapters import STUDY_OBJECTIVES
from probe_lens.experiments.cells import CellSpec
from probe_lens.models import Generation
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config
from probe_lens.training import (
    OBJECTIVES,
    MicroBatch,
    Objective,
    StepOutput,
    TrainConfig,
    Trainer,
    TrainResult,
    read_metrics,
    register_objective,
)


@dataclasses.dataclass
class AvoidTokenConfig(TrainConfig):
    """Push down the logit of ``token_id`` at the last position of every training sample."""

    method: ClassVar[str] = "avoid_token"

    token_id: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.token_id, bool) or not isinstance(self.token_id, int) or self.token_id < 0:
            raise ValueError(f"token_id must be an int >= 0, got {self.token_id!r}")


class AvoidToken(Objective):
    progress_metrics = ("train/loss", "avoid/logit")

    def __init__(self, data: Generation, config: AvoidTokenConfig) -> None:
        self.data, self.token_id = data, config.token_id

    @property
    def n_examples(self) -> int:
        return len(self.data)

    def batch_totals(self, indices):
        return {"examples": float(len(indices))}

    def loss(self, batch: MicroBatch) -> StepOutput:
        d, idx = self.data, batch.indices
        logits = batch.forward(d.tokens[idx], attention_mask=d.attention_mask[idx])
        term = logits[:, -1, self.token_id].sum() / batch.totals["examples"]
        return StepOutput(term, {"avoid/logit": term.detach()})


def train_avoid_token(context: Any, config: AvoidTokenConfig) -> TrainResult:
    """The study side: train on the seed's training samples."""
    objective = AvoidToken(context.generation, config)
    return Trainer(context.study.model, objective, config, telemetry=context.telemetry).train(resume=context.resume)


@pytest.fixture(scope="module")
def avoid_token():
    register_objective("avoid_token", AvoidToken, AvoidTokenConfig)
    register_study_objective("avoid_token", StudyObjective(signals=("classifier",), train=train_avoid_token))
    yield
    STUDY_OBJECTIVES.unregister("avoid_token")
    OBJECTIVES.unregister("avoid_token")


CELLS = [
    "base",
    "classifier_sft",
    {"name": "pf", "objective": "probe_filtered_sft", "signal": "probe"},
    {"name": "mine", "objective": "avoid_token", "signal": "classifier"},
]
SETTINGS = {"avoid_token": {"token_id": 5, "max_steps": 2, "batch_size": 4, "lr": 1e-2}}


@pytest.fixture(scope="module")
def study(avoid_token, tmp_path_factory):
    out = tmp_path_factory.mktemp("plugin") / "study"
    cfg = tiny_study_config(cells=CELLS, objectives=SETTINGS)
    Study(cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False).run()
    return cfg, out


def test_its_section_is_read_into_its_own_config_class(avoid_token):
    cfg = tiny_study_config(cells=CELLS, objectives=SETTINGS)
    assert cfg.objectives == {"avoid_token": AvoidTokenConfig(token_id=5, max_steps=2, batch_size=4, lr=1e-2)}
    assert cfg.to_dict()["objectives"]["avoid_token"]["token_id"] == 5
    assert StudyConfig.from_dict(cfg.to_dict()).objectives == cfg.objectives
    # a cell's objective gets its defaults when the study file has no section for it
    assert tiny_study_config(cells=CELLS).objectives == {"avoid_token": AvoidTokenConfig()}
    # studies without such an objective write no section (their study files read as before)
    assert "objectives" not in tiny_study_config(cells=["base", "probe_sft_1"]).to_dict()


def test_bad_sections_are_refused(avoid_token):
    with pytest.raises(
        ValueError, match=r"unknown key\(s\) \['token'\] in objectives.avoid_token; valid keys: .*'token_id'"
    ):
        tiny_study_config(cells=CELLS, objectives={"avoid_token": {"token": 5}})
    with pytest.raises(ValueError, match="token_id must be an int >= 0"):
        tiny_study_config(cells=CELLS, objectives={"avoid_token": {"token_id": -1}})
    with pytest.raises(ValueError, match="objectives.avoid_tokn: unknown study objective .*did you mean 'avoid_token'"):
        tiny_study_config(cells=CELLS, objectives={"avoid_tokn": {}})
    with pytest.raises(ValueError, match="objectives.dpo: the settings of 'dpo' are the top-level section 'dpo'"):
        tiny_study_config(objectives={"dpo": {"beta": 0.2}})
    with pytest.raises(TypeError, match="objectives.avoid_token must be a mapping"):
        tiny_study_config(cells=CELLS, objectives={"avoid_token": 5})
    with pytest.raises(ValueError, match="objective 'avoid_token' takes signal classifier, got 'probe'"):
        CellSpec("x", "avoid_token", "probe")


def test_bad_adapters_are_refused(avoid_token):
    with pytest.raises(ValueError, match="signals must be a non-empty list"):
        StudyObjective(signals=(), train=train_avoid_token)
    with pytest.raises(ValueError, match="signals must be a non-empty list"):
        StudyObjective(signals=("none",), train=train_avoid_token)
    with pytest.raises(TypeError, match="train must be a function"):
        StudyObjective(signals=("probe",), train=None)  # type: ignore[arg-type]
    adapter = StudyObjective(signals=["probe"], train=train_avoid_token)
    assert adapter.signals == ("probe",)
    with pytest.raises(ValueError, match="no training objective 'not_trained' is registered"):
        register_study_objective("not_trained", adapter)
    with pytest.raises(ValueError, match="'avoid_token' is already registered"):
        register_study_objective("avoid_token", adapter)
    with pytest.raises(TypeError, match="adapter must be a probe_lens.experiments.StudyObjective"):
        register_study_objective("avoid_token", train_avoid_token, replace=True)  # type: ignore[arg-type]
    before = get_study_objective("avoid_token")
    try:
        assert register_study_objective("avoid_token", adapter, replace=True) is get_study_objective("avoid_token")
    finally:
        register_study_objective("avoid_token", before, replace=True)


def _headline_rows(path) -> dict[str, dict[str, str]]:
    """``{cell: {column: value}}`` of headline.md's cells table."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| cell |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        values = [c.strip() for c in line.strip("|").split("|")]
        rows[values[0]] = dict(zip(header, values))
    return rows


def _number(cell_value: str) -> float:
    return float(cell_value.split("±")[0])


def test_the_users_objective_trains_in_a_study_and_reaches_the_headline(study):
    cfg, out = study
    train = out / "cells" / "mine" / "seed0" / "train"
    saved = json.loads((train / "config.json").read_text())
    assert (saved["method"], saved["token_id"], saved["max_steps"]) == ("avoid_token", 5, 2)
    logits = read_metrics(train)["avoid/logit"].dropna()
    assert len(logits) == 2
    rows = _headline_rows(out / "headline.md")
    mine = rows["mine"]
    assert mine["trains against"] == "output classifier"
    assert _number(mine["perplexity (neutral)"]) > 0 and 0 <= _number(mine["toxicity rate"]) <= 1
    assert _number(mine["logistic_L2 AUROC curated"]) == pytest.approx(
        json.loads((out / "cells" / "mine" / "seed0" / "eval.json").read_text())["probe/curated_auroc/logistic_L2"],
        abs=5e-4 + 1e-9,  # the headline rounds to 3 decimals: off by up to half a unit (0.4375 -> 0.438)
    )
    assert StudyConfig.load(out / "study.json").objectives == cfg.objectives


def test_a_declared_probe_filtered_sft_cell_runs_with_its_control(study):
    cfg, out = study
    saved = json.loads((out / "cells" / "pf" / "seed0" / "train" / "config.json").read_text())
    assert (saved["method"], saved["threshold"]) == ("probe_filtered_sft", cfg.probe_filter_threshold)
    rows = _headline_rows(out / "headline.md")
    assert rows["pf"]["trains against"] == "logistic_L2"
    assert _number(rows["pf"]["perplexity (neutral)"]) > 0
    text = (out / "headline.md").read_text()
    assert "| pf − base | probe/curated_auroc/logistic_L2 |" in text
    assert "| pf − classifier_sft | probe/curated_auroc/logistic_L2 |" in text  # its adapter's control
