"""Every registered objective through the Trainer, and the registry itself.

Parametrised over ``OBJECTIVES`` (as SAELens parametrises over its architectures): each objective trains
the tiny model, resumes bit-identically after a crash, and its loss on a fixed batch equals the formula
computed here with plain torch (token NLL, probe sigmoid, KL, -logsigmoid(beta * margin)). A newly
registered objective is picked up automatically and fails until it has a case in ``CASES``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from probe_lens.activations import collect
from probe_lens.experiments.adapters import cell_settings
from probe_lens.experiments.cells import CellSpec
from probe_lens.models import Generation, tokenize_pairs
from probe_lens.probes import LogisticProbe
from probe_lens.testing import tiny_model, tiny_study_config
from probe_lens.training import (
    OBJECTIVES,
    MicroBatch,
    Objective,
    StepOutput,
    TrainConfig,
    Trainer,
    build_pairs,
    get_objective,
    probe_scores,
    read_metrics,
    register_objective,
)
from probe_lens.training.objectives import (
    DPOObjective,
    FilteredSFTObjective,
    ProbeFilteredSFTObjective,
    ProbeSFTObjective,
    RLOOObjective,
    probe_reward,
)

PROMPTS = [f"Prompt number {i}:" for i in range(8)]
CLEAN = [" have a lovely day", " thanks, that helps", " the sky is blue", " kind words here"]
TOXIC = [" you idiot, shut up", " I hate you all", " stupid awful trash", " go away, loser"]
HOOK = "blocks.1.hook_resid_post"


@dataclasses.dataclass
class Inputs:
    """What the objectives train on: 16 responses (2 per prompt, alternating clean/toxic) and their signals."""

    data: Generation
    labels: np.ndarray
    probe: LogisticProbe
    scores: np.ndarray  # an output classifier's scores: flags the toxic rows
    reference: Any  # a frozen model with other weights (KL term, DPO reference)


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    model = tiny_model(seed=0)
    prompts, responses, labels = [], [], []
    for i, p in enumerate(PROMPTS):
        for j in range(2):
            toxic = (i + j) % 2
            prompts.append(p)
            responses.append((TOXIC if toxic else CLEAN)[(i + j) % 4])
            labels.append(toxic)
    data = tokenize_pairs(model, prompts, responses, add_eos=True)
    y = np.array(labels)
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [HOOK], progress=False)[HOOK]
    probe = LogisticProbe(C=0.1, hook=HOOK, pooling="mean").fit(acts, y)
    return Inputs(data, y, probe, y * 0.9 + 0.05, tiny_model(seed=3))


# ---------------------------------------------------------------------------------------------
# oracles: plain torch on full (untrimmed) forward passes
# ---------------------------------------------------------------------------------------------


def _logprobs(model, data: Generation, rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log-softmax of the logits predicting token t, at column t - 1; token log-probs; response mask of t)."""
    with torch.no_grad():
        logits = model(data.tokens[rows], attention_mask=data.attention_mask[rows]).double()
    logp = logits[:, :-1].log_softmax(-1)
    tok_lp = logp.gather(-1, data.tokens[rows][:, 1:, None]).squeeze(-1)
    return logp, tok_lp, data.response_mask[rows][:, 1:].double()


def mean_token_nll(model, data: Generation, rows) -> float:
    _, tok_lp, mask = _logprobs(model, data, rows)
    return float(-(tok_lp * mask).sum() / mask.sum())


def mean_token_kl(model, reference, data: Generation, rows) -> float:
    p, _, mask = _logprobs(model, data, rows)
    q, _, _ = _logprobs(reference, data, rows)
    kl = (p.exp() * (p - q)).sum(-1)
    return float((kl * mask).sum() / mask.sum())


def probe_p(model, probe, data: Generation, rows) -> torch.Tensor:
    """P(toxic) per row: sigmoid(coef . mean of the response activations + intercept)."""
    with torch.no_grad():
        _, cache = model.run_with_cache(data.tokens[rows], attention_mask=data.attention_mask[rows], names_filter=HOOK)
    acts, m = cache[HOOK].double(), data.response_mask[rows].double()[..., None]
    pooled = (acts * m).sum(1) / m.sum(1)
    return torch.sigmoid(pooled @ torch.as_tensor(probe.coef_, dtype=torch.float64) + float(probe.intercept_))


def seq_logps(model, data: Generation, rows) -> torch.Tensor:
    _, tok_lp, mask = _logprobs(model, data, rows)
    return (tok_lp * mask).sum(1)


