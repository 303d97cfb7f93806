"""GPU readiness check: a 1B-shaped model through every stage, timed, in at most ~10 minutes.

On a machine with a CUDA GPU::

    .venv/bin/python benchmarks/gpu_check.py --out runs/gpu_check.json

loads Gemma-3-1B (its real weights if the Hugging Face cache holds them, else a random init from
TransformerLens's built-in config: same shapes, same cost), then runs generation, activation
collection, a few probe-SFT and DPO steps under bf16 autocast and a 2-cell micro-study
(``base``, ``probe_sft_1``), recording tokens/s, step time and peak GPU memory
(``torch.cuda.max_memory_allocated``) per stage into the JSON file ``--out``, with the dry-run
estimate of ``probe_lens.experiments.plan.estimate_plan`` beside them when that module exists.
Any error is recorded in the JSON (with the stages measured so far) and the exit status is 1.

``--device cpu --tiny`` runs the same stages on the tiny random-init model: a smoke test (seconds).

``--backend bridge`` runs every stage on the ``TransformerBridge`` backend instead (its random init, when
the 1B weights are not cached, is an HF Gemma-3 of the 1B's shapes); ``--n-devices N`` (bridge only)
spreads the model over N GPUs, as for a model larger than one GPU. Compare the two JSON files side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GEMMA_1B = "google/gemma-3-1b-pt"
PROMPTS = [
    "The weather today is",
    "My neighbour keeps shouting at",
    "Here is a recipe for",
    "The worst thing about people is",
    "In the meeting, the manager said",
    "Honestly, you are such a",
    "The history of the city begins",
    "I can't stand it when",
]


@dataclasses.dataclass
class Sizes:
    """How much each stage does (small enough for ~10 min on one GPU with a 1B model)."""

    gen_prompts: int = 32
    gen_tokens: int = 32
    gen_batch: int = 32
    train_steps: int = 3
    train_batch: int = 8
    layers: tuple[int, int, int] = (4, 6, 9)  # held-out, probe, held-out layers (Gemma-3-1B has 26)


TINY_SIZES = Sizes(gen_prompts=8, gen_tokens=6, gen_batch=8, train_steps=2, train_batch=2, layers=(1, 2, 3))


class Recorder:
    """Times stages and their peak memory; writes everything to the JSON file after every stage."""

    def __init__(self, out: Path, device: torch.device, meta: dict[str, Any]) -> None:
        self.out, self.device = out, device
        self.data: dict[str, Any] = {**meta, "stages": {}, "ok": False, "error": None}
        self.t0 = time.perf_counter()

    def stage(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        row = fn()
        if cuda:
            torch.cuda.synchronize(self.device)
        row["seconds"] = round(time.perf_counter() - t, 3)
        row["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 3) if cuda else None
        self.data["stages"][name] = row
        print(f"[gpu_check] {name}: {json.dumps(row)}", flush=True)
        self.write()
        return row

    def write(self) -> None:
        self.data["total_seconds"] = round(time.perf_counter() - self.t0, 3)
        self.data["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
        if self.device.type == "cuda":
            self.data["peak_gpu_mem_gb"] = round(
                max([r["peak_gpu_mem_gb"] or 0.0 for r in self.data["stages"].values()] or [0.0]), 3
            )
        else:
            self.data["peak_gpu_mem_gb"] = None
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.data, indent=2, default=str))


# ------------------------------------------------------------------------------------------- model


def gemma_tokenizer():
    """The Gemma-3 tokenizer (vocabulary shared by 270M and 1B) from the embedded model's offline cache."""
    from transformers import AutoTokenizer

    from probe_lens.models.loading import convert_embedded_model

    tok = AutoTokenizer.from_pretrained(str(convert_embedded_model()))
    tok.padding_side = "left"
    return tok


def gemma_1b_hf_config():
    """An HF Gemma-3 text config with Gemma-3-1B's shapes (for a random-init bridge without the weights)."""
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        architectures=["Gemma3ForCausalLM"],
        vocab_size=262_144,
        hidden_size=1152,
        intermediate_size=6912,
        num_hidden_layers=26,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=512,
        max_position_embeddings=32_768,
    )


