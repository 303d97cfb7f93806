"""The TransformerBridge backend (``load_model(..., backend="bridge")``): same API, same numbers.

Tiny-model tests check the bridge against its own HF model (the oracle); embedded-model tests check the
two backends against each other on Gemma-3-270M.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer
from transformer_lens.model_bridge import TransformerBridge

from probe_lens import load_model
from probe_lens.activations import capture, collect, pool
from probe_lens.models import generate
from probe_lens.models.bridge import hf_placement, is_bridge
from probe_lens.models.compat import apply_fast_cpu_patches, is_patched, training_products
from probe_lens.models.fast_sampling import fast_path_logits, sampler_id
from probe_lens.models.tiny import TINY_MODEL_NAME, tiny_config, tiny_hf_config, tiny_tokenizer

PROMPTS = ["hello", "a longer prompt here", "x", "the cat sat on the"]
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def tiny_bridge():
    """The 2-layer tiny model on the bridge backend (a random-init HF Gemma-3, seed 0)."""
    return load_model(TINY_MODEL_NAME, backend="bridge", device="cpu")


def _hf_forward(model: TransformerBridge, tokens, mask):
    """The HF model's own forward (the oracle), positions counted from each row's first real token as
    TransformerLens counts them under left padding."""
    with torch.no_grad():
        return model.original_model(
            tokens, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), output_hidden_states=True
        )


# ------------------------------------------------------------------------------------ tiny model
def test_tiny_bridge_boots_offline_with_tl_hook_names_and_hf_numbers(tiny_bridge):
    assert isinstance(tiny_bridge, TransformerBridge) and is_bridge(tiny_bridge)
    assert {"blocks.1.hook_resid_post", "ln_final.hook_normalized"} <= set(tiny_bridge.hook_dict)
    assert tiny_bridge.tokenizer.padding_side == "left" and tiny_bridge.cfg.device == "cpu"
    g = generate(tiny_bridge, PROMPTS, max_new_tokens=4, do_sample=False, progress=False)
    with torch.no_grad():
        ours = tiny_bridge(g.tokens, attention_mask=g.attention_mask)
    hf = _hf_forward(tiny_bridge, g.tokens, g.attention_mask).logits
    real = g.attention_mask.bool()
    torch.testing.assert_close(ours[real], hf[real], rtol=0, atol=1e-5)


def test_tiny_bridge_greedy_generation_equals_full_forward_argmax(tiny_bridge):
    g = generate(tiny_bridge, PROMPTS, max_new_tokens=6, do_sample=False, progress=False)
    with torch.no_grad():  # teacher-forced, no KV cache: the oracle for cached decoding
        logits = tiny_bridge(g.tokens, attention_mask=g.attention_mask)
    predicted = logits[:, g.prompt_len - 1 : -1].argmax(-1)
    response = g.tokens[:, g.prompt_len :]
    assert torch.equal(predicted[g.response_mask[:, g.prompt_len :].bool()], response[response != 0])
    one_by_one = generate(tiny_bridge, PROMPTS, max_new_tokens=6, do_sample=False, progress=False, batch_size=1)
    assert torch.equal(g.tokens, one_by_one.tokens)


def test_tiny_bridge_collect_and_capture_read_the_residual_stream():
    model = load_model(f"{TINY_MODEL_NAME}:3", backend="bridge", device="cpu")
    g = generate(model, PROMPTS, max_new_tokens=5, seed=0, progress=False)
    acts = collect(model, g.tokens, g.attention_mask, g.response_mask, [0, 1], progress=False, batch_size=3)
    hidden = _hf_forward(model, g.tokens, g.attention_mask).hidden_states  # the last one is after the final norm
    for layer in (0, 1):
        oracle = pool(hidden[layer + 1], g.response_mask)
        torch.testing.assert_close(acts[f"blocks.{layer}.hook_resid_post"], oracle, rtol=1e-5, atol=1e-5)
    with capture(model, [1]) as live:
        model(g.tokens, attention_mask=g.attention_mask)
    resid = live["blocks.1.hook_resid_post"]
    assert resid.requires_grad  # live, so a probe loss on it backpropagates into the weights
    pool(resid, g.response_mask).sum().backward()
    assert model.original_model.model.embed_tokens.weight.grad is not None


def test_fast_sampling_falls_back_to_the_reference_path_on_a_bridge(tiny_bridge):
    ref = generate(tiny_bridge, PROMPTS * 2, max_new_tokens=5, seed=3, progress=False)
    fast = generate(tiny_bridge, PROMPTS * 2, max_new_tokens=5, seed=3, progress=False, fast=True)
    assert torch.equal(ref.tokens, fast.tokens) and ref.response_texts == fast.response_texts
    assert sampler_id(True, tiny_bridge) == sampler_id(False, tiny_bridge) == "bridge-reference"
    with torch.no_grad():
        plain = tiny_bridge(ref.tokens, attention_mask=ref.attention_mask)
    assert torch.equal(fast_path_logits(tiny_bridge, ref.tokens, ref.attention_mask), plain)
    with pytest.raises(TypeError, match="fast must be"):
        generate(tiny_bridge, PROMPTS, max_new_tokens=2, progress=False, fast="yes")  # type: ignore[arg-type]


def test_cpu_patches_leave_a_bridge_unchanged(tiny_bridge):
    g = generate(tiny_bridge, PROMPTS, max_new_tokens=3, do_sample=False, progress=False)
    with torch.no_grad():
        before = tiny_bridge(g.tokens, attention_mask=g.attention_mask)
        assert apply_fast_cpu_patches(tiny_bridge) is tiny_bridge and not is_patched(tiny_bridge)
        after = tiny_bridge(g.tokens, attention_mask=g.attention_mask)
        with training_products():
            under_training_products = tiny_bridge(g.tokens, attention_mask=g.attention_mask)
    assert torch.equal(before, after) and torch.equal(before, under_training_products)


def test_left_padded_batches_have_finite_gradients_and_stock_numbers():
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    model = load_model(TINY_MODEL_NAME, backend="bridge", device="cpu")
    x = torch.tensor([[0, 0, 1, 72, 73, 74], [1, 72, 73, 74, 75, 76]])
    mask = (x != 0).long()
    out = model(x, attention_mask=mask)
    out[mask.bool()].logsumexp(-1).sum().backward()
    grads = [p.grad for p in model.original_model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    for module in model.modules():  # TL's stock -inf mask: NaN gradients, same real-position outputs
        if isinstance(module, AttentionBridge):
            del module._normalize_compatibility_mask_sentinel
    model.zero_grad()
    stock = model(x, attention_mask=mask)
    assert torch.equal(stock[mask.bool()], out[mask.bool()])
    stock[mask.bool()].logsumexp(-1).sum().backward()
    assert not torch.isfinite(model.original_model.model.embed_tokens.weight.grad).all()  # the upstream bug


def test_backend_and_layout_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="unknown model backend 'nope'"):
        load_model(TINY_MODEL_NAME, backend="nope", device="cpu")
    with pytest.raises(ValueError, match="backend='bridge'"):
        load_model(TINY_MODEL_NAME, device_map="auto")
    with pytest.raises(ValueError, match="pass device, not device_map"):
        load_model(TINY_MODEL_NAME, backend="bridge", device_map={"": "cpu"})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="n_devices=2 .* no GPU is visible"):
            load_model(TINY_MODEL_NAME, backend="bridge", n_devices=2)
    with pytest.raises(ValueError, match="n_devices must be a positive integer"):
        hf_placement(None, None, 0)
    with pytest.raises(ValueError, match="not both"):
        hf_placement("cpu", {"": "cpu"}, None)
    assert hf_placement("cpu", None, 1) == {"device_map": None}


def test_a_local_folder_loads_on_the_bridge_with_a_device_map(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, Gemma3ForCausalLM

    torch.manual_seed(0)
    hf = Gemma3ForCausalLM(tiny_hf_config()).eval()
    hf.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    (tmp_path / "probe_lens.json").write_text(json.dumps({"tl_name": TINY_MODEL_NAME}))
    seen: list[dict] = []
    real_from_pretrained = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return real_from_pretrained(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    model = load_model(str(tmp_path), backend="bridge", device_map={"": "cpu"})
    assert seen[0]["device_map"] == {"": "cpu"} and model.cfg.device == "cpu"  # the map reaches HF's loader
    g = generate(model, PROMPTS, max_new_tokens=3, do_sample=False, progress=False)
    with torch.no_grad():
        ours = model(g.tokens, attention_mask=g.attention_mask)
    torch.testing.assert_close(ours, _hf_forward(model, g.tokens, g.attention_mask).logits)


# ------------------------------------------------------------------------- deprecation policy
_BRIDGE_SCRIPT = """
    from probe_lens import load_model
    from probe_lens.activations import capture, collect
    from probe_lens.models import generate
    m = load_model("probe-lens-tiny", backend="bridge", device="cpu")
    g = generate(m, ["hi", "there you"], max_new_tokens=3, seed=0, progress=False, fast=True)
    collect(m, g.tokens, g.attention_mask, g.response_mask, [0, 1], progress=False)
    with capture(m, [1]):
        m(g.tokens, attention_mask=g.attention_mask).sum().backward()
    load_model("probe-lens-tiny", device="cpu")  # the library's own HookedTransformer: quiet too
    print("done")
"""


def test_no_transformer_lens_deprecation_warning_on_the_bridge():
    out = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", textwrap.dedent(_BRIDGE_SCRIPT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("done"), out.stderr[-3000:]
    assert "deprecated" not in out.stderr.lower()


def test_a_users_own_hooked_transformer_still_warns():
    with pytest.warns(DeprecationWarning, match="HookedTransformer is deprecated"):
        HookedTransformer(tiny_config(), tokenizer=tiny_tokenizer())


# ---------------------------------------------------------------------------- embedded model


def test_gpu_check_bridge_smoke_on_cpu_trains_under_bf16_autocast(tmp_path):
    """benchmarks/gpu_check.py --backend bridge on the tiny model: every stage, both objectives step twice."""
    out = tmp_path / "gpu_check_bridge.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny", "--skip-study",
           "--backend", "bridge", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["backend"] == "bridge" and data["bf16_autocast"] is True
    st = data["stages"]
    for name in ("probe_sft", "dpo"):
        assert st[name]["steps"] == 2 and np.isfinite(st[name]["final_loss"]), st[name]
    assert st["dpo"]["margin_step1"] == 0.0  # policy == reference at step 1