# ---------------------------------------------------------------------------------------------
# one case per registered objective
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    """How to build an objective on the tiny inputs, and its loss on a fixed batch by hand."""

    build: Callable[[Any, Inputs, TrainConfig], Objective]
    config: dict[str, Any]
    expected_loss: Callable[[Any, Inputs, Objective, torch.Tensor], float]


def _pairs(x: Inputs):
    return build_pairs(x.data, probe_scores(tiny_model(seed=0), x.data, x.probe, progress=False), k=2)


def _sft_expected(model, x: Inputs, obj, idx) -> float:
    rows = idx.tolist()
    return (
        mean_token_nll(model, x.data, rows)
        + 0.7 * float(probe_p(model, x.probe, x.data, rows).mean())
        + 0.3 * mean_token_kl(model, x.reference, x.data, rows)
    )


def _filtered_expected(keep: Callable[[Any, Inputs], np.ndarray]):
    def expected(model, x: Inputs, obj, idx) -> float:
        return mean_token_nll(model, x.data, keep(model, x)[idx.numpy()].tolist())

    return expected


def _dpo_expected(model, x: Inputs, obj, idx) -> float:
    pairs, rows = obj.pairs, idx.tolist()
    pc, pr = seq_logps(model, pairs.chosen, rows), seq_logps(model, pairs.rejected, rows)
    rc, rr = seq_logps(x.reference, pairs.chosen, rows), seq_logps(x.reference, pairs.rejected, rows)
    return float(-F.logsigmoid(0.2 * ((pc - rc) - (pr - rr))).mean())


def _rloo_expected(model, x: Inputs, obj, idx) -> float:
    """-1/N sum_i A_i log p(y_i) on the step's own samples, with r_i = -P(toxic) - beta * (log p - log p_ref)(y_i)
    and A_i = r_i minus the mean of the other sample of its prompt (k = 2)."""
    g = obj.last_rollout.samples
    rows = list(range(len(g)))
    seq, ref = seq_logps(model, g, rows), seq_logps(x.reference, g, rows)
    r = -probe_p(model, x.probe, g, rows) - 0.3 * (seq - ref)
    other = r.view(-1, 2).flip(1).reshape(-1)
    return float(-((r - other) * seq).mean())


CASES: dict[str, Case] = {
    "probe_sft": Case(
        lambda m, x, cfg: ProbeSFTObjective(m, x.data, x.probe, cfg, reference_model=x.reference),
        dict(probe_weight=0.7, kl_weight=0.3),
        _sft_expected,
    ),
    "filtered_sft": Case(
        lambda m, x, cfg: FilteredSFTObjective(m, x.data, x.scores, cfg),
        dict(threshold=0.5),
        _filtered_expected(lambda m, x: np.flatnonzero(x.scores < 0.5)),
    ),
    "dpo": Case(
        lambda m, x, cfg: DPOObjective(m, _pairs(x), cfg, reference_model=x.reference), dict(beta=0.2), _dpo_expected
    ),
    "probe_filtered_sft": Case(
        lambda m, x, cfg: ProbeFilteredSFTObjective(m, x.data, x.probe, cfg),
        dict(threshold=0.5),
        _filtered_expected(lambda m, x: np.flatnonzero(probe_p(m, x.probe, x.data, list(range(len(x.data)))) < 0.5)),
    ),
    "rloo": Case(
        lambda m, x, cfg: RLOOObjective(m, PROMPTS, probe_reward(m, x.probe, cfg), cfg, reference_model=x.reference),
        dict(samples_per_prompt=2, max_new_tokens=4, beta=0.3, trainable="all"),
        _rloo_expected,
    ),
}


def case(name: str) -> Case:
    if name not in CASES:
        pytest.fail(f"objective {name!r} is registered but has no test case: add one to CASES in {__file__}")
    return CASES[name]


def build(name: str, model, x: Inputs, **config) -> tuple[Objective, TrainConfig]:
    c = case(name)
    cfg = get_objective(name).config_cls(**{"progress": False, **c.config, **config})
    return c.build(model, x, cfg), cfg


