"""A tiny, randomly initialised, Gemma-shaped HookedTransformer with a real offline tokenizer.

Used by the test-suite and by anyone who wants to exercise the library in seconds. It has the same
architecture family as Gemma-3 (RMSNorm, rotary, gated MLP, grouped-query attention), so code paths
that matter for the embedded model are exercised here too.
"""

from __future__ import annotations

import functools

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")


@functools.lru_cache(maxsize=1)
def _byte_level_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    bos_id = vocab["<bos>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos_id)]
    )
    return tok.to_str()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (259 tokens: pad, bos, eos + 256 bytes), left padding, fully offline."""
    from tokenizers import Tokenizer

    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_byte_level_tokenizer_json()),
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        padding_side="left",
        add_bos_token=True,
    )
    tok.model_max_length = 10_000
    # TransformerLens reads these when it decides whether to rebuild the tokenizer with a BOS.
    tok.init_kwargs["name_or_path"] = "probe-lens-tiny"
    tok.init_kwargs["add_bos_token"] = True
    return tok


def tiny_config(
    *, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, n_ctx: int = 256, seed: int = 0
) -> HookedTransformerConfig:
    """Config of the tiny Gemma-shaped model (RMSNorm, rotary, gated MLP, 2 KV heads)."""
    return HookedTransformerConfig(
        model_name="probe-lens-tiny",
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        n_key_value_heads=max(1, n_heads // 2),
        d_mlp=2 * d_model,
        d_vocab=len(SPECIAL_TOKENS) + 256,
        n_ctx=n_ctx,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_model // n_heads,
        gated_mlp=True,
        final_rms=True,
        default_prepend_bos=True,
        seed=seed,
        device="cpu",
    )


def tiny_model(
    seed: int = 0, *, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, n_ctx: int = 256
) -> HookedTransformer:
    """A random-init tiny HookedTransformer with :func:`tiny_tokenizer`, deterministic in ``seed``."""
    from probe_lens.models.compat import apply_fast_cpu_patches, quiet_tl_deprecation

    cfg = tiny_config(n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_ctx=n_ctx, seed=seed)
    torch.manual_seed(seed)
    with quiet_tl_deprecation():
        model = HookedTransformer(cfg, tokenizer=tiny_tokenizer(), default_padding_side="left")
    model.eval()
    return apply_fast_cpu_patches(model)


def non_ascii_scorer(threshold_hint: float = 0.75):
    """A deterministic scorer for the tiny model's random-byte text: the share of non-ASCII characters.

    The tiny model writes random bytes, which no toxicity classifier separates into two classes;
    this scorer does (roughly half its continuations score above ~0.75), so the whole pipeline can
    run on the tiny model in tests. It is a real scorer, just not a toxicity one.
    """
    from probe_lens.scorers.base import Scorer

    class NonAsciiScorer(Scorer):
        name = "non-ascii-share"
        version = "test"

        def _score(self, texts):
            return [sum(ord(c) > 127 for c in t) / max(1, len(t)) for t in texts]

    return NonAsciiScorer()


def tiny_study_config(**overrides):
    """A StudyConfig for the tiny 4-layer model with minimal sizes (every cell, one seed)."""
    from probe_lens.experiments.presets import _deep_merge

    d = {
        "preset": "tiny",
        "seeds": [0],
        "n_probe_prompts": 60,
        "data": {
            "hooks": [1, 2, 3],
            "samples_per_prompt": 2,
            "max_new_tokens": 6,
            "max_rounds": 1,
            "min_minority": 0,
            "batch_size": 16,
            "chunk_prompts": 64,
            "threshold": 0.75,
        },
        "train_data": {"n_prompts": 8, "samples_per_prompt": 2, "max_new_tokens": 6},
        "probe_sft": {"max_steps": 2, "batch_size": 4, "lr": 1e-3},
        "dpo": {"max_steps": 2, "batch_size": 2, "lr": 1e-3},
        "classifier_sft": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "threshold": 0.75},
        "eval": {
            "n_provocative": 8,
            "samples_per_prompt": 2,
            "max_new_tokens": 6,
            "n_fluency_texts": 4,
            "threshold": 0.75,
            "n_curated": 24,
        },
        "probes": {
            "layer": 2,
            "heldout_layers": [1, 3],
            "n_ensemble": 2,
            "n_heldout_members": 1,
            "noise_floor_resamples": 4,
        },
        "telemetry_every": 1,
    }
    from probe_lens.experiments.config import StudyConfig

    return StudyConfig.from_dict(_deep_merge(d, overrides))


def first_divergence_gap(model, prompt_ids: list[int], a: list[int], b: list[int]) -> float | None:
    """None when greedy continuations ``a`` and ``b`` of ``prompt_ids`` are equal; else ``model``'s logit gap
    between ``a``'s and ``b``'s token at their first difference (teacher-forced on the shared prefix).

    Greedy decoding on another CPU kind, batch layout or code path may flip a near-tie (gap ~0) and diverge
    from there; a gap far from 0 is a real difference. Tests compare across such changes with this.
    """
    import torch

    if a == b:
        return None
    t = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if t >= min(len(a), len(b)):
        return float("inf")  # one is a strict prefix of the other: not a flip of one token
    with torch.no_grad():
        logits = model(torch.tensor([list(prompt_ids) + list(a[:t])]))[0, -1]
    return abs(float(logits[a[t]] - logits[b[t]]))
