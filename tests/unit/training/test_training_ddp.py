"""Two CPU processes under torchrun (DDP, gloo) train to the same parameters as one process on the combined batch.

This file is also the worker: ``torchrun --nproc_per_node 2 tests/test_training_ddp.py OUT`` runs ``_worker``.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

PROMPTS = [f"Prompt {i}:" for i in range(4)]
RESPONSES = [
    " have a nice day",
    " you idiot",
    " thanks a lot",
    " I hate this",
    " blue sky",
    " stupid trash",
    " ok fine",
    " shut up",
]


def _setup():
    from probe_lens.activations import collect
    from probe_lens.models import tokenize_pairs
    from probe_lens.probes import LogisticProbe
    from probe_lens.testing import tiny_model
    from probe_lens.training import build_pairs

    model = tiny_model(seed=0)
    prompts = [p for p in PROMPTS for _ in range(2)]
    data = tokenize_pairs(model, prompts, RESPONSES, add_eos=True)
    y = np.array([i % 2 for i in range(len(data))])
    hook = "blocks.1.hook_resid_post"
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [hook], progress=False)[hook]
    probe = LogisticProbe(C=0.1, hook=hook, pooling="mean").fit(acts, y)
    pairs = build_pairs(data, probe.predict_proba(acts)[:, 1], k=2)
    return model, data, probe, pairs


def _train(batch_size: int):
    """Probe-SFT (with accumulation) then DPO; returns the final parameters."""
    from probe_lens.training import DPOConfig, ProbeSFTConfig, train_dpo, train_probe_sft

    model, data, probe, pairs = _setup()
    # adam_eps above float noise, so summation-order noise in near-zero gradients stays noise
    kw = dict(lr=1e-2, adam_eps=1e-3, max_steps=2, progress=False)
    train_probe_sft(model, data, probe, ProbeSFTConfig(batch_size=batch_size, grad_accum_steps=2, kl_weight=0.0, **kw))
    train_dpo(model, pairs, DPOConfig(batch_size=batch_size, **kw))
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _worker(out: str) -> None:
    from safetensors.torch import save_file

    from probe_lens.training import distributed as D

    torch.set_num_threads(1)
    params = _train(batch_size=1)  # 2 processes x 1 example x 2 accumulation steps = 4 per step
    info = D.init_from_env()
    assert info.world_size == 2, info
    if info.is_main:
        save_file({k: v.contiguous() for k, v in params.items()}, out)
    D.barrier(info)
    D.cleanup()


def test_two_process_ddp_matches_one_process_on_combined_batch(tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, str(out)]
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[3]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp = load_file(str(out))
    single = _train(batch_size=2)  # one process, 2 examples x 2 accumulation steps = 4 per step
    assert ddp.keys() == single.keys()
    moved = 0
    for name, p in single.items():
        assert torch.allclose(ddp[name], p, atol=1e-6, rtol=0), f"{name}: max diff {(ddp[name] - p).abs().max():.2e}"
    from probe_lens.testing import tiny_model

    start = dict(tiny_model(seed=0).named_parameters())
    moved = sum(not torch.equal(start[n].detach(), p) for n, p in single.items())
    assert moved > len(single) // 2  # the runs trained


if __name__ == "__main__":
    _worker(sys.argv[1])