def test_every_registered_objective_has_a_case():
    assert set(OBJECTIVES) == set(CASES)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_loss_on_a_fixed_batch_matches_the_formula(name, inputs, tiny):
    objective, cfg = build(name, tiny, inputs)
    objective.prepare(tiny, cfg, resumed=False)
    idx = torch.arange(min(4, objective.n_examples))
    with torch.no_grad():
        out = objective.loss(MicroBatch(idx, objective.batch_totals(idx), tiny, tiny))
    assert isinstance(out, StepOutput) and out.loss.shape == ()
    assert float(out.loss) == pytest.approx(case(name).expected_loss(tiny, inputs, objective, idx), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_trains_and_resumes_bit_identically(name, inputs, tmp_path):
    """(a) trains the tiny model; (b) crashed after step 3 (last checkpoint: 2), resumed: the uninterrupted run."""

    def run(out, crash_at=None, resume=False):
        model = tiny_model(seed=0)
        objective, cfg = build(
            name,
            model,
            inputs,
            lr=1e-2,
            max_steps=4,
            batch_size=2,
            grad_accum_steps=2,
            warmup_steps=1,
            scheduler="cosine",
            checkpoint_every=2,
            out_dir=str(out),
        )

        def crash(step, row):
            if step == crash_at:
                raise KeyboardInterrupt(f"simulated crash at step {step}")

        return model, objective, Trainer(model, objective, cfg, on_step=crash).train(resume=resume)

    full, objective, res = run(tmp_path / "full")
    assert (res.final_step, res.stopped_reason) == (4, "max_steps")
    start = dict(tiny_model(seed=0).named_parameters())
    assert any(not torch.equal(p, start[n]) for n, p in full.named_parameters())
    assert all(np.isfinite(r["train/loss"]) for r in res.history)
    assert res.info == {**objective.summary(), "world_size": 1, "n_trainable_params": res.info["n_trainable_params"]}
    assert type(TrainConfig.load(res.config_path)) is get_objective(name).config_cls

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", crash_at=3)
    resumed, _, res_cut = run(tmp_path / "cut", resume=True)
    assert (res_cut.final_step, res_cut.stopped_reason) == (4, "max_steps")
    for (n, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), f"{name}: {n} differs after resume"
    drop = ["train/step_seconds"]
    pd.testing.assert_frame_equal(
        read_metrics(tmp_path / "full").drop(columns=drop), read_metrics(tmp_path / "cut").drop(columns=drop)
    )


# ---------------------------------------------------------------------------------------------
# probe-filtered SFT, the plug-in
# ---------------------------------------------------------------------------------------------


def test_probe_filtered_sft_trains_only_on_rows_the_probe_scores_below_the_threshold(inputs, tiny):
    everything = list(range(len(inputs.data)))
    p = probe_p(tiny, inputs.probe, inputs.data, everything).numpy()
    threshold = float(np.median(p))  # about half the rows kept
    objective, cfg = build("probe_filtered_sft", tiny, inputs, threshold=threshold)
    clean = np.flatnonzero(p < threshold)
    assert 0 < len(clean) < len(inputs.data)
    np.testing.assert_array_equal(objective.keep, clean)
    assert torch.equal(objective.data.tokens, inputs.data.tokens[clean])
    # the loss of a batch of every example is the NLL of the clean rows only, not of all rows
    idx = torch.arange(objective.n_examples)
    with torch.no_grad():
        loss = float(objective.loss(MicroBatch(idx, objective.batch_totals(idx), tiny, tiny)).loss)
    assert loss == pytest.approx(mean_token_nll(tiny, inputs.data, clean.tolist()), rel=1e-5)
    assert loss != pytest.approx(mean_token_nll(tiny, inputs.data, everything), rel=1e-3)
    assert objective.summary() == {"n_examples": len(inputs.data), "n_kept": len(clean), "threshold": threshold}


def test_probe_filtered_sft_equals_filtered_sft_on_the_probes_scores(inputs):
    """The study's ``probe_filtered_sft`` cell (``filtered_sft`` with the study's probe scores) trains the same."""
    kw = dict(lr=1e-2, max_steps=3, batch_size=4)
    a, b = tiny_model(seed=0), tiny_model(seed=0)
    plug_in, cfg_a = build("probe_filtered_sft", a, inputs, **kw)
    scores = probe_scores(b, inputs.data, inputs.probe, batch_size=16, progress=False)
    cfg_b = get_objective("filtered_sft").config_cls(threshold=0.5, progress=False, **kw)
    Trainer(a, plug_in, cfg_a).train()
    Trainer(b, FilteredSFTObjective(b, inputs.data, scores, cfg_b), cfg_b).train()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n


def test_probe_filtered_sft_is_a_study_objective():
    cfg = tiny_study_config(
        cells=["base", {"name": "pf", "objective": "probe_filtered_sft", "signal": "ensemble"}],
        probe_filter_threshold=0.3,
    )
    spec = cfg.cell("pf")
    tc = cell_settings(cfg, spec)
    assert tc.method == "probe_filtered_sft" and tc.threshold == 0.3
    assert (tc.max_steps, tc.batch_size, tc.lr) == (
        cfg.classifier_sft.max_steps,
        cfg.classifier_sft.batch_size,
        cfg.classifier_sft.lr,
    )
    with pytest.raises(ValueError, match="objective 'probe_filtered_sft' takes signal probe or ensemble"):
        CellSpec("x", "probe_filtered_sft", "classifier")


# ---------------------------------------------------------------------------------------------
# the registry
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ToyConfig(TrainConfig):
    method = "toy_logit"  # a ClassVar in TrainConfig


class ToyLogit(Objective):
    """Push down the logit of token 0 at every response's last position."""

    def __init__(self, data: Generation) -> None:
        self.data = data

    @property
    def n_examples(self) -> int:
        return len(self.data)

    def batch_totals(self, indices):
        return {"examples": float(len(indices))}

    def loss(self, batch: MicroBatch) -> StepOutput:
        d = self.data
        logits = batch.forward(d.tokens[batch.indices], attention_mask=d.attention_mask[batch.indices])
        term = logits[:, -1, 0].sum() / batch.totals["examples"]
        return StepOutput(term, {"toy/logit": term.detach()})


@pytest.fixture
def toy():
    register_objective("toy_logit", ToyLogit, ToyConfig)
    yield get_objective("toy_logit")
    OBJECTIVES.unregister("toy_logit")


def test_a_registered_objective_is_usable_by_name(toy, inputs, tmp_path):
    entry = get_objective("toy_logit")
    assert (entry.objective_cls, entry.config_cls) == (ToyLogit, ToyConfig)
    model = tiny_model(seed=0)
    cfg = entry.config_cls(lr=1e-2, max_steps=3, batch_size=4, out_dir=str(tmp_path), progress=False)
    res = Trainer(model, entry.objective_cls(inputs.data), cfg).train()
    logits = [r["toy/logit"] for r in res.history]
    assert len(logits) == 3 and logits[-1] < logits[0]
    assert json.loads((tmp_path / "config.json").read_text())["method"] == "toy_logit"
    assert type(TrainConfig.load(tmp_path / "config.json")) is ToyConfig
    # a study cell may name it only once a study adapter is registered (tests/test_objective_plugin.py)
    with pytest.raises(ValueError, match="'toy_logit' has no study adapter; register one"):
        CellSpec("mine", "toy_logit", "classifier")


def test_bad_registrations_are_refused(toy):
    class NoLoss(Objective):
        @property
        def n_examples(self):
            return 1

        def batch_totals(self, indices):
            return {}

    with pytest.raises(ValueError, match="'toy_logit' is already registered"):
        register_objective("toy_logit", ToyLogit, ToyConfig)
    with pytest.raises(ValueError, match="'dpo' is already registered"):
        register_objective("dpo", ToyLogit, ToyConfig)
    with pytest.raises(TypeError, match="subclass of probe_lens.training.Objective"):
        register_objective("toy2", object, ToyConfig)
    with pytest.raises(TypeError, match="subclass of probe_lens.training.Objective"):
        register_objective("toy2", ToyLogit(None), ToyConfig)
    with pytest.raises(TypeError, match="NoLoss does not implement loss"):
        register_objective("toy2", NoLoss, ToyConfig)
    with pytest.raises(TypeError, match="config_cls must be a subclass of probe_lens.training.TrainConfig"):
        register_objective("toy2", ToyLogit, dict)
    with pytest.raises(ValueError, match="reserved"):
        register_objective("none", ToyLogit, ToyConfig)
    with pytest.raises(ValueError, match="lowercase letters"):
        register_objective("Toy Logit", ToyLogit, ToyConfig)
    assert "toy2" not in OBJECTIVES
    with pytest.raises(ValueError, match="unknown objective 'dpoo' \\(did you mean 'dpo'\\?\\)"):
        get_objective("dpoo")
    with pytest.raises(ValueError, match="objective must be one of .*did you mean 'dpo'"):
        CellSpec("x", "dpoo", "probe")
    assert register_objective("toy_logit", ToyLogit, ToyConfig, replace=True) is get_objective("toy_logit")
    with pytest.raises(TypeError, match="objective must be a probe_lens.training.Objective"):
        Trainer(tiny_model(seed=0), object(), ToyConfig(progress=False)).train()
