"""The dry-run plan: printed for every preset without loading weights; memory estimate vs a measured step.

The memory comparison on the tiny model is over the training phase's tensors: parameters, gradients
and AdamW moments (summed tensor bytes) plus the peak of the bytes malloc holds in use during one
training step above its start (glibc ``mallinfo2``, sampled after every aten op by a dispatch mode):
activations kept for backward, the logits' gradients and temporaries. The estimate's counterpart is
``parameters + gradients + adamw_moments + activations``.
"""

import ctypes
import ctypes.util

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from probe_lens.cli import main
from probe_lens.experiments.plan import StudyPlan, estimate_plan, format_plan
from probe_lens.experiments.presets import PRESETS, make_config


@pytest.fixture
def no_weights(monkeypatch):
    """Any attempt to load weights fails the test."""
    import transformer_lens

    import probe_lens
    import probe_lens.models
    import probe_lens.models.loading as loading

    def refuse(*a, **k):
        raise AssertionError("the dry run tried to load a model")

    for mod, name in (
        (loading, "load_model"),
        (loading, "load_embedded_hf"),
        (loading, "convert_embedded_model"),
        (probe_lens.models, "load_model"),
        (probe_lens, "load_model"),
    ):
        if hasattr(mod, name):
            monkeypatch.setattr(mod, name, refuse)
    for name in ("from_pretrained", "from_pretrained_no_processing"):
        monkeypatch.setattr(transformer_lens.HookedTransformer, name, classmethod(refuse))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_dry_run_prints_a_plan_for_every_preset(preset, no_weights, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "--preset", preset, "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for expected in (
        f"preset {preset}",
        "continuations sampled",
        "training steps per cell",
        "estimated FLOPs",
        "adamw_moments",
        "peak (training phase)",
    ):
        assert expected in text, expected
    assert not out.exists()  # nothing written


def test_plan_counts_follow_the_config():
    cfg = make_config("demo", overrides=["probe_sft.max_steps=6", "train_data.n_prompts=10", "seeds=[0,1,2]"])
    plan = estimate_plan(cfg)
    assert isinstance(plan, StudyPlan)
    assert plan.n_seeds == 3
    assert plan.train_steps["probe_sft_1"] == 6
    assert plan.continuations["train_samples"] == 10 * cfg.train_data.samples_per_prompt
    ev = cfg.eval
    assert plan.continuations["evaluation"] == len(cfg.cells) * ev.n_provocative * ev.samples_per_prompt
    per_seed = sum(v for k, v in plan.continuations.items() if k != "probe_data")
    assert plan.continuations_total == plan.continuations["probe_data"] + 3 * per_seed
    assert plan.n_params == 436_220_032  # Gemma-3-270M in TransformerLens (embedding and unembedding untied)
    assert plan.n_trainable["probe_sft"] < plan.n_params  # the CPU presets freeze the embeddings
    bf16 = estimate_plan(cfg, dtype="bfloat16")
    assert bf16.memory["parameters"] * 2 == plan.memory["parameters"]
    assert plan.flops["total"] > plan.flops["training"] > 0
    assert "peak" in format_plan(plan)


def test_plan_counts_rloo_samples_reference_and_rows():
    """An RLOO cell samples batch x k continuations at every step and trains on all of them, with a live reference."""
    base = ["cells=[base, classifier_sft]", "seeds=[0]"]
    rloo = ["cells=[base, classifier_sft, classifier_rloo]", "seeds=[0]", "objectives.rloo.max_steps=3"]
    without, plan = (
        estimate_plan(make_config("demo", overrides=base)),
        estimate_plan(make_config("demo", overrides=rloo)),
    )
    tc = make_config("demo", overrides=rloo).objectives["rloo"]
    assert "rloo_samples" not in without.continuations
    assert plan.continuations["rloo_samples"] == 3 * tc.batch_size * tc.samples_per_prompt
    assert plan.flops["generate_rloo_samples"] > 0 and plan.memory["reference_model"] > 0
    assert without.memory["reference_model"] == 0
    no_kl = estimate_plan(make_config("demo", overrides=[*rloo, "objectives.rloo.beta=0"]))
    assert no_kl.memory["reference_model"] == 0 and no_kl.flops["training"] < plan.flops["training"]


# ------------------------------------------------------------------------- memory vs measured
class _MallocInUse(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_size_t)
        for n in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _in_use_reader():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    libc.mallinfo2.restype = _MallocInUse

    def in_use() -> int:
        m = libc.mallinfo2()
        return m.uordblks + m.hblkhd

    return in_use


class _PeakInUse(TorchDispatchMode):
    def __init__(self, in_use) -> None:
        super().__init__()
        self.in_use = in_use
        self.peak = in_use()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, self.in_use())
        return out


@pytest.mark.parametrize("batch_size,prompt_tokens", [(4, 24), (8, 48)])
def test_memory_estimate_within_25_percent_of_a_measured_step(batch_size, prompt_tokens):
    from probe_lens.testing import tiny_model

    in_use = _in_use_reader()
    model = tiny_model(seed=0)
    new = 16
    cfg = make_config(
        "demo",
        overrides=[
            f"probe_sft.batch_size={batch_size}",
            "probe_sft.trainable=all",
            f"train_data.max_new_tokens={new}",
            "cells=[base,probe_sft_1]",
        ],
    )
    plan = estimate_plan(cfg, model_cfg=model.cfg, prompt_tokens=prompt_tokens)
    est = sum(plan.memory[k] for k in ("parameters", "gradients", "adamw_moments", "activations"))

    tokens = torch.randint(3, model.cfg.d_vocab, (batch_size, prompt_tokens + new))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        logits = model(tokens, attention_mask=torch.ones_like(tokens))
        logp = logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None])
        (-logp.mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)

    step()  # gradients and AdamW moments now exist
    start = in_use()
    with _PeakInUse(in_use) as peak:
        step()
    state = sum(p.numel() * p.element_size() for p in model.parameters())
    state += sum(p.grad.numel() * p.grad.element_size() for p in model.parameters())
    state += sum(
        v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v) and v.ndim
    )
    measured = state + (peak.peak - start)
    assert abs(est - measured) <= 0.25 * measured, (est, measured)
