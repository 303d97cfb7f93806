"""RLOO against oracles written here in plain torch: the gradient is the hand-computed REINFORCE with a
leave-one-out baseline, equal rewards give no policy gradient, the KL term is the log-softmax difference
of policy and reference on the sampled tokens, and no gradient reaches the model through the probe."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from probe_lens.activations import collect, collect_tokens
from probe_lens.models import Generation, tokenize_pairs
from probe_lens.probes import LogisticProbe, MaxPooledLogisticProbe
from probe_lens.testing import non_ascii_scorer, tiny_model
from probe_lens.training import RLOOConfig, ScorerReward, Trainer, probe_reward
from probe_lens.training.objective import MicroBatch
from probe_lens.training.objectives import ProbeReward, RLOOObjective, group_advantages
from probe_lens.training.probes_util import FlatProbe

HOOK = "blocks.1.hook_resid_post"
PROMPTS = [f"Prompt number {i}:" for i in range(6)]


class FixedReward:
    """Rewards given in advance, one per sample row of the next call (reads no activations)."""

    hooks: tuple[str, ...] = ()

    def __init__(self, values) -> None:
        self.values = torch.as_tensor(values, dtype=torch.float32)

    def __call__(self, samples, acts):
        assert len(samples) == len(self.values)
        return self.values.clone()

    def describe(self):
        return {"reward": "fixed"}


def frozen(model):
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    return ref.eval()


@pytest.fixture(scope="module")
def probe():
    """A logistic probe on the tiny model's mean-pooled layer-1 activations of clean vs toxic text."""
    model = tiny_model(seed=0)
    clean = [" have a lovely day", " thanks, that helps", " the sky is blue", " kind words here"]
    toxic = [" you idiot, shut up", " I hate you all", " stupid awful trash", " go away, loser"]
    data = tokenize_pairs(model, PROMPTS[:4] * 2, clean + toxic, add_eos=True)
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [HOOK], progress=False)[HOOK]
    return LogisticProbe(C=0.1, hook=HOOK, pooling="mean").fit(acts, np.repeat([0, 1], 4))


def step_once(model, objective, indices):
    """One micro-batch holding the whole step: backpropagate its loss, return the parameters' gradients."""
    idx = torch.as_tensor(indices)
    model.zero_grad(set_to_none=True)
    out = objective.loss(MicroBatch(idx, objective.batch_totals(idx), model, model))
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---- oracles ----------------------------------------------------------------------------------


def token_logps(model, g: Generation) -> torch.Tensor:
    """[n, pos - 1] log p(token t | < t) on response tokens (0 elsewhere): a full forward, plain log-softmax."""
    logits = model(g.tokens, attention_mask=g.attention_mask).double()
    logp = logits[:, :-1].log_softmax(-1).gather(-1, g.tokens[:, 1:, None]).squeeze(-1)
    return logp * g.response_mask[:, 1:].double()