def random_1b_bridge(device: torch.device, n_devices: int | None):
    """A random-init Gemma-3-1B-shaped HF model behind a TransformerBridge, split over ``n_devices`` GPUs."""
    from transformers import Gemma3ForCausalLM

    from probe_lens.models.bridge import bridge_from_hf, hf_placement

    torch.manual_seed(0)
    hf = Gemma3ForCausalLM(gemma_1b_hf_config()).eval()
    if (n_devices or 1) > 1:
        from accelerate import dispatch_model, infer_auto_device_map

        max_memory = hf_placement(None, None, n_devices)["max_memory"]
        layout = infer_auto_device_map(hf, max_memory=max_memory, no_split_module_classes=["Gemma3DecoderLayer"])
        hf = dispatch_model(hf, device_map=layout)
        return bridge_from_hf(GEMMA_1B, hf, gemma_tokenizer(), device=None)
    return bridge_from_hf(GEMMA_1B, hf, gemma_tokenizer(), device=str(device))


def load_1b(
    device: torch.device, allow_download: bool, backend: str = "hooked", n_devices: int | None = None
) -> tuple[Any, str]:
    """Gemma-3-1B with real weights when they load (offline unless ``allow_download``), else random init."""
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    from probe_lens.models.compat import apply_fast_cpu_patches, quiet_tl_deprecation
    from probe_lens.models.loading import ModelUnavailableError, load_model

    if not allow_download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    split = (n_devices or 1) > 1
    try:
        where = {"n_devices": n_devices} if split else {"device": str(device)}
        return load_model(GEMMA_1B, backend=backend, dtype=torch.float32, **where), "real"
    except ModelUnavailableError as e:
        print(f"[gpu_check] no real weights ({str(e)[:160]}...); random init of the same shapes", flush=True)
    if backend == "bridge":
        return random_1b_bridge(device, n_devices), "random-init"
    cfg = get_pretrained_model_config(GEMMA_1B, device=str(device), dtype=torch.float32)
    torch.manual_seed(0)
    with quiet_tl_deprecation():
        model = HookedTransformer(cfg, tokenizer=gemma_tokenizer(), default_padding_side="left")
    model.eval()
    return apply_fast_cpu_patches(model), "random-init"


def load_tiny(device: torch.device, backend: str = "hooked") -> tuple[Any, str]:
    from probe_lens.models.loading import load_model

    return load_model("probe-lens-tiny:4", backend=backend, device=str(device)), "random-init"


# ------------------------------------------------------------------------------------------ stages


def response_tokens(gen) -> int:
    return int(gen.response_mask.sum())


