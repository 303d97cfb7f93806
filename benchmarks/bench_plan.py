"""The dry-run memory estimate vs the measured peak RSS of a short training step on the embedded model.

One process: read VmRSS before the model (the runtime), load Gemma-3-270M (fp32, CPU), reset the
peak-RSS counter (``/proc/self/clear_refs`` = 5, so load-time transients do not count), then run
``--steps`` optimizer steps of the preset's probe-SFT shape (its ``trainable`` spec and batch size,
LM loss on ``batch x (prompt + max_new_tokens)`` tokens, AdamW), and read VmHWM. The estimate it is
compared with is the plan's ``runtime + parameters + gradients + adamw_moments + activations`` (this
process holds no base-weight copy, no CPU transposed copies and no KV cache: those are the study's).

    .venv/bin/python benchmarks/bench_plan.py --preset quick --steps 2
"""

from __future__ import annotations

import argparse
import gc
import math
import re
import time
import warnings

import torch

warnings.filterwarnings("ignore")


def _status(field: str) -> int:
    text = open("/proc/self/status").read()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()

    from probe_lens.experiments import plan as P
    from probe_lens.experiments.presets import make_config

    GIB = P.GIB
    cfg = make_config(args.preset)
    runtime = _status("VmRSS")
    plan = P.estimate_plan(cfg)
    tc = cfg.probe_sft
    seq = int(math.ceil(P._mean_prompt_tokens() + cfg.train_data.max_new_tokens))
    # the estimate for exactly this step's shape (the plan's own figure is the largest cell's: DPO's 2x rows)
    activations = P._activation_bytes(P._architecture(P._model_config(cfg, None)), tc.batch_size, seq, 4)

    import probe_lens
    from probe_lens.training.trainer import select_trainable

    model = probe_lens.load_model(device="cpu")
    names = set(select_trainable(model, tc.trainable))
    params = [p for n, p in model.named_parameters() if n in names]
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    opt = torch.optim.AdamW(params, lr=1e-6)
    tokens = torch.randint(3, model.cfg.d_vocab, (tc.batch_size, seq))
    gc.collect()
    after_load = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    model.train()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        logits = model(tokens, attention_mask=torch.ones_like(tokens))
        (-logits.log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None]).mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        del logits
    dt = time.perf_counter() - t0
    hwm = _status("VmHWM")
    m = plan.memory
    peak = m["peak"]
    m = {**m, "activations": activations}
    est = m["runtime"] + m["parameters"] + m["gradients"] + m["adamw_moments"] + m["activations"]
    print(
        f"preset {args.preset}: probe-SFT step, batch {tc.batch_size} x {seq} tokens, trainable {tc.trainable!r} "
        f"({sum(p.numel() for p in params) / 1e6:.1f}M), {args.steps} steps in {dt:.1f} s"
    )
    print(f"RSS before the model {runtime / GIB:.2f} GiB; after loading {after_load / GIB:.2f} GiB")
    print("| | GiB |\n|---|---|")
    for k in ("runtime", "parameters", "gradients", "adamw_moments", "activations"):
        print(f"| estimate: {k} | {m[k] / GIB:.2f} |")
    print(f"| **estimate (sum)** | **{est / GIB:.2f}** |")
    print(f"| **measured VmHWM of the training steps** | **{hwm / GIB:.2f}** |")
    print(
        f"estimate / measured = {est / hwm:.3f}; the whole study's planned peak (with the base-weight copy, CPU "
        f"transposed copies): {peak / GIB:.2f} GiB"
    )


if __name__ == "__main__":
    main()