def loo_advantages(rewards: list[float], k: int) -> list[float]:
    """r_i minus the mean of the other k - 1 rewards of its prompt, by explicit loops."""
    out = []
    for p in range(len(rewards) // k):
        group = rewards[p * k : (p + 1) * k]
        for i in range(k):
            others = [group[j] for j in range(k) if j != i]
            out.append(group[i] - sum(others) / len(others))
    return out


def reinforce_gradient(model, g: Generation, advantages: list[float]) -> dict[str, torch.Tensor]:
    """-(1/N) sum_i A_i grad(sum_t log p(y_i,t)), each sample's gradient taken on its own."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    total = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in zip(names, params)}
    for i, a in enumerate(advantages):
        seq = token_logps(model, g.select([i])).sum()
        grads = torch.autograd.grad(seq, params, allow_unused=True)
        for n, gr in zip(names, grads):
            if gr is not None:
                total[n] -= a * gr.double() / len(advantages)
    return total


def probe_p(model, probe, g: Generation) -> torch.Tensor:
    """P(toxic) per sample: sigmoid(coef . mean response activation + intercept) from run_with_cache."""
    with torch.no_grad():
        _, cache = model.run_with_cache(g.tokens, attention_mask=g.attention_mask, names_filter=HOOK)
    acts, m = cache[HOOK].double(), g.response_mask.double()[..., None]
    pooled = (acts * m).sum(1) / m.sum(1)
    return torch.sigmoid(pooled @ torch.as_tensor(probe.coef_, dtype=torch.float64) + float(probe.intercept_))


def assert_grads_equal(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    scale = max(float(w.abs().max()) for w in want.values())
    assert scale > 0
    for n, w in want.items():
        g = got.get(n, torch.zeros_like(w)).double()
        torch.testing.assert_close(g, w, atol=1e-5 * scale, rtol=1e-4, msg=n)


# ---- the estimator ----------------------------------------------------------------------------


def test_group_advantages_match_the_formulas():
    r = torch.tensor([[1.0, 0.0, 0.5, 2.0], [-1.0, -1.0, 3.0, 0.0]])
    want = torch.tensor(loo_advantages(r.flatten().tolist(), 4)).view(2, 4)
    torch.testing.assert_close(group_advantages(r, "rloo"), want)
    grpo = (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)
    torch.testing.assert_close(group_advantages(r, "grpo"), grpo)
    assert torch.equal(group_advantages(torch.full((3, 4), 0.25)), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="k >= 2"):
        group_advantages(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="kind must be one of"):
        group_advantages(r, "ppo")


def test_the_gradient_is_the_hand_computed_reinforce_with_a_leave_one_out_baseline():
    model = tiny_model(seed=0)
    k, rewards = 3, [1.0, 0.0, 0.5, -2.0, 0.25, 0.25]
    cfg = RLOOConfig(samples_per_prompt=k, max_new_tokens=5, beta=0.0, trainable="all", progress=False)
    objective = RLOOObjective(model, PROMPTS, FixedReward(rewards), cfg)
    out, got = step_once(model, objective, [4, 1])
    g = objective.last_rollout.samples
    assert g.prompts == [PROMPTS[4]] * 3 + [PROMPTS[1]] * 3
    adv = loo_advantages(rewards, k)
    torch.testing.assert_close(objective.last_rollout.advantages, torch.tensor(adv))
    assert_grads_equal(got, reinforce_gradient(model, g, adv))
    # the loss's value is the surrogate -1/N sum A_i log p(y_i)
    seq = token_logps(model, g).sum(1).detach()
    assert float(out.loss.detach()) == pytest.approx(
        float(-(torch.tensor(adv, dtype=torch.float64) * seq).mean()), rel=1e-5
    )


@pytest.mark.parametrize("advantage", ["rloo", "grpo"])
def test_equal_rewards_give_no_policy_gradient(advantage):
    model = tiny_model(seed=0)
    cfg = RLOOConfig(samples_per_prompt=4, max_new_tokens=5, beta=0.0, advantage=advantage, trainable="all")
    objective = RLOOObjective(model, PROMPTS, FixedReward([0.25] * 8), cfg)
    _, got = step_once(model, objective, [0, 3])
    assert got and all(float(g.abs().max()) == 0.0 for g in got.values())
    # unequal rewards do move it (the test above is not vacuous)
    objective.reward = FixedReward([0.25] * 7 + [1.0])
    _, moved = step_once(model, objective, [0, 3])
    assert max(float(g.abs().max()) for g in moved.values()) > 0


def test_the_kl_term_is_the_log_ratio_of_policy_and_reference_on_the_sampled_tokens():
    model, reference = tiny_model(seed=0), frozen(tiny_model(seed=3))
    cfg = RLOOConfig(samples_per_prompt=2, max_new_tokens=6, beta=0.5, trainable="all")
    objective = RLOOObjective(model, PROMPTS, FixedReward([0.0, 1.0, 1.0, 0.0]), cfg, reference_model=reference)
    out, _ = step_once(model, objective, [2, 5])
    r = objective.last_rollout
    with torch.no_grad():
        want = (token_logps(model, r.samples) - token_logps(reference, r.samples)).sum(1)
    torch.testing.assert_close(r.kl.double(), want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        r.rewards.double(), torch.tensor([0.0, 1.0, 1.0, 0.0]).double() - 0.5 * want, atol=1e-5, rtol=0
    )
    assert float(out.terms["objective/kl"]) == pytest.approx(float(want.mean()), rel=1e-5)
    # against a copy of the policy itself the KL is exactly 0 (the products of a training pass)
    same = RLOOObjective(model, PROMPTS, FixedReward([0.0] * 4), cfg, reference_model=frozen(model))
    step_once(model, same, [2, 5])
    assert torch.equal(same.last_rollout.kl, torch.zeros(4))


# ---- the probe's signal reaches the model as a number only -------------------------------------


def test_no_gradient_flows_through_the_probe(probe):
    """With the probe's reward and the KL penalty, the gradient is REINFORCE with those rewards held constant:
    had the probe score kept its graph, d(reward)/d(theta) would add to it and this would fail."""
    model, reference = tiny_model(seed=0), frozen(tiny_model(seed=3))
    cfg = RLOOConfig(samples_per_prompt=3, max_new_tokens=6, beta=0.3, trainable="all", progress=False)
    objective = RLOOObjective(model, PROMPTS, probe_reward(model, probe, cfg), cfg, reference_model=reference)
    _, got = step_once(model, objective, [0, 2])
    r = objective.last_rollout
    p = probe_p(model, probe, r.samples)
    torch.testing.assert_close(r.scores.double(), -p, atol=1e-5, rtol=0)
    with torch.no_grad():
        kl = (token_logps(model, r.samples) - token_logps(reference, r.samples)).sum(1)
    rewards = (-p - 0.3 * kl).tolist()
    assert_grads_equal(got, reinforce_gradient(model, r.samples, loo_advantages(rewards, 3)))


def test_the_probe_sees_detached_activations_without_grad(probe):
    seen = []

    class Spy:
        def forward(self, acts):
            seen.append((acts.requires_grad, torch.is_grad_enabled()))
            return probe.forward(acts)

    model = tiny_model(seed=0)
    cfg = RLOOConfig(samples_per_prompt=2, max_new_tokens=4, beta=0.0, trainable="all")
    reward = ProbeReward([FlatProbe("spy", HOOK, Spy(), "mean", "spy")])
    step_once(model, RLOOObjective(model, PROMPTS, reward, cfg), [1])
    assert seen == [(False, False)]


def test_a_token_probe_rewards_on_every_response_token():
    """A max-pooled probe as the trained-against signal: its reward is minus its predict_proba on the samples'
    token activations (collect_tokens), not on a pooled vector."""
    model = tiny_model(seed=0)
    g = tokenize_pairs(model, PROMPTS[:4] * 2, [" nice day", " kind", " hate you", " stupid idiot"] * 2, add_eos=True)
    acts, _ = collect_tokens(model, g.tokens, g.attention_mask, g.response_mask, [HOOK], progress=False)
    maxp = MaxPooledLogisticProbe(C=1.0).fit(acts[HOOK].numpy(), np.array([0, 0, 1, 1] * 2))
    maxp.set_metadata(hook=HOOK)
    cfg = RLOOConfig(samples_per_prompt=2, max_new_tokens=5, beta=0.0, trainable="all")
    objective = RLOOObjective(model, PROMPTS, probe_reward(model, maxp, cfg), cfg)
    step_once(model, objective, [0, 1])
    r = objective.last_rollout
    tok, _ = collect_tokens(
        model, r.samples.tokens, r.samples.attention_mask, r.samples.response_mask, [HOOK], progress=False
    )
    want = maxp.predict_proba(tok[HOOK].numpy())[:, 1]
    np.testing.assert_allclose(-r.scores.numpy(), want, atol=1e-5)


def test_a_classifier_reward_is_minus_its_score_of_the_response():
    model = tiny_model(seed=0)
    scorer = non_ascii_scorer()
    cfg = RLOOConfig(samples_per_prompt=2, max_new_tokens=6, beta=0.0, trainable="all")
    objective = RLOOObjective(model, PROMPTS, ScorerReward(scorer), cfg)
    step_once(model, objective, [3])
    r = objective.last_rollout
    np.testing.assert_allclose(-r.scores.numpy(), scorer.score(r.samples.response_texts), atol=1e-6)
    assert objective.summary()["reward"] == "-classifier"


# ---- training, settings, errors ---------------------------------------------------------------


def test_training_raises_the_reward_of_a_reward_it_can_reach(tmp_path):
    """Reward = minus the classifier score: the policy's samples get fewer non-ASCII characters."""
    model = tiny_model(seed=0)
    cfg = RLOOConfig(
        samples_per_prompt=4, max_new_tokens=6, beta=0.0, lr=3e-2, max_steps=8, batch_size=3, trainable="all",
        warmup_steps=0, scheduler="constant", out_dir=str(tmp_path), progress=False,
    )  # fmt: skip
    res = Trainer(model, RLOOObjective(model, PROMPTS, ScorerReward(non_ascii_scorer()), cfg), cfg).train()
    scores = [row["objective/scores"] for row in res.history]
    assert np.mean(scores[-3:]) > np.mean(scores[:3])


def test_bad_settings_and_inputs_are_refused(probe):
    for bad, match in [
        ({"samples_per_prompt": 1}, "samples_per_prompt must be an int >= 2"),
        ({"temperature": 0}, "temperature must be in"),
        ({"top_p": 1.5}, "top_p must be in"),
        ({"beta": -1}, "beta must be a finite number >= 0"),
        ({"advantage": "ppo"}, "advantage must be one of"),
        ({"pooling": "sum"}, "pooling must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            RLOOConfig(**bad)
    model = tiny_model(seed=0)
    cfg = RLOOConfig()
    with pytest.raises(ValueError, match="beta > 0 needs reference_model"):
        RLOOObjective(model, PROMPTS, probe_reward(model, probe, cfg), cfg)
    with pytest.raises(ValueError, match="non-empty list of strings"):
        RLOOObjective(model, "one prompt", FixedReward([0]), RLOOConfig(beta=0.0))
    with pytest.raises(TypeError, match="config must be a RLOOConfig"):
        RLOOObjective(model, PROMPTS, FixedReward([0]), RLOOConfig.__base__())
    with pytest.raises(TypeError, match="score\\(texts\\) method"):
        ScorerReward(object())