def run_stages(rec: Recorder, model, sizes: Sizes, device: torch.device, bf16: bool) -> None:
    from probe_lens.activations import collect
    from probe_lens.models import generate
    from probe_lens.probes import LogisticProbe
    from probe_lens.training import DPOConfig, ProbeSFTConfig, build_pairs, train_dpo, train_probe_sft

    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" ({i})") for i in range(sizes.gen_prompts)]
    out: dict[str, Any] = {}

    def gen_stage():
        out["gen"] = generate(
            model, prompts, max_new_tokens=sizes.gen_tokens, batch_size=sizes.gen_batch, seed=0, progress=False
        )
        return {"sequences": len(prompts), "new_tokens": response_tokens(out["gen"])}

    row = rec.stage("generate", gen_stage)
    row["new_tokens_per_s"] = round(row["new_tokens"] / row["seconds"], 2)

    hooks = [f"blocks.{layer}.hook_resid_post" for layer in sizes.layers]
    gen = out["gen"]

    def collect_stage():
        out["acts"] = collect(
            model, gen.tokens, gen.attention_mask, gen.response_mask, hooks, batch_size=sizes.gen_batch, progress=False
        )
        return {"sequences": len(gen), "tokens": int(gen.attention_mask.sum()), "hooks": hooks}

    row = rec.stage("collect", collect_stage)
    row["tokens_per_s"] = round(row["tokens"] / row["seconds"], 2)

    # a probe at the middle layer on labels that split the samples in two (the model is random: any split)
    hook = hooks[1]
    x = out["acts"][hook]
    x = x.float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    y = (np.arange(len(x)) % 2).astype(np.int64)
    probe = LogisticProbe(C=0.1, hook=hook, pooling="mean").fit(x, y)

    def train_row(res, data_tokens: int) -> dict[str, Any]:
        steps = [r for r in res.history if "train/step_seconds" in r]
        secs = [r["train/step_seconds"] for r in steps]
        # the first step includes one-off work (allocations, kernel selection): report the later ones
        later = secs[1:] or secs
        return {
            "steps": len(secs),
            "step_seconds": [round(s, 4) for s in secs],
            "step_seconds_mean_after_first": round(float(np.mean(later)), 4),
            "tokens_per_step": data_tokens,
            "tokens_per_s": round(data_tokens / float(np.mean(later)), 2),
            "final_loss": steps[-1].get("train/loss") if steps else None,
            "bf16": bf16,
        }

    sft_cfg = ProbeSFTConfig(
        lr=1e-5, max_steps=sizes.train_steps, batch_size=sizes.train_batch, bf16=bf16, trainable="all", progress=False
    )
    tokens_per_step = int(gen.attention_mask[: sizes.train_batch].sum())

    def sft_stage():
        return train_row(train_probe_sft(model, gen, probe, sft_cfg), tokens_per_step)

    rec.stage("probe_sft", sft_stage)

    # DPO: two samples per prompt, ranked by the probe
    def dpo_stage():
        twice = [p for p in prompts[: max(2, sizes.train_batch)] for _ in range(2)]
        samples = generate(
            model, twice, max_new_tokens=sizes.gen_tokens, batch_size=sizes.gen_batch, seed=1, progress=False
        )
        acts = collect(
            model,
            samples.tokens,
            samples.attention_mask,
            samples.response_mask,
            [hook],
            batch_size=sizes.gen_batch,
            progress=False,
        )[hook]
        pairs = build_pairs(samples, probe.predict_proba(acts)[:, 1], k=2)
        cfg = DPOConfig(
            lr=1e-6, max_steps=sizes.train_steps, batch_size=max(1, sizes.train_batch // 2), bf16=bf16, progress=False
        )
        res = train_dpo(model, pairs, cfg)
        row = train_row(res, 2 * int(samples.attention_mask[: cfg.batch_size].sum()))
        row["margin_step1"] = res.history[0].get("rewards/margins") if res.history else None
        return row

    rec.stage("dpo", dpo_stage)


def micro_study(model, scorer, out_dir: Path, sizes: Sizes, device: torch.device, bf16: bool) -> dict[str, Any]:
    """A 2-cell study (``base``, ``probe_sft_1``) with minimal sizes, on ``model``.

    Kept in one function: the study runner is being redesigned, so this is the part most likely to need
    updating when its API changes.
    """
    from probe_lens.experiments import Study
    from probe_lens.testing import tiny_study_config

    lo, mid, hi = sizes.layers
    cfg = tiny_study_config(
        cells=["base", "probe_sft_1"],
        device=str(device),
        data={"hooks": [lo, mid, hi]},
        probes={"layer": mid, "heldout_layers": [lo, hi]},
        probe_sft={"bf16": bf16, "progress": False},
        telemetry_every=2,  # step 0 and the end of the 2 steps: the telemetry dominates a tiny study
    )
    study = Study(cfg, out_dir, overwrite=True, model=model, scorer=scorer, progress=False, export_png=False)
    table = study.run()
    return {
        "cells": sorted(set(map(str, table["cell"]))) if "cell" in table else None,
        "rows": int(len(table)),
        "config": cfg.to_dict(),
    }


def dry_run_estimate(config_dict: dict[str, Any] | None) -> tuple[Any, str | None]:
    """``estimate_plan``'s figures for the micro-study's config, or (None, why not)."""
    try:
        from probe_lens.experiments.plan import estimate_plan
    except ImportError as e:
        return None, f"probe_lens.experiments.plan.estimate_plan is not available ({e})"
    if config_dict is None:
        return None, "the micro-study did not build its config"
    try:
        from probe_lens.experiments import StudyConfig

        est = estimate_plan(StudyConfig.from_dict(config_dict))
    except Exception as e:  # its API is new: record, do not fail the measured figures
        return None, f"estimate_plan failed: {type(e).__name__}: {e}"
    if dataclasses.is_dataclass(est):
        est = dataclasses.asdict(est)
    elif hasattr(est, "to_dict"):
        est = est.to_dict()
    return est, None


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", required=True, help="JSON file for the figures")
    ap.add_argument(
        "--device", default=None, help="torch device (default: cuda:LOCAL_RANK / cuda if available, else cpu)"
    )
    ap.add_argument("--tiny", action="store_true", help="the tiny random-init model instead of Gemma-3-1B (smoke test)")
    ap.add_argument("--no-bf16", action="store_true", help="train in fp32 instead of bf16 autocast")
    ap.add_argument("--skip-study", action="store_true", help="leave out the 2-cell micro-study")
    ap.add_argument("--allow-download", action="store_true", help="let the 1B weights come from the Hugging Face hub")
    ap.add_argument("--backend", choices=("hooked", "bridge"), default="hooked", help="model backend (default hooked)")
    ap.add_argument("--n-devices", type=int, default=None, help="bridge only: spread the model over this many GPUs")
    args = ap.parse_args(argv)
    if args.n_devices is not None and args.n_devices > 1 and (args.backend != "bridge" or args.tiny):
        ap.error("--n-devices > 1 needs --backend bridge and the 1B model (not --tiny)")

    from probe_lens.models.loading import default_device, enable_tf32

    device = torch.device(args.device or default_device())
    if device.type == "cuda" and not torch.cuda.is_available():
        print("[gpu_check] --device cuda but CUDA is not available here", file=sys.stderr)
        return 2
    enable_tf32(device)
    bf16 = not args.no_bf16
    sizes = TINY_SIZES if args.tiny else Sizes()
    meta = {
        "model": "probe-lens-tiny:4" if args.tiny else GEMMA_1B,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16_autocast": bf16,
        "tf32_matmul_precision": torch.get_float32_matmul_precision(),
        "sizes": dataclasses.asdict(sizes),
        "backend": args.backend,
        "n_devices": args.n_devices,
        "dry_run_estimate": None,
        "dry_run_estimate_note": None,
    }
    rec = Recorder(Path(args.out), device, meta)
    study_config = None
    try:
        holder: dict[str, Any] = {}

        def load_stage():
            holder["model"], weights = (
                load_tiny(device, args.backend)
                if args.tiny
                else load_1b(device, args.allow_download, args.backend, args.n_devices)
            )
            n = sum(p.numel() for p in holder["model"].parameters())
            return {"weights": weights, "n_params": n, "d_vocab": holder["model"].cfg.d_vocab}

        rec.stage("load", load_stage)
        model = holder["model"]
        run_stages(rec, model, sizes, device, bf16)
        if not args.skip_study:
            from probe_lens.testing import non_ascii_scorer

            study_dir = Path(args.out).parent / (Path(args.out).stem + "_study")

            def study_stage():
                row = micro_study(model, non_ascii_scorer(), study_dir, sizes, device, bf16)
                nonlocal study_config
                study_config = row.pop("config")
                return row

            rec.stage("micro_study", study_stage)
        est, note = dry_run_estimate(study_config)
        rec.data["dry_run_estimate"], rec.data["dry_run_estimate_note"] = est, note
        rec.data["ok"] = True
        rec.write()
        print(f"[gpu_check] ok: {args.out} ({rec.data['total_seconds']} s)", flush=True)
        return 0
    except Exception as e:
        rec.data["error"] = f"{type(e).__name__}: {e}"
        rec.data["traceback"] = traceback.format_exc()
        rec.write()
        traceback.print_exc()
        print(f"[gpu_check] FAILED: {rec.data['error']} (figures so far in {args.out})", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
